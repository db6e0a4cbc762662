"""The Argo CD health checks in examples/gitops/argocd/health run in a real Lua 5.1 (Argo CD's gopher-lua dialect)
on RetrainJob and RetrainSchedule objects whose status comes from kretrain's status models and the operator's own
status writer; the argocd-cm patch carries the scripts verbatim."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

lua51 = pytest.importorskip("lupa.lua51")

from kretrain.api import RetrainJob, RetrainSchedule  # noqa: E402
from kretrain.api.schedule import RetrainScheduleStatus, ScheduleDecision  # noqa: E402
from kretrain.api.status import (  # noqa: E402
    Condition,
    Decision,
    Fallback,
    ModelRef,
    Progress,
    RetrainJobStatus,
)
from kretrain.operator.status_patch import failed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HEALTH = ROOT / "examples" / "gitops" / "argocd" / "health"
JOB_MANIFEST = ROOT / "examples" / "gitops" / "retrainjobs" / "traffic-detector-2026-10-full.yaml"
SCHEDULE_MANIFEST = ROOT / "examples" / "gitops-schedule" / "retrainschedule.yaml"
NOW = "2026-11-02T03:00:00Z"
SHA = "ab" * 32
ARGO_HEALTH = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def run_lua(script: Path, obj: dict[str, Any]) -> dict[str, str]:
    """Argo CD's contract: the object is the global `obj`, the script returns a table with status and message.
    The runtime has no io/os/require/load*, as in Argo CD's sandbox, so a script needing them fails here too."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=False, register_eval=False, register_builtins=False)
    g = lua.globals()
    for name in ("io", "os", "require", "dofile", "loadfile", "load", "loadstring", "package", "debug"):
        g[name] = None
    g.obj = lua.table_from(copy.deepcopy(obj), recursive=True)
    hs = lua.execute(script.read_text())
    result = {k: v for k, v in hs.items()}
    assert set(result) == {"status", "message"}, result
    assert result["status"] in ARGO_HEALTH
    assert isinstance(result["message"], str) and len(result["message"].encode()) <= 1024
    return result


def job(status: RetrainJobStatus | dict[str, Any] | None, *, generation: int = 1, **meta: Any) -> dict[str, Any]:
    """The example RetrainJob with a status; a model's status is validated with the whole object."""
    obj = yaml.safe_load(JOB_MANIFEST.read_text())
    obj["metadata"].update(namespace="ml-training", generation=generation, **meta)
    if isinstance(status, RetrainJobStatus):
        obj["status"] = status.dump()
        RetrainJob.from_manifest(obj)
    elif status is not None:
        obj["status"] = status
    return obj


def cond(type_: str, status: str, reason: str, message: str = "") -> Condition:
    return Condition(type=type_, status=status, reason=reason, message=message, last_transition_time=NOW)  # type: ignore[arg-type]


def decided(state: str, promoted: bool, passed: bool, reason: str, summary: str) -> RetrainJobStatus:
    ref = ModelRef(version="20261102-0300-abc", uri="s3://ml-models/registry/traffic-detector/w.pt", sha256=SHA)
    return RetrainJobStatus(
        state=state,  # type: ignore[arg-type]
        observed_generation=1,
        run_id="20261102-0300-abc",
        candidate=ref,
        decision=Decision(promoted=promoted, passed=passed, summary=summary, reasons=[summary], decided_at=NOW),
        conditions=[cond("Training", "False", "JobSucceeded"), cond("Promoted", str(promoted), reason, summary)],
    )


def operator_failed(reason: str, message: str) -> dict[str, Any]:
    """The status the operator's own writer (status_patch.failed) produces for a failed run."""
    body = job(
        RetrainJobStatus(state="Training", observed_generation=1, conditions=[cond("Training", "True", "JobCreated")])
    )
    out = failed(body, reason, message, NOW)
    status = {**body["status"], **out.status}
    RetrainJobStatus.model_validate(status)
    return job(status)


