"""Pure pieces of the lifecycle: outcomes, the typed status builder and its patch, Job states, the run names."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from kretrain.api import Condition, RetrainJobSpec, RetrainJobStatus
from kretrain.api.conditions import Cond, ConditionStatus, ConditionType, Reason, Status
from kretrain.operator import bounds, jobs
from kretrain.operator.settings import OperatorSettings


@dataclass
class Event:
    """A Kubernetes Event to post on the RetrainJob."""

    type: str
    reason: str
    message: str


@dataclass
class Outcome:
    """What one step decided: a merge patch for `.status`, events, and whether the handler must fail or retry.

    `status` is StatusBuilder.build()'s camelCase patch (only what changed). `retry` asks Kopf to try again after
    `retry_delay` seconds (None: the operator's KRETRAIN_RETRY_DELAY); only transient faults retry this way.
    """

    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    permanent_error: str | None = None
    retry: str | None = None
    decision_reason: str | None = None  # condition reason of a terminal decision (for metrics)
    retry_delay: float | None = None

    @property
    def state(self) -> str | None:
        """The state this outcome moves to, if any."""
        state = self.status.get("state")
        return state if isinstance(state, str) else None


def spec_error_message(exc: ValidationError) -> str:
    """Every validation error as `spec.<field path>: message`, joined by `; `."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"spec.{loc}: {err['msg']}" if loc else f"spec: {err['msg']}")
    return "; ".join(parts)


def parse_spec(body: Mapping[str, Any], settings: OperatorSettings) -> tuple[RetrainJobSpec, RetrainJobSpec] | str:
    """(spec, resolved spec) or the error message naming the field."""
    try:
        spec = RetrainJobSpec.model_validate(body.get("spec") or {})
        return spec, jobs.resolve_spec(spec, settings)
    except ValidationError as exc:
        return spec_error_message(exc)
    except jobs.SpecError as exc:
        return str(exc)


CONDITION_REASON = re.compile(r"[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?")
"""A condition reason the CRD accepts (its pattern; at most MAX_REASON_CHARS characters)."""
MAX_REASON_CHARS = 128


def condition_reason(reason: object, default: str) -> str:
    """`reason` when the CRD's condition pattern accepts it (e.g. a Job condition's reason, which any writer of
    the Job's status chooses), else `default`: a status patch the API server refuses would be retried forever."""
    if isinstance(reason, str) and len(reason) <= MAX_REASON_CHARS and CONDITION_REASON.fullmatch(reason):
        return reason
    return default


def with_condition(
    conditions: list[Condition],
    type_: ConditionType,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[Condition]:
    """The conditions with the one of `type_` set in its place (appended when new; a duplicate of it dropped).

    lastTransitionTime is kept while the condition's status does not change; observedGeneration is `generation`.
    """
    old = next((c for c in conditions if c.type == type_), None)
    since = old.last_transition_time if old and old.status == status and old.last_transition_time else now
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=bounds.short(message, bounds.MAX_CONDITION_MESSAGE),
        last_transition_time=since,
        observed_generation=generation,
    )
    if old is None:
        return [*conditions, new]
    kept = [c for c in conditions if c.type != type_ or c is old]
    return [new if c is old else c for c in kept]


def parse_status(raw: object) -> RetrainJobStatus:
    """The status as the operator reads it: anyone allowed to patch the status may have written it, so a field
    (or one condition) that does not validate, and any unknown field, is read as absent instead of failing."""
    if not isinstance(raw, Mapping):
        return RetrainJobStatus()
    try:
        return RetrainJobStatus.model_validate(raw)
    except ValidationError:
        pass
    kept: dict[str, Any] = {}
    for name, info in RetrainJobStatus.model_fields.items():
        key = info.alias or name
        if key not in raw:
            continue
        value = raw[key]
        if name == "conditions" and isinstance(value, list):
            value = [c for c in value if _valid(Condition, c)]
        if _valid(RetrainJobStatus, {key: value}):
            kept[key] = value
    return RetrainJobStatus.model_validate(kept)


def _valid(model: type[Condition] | type[RetrainJobStatus], value: object) -> bool:
    try:
        model.model_validate(value)
    except ValidationError:
        return False
    return True


def status_dump(status: RetrainJobStatus) -> dict[str, Any]:
    """The status as the API server stores it (camelCase, no nulls, status.evaluation without per-class keys)."""
    out = status.dump()
    if "evaluation" in out:
        out["evaluation"] = bounds.without_per_class(out["evaluation"])
    return out


class StatusBuilder:
    """The new status of a RetrainJob, typed, built on top of its current one; build() is the merge patch.

    A step reads `current` (the parsed status it was given) and writes `status` (a RetrainJobStatus: a misspelt
    field or a wrong value raises at once). The patch holds every top-level field whose value changed
    (a field set to None: null, which a merge patch deletes), plus observedGeneration when anything changed.
    """

    def __init__(self, body: Mapping[str, Any], now: str) -> None:
        self.current = parse_status(body.get("status"))
        self.status = self.current.model_copy(deep=True)
        generation = (body.get("metadata") or {}).get("generation")
        self.generation = generation if isinstance(generation, int) and not isinstance(generation, bool) else None
        self.now = now
        self._always: set[str] = set()

    def condition(self, type_: ConditionType, status: ConditionStatus, reason: str, message: str) -> StatusBuilder:
        """Set one condition (see with_condition)."""
        self.status.conditions = with_condition(
            self.status.conditions, type_, status, reason, message, self.generation, self.now
        )
        return self

    def has_condition(self, type_: ConditionType) -> bool:
        """Whether the new status has a condition of this type."""
        return any(c.type == type_ for c in self.status.conditions)

    def names(self, run: str, jname: str) -> StatusBuilder:
        """Write the run id and Job name, both even when one of them is unchanged (they are one pair)."""
        self.status.run_id, self.status.job_name = run, jname
        self._always |= {"runId", "jobName"}
        return self

    def build(self) -> dict[str, Any]:
        """The merge patch from the current status to the new one (empty when nothing changed)."""
        patch = self._diff()
        if patch and self.generation is not None:
            self.status.observed_generation = self.generation
            patch = self._diff()
        return patch

    def _diff(self) -> dict[str, Any]:
        old, new = status_dump(self.current), status_dump(self.status)
        patch = {k: v for k, v in new.items() if k in self._always or old.get(k) != v}
        patch.update({k: None for k in old if k not in new})
        return patch


def failed(
    body: Mapping[str, Any],
    reason: str,
    message: str,
    now: str,
    permanent: bool = False,
    build: StatusBuilder | None = None,
) -> Outcome:
    """The run failed: `Failed` condition naming why, state Failed, a Warning event (on top of `build`, if given)."""
    message = bounds.short(message, bounds.MAX_CONDITION_MESSAGE)
    status = build or StatusBuilder(body, now)
    if status.has_condition(Cond.TRAINING):
        status.condition(Cond.TRAINING, Status.FALSE, reason, message)
    status.condition(Cond.FAILED, Status.TRUE, reason, message)
    status.status.state = "Failed"
    return Outcome(
        status=status.build(),
        events=[Event("Warning", reason, message)],
        permanent_error=message if permanent else None,
        decision_reason=reason,
    )


def job_state(job: Mapping[str, Any]) -> tuple[str, str, str]:
    """(`succeeded` | `failed` | `suspended` | `running`, reason, message) of a batch/v1 Job."""
    conds = {c.get("type"): c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}
    for kind in ("Complete", "SuccessCriteriaMet"):
        if kind in conds:
            return "succeeded", conds[kind].get("reason") or Reason.JOB_COMPLETED, conds[kind].get("message") or ""
    for kind in ("Failed", "FailureTarget"):
        if kind in conds:
            return "failed", conds[kind].get("reason") or Reason.JOB_FAILED, conds[kind].get("message") or ""
    if (job.get("spec") or {}).get("suspend") or "Suspended" in conds:
        return "suspended", Reason.JOB_SUSPENDED, "the Job is suspended"
    return "running", Reason.JOB_RUNNING, ""


def termination_message(pods: list[dict[str, Any]]) -> str:
    """The newest trainer termination message among a Job's pods ('' if none)."""

    def created(pod: dict[str, Any]) -> str:
        return str(pod.get("metadata", {}).get("creationTimestamp") or "")

    for pod in sorted(pods, key=created, reverse=True):
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            for where in ("state", "lastState"):
                terminated = (cs.get(where) or {}).get("terminated") or {}
                if terminated.get("message"):
                    return str(terminated["message"]).strip()
                if terminated.get("reason") and terminated.get("exitCode"):
                    return f"container {cs.get('name')} {terminated['reason']} (exit code {terminated['exitCode']})"
    return ""


def fallback_started(body: Mapping[str, Any]) -> bool:
    """Whether the status records a fallback run: any status.fallback at all (the run it selects is still one of
    the object's own two), read the same way by run_names and finish (which must not start the fallback again)."""
    status = body.get("status")
    return isinstance(status, Mapping) and bool(status.get("fallback"))


def run_names(body: Mapping[str, Any]) -> tuple[str, str]:
    """(run id, Job name) of the RetrainJob's current run, from its namespace, name and uid alone.

    Never from status: status.runId/jobName are a cache anyone allowed to patch the status can rewrite. The
    only status input is whether a fallback run was started (it selects between this object's own two runs).
    """
    meta = body["metadata"]
    run = jobs.run_id(meta["namespace"], meta["name"], meta["uid"])
    if fallback_started(body):
        run = jobs.fallback_run_id(run)
    return run, jobs.job_name(run)


def correct_names(body: Mapping[str, Any], build: StatusBuilder, events: list[Event], run: str, jname: str) -> None:
    """Put the operator's own run id and Job name back into a status that says otherwise (and say so)."""
    if build.current.run_id == run and build.current.job_name == jname:
        return
    build.names(run, jname)
    status = body.get("status") or {}
    was = f"runId {bounds.short(status.get('runId'), 80)!r}, jobName {bounds.short(status.get('jobName'), 80)!r}"
    events.append(
        Event(
            "Warning",
            Reason.STATUS_CORRECTED,
            f"status said {was}; the run is {run} in Job {jname} (status is a cache)",
        )
    )


def metric_text(value: float | None) -> str | None:
    """A metric for a printer column."""
    return None if value is None else f"{value:.4f}"
