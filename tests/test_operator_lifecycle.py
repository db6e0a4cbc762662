"""The real operator (a `kretrain operator` process) against the API emulator and SeaweedFS: every lifecycle path."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulator import path, rtj_path, sim
from emulator.operator import OperatorProcess
from emulator.scenario import ERAS, Cluster, conditions, operator_for, running_cluster, settled, started, wait_for
from kretrain.api.conditions import Cond, Reason, Status
from kretrain.operator.kube import API_CALLS

ROOT = Path(__file__).resolve().parent.parent
INCUMBENT = {"e1": 0.50, "e2": 0.50, "e3": 0.40}
NAMESPACES = ["promote", "reject", "failure", "invalid", "suspend", "delete", "dryrun", "raced", "fallback", "metrics"]


@pytest.fixture(scope="module")
def cluster(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(s3, tmp_path_factory.mktemp("weights"), NAMESPACES) as c:
        yield c


@pytest.fixture(scope="module")
def operator(cluster: Cluster, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    op = operator_for(cluster, s3, tmp_path_factory.mktemp("op") / "operator.log", NAMESPACES)
    op.start().wait_ready()
    yield op
    op.stop()
    assert "Traceback" not in op.log.read_text(), op.tail(200)


@pytest.fixture(scope="module")
def decided(cluster: Cluster, operator: OperatorProcess) -> None:
    """A promoted, a rejected (GateFailed) and an invalid RetrainJob in namespace "metrics".

    The metrics and RBAC tests count what these did, so they pass alone and in any order.
    """
    for model in ("m-metrics-promote", "m-metrics-reject"):
        sim.seed_incumbent(cluster.registry, model, "seed-1", INCUMBENT, cluster.tmp)
    cluster.create_rtj("metrics", "promote", "m-metrics-promote")
    cluster.create_rtj("metrics", "reject", "m-metrics-reject")
    cluster.create_rtj(
        "metrics", "invalid", "m-metrics-bad", dataset={"uri": "s3://data/set", "eras": ERAS, "newEras": 4}
    )
    scores = {"promote": {"e1": 0.55, "e2": 0.56, "e3": 0.50}, "reject": {"e1": 0.40, "e2": 0.55, "e3": 0.70}}
    for name, metrics in scores.items():
        run_id = started(cluster, operator, "metrics", name)["runId"]
        cluster.train(f"m-metrics-{name}", run_id, metrics, INCUMBENT)
        sim.complete_job(cluster.client, "metrics", run_id)
    states = {name: settled(cluster, operator, "metrics", name)["state"] for name in ("promote", "reject", "invalid")}
    assert states == {"promote": "Promoted", "reject": "Rejected", "invalid": "Failed"}


def test_success_is_promoted(cluster: Cluster, operator: OperatorProcess) -> None:
    model = "m-promote"
    seed = sim.seed_incumbent(cluster.registry, model, "seed-1", INCUMBENT, cluster.tmp)
    obj = cluster.create_rtj("promote", "run", model)
    status = started(cluster, operator, "promote", "run")
    run_id = f"promote-run-{obj['metadata']['uid'][:8]}"
    assert status["runId"] == run_id and status["jobName"] == run_id and status["state"] == "Training"
    assert status["incumbent"]["version"] == "seed-1"
    [job] = cluster.jobs("promote")
    assert job["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KRETRAIN_RUN_ID"] == run_id and env["KRETRAIN_INCUMBENT_VERSION"] == seed.version
    cm = cluster.client.get(path("", "v1", "configmaps", "promote", run_id))
    assert yaml.safe_load(cm["data"]["spec.json"])["storage"]["registry"] == cluster.registry_uri
    assert cm["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]

    cluster.registry.write_progress(
        model, run_id, {"epoch": 2, "epochs": 3, "etaSeconds": 5.0, "metrics": {"mAP50": 0.4}}
    )
    wait_for(
        "progress", lambda: cluster.status("promote", "run").get("progress", {}).get("display") == "2/3", op=operator
    )

    cluster.train(model, run_id, {"e1": 0.55, "e2": 0.56, "e3": 0.50}, INCUMBENT)
    sim.complete_job(cluster.client, "promote", run_id)
    status = settled(cluster, operator, "promote", "run")
    assert status["state"] == "Promoted", status
    assert status["decision"]["promoted"] is True and status["decision"]["reasons"]
    assert status["candidate"]["version"] == run_id
    assert status["candidateMetric"] == "0.5367" and status["incumbentMetric"] == "0.4667"
    assert status["evaluation"]["eras"]["e3"]["delta"] == pytest.approx(0.10)
    assert conditions(status)[Cond.PROMOTED]["status"] == Status.TRUE
    assert cluster.registry.incumbent(model).version == run_id
    assert cluster.promotions(model, run_id) == 1
    reasons = [r for _, r, _ in cluster.events("promote")]
    assert Reason.JOB_CREATED in reasons and Reason.PROMOTED in reasons


def test_forgetting_is_rejected(cluster: Cluster, operator: OperatorProcess) -> None:
    model = "m-reject"
    sim.seed_incumbent(cluster.registry, model, "seed-1", INCUMBENT, cluster.tmp)
    cluster.create_rtj("reject", "run", model)
    run_id = started(cluster, operator, "reject", "run")["runId"]
    # Better pooled (new era much better), but era e1 dropped by 0.10: forgetting.
    cluster.train(model, run_id, {"e1": 0.40, "e2": 0.55, "e3": 0.70}, INCUMBENT)
    sim.complete_job(cluster.client, "reject", run_id)
    status = settled(cluster, operator, "reject", "run")
    assert status["state"] == "Rejected" and status["decision"]["promoted"] is False
    assert any("e1" in r for r in status["decision"]["reasons"])
    assert conditions(status)[Cond.PROMOTED]["reason"] == Reason.GATE_FAILED
    assert cluster.registry.incumbent(model).version == "seed-1"
    assert ("Warning", Reason.GATE_FAILED) in [(t, r) for t, r, _ in cluster.events("reject")]


def test_rejected_incremental_falls_back_to_a_full_retrain(cluster: Cluster, operator: OperatorProcess) -> None:
    model = "m-fallback"
    sim.seed_incumbent(cluster.registry, model, "seed-1", INCUMBENT, cluster.tmp)
    cluster.create_rtj(
        "fallback", "run", model, strategy={"type": "incremental", "fallbackToFull": True, "replay": {"fraction": 0.2}}
    )
    first = started(cluster, operator, "fallback", "run")
    # The incremental candidate forgets era e1: rejected, and a full retrain starts instead of a verdict.
    cluster.train(model, first["runId"], {"e1": 0.30, "e2": 0.60, "e3": 0.70}, INCUMBENT)
    sim.complete_job(cluster.client, "fallback", first["jobName"])
    status = wait_for(
        "the fallback Job",
        lambda: (s := cluster.status("fallback", "run")).get("fallback") and s,
        op=operator,
    )
    full_run = f"{first['runId']}-full"
    assert status["runId"] == full_run and status["jobName"] == full_run and status["state"] == "Training"
    assert status["fallback"]["runId"] == first["runId"] and status["fallback"]["decision"]["passed"] is False
    assert any("Era 'e1' regressed" in r for r in status["fallback"]["decision"]["reasons"])
    assert "decision" not in status and conditions(status)[Cond.TRAINING]["reason"] == Reason.FALLBACK_TO_FULL
    jobs_now = {j["metadata"]["name"]: j for j in cluster.jobs("fallback")}
    assert set(jobs_now) == {first["jobName"], full_run}
    full_spec = yaml.safe_load(
        cluster.client.get(path("", "v1", "configmaps", "fallback", full_run))["data"]["spec.json"]
    )
    assert full_spec["strategy"]["type"] == "full" and "replay" not in full_spec["strategy"]
    assert full_spec["strategy"]["baseWeights"] == "incumbent" and not full_spec["strategy"]["fallbackToFull"]

    cluster.train(model, full_run, {"e1": 0.55, "e2": 0.56, "e3": 0.50}, INCUMBENT)
    sim.complete_job(cluster.client, "fallback", full_run)
    status = settled(cluster, operator, "fallback", "run")
    assert status["state"] == "Promoted" and status["candidate"]["version"] == full_run
    assert cluster.registry.incumbent(model).version == full_run
    assert cluster.promotions(model, full_run) == 1 and cluster.promotions(model, first["runId"]) == 0
    assert len(cluster.jobs("fallback")) == 2
    reasons = [r for _, r, _ in cluster.events("fallback")]
    assert Reason.FALLBACK_TO_FULL in reasons and Reason.PROMOTED in reasons


def test_dry_run_decides_but_does_not_promote(cluster: Cluster, operator: OperatorProcess) -> None:
    model = "m-dry"
    sim.seed_incumbent(cluster.registry, model, "seed-1", INCUMBENT, cluster.tmp)
    cluster.create_rtj("dryrun", "run", model, promotion={"mode": "dryRun"})
    run_id = started(cluster, operator, "dryrun", "run")["runId"]
    cluster.train(model, run_id, {"e1": 0.6, "e2": 0.6, "e3": 0.6}, INCUMBENT)
    sim.complete_job(cluster.client, "dryrun", run_id)
    status = settled(cluster, operator, "dryrun", "run")
    assert status["decision"]["passed"] is True and status["decision"]["promoted"] is False
    assert conditions(status)[Cond.PROMOTED]["reason"] == Reason.DRY_RUN
    assert cluster.registry.incumbent(model).version == "seed-1"


def test_incumbent_changed_during_the_run_is_not_overwritten(cluster: Cluster, operator: OperatorProcess) -> None:
    model = "m-raced"
    sim.seed_incumbent(cluster.registry, model, "seed-1", INCUMBENT, cluster.tmp)
    cluster.create_rtj("raced", "run", model)
    run_id = started(cluster, operator, "raced", "run")["runId"]
    cluster.train(model, run_id, {"e1": 0.6, "e2": 0.6, "e3": 0.6}, INCUMBENT)
    # Someone else promotes another version while this run is being evaluated.
    other = sim.train(cluster.registry, model, "other-run", {"e1": 0.7, "e2": 0.7, "e3": 0.7}, INCUMBENT, cluster.tmp)
    cluster.registry.promote(model, other.run_id, expected="seed-1", reason="manual", actor="tests")
    sim.complete_job(cluster.client, "raced", run_id)
    status = settled(cluster, operator, "raced", "run")
    assert status["state"] == "Rejected" and status["decision"]["passed"] is True
    assert conditions(status)[Cond.PROMOTED]["reason"] == Reason.INCUMBENT_CHANGED
    assert any("other-run" in r for r in status["decision"]["reasons"])
    assert cluster.registry.incumbent(model).version == "other-run"


def test_job_failure_reports_reason_and_termination_message(cluster: Cluster, operator: OperatorProcess) -> None:
    cluster.create_rtj("failure", "run", "m-fail")
    job = started(cluster, operator, "failure", "run")["jobName"]
    sim.fail_job(
        cluster.client, "failure", job, "BackoffLimitExceeded", "Job has reached the specified backoff limit",
        "data validation failed: era e2 has 12% unreadable images (limit 5%)",
    )  # fmt: skip
    status = settled(cluster, operator, "failure", "run")
    failed = conditions(status)["Failed"]
    assert status["state"] == "Failed" and failed["reason"] == "BackoffLimitExceeded"
    assert "12% unreadable images" in failed["message"] and "backoff limit" in failed["message"]
    assert conditions(status)[Cond.TRAINING]["status"] == Status.FALSE


def test_invalid_spec_fails_naming_the_field(cluster: Cluster, operator: OperatorProcess) -> None:
    # Valid for the CRD schema, invalid for the models (a cross-field rule).
    cluster.create_rtj("invalid", "run", "m-bad", dataset={"uri": "s3://data/set", "eras": ERAS, "newEras": 4})
    status = settled(cluster, operator, "invalid", "run")
    failed = conditions(status)["Failed"]
    assert status["state"] == "Failed" and failed["reason"] == Reason.INVALID_SPEC
    assert "spec.dataset" in failed["message"] and "newEras (4)" in failed["message"]
    assert cluster.jobs("invalid") == []
    assert ("Warning", Reason.INVALID_SPEC) in [(t, r) for t, r, _ in cluster.events("invalid")]
    assert operator.alive


def test_suspend_and_resume(cluster: Cluster, operator: OperatorProcess) -> None:
    cluster.create_rtj("suspend", "run", "m-susp", suspend=True)
    status = started(cluster, operator, "suspend", "run")
    assert status["state"] == "Suspended"
    assert cluster.jobs("suspend")[0]["spec"]["suspend"] is True
    cluster.client.patch(rtj_path("suspend", "run"), {"spec": {"suspend": False}})
    wait_for("resume", lambda: cluster.status("suspend", "run").get("state") == "Training", op=operator)
    assert cluster.jobs("suspend")[0]["spec"]["suspend"] is False
    assert conditions(cluster.status("suspend", "run"))[Cond.SUSPENDED]["status"] == Status.FALSE
    cluster.client.patch(rtj_path("suspend", "run"), {"spec": {"suspend": True}})
    wait_for("suspend", lambda: cluster.status("suspend", "run").get("state") == "Suspended", op=operator)
    assert cluster.jobs("suspend")[0]["spec"]["suspend"] is True
    assert cluster.jobs_created_for(cluster.rtj("suspend", "run")["metadata"]["uid"]) == 1
    reasons = [r for _, r, _ in cluster.events("suspend")]
    assert Reason.RESUMED in reasons and reasons.count(Reason.SUSPENDED) >= 2


def test_deletion_cascades_to_the_job_and_keeps_registry_versions(cluster: Cluster, operator: OperatorProcess) -> None:
    model = "m-del"
    cluster.create_rtj("delete", "run", model)
    run_id = started(cluster, operator, "delete", "run")["runId"]

    # While the poll timer runs, Kopf blocks deletion with exactly the operator's finalizer (settings.finalizer)...
    def finalizers() -> Any:
        return cluster.rtj("delete", "run")["metadata"].get("finalizers")

    wait_for("the finalizer", lambda: finalizers() == ["kretrain.dev/finalizer"], op=operator)
    cluster.train(model, run_id, {"e1": 0.6, "e2": 0.6, "e3": 0.6}, None)
    sim.complete_job(cluster.client, "delete", run_id)
    assert settled(cluster, operator, "delete", "run")["state"] == "Promoted"
    # ...and releases it once the run is terminal (no timer left to stop, the delete handler is optional).
    wait_for("the finalizer to be released", lambda: not finalizers(), op=operator)
    cluster.client.delete(rtj_path("delete", "run"))
    wait_for("the RetrainJob to go", lambda: cluster.rtj("delete", "run") is None, op=operator)
    assert cluster.jobs("delete") == []
    assert cluster.client.get_or_none(path("", "v1", "configmaps", "delete", run_id)) is None
    assert [v.version for v in cluster.registry.versions(model)] == [run_id]
    assert cluster.registry.incumbent(model).version == run_id


@pytest.mark.usefixtures("decided")
def test_metrics_endpoint_counts_states_and_decisions(operator: OperatorProcess) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert f'kretrain_decisions_total{{outcome="promoted",reason="{Reason.PROMOTED}"}}' in text
    assert f'kretrain_decisions_total{{outcome="rejected",reason="{Reason.GATE_FAILED}"}}' in text
    assert f'kretrain_decisions_total{{outcome="failed",reason="{Reason.INVALID_SPEC}"}}' in text
    assert 'kretrain_retrainjobs{state="Failed"}' in text
    assert "kretrain_handler_seconds_count" in text


@pytest.mark.usefixtures("decided")
def test_every_api_call_is_declared_for_rbac(cluster: Cluster) -> None:
    calls: dict[str, set[tuple[str, str]]] = cluster.server.call(lambda: dict(cluster.server.emulator.calls))
    made = calls.get("kretrain-operator", set()) | calls.get("kopf", set())
    assert ("create", "jobs.batch") in made and ("patch", "retrainjobs.kretrain.dev/status") in made
    assert made <= API_CALLS, f"undeclared API calls: {sorted(made - API_CALLS)}"
