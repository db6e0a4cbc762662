"""The typed status: tolerant parsing of a written-by-anyone status, the builder's merge patch (only what changed),
the condition and reason constants, and which faults a lifecycle step retries (a bug reaches Kopf)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, get_args

import kopf
import pytest
from pydantic import ValidationError

from kretrain.api import ModelRef, Progress, RetrainJobStatus
from kretrain.api.conditions import DECISION_REASONS, Cond, ConditionType, DecisionReason, Reason, Status, all_reasons
from kretrain.operator import jobs, lifecycle
from kretrain.operator.kube import KubeError
from kretrain.operator.settings import OperatorSettings
from kretrain.operator.status_patch import CONDITION_REASON, MAX_REASON_CHARS, StatusBuilder, parse_status
from kretrain.promotion import Reason as PromotionReason
from kretrain.registry import RegistryError
from kretrain.store import AccessDenied, ObjectNotFound, PreconditionFailed, StoreError, StoreUnavailable

NOW, LATER = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"
NS, NAME, UID = "ns", "run", "12345678-aaaa"
RUN = jobs.run_id(NS, NAME, UID)
JOB = jobs.job_name(RUN)
REF = ModelRef(version="v7", uri="s3://models/reg/m/versions/v7/weights.pt", sha256="0" * 64)
TRAINING = {"type": "Training", "status": "True", "reason": "JobCreated", "message": "m", "lastTransitionTime": NOW}


def body(status: object = None, generation: int | None = 2) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": NAME, "namespace": NS, "uid": UID}
    if generation is not None:
        meta["generation"] = generation
    return {
        "metadata": meta,
        "spec": {"model": "m", "dataset": {"uri": "s3://data/x", "eras": ["a", "b"]}},
        "status": status,
    }


# ---- parse_status: anyone allowed to patch the status may have written it -----------------------------------
PARSE_CASES: list[tuple[str, object, dict[str, Any]]] = [
    ("none", None, {}),
    ("not-a-mapping", ["state", "Training"], {}),
    ("valid", {"state": "Training", "jobName": JOB}, {"state": "Training", "jobName": JOB}),
    ("unknown-field-dropped", {"state": "Training", "bogus": 1}, {"state": "Training"}),
    ("invalid-state-dropped", {"state": "Hacked", "runId": RUN}, {"runId": RUN}),
    ("wrong-type-dropped", {"runId": 5, "jobName": JOB}, {"jobName": JOB}),
    ("negative-progress-dropped", {"progress": {"epoch": -1}, "state": "Training"}, {"state": "Training"}),
    (
        "one-bad-condition-dropped",
        {"conditions": [TRAINING, {"type": "Training", "status": "Maybe", "reason": "X"}, {"type": "Bogus"}]},
        {"conditions": [TRAINING]},
    ),
    ("bad-reason-dropped", {"conditions": [{**TRAINING, "reason": "no spaces allowed"}]}, {}),
    ("conditions-not-a-list", {"conditions": "Training", "state": "Pending"}, {"state": "Pending"}),
    # a hostile name parses (it is a string); run_names never reads it and correct_names puts it back
    ("hostile-job-name-kept", {"jobName": "../../other/jobs/x"}, {"jobName": "../../other/jobs/x"}),
]


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in PARSE_CASES], ids=[c[0] for c in PARSE_CASES])
def test_parse_status_reads_what_validates_and_drops_the_rest(raw: object, expected: dict[str, Any]) -> None:
    got = parse_status(raw).dump()
    assert {k: v for k, v in got.items() if v not in ([], None)} == expected


# ---- the builder's merge patch -----------------------------------------------------------------------------
def set_state(b: StatusBuilder) -> None:
    b.status.state = "Training"


def set_pending(b: StatusBuilder) -> None:
    b.status.state = "Pending"


def clear_progress(b: StatusBuilder) -> None:
    b.status.progress = None


def same_progress(b: StatusBuilder) -> None:
    b.status.progress = Progress(epoch=1, epochs=2, display="1/2")


def training_again(b: StatusBuilder) -> None:
    b.condition(Cond.TRAINING, Status.TRUE, Reason.JOB_CREATED, "m")


def training_other_reason(b: StatusBuilder) -> None:
    b.condition(Cond.TRAINING, Status.TRUE, Reason.JOB_FOUND, "found")


def training_done(b: StatusBuilder) -> None:
    b.condition(Cond.TRAINING, Status.FALSE, Reason.JOB_SUCCEEDED, "done")


def names(b: StatusBuilder) -> None:
    b.names(RUN, JOB)


def incumbent(b: StatusBuilder) -> None:
    b.status.incumbent = REF


def nothing(b: StatusBuilder) -> None:
    pass


COND_GEN2 = {**TRAINING, "observedGeneration": 2}
BUILD_CASES: list[tuple[str, dict[str, Any] | None, Callable[[StatusBuilder], None], dict[str, Any]]] = [
    ("nothing-set", {"state": "Training"}, nothing, {}),
    ("same-value", {"state": "Training", "observedGeneration": 1}, set_state, {}),
    ("new-state", None, set_state, {"state": "Training", "observedGeneration": 2}),
    ("generation-unchanged-not-repeated", {"state": "Pending", "observedGeneration": 2}, set_state,
     {"state": "Training"}),
    ("state-change", {"state": "Training", "observedGeneration": 1}, set_pending,
     {"state": "Pending", "observedGeneration": 2}),
    ("none-deletes", {"progress": {"epoch": 1, "epochs": 2, "display": "1/2"}}, clear_progress,
     {"progress": None, "observedGeneration": 2}),
    ("none-of-absent-is-nothing", {"state": "Training"}, clear_progress, {}),
    ("equal-nested-model", {"progress": {"epoch": 1, "epochs": 2, "display": "1/2", "metrics": {}}},
     same_progress, {}),
    ("nested-model-dumped-whole", None, incumbent, {"incumbent": REF.dump(), "observedGeneration": 2}),
    ("same-condition-again", {"conditions": [COND_GEN2], "observedGeneration": 2}, training_again, {}),
    ("condition-reason-keeps-transition-time", {"conditions": [COND_GEN2], "observedGeneration": 2},
     training_other_reason, {"conditions": [{**COND_GEN2, "reason": "JobFound", "message": "found"}]}),
    ("condition-status-moves-transition-time", {"conditions": [COND_GEN2], "observedGeneration": 2},
     training_done, {"conditions": [{**COND_GEN2, "status": "False", "reason": "JobSucceeded", "message": "done",
                                     "lastTransitionTime": LATER}]}),
    ("names-written-as-a-pair", {"runId": RUN, "jobName": "../x", "observedGeneration": 2}, names,
     {"runId": RUN, "jobName": JOB}),
    ("tampered-field-overwritten", {"state": "Hacked", "observedGeneration": 2}, set_state, {"state": "Training"}),
]  # fmt: skip


@pytest.mark.parametrize(("status", "step", "expected"), [c[1:] for c in BUILD_CASES], ids=[c[0] for c in BUILD_CASES])
def test_the_patch_is_what_changed(
    status: dict[str, Any] | None, step: Callable[[StatusBuilder], None], expected: dict[str, Any]
) -> None:
    build = StatusBuilder(body(status), LATER)
    step(build)
    assert build.build() == expected


def test_a_status_without_generation_gets_none() -> None:
    build = StatusBuilder(body(None, generation=None), NOW)
    set_state(build)
    assert build.build() == {"state": "Training"}


def test_conditions_keep_their_order_and_drop_duplicates() -> None:
    suspended = {**TRAINING, "type": "Suspended", "reason": "SuspendedBySpec"}
    build = StatusBuilder(body({"conditions": [TRAINING, suspended, {**TRAINING, "message": "dup"}]}), LATER)
    training_done(build)
    assert [(c.type, c.reason) for c in build.status.conditions] == [("Training", "JobSucceeded"),
                                                                     ("Suspended", "SuspendedBySpec")]  # fmt: skip


WRONG_WRITES: list[tuple[str, str, object]] = [
    ("misspelt-field", "job_nme", "x"),
    ("camel-case-name", "jobName", "x"),
    ("unknown-state", "state", "Trainin"),
    ("progress-as-dict-with-bad-key", "progress", {"epoc": 1}),
    ("negative-generation-type", "observed_generation", "two"),
]


@pytest.mark.parametrize(("field", "value"), [c[1:] for c in WRONG_WRITES], ids=[c[0] for c in WRONG_WRITES])
def test_a_wrong_write_raises_instead_of_being_dropped(field: str, value: object) -> None:
    build = StatusBuilder(body({"state": "Training"}), NOW)
    with pytest.raises(ValidationError):
        setattr(build.status, field, value)


def test_a_condition_with_a_reason_the_crd_refuses_raises() -> None:
    with pytest.raises(ValidationError):
        StatusBuilder(body(None), NOW).condition(Cond.FAILED, Status.TRUE, "Not CamelCase", "m")


def test_every_patch_validates_as_a_status() -> None:
    build = StatusBuilder(body({"state": "Training", "conditions": [TRAINING]}), LATER)
    build.names(RUN, JOB).status.incumbent = REF
    training_done(build)
    RetrainJobStatus.model_validate({**body({"state": "Training"})["status"], **build.build()})


FALLBACK = {"runId": RUN, "decision": {"promoted": False, "passed": False}}
RUN_NAMES_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("no-fallback", {}, RUN),
    ("a-fallback-record", {"fallback": FALLBACK}, jobs.fallback_run_id(RUN)),
    ("any-fallback-selects-the-full-run", {"fallback": {"bogus": True}}, jobs.fallback_run_id(RUN)),
    ("empty-fallback-is-none", {"fallback": {}}, RUN),
    ("run-id-says-full-without-a-fallback", {"runId": jobs.fallback_run_id(RUN)}, RUN),
]


@pytest.mark.parametrize(("status", "run"), [c[1:] for c in RUN_NAMES_CASES], ids=[c[0] for c in RUN_NAMES_CASES])
def test_run_names_choose_between_the_objects_own_two_runs(status: dict[str, Any], run: str) -> None:
    assert lifecycle.run_names(body(status)) == (run, jobs.job_name(run))


# ---- constants ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "reason"), sorted(all_reasons().items()))
def test_every_reason_is_one_the_crd_accepts(name: str, reason: str) -> None:
    assert CONDITION_REASON.fullmatch(reason) and len(reason) <= MAX_REASON_CHARS
    assert re.fullmatch("[A-Z][A-Za-z]+", reason), f"Reason.{name} is not CamelCase"


def test_condition_types_and_decision_reasons_are_the_literals() -> None:
    types = {v for k, v in vars(Cond).items() if k.isupper()}
    assert types == set(get_args(ConditionType))
    assert set(DECISION_REASONS) == set(get_args(DecisionReason)) == set(get_args(PromotionReason))
    assert set(DECISION_REASONS) <= set(all_reasons().values())


# ---- faults: retry the transient, wait longer on refusals, let bugs reach Kopf ------------------------------
FAULTS: list[tuple[str, BaseException, bool]] = [
    ("store-unavailable", StoreUnavailable("S3 down"), True),
    ("store-lost-a-conditional-write", PreconditionFailed("412"), True),
    ("store-denied", AccessDenied("403"), False),
    ("store-not-found", ObjectNotFound("gone"), False),
    ("store-other", StoreError("HTTP 400"), False),
    ("registry-record", RegistryError("not a valid IncumbentPointer"), False),
    ("kube-unreached", KubeError(0, "Unreachable", ""), True),
    ("kube-timeout", KubeError(408, "Timeout", ""), True),
    ("kube-throttled", KubeError(429, "TooManyRequests", ""), True),
    ("kube-500", KubeError(500, "InternalError", ""), True),
    ("kube-503", KubeError(503, "ServiceUnavailable", ""), True),
    ("kube-forbidden", KubeError(403, "Forbidden", ""), False),
    ("kube-not-found", KubeError(404, "NotFound", ""), False),
    ("kube-invalid", KubeError(422, "Invalid", ""), False),
]


@pytest.mark.parametrize(("exc", "quick"), [c[1:] for c in FAULTS], ids=[c[0] for c in FAULTS])
def test_which_faults_retry_soon(exc: BaseException, quick: bool) -> None:
    assert lifecycle.transient(exc) is quick
    outcome = lifecycle.waiting("cannot read x", exc)
    assert outcome.retry and type(exc).__name__ in outcome.retry
    assert outcome.retry_delay == (None if quick else lifecycle.REFUSED_RETRY_DELAY)


class Kube:
    """A namespace with the run's Job running (no other call is expected)."""

    def find_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return []

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        ours = [{"uid": UID, "controller": True}]  # the operator's own Job (kopf.append_owner_reference)
        return {"metadata": {"name": name, "ownerReferences": ours}, "spec": {}, "status": {}}

    def create(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        return obj, True

    def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return {}

    def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        return []


class Raising:
    """A registry whose every read raises `exc`."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def incumbent(self, model: str) -> ModelRef | None:
        raise self.exc

    def read_progress(self, model: str, run_id: str) -> None:
        raise self.exc


def deps(exc: BaseException) -> lifecycle.Deps:
    registry = Raising(exc)
    return lifecycle.Deps(settings=OperatorSettings(registry="s3://models/reg", metrics_port=0), kube=Kube(),
                          registry_for=lambda spec: registry, adopt=lambda objs: None, now=lambda: NOW)  # type: ignore[arg-type,return-value]  # fmt: skip


STEPS: list[tuple[str, Callable[[BaseException], lifecycle.Outcome]]] = [
    ("start", lambda exc: lifecycle.start(body({}), deps(exc))),
    ("poll", lambda exc: lifecycle.poll(body({"state": "Training", "jobName": JOB, "runId": RUN}), deps(exc))),
]
BUGS = [TypeError("unsupported operand"), KeyError("version"), AttributeError("x"), ZeroDivisionError()]


@pytest.mark.parametrize("bug", BUGS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("step", [s for _, s in STEPS], ids=[n for n, _ in STEPS])
def test_a_bug_reaches_kopf(step: Callable[[BaseException], lifecycle.Outcome], bug: BaseException) -> None:
    with pytest.raises(type(bug)):
        step(bug)


@pytest.mark.parametrize(("exc", "quick"), [c[1:] for c in FAULTS[:6]], ids=[c[0] for c in FAULTS[:6]])
@pytest.mark.parametrize("step", [s for _, s in STEPS], ids=[n for n, _ in STEPS])
def test_a_registry_fault_waits(
    step: Callable[[BaseException], lifecycle.Outcome], exc: BaseException, quick: bool
) -> None:
    outcome = step(exc)
    assert outcome.retry and outcome.permanent_error is None and outcome.state in (None, "Pending")
    assert outcome.retry_delay == (None if quick else lifecycle.REFUSED_RETRY_DELAY)


def test_start_waiting_for_the_registry_says_so_in_the_status() -> None:
    outcome = lifecycle.start(body({}), deps(StoreUnavailable("S3 down")))
    [cond] = outcome.status["conditions"]
    assert outcome.status["state"] == "Pending" and outcome.status["runId"] == RUN
    assert cond["reason"] == Reason.WAITING_FOR_REGISTRY and "S3 down" in cond["message"]


@pytest.mark.parametrize(("delay", "expected"), [(None, 7.0), (60.0, 60.0)], ids=["transient", "refused"])
def test_the_handler_asks_kopf_for_the_outcomes_delay(
    monkeypatch: pytest.MonkeyPatch, delay: float | None, expected: float
) -> None:
    from kretrain.operator import handlers

    monkeypatch.setattr(handlers._settings, "retry_delay", 7.0)
    outcome = lifecycle.Outcome(retry="S3 down", retry_delay=delay)
    with pytest.raises(kopf.TemporaryError) as err:
        handlers._apply(outcome, kopf.Body(body({})), kopf.Patch(), "start")  # type: ignore[arg-type]
    assert err.value.delay == expected