REJECTED_SUMMARY = "mAP50-95 0.612 vs 0.630: era 2026-q1 regressed by 0.031 (max 0.02)"
JOB_CASES: list[tuple[str, Callable[[], dict[str, Any]], str, str]] = [
    ("no-status", lambda: job(None), "Progressing", "Waiting for the kretrain operator"),
    (
        "pending",
        lambda: job(RetrainJobStatus(state="Pending", run_id="r1", observed_generation=1)),
        "Progressing",
        "Pending: waiting to start the Job",
    ),
    (
        "pending-registry",
        lambda: job(
            RetrainJobStatus(
                state="Pending",
                run_id="r1",
                observed_generation=1,
                conditions=[cond("Training", "False", "WaitingForRegistry", "cannot read the incumbent")],
            )
        ),
        "Progressing",
        "Pending: WaitingForRegistry: cannot read the incumbent",
    ),
    (
        "training-epoch",
        lambda: job(
            RetrainJobStatus(
                state="Training",
                observed_generation=1,
                progress=Progress(epoch=3, epochs=10, display="3/10"),
                conditions=[cond("DataReady", "True", "DataValidated"), cond("Training", "True", "JobCreated")],
            )
        ),
        "Progressing",
        "Training (epoch 3/10)",
    ),
    (
        "training-fallback",
        lambda: job(
            RetrainJobStatus(
                state="Training",
                observed_generation=1,
                fallback=Fallback(run_id="r-incr", decision=Decision(promoted=False, passed=False, summary="worse")),
            )
        ),
        "Progressing",
        "full retrain after the rejected incremental run r-incr",
    ),
    (
        "evaluating",
        lambda: job(RetrainJobStatus(state="Evaluating", observed_generation=1)),
        "Progressing",
        "Evaluating",
    ),
    (
        "suspended-by-spec",
        lambda: (
            job(
                RetrainJobStatus(
                    state="Suspended",
                    observed_generation=2,
                    conditions=[cond("Suspended", "True", "SuspendedBySpec", "spec.suspend is true")],
                ),
                generation=2,
            )
            | {"spec": {**yaml.safe_load(JOB_MANIFEST.read_text())["spec"], "suspend": True}}
        ),
        "Suspended",
        "SuspendedBySpec: spec.suspend is true",
    ),
    (
        "queued-kueue",
        lambda: job(
            RetrainJobStatus(
                state="Suspended",
                observed_generation=1,
                conditions=[cond("Suspended", "True", "JobSuspended", "Job traffic-x is suspended")],
            )
        ),
        "Progressing",
        "Queued: JobSuspended: Job traffic-x is suspended",
    ),
    (
        "queued-waiting-for-admission",
        lambda: job(
            RetrainJobStatus(
                state="Queued",
                observed_generation=1,
                conditions=[cond("Queued", "True", "WaitingForAdmission", "the Job waits for admission by Kueue")],
            )
        ),
        "Progressing",
        "Queued: WaitingForAdmission: the Job waits for admission by Kueue",
    ),
    (
        "queued-after-preemption",
        lambda: job(
            RetrainJobStatus(
                state="Queued",
                observed_generation=1,
                conditions=[cond("Queued", "True", "Preempted", "Kueue suspended Job traffic-x again")],
            )
        ),
        "Progressing",
        "Queued: Preempted: Kueue suspended Job traffic-x again",
    ),
    (
        "queued-without-condition",
        lambda: job(RetrainJobStatus(state="Queued", observed_generation=1)),
        "Progressing",
        "Queued: waiting for admission by Kueue",
    ),
    (
        "resume-not-seen-yet",
        lambda: job(RetrainJobStatus(state="Suspended", observed_generation=2), generation=3),
        "Progressing",
        "act on generation 3",
    ),
    (
        "promoted",
        lambda: job(decided("Promoted", True, True, "Promoted", "mAP50-95 0.655 vs 0.630 (+0.025)")),
        "Healthy",
        "Promoted: mAP50-95 0.655 vs 0.630 (+0.025)",
    ),
    (
        "promoted-old-generation",  # terminal: a later suspend edit does not make a finished run look busy
        lambda: job(decided("Promoted", True, True, "Promoted", "better"), generation=4),
        "Healthy",
        "Promoted: better",
    ),
    (
        "rejected",
        lambda: job(decided("Rejected", False, False, "EraRegression", REJECTED_SUMMARY)),
        "Healthy",
        f"Rejected: {REJECTED_SUMMARY}",
    ),
    (
        "rejected-opt-in-degraded",
        lambda: job(
            decided("Rejected", False, False, "EraRegression", REJECTED_SUMMARY),
            annotations={"kretrain.dev/rejected-health": "Degraded"},
        ),
        "Degraded",
        f"Rejected: {REJECTED_SUMMARY}",
    ),
    (
        "dry-run-opt-in-stays-healthy",
        lambda: job(
            decided("Rejected", False, True, "DryRun", "dry run: would promote"),
            annotations={"kretrain.dev/rejected-health": "Degraded"},
        ),
        "Healthy",
        "Rejected: dry run: would promote",
    ),
    (
        "rejected-no-summary",
        lambda: job(
            RetrainJobStatus(
                state="Rejected",
                observed_generation=1,
                conditions=[cond("Promoted", "False", "NoImprovement", "delta 0.001 < 0.01")],
            )
        ),
        "Healthy",
        "Rejected: NoImprovement: delta 0.001 < 0.01",
    ),
    (
        "awaiting-approval",  # a raw status: the state is newer than some trees' status model
        lambda: job(
            {"state": "AwaitingApproval", "decision": {"promoted": False, "passed": True, "summary": "passed"}}
        ),
        "Suspended",
        "Awaiting approval: passed",
    ),
    (
        "failed-operator-writer",
        lambda: operator_failed("JobFailed", "Job traffic-x failed: BackoffLimitExceeded. Trainer: CUDA OOM"),
        "Degraded",
        "Failed: JobFailed: Job traffic-x failed: BackoffLimitExceeded. Trainer: CUDA OOM",
    ),
    (
        "failed-invalid-spec",
        lambda: operator_failed("InvalidSpec", "spec.dataset.eras: at least one era"),
        "Degraded",
        "Failed: InvalidSpec: spec.dataset.eras",
    ),
    # Hostile status writers: what the typed models refuse can still be patched into the status subresource
    # of a cluster whose CRD is older or looser; the script must not error (Argo CD would show the error).
    ("hostile-unknown-state", lambda: job({"state": "Exploded"}), "Unknown", "Unknown state Exploded"),
    ("hostile-state-not-string", lambda: job({"state": {"a": 1}}), "Progressing", "Waiting for the kretrain"),
    (
        "hostile-conditions-string",
        lambda: job({"state": "Failed", "conditions": "x"}),
        "Degraded",
        "Failed: the run failed",
    ),
    (
        "hostile-condition-entries",
        lambda: job({"state": "Failed", "conditions": ["x", 3, {"type": "Failed", "reason": 7, "message": ["m"]}]}),
        "Degraded",
        "Failed: 7",
    ),
    (
        "hostile-decision-string",
        lambda: job({"state": "Promoted", "decision": "yes"}),
        "Healthy",
        "Promoted: the candidate",
    ),
    ("hostile-status-list", lambda: job([1, 2]), "Progressing", "Waiting for the kretrain"),  # type: ignore[arg-type]
    (
        "hostile-huge-summary",
        lambda: job({"state": "Rejected", "decision": {"summary": "x" * 100_000}}),
        "Healthy",
        "Rejected: xxx",
    ),
    (
        "hostile-annotation-other-value",
        lambda: job(
            decided("Rejected", False, False, "EraRegression", "r"),
            annotations={"kretrain.dev/rejected-health": "Boom"},
        ),
        "Healthy",
        "Rejected: r",
    ),
]


