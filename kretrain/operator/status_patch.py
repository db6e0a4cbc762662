"""Pure pieces of the lifecycle: outcomes, status patches and conditions, Job states, the operator's run names."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from kretrain.api import RetrainJobSpec
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
    """What one step decided: a merge patch for `.status`, events, and whether the handler must fail or retry."""

    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    permanent_error: str | None = None
    retry: str | None = None
    decision_reason: str | None = None  # condition reason of a terminal decision (for metrics)

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
    conditions: list[dict[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """The conditions with one of them set (lastTransitionTime kept while its status does not change)."""
    old = next((c for c in conditions if c.get("type") == type_), None)
    since = old["lastTransitionTime"] if old and old.get("status") == status and old.get("lastTransitionTime") else now
    new = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": bounds.short(message, bounds.MAX_CONDITION_MESSAGE),
        "lastTransitionTime": since,
    }
    if generation is not None:
        new["observedGeneration"] = generation
    return [c for c in conditions if c.get("type") != type_] + [new]


class StatusBuilder:
    """Accumulates a status merge patch on top of the object's current status."""

    def __init__(self, body: Mapping[str, Any], now: str) -> None:
        self.current = dict(body.get("status") or {})
        self.generation = body.get("metadata", {}).get("generation")
        self.conditions: list[dict[str, Any]] = list(self.current.get("conditions") or [])
        self.patch: dict[str, Any] = {}
        self.now = now

    def condition(self, type_: str, status: str, reason: str, message: str) -> StatusBuilder:
        self.conditions = with_condition(self.conditions, type_, status, reason, message, self.generation, self.now)
        self.patch["conditions"] = self.conditions
        return self

    def set(self, **fields: Any) -> StatusBuilder:
        self.patch.update(fields)
        return self

    def build(self) -> dict[str, Any]:
        if self.patch and self.generation is not None:
            self.patch["observedGeneration"] = self.generation
        return self.patch


def failed(body: Mapping[str, Any], reason: str, message: str, now: str, permanent: bool = False) -> Outcome:
    """The run failed: `Failed` condition naming why, state Failed, a Warning event."""
    message = bounds.short(message, bounds.MAX_CONDITION_MESSAGE)
    status = StatusBuilder(body, now)
    if any(c.get("type") == "Training" for c in status.conditions):
        status.condition("Training", "False", reason, message)
    status.condition("Failed", "True", reason, message).set(state="Failed")
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
            return "succeeded", conds[kind].get("reason") or "Completed", conds[kind].get("message") or ""
    for kind in ("Failed", "FailureTarget"):
        if kind in conds:
            return "failed", conds[kind].get("reason") or "JobFailed", conds[kind].get("message") or ""
    if (job.get("spec") or {}).get("suspend") or "Suspended" in conds:
        return "suspended", "JobSuspended", "the Job is suspended"
    return "running", "JobRunning", ""


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


def run_names(body: Mapping[str, Any]) -> tuple[str, str]:
    """(run id, Job name) of the RetrainJob's current run, from its namespace, name and uid alone.

    Never from status: status.runId/jobName are a cache anyone allowed to patch the status can rewrite. The
    only status input is whether a fallback run was started (it selects between this object's own two runs).
    """
    meta, status = body["metadata"], body.get("status") or {}
    run = jobs.run_id(meta["namespace"], meta["name"], meta["uid"])
    if status.get("fallback"):
        run = jobs.fallback_run_id(run)
    return run, jobs.job_name(run)


def correct_names(body: Mapping[str, Any], build: StatusBuilder, events: list[Event], run: str, jname: str) -> None:
    """Put the operator's own run id and Job name back into a status that says otherwise (and say so)."""
    status = body.get("status") or {}
    if status.get("runId") == run and status.get("jobName") == jname:
        return
    build.set(runId=run, jobName=jname)
    was = f"runId {bounds.short(status.get('runId'), 80)!r}, jobName {bounds.short(status.get('jobName'), 80)!r}"
    events.append(
        Event("Warning", "StatusCorrected", f"status said {was}; the run is {run} in Job {jname} (status is a cache)")
    )


def metric_text(value: float | None) -> str | None:
    """A metric for a printer column."""
    return None if value is None else f"{value:.4f}"
