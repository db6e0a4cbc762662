"""resources.nodes: 2 end to end: the real operator builds the Indexed Job + headless Service (or, with
KRETRAIN_MULTINODE=trainjob, a Kubeflow Trainer TrainJob that a stand-in of Kubeflow's controller turns into the
runtime's Job), the kubelet harness runs its two pods at once (torchrun, rendezvous on pod 0's DNS name, gloo on
CPU), one version is registered and the RetrainJob reaches a terminal state."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_distributed import _events

from emulator import path, rtj_path
from emulator.operator import OperatorProcess
from emulator.scenario import Cluster, create_s3_secret, operator_for, running_cluster, wait_for
from harness import podsecurity
from harness.kubeflow import KubeflowStandIn
from harness.kubelet import Kubelet
from kretrain.store import ObjectStore
from kretrain.trainer.synthetic import demo_eras, generate_dataset, upload_dataset

NS = "multinode"
CLASSES = ["circle", "square"]
BUDGET_S = 90


@pytest.fixture(scope="module", params=["indexedjob", "trainjob"])
def stack(
    s3: Any, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[Cluster, OperatorProcess, Kubelet, str]]:
    tmp = tmp_path_factory.mktemp("multinode")
    bucket = s3.new_bucket("data")
    generate_dataset(tmp / "data", demo_eras(images=32, classes=CLASSES)[:1], CLASSES, imgsz=32)
    store = ObjectStore(endpoint_url=s3.endpoint, access_key=s3.server.access_key, secret_key=s3.server.secret_key)
    upload_dataset(tmp / "data", store, f"s3://{bucket}/shapes")
    with running_cluster(s3, tmp, [NS]) as cluster:
        create_s3_secret(cluster, s3, NS)
        op = operator_for(cluster, s3, tmp / "operator.log", [NS])
        op.env["KRETRAIN_ALLOWED_CREDENTIALS_SECRETS"] = "s3-creds"
        op.env["KRETRAIN_MULTINODE"] = request.param
        if request.param == "trainjob":
            cluster.client.create(path("apiextensions.k8s.io", "v1", "customresourcedefinitions"), _kubeflow_crd())
        op.start().wait_ready()
        kubelet = Kubelet(cluster.client, tmp / "node", extra_env={"OMP_NUM_THREADS": "1"}, enforce=_enforceable())
        kubelet.start()
        try:
            if request.param == "indexedjob":
                yield cluster, op, kubelet, f"s3://{bucket}/shapes"
            else:
                with KubeflowStandIn(cluster.client) as kubeflow:
                    yield cluster, op, kubelet, f"s3://{bucket}/shapes"
                assert kubeflow.errors == [], kubeflow.errors
        finally:
            kubelet.stop()
            if kubelet.enforce:
                kubelet.cleanup()
            op.stop()


def _kubeflow_crd() -> dict[str, Any]:
    crd = Path(__file__).parent / "data" / "kubeflow-trainer" / "trainer.kubeflow.org_trainjobs.yaml"
    loaded: dict[str, Any] = yaml.load(crd.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return loaded


def _enforceable() -> bool:
    """Whether the pods can run as uid 1000 here: torchrun starts `kretrain` itself, so the pod's user must be able
    to exec the interpreter (not so where it lies under a root-only folder, e.g. pyenv in /root)."""
    if not podsecurity.can_enforce():
        return False
    nested = [sys.executable, "-c", f"import subprocess; subprocess.run([{sys.executable!r}, '-c', ''], check=True)"]
    who = podsecurity.Identity(uid=1000, gid=1000, fs_group=1000)
    done = subprocess.run(podsecurity.wrap(nested, who), capture_output=True, cwd="/", timeout=60)
    return done.returncode == 0


@pytest.mark.slow
def test_two_nodes_through_the_operator_register_one_version(
    stack: tuple[Cluster, OperatorProcess, Kubelet, str],
) -> None:
    cluster, op, kubelet, uri = stack
    t0 = time.monotonic()
    cluster.client.create(
        rtj_path(NS),
        {
            "apiVersion": "kretrain.dev/v1alpha1",
            "kind": "RetrainJob",
            "metadata": {"name": "two-nodes", "namespace": NS},
            "spec": {
                "model": "shapes",
                "dataset": {"uri": uri, "eras": ["era1"], "split": {"val": 0.25, "test": 0.25}},
                "strategy": {"type": "full", "baseWeights": "yolov8n.yaml", "epochs": 2, "imgsz": 32, "batch": 8,
                             "patience": 0, "optimizer": "AdamW", "lr0": 0.005, "augmentation": {"mosaic": 0.0},
                             "hyperparameters": {"workers": 0, "seed": 0, "nbs": 8, "warmup_epochs": 0}},
                "resources": {"nodes": 2, "gpus": 0, "cpu": "1", "memory": "4Gi"},
                "export": {"formats": []},
                "storage": {"credentialsSecret": "s3-creds"},
            },
        },
    )  # fmt: skip
    try:
        status = wait_for(
            "the two-node run to finish",
            lambda: (s := cluster.status(NS, "two-nodes")).get("state") in ("Promoted", "Rejected", "Failed") and s,
            timeout=BUDGET_S,
        )
    except AssertionError as exc:  # what the pods said, not only the operator
        pods = [(p.name, (p.root / "container.log").read_text(errors="replace")[-3000:])
                for s in kubelet.jobs.values() for p in s.last.values()]  # fmt: skip
        raise AssertionError(f"{exc}\npods: {pods}\nkubelet: {kubelet.errors}\n{op.tail(20)}") from None
    seconds = time.monotonic() - t0
    [state] = [s for s in kubelet.jobs.values() if s.namespace == NS]
    logs = {i: (p.root / "container.log").read_text(errors="replace") for i, p in state.last.items()}
    both = "\n".join(logs.values())
    assert status["state"] in ("Promoted", "Rejected"), (status, {i: log[-3000:] for i, log in logs.items()})
    assert seconds < BUDGET_S, seconds

    # one Indexed Job of two pods, both run once, at the same time, as index 0 and 1
    [job] = cluster.client.list(path("batch", "v1", "jobs", NS))
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
    assert job["status"]["succeeded"] == 2 and job["status"]["completedIndexes"] == "0-1", job["status"]
    assert sorted(state.last) == [0, 1] and len(state.attempts) == 2, state.attempts
    pods = cluster.client.list(path("", "v1", "pods", NS))
    assert sorted(p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] for p in pods) == ["0", "1"]
    if op.env["KRETRAIN_MULTINODE"] == "indexedjob":  # the operator's Job, with its headless Service
        [svc] = cluster.client.list(path("", "v1", "services", NS))
        assert job["spec"]["template"]["spec"]["subdomain"] == svc["metadata"]["name"]
        # torchrun reached pod 0 through the Service name the Job names, mapped to this host
        assert ".svc:29400" in " ".join(job["spec"]["template"]["spec"]["containers"][0]["command"])
        assert 29400 in state.ports
    else:  # the operator's TrainJob; the Job is the stand-in's (torchrun's static rendezvous from PET_*)
        [tj] = cluster.client.list(path("trainer.kubeflow.org", "v1alpha1", "trainjobs", NS))
        assert job["metadata"]["name"] == f"{tj['metadata']['name']}-node-0"
        assert [c["type"] for c in tj["status"]["conditions"]] == ["Complete"]
        assert cluster.client.list(path("", "v1", "services", NS)) == []

    # each node pulled its data once; two ranks trained; only rank 0 evaluated and registered
    assert len(_events(both, "data-ready")) == 2, both[-4000:]
    assert len(_events(both, "rank-done")) == 2
    assert len(_events(logs[0], "finished")) == 1 and not _events(logs[1], "finished")
    versions = [v.version for v in cluster.registry.versions("shapes")]
    assert versions == [status["candidate"]["version"]], versions
    assert kubelet.violations == [] and kubelet.errors == [], (kubelet.violations, kubelet.errors)
