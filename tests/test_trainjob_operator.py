"""The operator process with KRETRAIN_MULTINODE=auto on an emulator that serves Kubeflow Trainer's TrainJob CRD:
a nodes: 2 RetrainJob gets a TrainJob (no Job, no Service), the TrainJob's Failed condition fails the RetrainJob,
and every call the operator made is one the chart grants in that mode."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from test_trainjob import CRD, TJ_PATH, validate

from emulator import path
from emulator.operator import OperatorProcess
from emulator.scenario import Cluster, operator_for, running_cluster, wait_for
from kretrain.operator.kube import API_CALLS
from kretrain.operator.trainjob_kube import TRAINJOB_API_CALLS

NS = "kubeflow-team"


@pytest.fixture(scope="module")
def stack(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, OperatorProcess]]:
    tmp = tmp_path_factory.mktemp("trainjob-op")
    with running_cluster(s3, tmp, [NS]) as cluster:
        cluster.client.create(path("apiextensions.k8s.io", "v1", "customresourcedefinitions"), copy.deepcopy(CRD))
        op = operator_for(cluster, s3, tmp / "operator.log", [NS])
        op.env["KRETRAIN_MULTINODE"] = "auto"
        op.start().wait_ready()
        try:
            yield cluster, op
        finally:
            op.stop()


def test_a_two_node_run_trains_through_a_trainjob(stack: tuple[Cluster, OperatorProcess]) -> None:
    cluster, op = stack
    cluster.create_rtj(NS, "kf", "traffic", resources={"nodes": 2, "gpusPerNode": 1})
    [tj] = wait_for("the TrainJob", lambda: cluster.client.list(path(*TJ_PATH, NS)), timeout=30, op=op)
    validate({"apiVersion": tj["apiVersion"], "kind": tj["kind"], "metadata": {"name": tj["metadata"]["name"]},
              "spec": tj["spec"]})  # fmt: skip
    assert tj["spec"]["trainer"]["numNodes"] == 2 and tj["spec"]["trainer"]["numProcPerNode"] == 1
    assert [o["kind"] for o in tj["metadata"]["ownerReferences"]] == ["RetrainJob"]
    assert cluster.client.list(path("batch", "v1", "jobs", NS)) == []
    assert cluster.client.list(path("", "v1", "services", NS)) == []
    wait_for("state Training", lambda: cluster.status(NS, "kf").get("state") == "Training", timeout=30, op=op)

    cluster.client.patch(
        path(*TJ_PATH, NS, tj["metadata"]["name"], "status"),
        {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "JobSetFailed",
                                    "message": "node 1 failed", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}},
    )  # fmt: skip
    status = wait_for("state Failed", lambda: (s := cluster.status(NS, "kf")).get("state") == "Failed" and s,
                      timeout=30, op=op)  # fmt: skip
    failed = [c for c in status["conditions"] if c["type"] == "Failed"]
    assert failed[0]["reason"] == "JobSetFailed" and "node 1 failed" in failed[0]["message"], failed

    calls: dict[str, set[tuple[str, str]]] = cluster.server.call(lambda: dict(cluster.server.emulator.calls))
    made = calls.get("kretrain-operator", set()) | calls.get("kopf", set())
    assert {("create", "trainjobs.trainer.kubeflow.org"), ("get", "trainjobs.trainer.kubeflow.org")} <= made
    allowed = API_CALLS | TRAINJOB_API_CALLS
    assert made <= allowed, f"calls the chart does not grant: {sorted(made - allowed)}"
