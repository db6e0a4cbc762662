"""The training pod under torchrun: two processes standing in for two nodes (gloo on CPU), real SeaweedFS."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _trainer_fixtures import TINY_ERAS

from kretrain.api.pod import PodContract
from kretrain.registry import Registry
from kretrain.store import ObjectStore
from kretrain.trainer.distributed import NODE_DATA_FILE, DistEnv, DistributedError, share_node_data
from kretrain.trainer.synthetic import generate_dataset, upload_dataset

TORCHRUN = str(Path(sys.executable).parent / "torchrun")
KRETRAIN = str(Path(sys.executable).parent / "kretrain")
CLASSES = ["circle", "square"]
OK_ENV = {
    "WORLD_SIZE": "4",
    "RANK": "3",
    "LOCAL_RANK": "1",
    "LOCAL_WORLD_SIZE": "2",
    "MASTER_ADDR": "h",
    "MASTER_PORT": "1",
}


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, DistEnv()),
        (OK_ENV, DistEnv(world_size=4, rank=3, local_rank=1, local_world_size=2)),
        ({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}, DistEnv()),
    ],
    ids=["no-torchrun", "4-ranks-2-nodes", "single-process-torchrun"],
)
def test_dist_env_from_launcher(environ: dict[str, str], expected: DistEnv) -> None:
    assert DistEnv.from_env(environ) == expected


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"RANK": "4"}, "RANK=4 must be in [0, WORLD_SIZE=4)"),
        ({"RANK": "x"}, "RANK='x' is not an integer"),
        ({"LOCAL_RANK": "2"}, "LOCAL_RANK=2 must be in [0, LOCAL_WORLD_SIZE=2)"),
        ({"LOCAL_WORLD_SIZE": "5"}, "LOCAL_WORLD_SIZE=5 must be in [1, WORLD_SIZE=4]"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0 must be >= 1"),
        ({"MASTER_ADDR": ""}, "MASTER_ADDR is not set"),
    ],
    ids=[
        "rank-out-of-range",
        "rank-not-int",
        "local-rank-out-of-range",
        "local-world-too-big",
        "zero-world",
        "no-addr",
    ],
)
def test_dist_env_rejects_inconsistent_launcher(change: dict[str, str], message: str) -> None:
    with pytest.raises(DistributedError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        DistEnv.from_env({**OK_ENV, **change})


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ('{"dataYaml": "/etc/passwd"}', "is not a file inside"),
        ('{"dataYaml": "x", "extra": 1}', "extra"),
        ("x" * 9000, "more than a node-data record"),
    ],
    ids=["path-outside-workdir", "unknown-field", "oversized"],
)
def test_follower_refuses_a_bad_node_data_record(tmp_path: Path, record: str, message: str) -> None:
    (tmp_path / NODE_DATA_FILE).write_text(record)
    follower = DistEnv(world_size=2, rank=1, local_rank=1, local_world_size=2)  # no process group: no barrier
    with pytest.raises((DistributedError, ValueError), match=message):
        share_node_data(follower, tmp_path, None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _events(log: str, name: str) -> list[dict[str, Any]]:
    out = []
    for line in log.splitlines():
        start = line.find('{"event": "' + name + '"')
        if start >= 0:
            out.append(json.loads(line[start:]))
    return out


@pytest.fixture(scope="module")
def data(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two tiny eras in a bucket and the spec of a 2-epoch run on them (yolov8n at imgsz 32, CPU)."""
    root = tmp_path_factory.mktemp("ddp")
    bucket = s3.new_bucket("ddp")
    store = ObjectStore(endpoint_url=s3.endpoint, access_key=s3.server.access_key,
                        secret_key=s3.server.secret_key, region="us-east-1")  # fmt: skip
    eras = [dataclasses.replace(e, images=40) for e in TINY_ERAS]
    generate_dataset(root / "dataset", eras, CLASSES)
    upload_dataset(root / "dataset", store, f"s3://{bucket}/data")
    spec = {
        "model": "shapes",
        "dataset": {"uri": f"s3://{bucket}/data", "eras": ["era1", "era2"], "newEras": 1},
        "strategy": {"type": "full", "baseWeights": "yolov8n.yaml", "epochs": 2, "patience": 0, "imgsz": 32,
                     "batch": 8, "optimizer": "AdamW", "lr0": 0.005, "augmentation": {"mosaic": 0.0},
                     "hyperparameters": {"workers": 0, "nbs": 8, "warmup_epochs": 0, "seed": 0}},
        "resources": {"nodes": 2, "gpus": 0},
        "export": {"formats": []},  # rank 0's pipeline is tested elsewhere; here what matters is who runs it
        "storage": {"endpoint": s3.endpoint, "registry": f"s3://{bucket}/registry"},
    }  # fmt: skip
    return {"spec": spec, "registry": Registry(store, f"s3://{bucket}/registry")}