@pytest.mark.parametrize(("make", "status", "message"), [c[1:] for c in JOB_CASES], ids=[c[0] for c in JOB_CASES])
def test_retrainjob_health(make: Callable[[], dict[str, Any]], status: str, message: str) -> None:
    hs = run_lua(HEALTH / "retrainjob.lua", make())
    assert hs["status"] == status, hs
    assert message in hs["message"], hs


def test_every_state_is_covered() -> None:
    """A new State in kretrain.api.status must get a health mapping (and a case here)."""
    states = set(RetrainJobStatus.model_fields["state"].annotation.__args__[0].__args__)  # type: ignore[union-attr]
    seen = set()
    for name, make, _, _ in JOB_CASES:
        if not name.startswith("hostile"):
            seen.add(make().get("status", {}).get("state"))
    assert states <= seen, states - seen
    for state in states:
        hs = run_lua(HEALTH / "retrainjob.lua", job(RetrainJobStatus(state=state, observed_generation=1)))  # type: ignore[arg-type]
        assert hs["status"] != "Unknown", (state, hs)


def test_huge_message_is_cut() -> None:
    hs = run_lua(HEALTH / "retrainjob.lua", job({"state": "Rejected", "decision": {"summary": "x" * 100_000}}))
    assert len(hs["message"]) == 1024 and hs["message"].endswith("...")


def schedule(status: RetrainScheduleStatus | dict[str, Any] | None, suspend: bool = False) -> dict[str, Any]:
    obj = yaml.safe_load(SCHEDULE_MANIFEST.read_text())
    obj["metadata"]["generation"] = 1
    obj["spec"]["suspend"] = suspend
    if isinstance(status, RetrainScheduleStatus):
        obj["status"] = status.dump()
        RetrainSchedule.from_manifest(obj)
    elif status is not None:
        obj["status"] = status
    return obj


