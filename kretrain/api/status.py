"""The RetrainJob status: conditions with reasons plus a few summary fields for printer columns."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from kretrain.api.base import ApiModel
from kretrain.api.conditions import ConditionStatus, ConditionType
from kretrain.api.evaluation import Comparison

__all__ = [
    "TERMINAL_STATES",
    "CheckResult",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "Decision",
    "Fallback",
    "ModelRef",
    "Notification",
    "Progress",
    "RetrainJobStatus",
    "State",
]

State = Literal[
    "Pending", "Queued", "Training", "Evaluating", "AwaitingApproval", "Promoted", "Rejected", "Failed", "Suspended"
]
TERMINAL_STATES: tuple[str, ...] = ("Promoted", "Rejected", "Failed")


class Condition(ApiModel):
    """One condition in the Kubernetes style."""

    type: ConditionType
    """Which aspect of the run this describes."""
    status: ConditionStatus
    """Whether the condition holds."""
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    """CamelCase machine-readable reason."""
    message: str = Field(default="", max_length=32768)
    """Human-readable detail."""
    last_transition_time: str | None = None
    """When the status last changed (RFC 3339)."""
    observed_generation: int | None = None
    """The spec generation this condition was computed from."""


class Progress(ApiModel):
    """Training progress, from the run's progress.json (validated as kretrain.api.RunProgress)."""

    epoch: int = Field(default=0, ge=0)
    """Epochs completed."""
    epochs: int = Field(default=0, ge=0)
    """Epochs planned."""
    display: str = ""
    """`epoch/epochs` for the printer column."""
    eta_seconds: float | None = Field(default=None, allow_inf_nan=False)
    """Estimated seconds until training finishes."""
    metrics: dict[str, Annotated[float, Field(allow_inf_nan=False)]] = Field(default_factory=dict)
    """The last epoch's validation metrics."""


class ModelRef(ApiModel):
    """A model version in the registry."""

    version: str
    """Registry version id."""
    uri: str
    """S3 URI of the weights."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """SHA-256 of the weights file."""


class CheckResult(ApiModel):
    """One post-training check."""

    name: str
    """Check name (e.g. `generalizationGap`)."""
    passed: bool
    """Whether the check passed."""
    value: float | None = None
    """The measured number."""
    threshold: float | None = None
    """The threshold it was compared with."""
    detail: str = ""
    """What was measured and why it passed or failed."""


class Decision(ApiModel):
    """The promotion decision with every reason."""

    promoted: bool
    """Whether the candidate became the incumbent."""
    passed: bool
    """Whether the candidate passed the gate (true but not promoted in dryRun mode or on a lost race)."""
    mode: Literal["auto", "dryRun"] = "auto"
    """The promotion mode in force."""
    summary: str = ""
    """One line for the printer column."""
    reasons: list[str] = Field(default_factory=list)
    """Every reason that led to the decision."""
    decided_at: str | None = None
    """When the decision was made (RFC 3339)."""


class Fallback(ApiModel):
    """The incremental run whose rejection started the full retrain (strategy.fallbackToFull)."""

    run_id: str
    """Run id (= registry version) of the rejected incremental candidate."""
    job_name: str | None = None
    """Its Job."""
    decision: Decision
    """Why the incremental candidate was rejected."""


MAX_NOTIFICATIONS = 4
"""Entries in status.notifications (one webhook and one InferenceService per promotion)."""


class Notification(ApiModel):
    """status.notifications[]: where telling the serving side about one promotion stands (no URL, no key)."""

    kind: Literal["webhook", "inferenceService"]
    """What is told: the webhook (spec.serving.webhook) or the InferenceService (spec.serving.inferenceService)."""
    notice_id: str = Field(max_length=512)
    """The promotion's notice id (`<namespace>/<retrainjob>/<version>/<pointer>`), the same on every attempt."""
    target: str = Field(max_length=253)
    """The webhook URL's host[:port] (its path and query are not recorded), or the InferenceService's name."""
    attempts: int = Field(default=0, ge=0, le=1000)
    """Attempts made so far."""
    delivered: bool = False
    """A 2xx answer was received (webhook) or the patch was applied (InferenceService)."""
    given_up: bool = False
    """The last attempt allowed was made without success; the promotion stands regardless."""
    last_status: int | None = Field(default=None, ge=0, le=999)
    """HTTP status of the last attempt (None: no answer)."""
    last_error: str | None = Field(default=None, max_length=512)
    """Why the last attempt failed."""
    next_attempt_at: str | None = Field(default=None, max_length=64)
    """When the next attempt is due (RFC 3339); None once delivered or given up."""


class RetrainJobStatus(ApiModel):
    """Observed state of a RetrainJob."""

    state: State | None = None
    """Summary state for `kubectl get`."""
    conditions: list[Condition] = Field(default_factory=list)
    """Conditions with reasons."""
    observed_generation: int | None = None
    """The spec generation last acted upon."""
    run_id: str | None = None
    """Registry run id of this RetrainJob."""
    job_name: str | None = None
    """Name of the child batch/v1 Job."""
    progress: Progress | None = None
    """Training progress."""
    candidate: ModelRef | None = None
    """The candidate version registered by the run."""
    incumbent: ModelRef | None = None
    """The incumbent the candidate was compared with."""
    candidate_metric: str | None = None
    """The candidate's pooled gate metric, formatted for the printer column."""
    incumbent_metric: str | None = None
    """The incumbent's pooled gate metric, formatted for the printer column."""
    evaluation: Comparison | None = None
    """Pooled and per-era metrics of both models with deltas."""
    checks: list[CheckResult] = Field(default_factory=list)
    """Post-training checks."""
    decision: Decision | None = None
    """The promotion decision."""
    fallback: Fallback | None = None
    """Set when a rejected incremental candidate was followed by a full retrain (fallbackToFull)."""
    notifications: list[Notification] = Field(default_factory=list, max_length=MAX_NOTIFICATIONS)
    """Deliveries to the serving side after a promotion (spec.serving), at least once each, with backoff."""