def launch(s3: Any, tmp: Path, spec: dict[str, Any], run_id: str, node_env: list[dict[str, str]]) -> list[str]:
    """`torchrun --nnodes 2 --nproc-per-node 1` started twice (the two nodes, each with its own disk)."""
    spec_file = tmp / "spec.json"
    spec_file.write_text(json.dumps(spec))
    port = _free_port()
    procs = []
    for node, extra in enumerate(node_env):
        root = tmp / f"node{node}"
        contract = PodContract(run_id=run_id, incumbent_version="", workdir=root / "scratch", cache_dir=root / "cache",
                               termination_log=root / "termination-log", yolo_config_dir=root / "yolo-config")  # fmt: skip
        env = {**os.environ, **s3.env(), **contract.to_env(), "KRETRAIN_SHARD_LOG": "1", "OMP_NUM_THREADS": "1"}
        cmd = [TORCHRUN, "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", run_id, "--max-restarts", "0",
               "--no-python", KRETRAIN, "train", "--spec", str(spec_file)]  # fmt: skip
        log = open(tmp / f"node{node}.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen(cmd, env={**env, **extra}, stdout=log, stderr=subprocess.STDOUT, cwd=tmp))
    rcs = [p.wait(timeout=240) for p in procs]
    logs = [(tmp / f"node{n}.log").read_text(errors="replace") for n in range(len(node_env))]
    return [f"rc={rc}\n{log}" for rc, log in zip(rcs, logs, strict=True)]


@pytest.mark.slow
def test_two_nodes_train_one_model(s3: Any, data: dict[str, Any], tmp_path: Path) -> None:
    """torchrun --nnodes 2 --nproc-per-node 1, launched twice: disjoint shards, equal weights, one version."""
    logs = launch(s3, tmp_path, data["spec"], "ddp-1", [{}, {}])
    assert [x.split("\n", 1)[0] for x in logs] == ["rc=0", "rc=0"], "\n----\n".join(x[-3000:] for x in logs)
    both = "\n".join(logs)

    # each node pulled and validated its data once (its local rank 0); only rank 0 finished the run
    assert len(_events(both, "data-ready")) == 2
    assert len(_events(both, "finished")) == 1 and len(_events(both, "rank-finished")) == 1
    # disjoint shards: per epoch, the two ranks' sample indices do not overlap
    shards = _events(both, "shard")
    assert sorted((s["rank"], s["epoch"]) for s in shards) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for epoch in (0, 1):
        a, b = (set(s["indices"]) for s in sorted(shards, key=lambda s: s["rank"]) if s["epoch"] == epoch)
        assert a and b and not a & b, (epoch, sorted(a & b))
    # gradients synchronised: the same parameters on both ranks after training
    done = _events(both, "rank-done")
    assert len(done) == 2 and done[0]["paramsSha256"] == done[1]["paramsSha256"], done
    # exactly one version registered, by rank 0
    registry = data["registry"]
    assert [v.version for v in registry.versions("shapes")] == ["ddp-1"]
    report = registry.read_run_report("shapes", "ddp-1")
    assert report is not None and report.training.epochs_completed == 2


@pytest.mark.slow
def test_a_node_that_fails_fails_the_whole_group(s3: Any, data: dict[str, Any], tmp_path: Path) -> None:
    """Node 1 cannot read S3 (wrong key): node 0 fails too, at once (not after the collective timeout), nothing
    is registered."""
    t0 = time.monotonic()
    logs = launch(s3, tmp_path, data["spec"], "ddp-broken", [{}, {"AWS_SECRET_ACCESS_KEY": "wrong"}])
    seconds = time.monotonic() - t0
    assert all(not x.startswith("rc=0") for x in logs), "\n----\n".join(x[-3000:] for x in logs)
    assert seconds < 60, seconds
    assert "AccessDenied" in _events(logs[1], "failed")[0]["reason"]
    assert "Connection closed by peer" in _events(logs[0], "failed")[0]["reason"]  # gloo saw its peer go
    assert not _events("\n".join(logs), "finished")
    assert data["registry"].read_run_report("shapes", "ddp-broken") is None
    assert "ddp-broken" not in [v.version for v in data["registry"].versions("shapes")]
