"""`kretrain train` in the training pod as the operator builds it, run by the enforcing kubelet harness: as uid 1000
with only scratch/cache/tmp (and /dev/shm) writable, it trains, evaluates and registers, writing nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator import rtj_path
from emulator.operator import OperatorProcess
from emulator.scenario import Cluster, create_s3_secret, operator_for, running_cluster, wait_for
from harness import podsecurity
from harness.kubelet import Kubelet
from kretrain.store import ObjectStore
from kretrain.trainer.synthetic import demo_eras, generate_dataset, upload_dataset

pytestmark = pytest.mark.skipif(not podsecurity.can_enforce(), reason="needs root, Linux and setpriv")

NS = "podsec-e2e"
CLASSES = ["circle", "square"]
WRITABLE = {"scratch", "cache", "tmp", "dshm"}


@pytest.fixture(scope="module")
def stack(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, OperatorProcess, Kubelet, str]]:
    tmp = tmp_path_factory.mktemp("podsec")
    bucket = s3.new_bucket("data")
    generate_dataset(tmp / "data", demo_eras(images=30, classes=CLASSES, names=("era1", "era2")), CLASSES, imgsz=32)
    store = ObjectStore(endpoint_url=s3.endpoint, access_key=s3.server.access_key, secret_key=s3.server.secret_key)
    upload_dataset(tmp / "data", store, f"s3://{bucket}/shapes")
    with running_cluster(s3, tmp, [NS]) as cluster:
        create_s3_secret(cluster, s3, NS)
        op = operator_for(cluster, s3, tmp / "operator.log", [NS])
        op.env["KRETRAIN_ALLOWED_CREDENTIALS_SECRETS"] = "s3-creds"
        op.start().wait_ready()
        kubelet = Kubelet(cluster.client, tmp / "node", enforce=True).start()
        try:
            yield cluster, op, kubelet, f"s3://{bucket}/shapes"
        finally:
            kubelet.stop()
            kubelet.cleanup()
            op.stop()


def test_kretrain_train_as_uid_1000_writes_only_its_volumes(
    stack: tuple[Cluster, OperatorProcess, Kubelet, str],
) -> None:
    cluster, op, kubelet, uri = stack
    cluster.client.create(
        rtj_path(NS),
        {
            "apiVersion": "kretrain.dev/v1alpha1",
            "kind": "RetrainJob",
            "metadata": {"name": "first", "namespace": NS},
            "spec": {
                "model": "shapes",
                "dataset": {"uri": uri, "eras": ["era1"], "split": {"val": 0.25, "test": 0.25}},
                "strategy": {"type": "full", "epochs": 1, "imgsz": 32, "batch": 8, "patience": 0,
                             "hyperparameters": {"workers": 0, "seed": 0, "nbs": 8}},
                "resources": {"gpus": 0, "cpu": "2", "memory": "4Gi"},
                "storage": {"credentialsSecret": "s3-creds"},
            },
        },
    )  # fmt: skip
    status = wait_for(
        "the run to finish",
        lambda: (s := cluster.status(NS, "first")).get("state") in ("Promoted", "Rejected", "Failed") and s,
        timeout=300,
        op=op,
    )
    [state] = [s for s in kubelet.jobs.values() if s.namespace == NS]
    assert state.pod is not None
    log = (state.pod.root / "container.log").read_text(errors="replace")
    # 1 epoch on 15 images: the gate may reject it; what counts is that the run trained and registered its candidate
    assert status["state"] in ("Promoted", "Rejected") and status["candidate"]["version"], (status, log[-3000:])
    assert kubelet.ran_as[state.pod.name].uid == 1000 and kubelet.ran_as[state.pod.name].gid == 1000
    assert kubelet.violations == [], kubelet.violations
    volumes = state.pod.root / "volumes"
    owners = {v.name: {p.lstat().st_uid for p in v.rglob("*")} for v in volumes.iterdir()}
    assert owners["scratch"] == {1000} and 1000 in owners["tmp"], owners  # it wrote there, as uid 1000
    assert all(owners[v] <= {0} for v in owners if v not in WRITABLE), owners  # and nowhere else in the pod
    assert not [p for p in Path(state.pod.root).iterdir() if p.lstat().st_uid == 1000 and p.name != "termination-log"]