def last(action: str, reason: str, summary: str, **extra: Any) -> RetrainScheduleStatus:
    decision = ScheduleDecision(time=NOW, action=action, reason=reason, summary=summary)  # type: ignore[arg-type]
    return RetrainScheduleStatus(eras=["2026-q1"], last_decision=decision, summary=summary, **extra)


SCHEDULE_CASES: list[tuple[str, Callable[[], dict[str, Any]], str, str]] = [
    ("no-status", lambda: schedule(None), "Progressing", "first poll"),
    (
        "started",
        lambda: schedule(
            last("Started", "NewEra", "started traffic-detector-2026-q3", active=["traffic-detector-2026-q3"])
        ),
        "Healthy",
        "1 active run(s); started traffic-detector-2026-q3",
    ),
    (
        "waiting",
        lambda: schedule(last("Waiting", "UpToDate", "no new era since 2026-q2")),
        "Healthy",
        "no new era since 2026-q2",
    ),
    (
        "skipped",
        lambda: schedule(last("Skipped", "ConcurrencyForbid", "a run is active")),
        "Healthy",
        "a run is active",
    ),
    ("pruned", lambda: schedule(last("Pruned", "HistoryLimit", "deleted 2 old runs")), "Healthy", "deleted 2 old runs"),
    (
        "error-refused",
        lambda: schedule(last("Error", "PollRefused", "dataset s3://x is not allowed")),
        "Degraded",
        "PollRefused: dataset s3://x is not allowed",
    ),
    (
        "error-invalid-run",
        lambda: schedule(last("Error", "InvalidRun", "spec.dataset.eras: too many")),
        "Degraded",
        "InvalidRun: spec.dataset.eras",
    ),
    (
        "suspended",
        lambda: schedule(last("Waiting", "Suspended", "suspended"), suspend=True),
        "Suspended",
        "spec.suspend is true",
    ),
    ("hostile-decision-string", lambda: schedule({"lastDecision": "Error"}), "Progressing", "first poll"),
    (
        "hostile-active-string",
        lambda: schedule({"lastDecision": {"action": "Started", "summary": "s"}, "active": "abc"}),
        "Healthy",
        "s",
    ),
    (
        "hostile-huge-summary",
        lambda: schedule({"lastDecision": {"action": "Error", "reason": "R", "summary": "y" * 50_000}}),
        "Degraded",
        "R: yyy",
    ),
]


@pytest.mark.parametrize(
    ("make", "status", "message"), [c[1:] for c in SCHEDULE_CASES], ids=[c[0] for c in SCHEDULE_CASES]
)
def test_retrainschedule_health(make: Callable[[], dict[str, Any]], status: str, message: str) -> None:
    hs = run_lua(HEALTH / "retrainschedule.lua", make())
    assert hs["status"] == status, hs
    assert message in hs["message"], hs


def test_every_schedule_action_is_covered() -> None:
    actions = set(ScheduleDecision.model_fields["action"].annotation.__args__)  # type: ignore[union-attr]
    seen = {
        make()["status"]["lastDecision"]["action"]
        for name, make, _, _ in SCHEDULE_CASES
        if not name.startswith(("no-", "hostile"))
    }
    assert actions <= seen, actions - seen


def test_argocd_cm_carries_the_scripts_verbatim() -> None:
    cm = yaml.safe_load((HEALTH / "argocd-cm.yaml").read_text())
    assert (cm["apiVersion"], cm["kind"], cm["metadata"]["name"]) == ("v1", "ConfigMap", "argocd-cm")
    data = cm["data"]
    assert data == {
        "resource.customizations.health.kretrain.dev_RetrainJob": (HEALTH / "retrainjob.lua").read_text(),
        "resource.customizations.health.kretrain.dev_RetrainSchedule": (HEALTH / "retrainschedule.lua").read_text(),
    }, "regenerate argocd-cm.yaml from the .lua files (README.md in that folder)"


def test_the_harness_has_no_os_or_io(tmp_path: Path) -> None:
    """A script relying on what Argo CD's sandbox leaves out fails in this harness too."""
    script = tmp_path / "bad.lua"
    script.write_text("return {status = os.getenv('HOME'), message = io.read()}")
    with pytest.raises(lua51.LuaError):
        run_lua(script, job(None))
