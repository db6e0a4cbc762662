"""End to end with real training: a RetrainSchedule applied with kubectl -> era2's marker lands -> the schedule
creates a RetrainJob -> the kubelet harness runs the real trainer against SeaweedFS -> promoted ->
`kubectl get rts,rtj` shows the schedule's last decision next to the promoted run."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulator import path
from emulator.operator import OperatorProcess
from emulator.scenario import Cluster, create_s3_secret, operator_for, running_cluster, wait_for
from harness.kubelet import Kubelet
from kretrain.api import GROUP, SCHEDULE_PLURAL, VERSION
from kretrain.store import ObjectStore
from kretrain.trainer.synthetic import demo_eras, generate_dataset, upload_dataset

NS = "sched-e2e"
CLASSES = ["circle", "square", "triangle"]
TRAIN = {  # fast-learning settings for tiny synthetic data on CPU (as tests/test_e2e.py)
    "imgsz": 64,
    "batch": 16,
    "optimizer": "AdamW",
    "lr0": 0.005,
    "epochs": 15,
    "patience": 0,
    "augmentation": {"mosaic": 0.0},
    "hyperparameters": {"nbs": 16, "warmup_epochs": 0.5, "workers": 0, "seed": 0},
}


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args], input=stdin, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def stack(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, OperatorProcess, Path, str]]:
    tmp = tmp_path_factory.mktemp("sched-e2e")
    bucket = s3.new_bucket("data")
    generate_dataset(tmp / "data", demo_eras(images=160, classes=CLASSES), CLASSES, imgsz=64)
    store = ObjectStore(endpoint_url=s3.endpoint, access_key=s3.server.access_key, secret_key=s3.server.secret_key)
    upload_dataset(tmp / "data", store, f"s3://{bucket}/shapes")
    store.put_bytes(f"s3://{bucket}/shapes/era1/_READY", b"")  # era2 is uploaded but not marked complete yet
    with running_cluster(s3, tmp, [NS]) as cluster:
        create_s3_secret(cluster, s3, NS)
        kubeconfig = tmp / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {"apiVersion": "v1", "kind": "Config", "current-context": "e2e",
                 "clusters": [{"name": "e2e", "cluster": {"server": cluster.server.url}}],
                 "users": [{"name": "e2e", "user": {}}],
                 "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e", "namespace": NS}}]}
            )
        )  # fmt: skip
        op = operator_for(cluster, s3, tmp / "operator.log", [NS])
        op.env["KRETRAIN_ALLOWED_CREDENTIALS_SECRETS"] = "s3-creds"
        op.env["KRETRAIN_SCHEDULE_TICK"] = "0.5"
        op.start().wait_ready()
        with Kubelet(cluster.client, tmp / "node"):
            yield cluster, op, kubeconfig, f"s3://{bucket}/shapes"
        op.stop()
        assert "Traceback" not in op.log.read_text(), op.tail(200)


@pytest.mark.slow
def test_new_era_is_trained_by_the_harness_and_promoted(stack: Any) -> None:
    cluster, op, kubeconfig, uri = stack
    schedule = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RetrainSchedule",
        "metadata": {"name": "shapes", "namespace": NS},
        "spec": {
            "template": {
                "model": "shapes",
                "dataset": {"uri": uri, "split": {"val": 0.2, "test": 0.2}},
                "strategy": {"type": "full", **TRAIN},
                "resources": {"gpus": 0, "cpu": "2", "memory": "4Gi"},
                "storage": {"credentialsSecret": "s3-creds"},
            },
            "trigger": {"newEra": {"pollSeconds": 1}},
        },
    }
    kubectl(kubeconfig, "apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump(schedule))
    rts = path(GROUP, VERSION, SCHEDULE_PLURAL, NS, "shapes")

    def status() -> dict[str, Any]:
        return cluster.client.get(rts).get("status") or {}

    wait_for("the baseline", lambda: status().get("latestEra") == "era1", op=op)
    cluster.registry.store.put_bytes(f"{uri}/era2/_READY", b"")  # era2 lands

    def finished() -> dict[str, Any] | None:
        run = (cluster.rtj(NS, "shapes-era2") or {}).get("status") or {}
        return run if run.get("state") in ("Promoted", "Rejected", "Failed") else None

    run = wait_for("the era2 run to finish", finished, timeout=600, op=op)
    assert run["state"] == "Promoted", run.get("decision")
    assert cluster.rtj(NS, "shapes-era2")["spec"]["dataset"]["eras"] == ["era1", "era2"]  # type: ignore[index]
    assert cluster.registry.incumbent("shapes").version == run["candidate"]["version"]  # type: ignore[union-attr]
    assert status()["lastDecision"]["action"] == "Started" and status()["lastRun"] == "shapes-era2"
    table = kubectl(kubeconfig, "get", "rts,rtj", "-n", NS)
    print(table)
    assert "retrainschedule.kretrain.dev/shapes" in table and "Started" in table
    assert "retrainjob.kretrain.dev/shapes-era2" in table and "Promoted" in table
