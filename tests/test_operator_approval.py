"""promotion.approval Manual with the real operator process, the API emulator, SeaweedFS and kubectl: a passing
candidate waits in AwaitingApproval; `kubectl annotate kretrain.dev/approve=<version>` promotes it; the reject
annotation rejects another."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_kubectl import Kubectl

from emulator import sim
from emulator.operator import OperatorProcess
from emulator.scenario import Cluster, conditions, operator_for, running_cluster, settled, started, wait_for
from kretrain.api.conditions import Cond, Reason

NS = "approval"
INCUMBENT = {"e1": 0.50, "e2": 0.50, "e3": 0.40}
BETTER = {"e1": 0.60, "e2": 0.60, "e3": 0.60}

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs the kubectl client")


@pytest.fixture(scope="module")
def cluster(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(s3, tmp_path_factory.mktemp("weights"), [NS]) as c:
        yield c


@pytest.fixture(scope="module")
def operator(cluster: Cluster, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    op = operator_for(cluster, s3, tmp_path_factory.mktemp("op") / "operator.log", [NS])
    op.start().wait_ready()
    yield op
    op.stop()
    assert "Traceback" not in op.log.read_text(), op.tail(200)


def awaiting(cluster: Cluster, operator: OperatorProcess, name: str, model: str) -> str:
    """Create a Manual RetrainJob whose candidate passes the gate; return its run id once it waits."""
    sim.seed_incumbent(cluster.registry, model, "seed-1", INCUMBENT, cluster.tmp)
    cluster.create_rtj(NS, name, model, promotion={"approval": "Manual", "uncertainty": "pointEstimate"})
    run_id: str = started(cluster, operator, NS, name)["runId"]
    cluster.train(model, run_id, BETTER, INCUMBENT)
    sim.complete_job(cluster.client, NS, run_id)
    status = wait_for(
        f"{name} to await approval",
        lambda: (s := cluster.status(NS, name)).get("state") == "AwaitingApproval" and s,
        op=operator,
    )
    assert conditions(status)[Cond.PROMOTED]["reason"] == Reason.AWAITING_APPROVAL
    assert f"kretrain.dev/approve={run_id}" in conditions(status)[Cond.PROMOTED]["message"]
    assert cluster.registry.incumbent(model).version == "seed-1"  # type: ignore[union-attr]
    return run_id


def test_wait_annotate_promoted(cluster: Cluster, operator: OperatorProcess, tmp_path: Path) -> None:
    kubectl = Kubectl(cluster.server.url, tmp_path / "home")
    run_id = awaiting(cluster, operator, "approve", "m-approve")
    kubectl("annotate", "-n", NS, "retrainjob", "approve", "kretrain.dev/approve=seed-1")  # not the candidate
    assert cluster.status(NS, "approve")["state"] == "AwaitingApproval"
    kubectl("annotate", "--overwrite", "-n", NS, "retrainjob", "approve", f"kretrain.dev/approve={run_id}")
    status = settled(cluster, operator, NS, "approve", timeout=40)
    assert status["state"] == "Promoted", status.get("decision")
    assert any("Approved by hand" in r for r in status["decision"]["reasons"])
    assert cluster.registry.incumbent("m-approve").version == run_id  # type: ignore[union-attr]
    assert "AwaitingApproval" in kubectl("get", "events", "-n", NS, "-o", "custom-columns=R:.reason")


def test_reject_annotation_rejects(cluster: Cluster, operator: OperatorProcess, tmp_path: Path) -> None:
    kubectl = Kubectl(cluster.server.url, tmp_path / "home")
    run_id = awaiting(cluster, operator, "reject", "m-reject")
    kubectl("annotate", "-n", NS, "retrainjob", "reject", f"kretrain.dev/reject={run_id}")
    status = settled(cluster, operator, NS, "reject", timeout=40)
    assert status["state"] == "Rejected" and conditions(status)[Cond.PROMOTED]["reason"] == Reason.APPROVAL_REJECTED
    assert cluster.registry.incumbent("m-reject").version == "seed-1"  # type: ignore[union-attr]
