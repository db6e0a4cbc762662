"""End to end without a cluster: kubectl apply -> the real operator -> the kubelet harness runs the real trainer
against SeaweedFS -> the operator reads the report and decides -> kubectl get shows the decision."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulator import path, rtj_path
from emulator.operator import OperatorProcess
from emulator.scenario import Cluster, create_s3_secret, operator_for, running_cluster, wait_for
from harness.kubelet import Kubelet
from kretrain.store import ObjectStore
from kretrain.trainer.synthetic import demo_eras, generate_dataset, upload_dataset

NS = "e2e"
CLASSES = ["circle", "square", "triangle"]
# Fast-learning settings for tiny synthetic data on CPU (AdamW, no mosaic, nominal batch = batch).
TRAIN = {
    "imgsz": 64,
    "batch": 16,
    "optimizer": "AdamW",
    "lr0": 0.005,
    "augmentation": {"mosaic": 0.0},
    "hyperparameters": {"nbs": 16, "warmup_epochs": 0.5, "workers": 0, "seed": 0},
}


def manifest(name: str, eras: list[str], strategy: dict[str, Any], dataset_uri: str) -> dict[str, Any]:
    return {
        "apiVersion": "kretrain.dev/v1alpha1",
        "kind": "RetrainJob",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "model": "shapes",
            "dataset": {"uri": dataset_uri, "eras": eras, "split": {"val": 0.2, "test": 0.2}},
            "strategy": {**TRAIN, **strategy},
            "resources": {"gpus": 0, "cpu": "2", "memory": "4Gi"},
            "storage": {"credentialsSecret": "s3-creds"},
            "promotion": {"maxEraRegression": 0.02},
        },
    }


@pytest.fixture(scope="module")
def stack(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, OperatorProcess, Path, str]]:
    tmp = tmp_path_factory.mktemp("e2e")
    bucket = s3.new_bucket("data")
    generate_dataset(tmp / "data", demo_eras(images=160, classes=CLASSES), CLASSES, imgsz=64)
    store = ObjectStore(endpoint_url=s3.endpoint, access_key=s3.server.access_key, secret_key=s3.server.secret_key)
    upload_dataset(tmp / "data", store, f"s3://{bucket}/shapes")
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
        op.env["KRETRAIN_ALLOWED_CREDENTIALS_SECRETS"] = "s3-creds"  # the operator policy allows the test's Secret
        op.start().wait_ready()
        with Kubelet(cluster.client, tmp / "node"):
            yield cluster, op, kubeconfig, f"s3://{bucket}/shapes"
        op.stop()


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args], input=stdin, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def run_to_the_end(stack: tuple[Cluster, OperatorProcess, Path, str], doc: dict[str, Any]) -> dict[str, Any]:
    cluster, op, kubeconfig, _ = stack
    kubectl(kubeconfig, "apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump(doc))
    name = doc["metadata"]["name"]

    def terminal() -> dict[str, Any] | None:
        status = cluster.status(NS, name)
        return status if status.get("state") in ("Promoted", "Rejected", "Failed") else None

    return wait_for(f"{name} to finish", terminal, timeout=600, op=op)  # type: ignore[no-any-return]


@pytest.mark.slow
def test_first_model_is_promoted_and_naive_incremental_is_rejected_for_forgetting(stack: Any) -> None:
    cluster, _, kubeconfig, uri = stack
    first = run_to_the_end(stack, manifest("first", ["era1"], {"type": "full", "epochs": 15, "patience": 0}, uri))
    assert first["state"] == "Promoted", first.get("decision")
    version = first["candidate"]["version"]
    assert cluster.registry.incumbent("shapes").version == version
    assert first["evaluation"]["candidate"]["eras"]["era1"]["mAP50-95"] > 0.05

    naive = {"type": "incremental", "replay": {"enabled": False}, "epochs": 10, "patience": 0}
    second = run_to_the_end(stack, manifest("naive", ["era1", "era2"], naive, uri))
    assert second["state"] == "Rejected", second.get("decision")
    forgot = [r for r in second["decision"]["reasons"] if "Era 'era1' regressed" in r]
    assert forgot, second["decision"]["reasons"]
    era1 = second["evaluation"]["eras"]["era1"]
    assert era1["delta"] < -0.02 and era1["incumbent"] == pytest.approx(
        first["evaluation"]["candidate"]["eras"]["era1"]["mAP50-95"], abs=1e-6
    )
    assert cluster.registry.incumbent("shapes").version == version  # the pointer did not move

    table = kubectl(kubeconfig, "get", "retrainjobs", "-n", NS)
    rows = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert "Promoted" in rows["first"] and "Rejected" in rows["naive"], table
    assert second["candidateMetric"] in rows["naive"] and second["incumbentMetric"] in rows["naive"], table
    described = kubectl(kubeconfig, "get", "rtj", "naive", "-n", NS, "-o", "yaml")
    assert "regressed" in described
    jobs = cluster.client.list(path("batch", "v1", "jobs", NS))
    assert len(jobs) == 2 and all(j["status"].get("succeeded") == 1 for j in jobs)
    assert cluster.client.get(rtj_path(NS, "naive"))["status"]["decision"]["promoted"] is False
