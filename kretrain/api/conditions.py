"""Condition types, statuses and reasons of the RetrainJob status, declared once beside the status types."""

from __future__ import annotations

from typing import Final, Literal

ConditionType = Literal["DataReady", "Queued", "Training", "Evaluated", "Promoted", "Failed", "Suspended"]
"""Which aspect of a run a condition describes (status.conditions[].type)."""
ConditionStatus = Literal["True", "False", "Unknown"]
"""Whether a condition holds (status.conditions[].status)."""
DecisionReason = Literal[
    "Promoted",
    "DryRun",
    "GateFailed",
    "IncumbentChanged",
    "MissingEvaluation",
    "ReportMismatch",
    "AwaitingApproval",
    "ApprovalRejected",
]
"""The reason of a concluded run's `Promoted` condition (kretrain.promotion.Conclusion.reason)."""


class Cond:
    """Condition types (as Kubeflow Trainer declares `TrainJobCreated`, `TrainJobSuspended`, ... beside its types)."""

    DATA_READY: Final = "DataReady"
    """The dataset was pulled and validated."""
    QUEUED: Final = "Queued"
    """True while Kueue holds the run's Job (suspended, waiting for admission); False once admitted."""
    TRAINING: Final = "Training"
    """True while the run's Job trains; False once it succeeded or failed."""
    EVALUATED: Final = "Evaluated"
    """The candidate and the incumbent were evaluated on every era's test split."""
    PROMOTED: Final = "Promoted"
    """True when the candidate became the incumbent; False with the gate's reason otherwise."""
    FAILED: Final = "Failed"
    """The run failed; the reason says why."""
    SUSPENDED: Final = "Suspended"
    """The run's Job is suspended (spec.suspend, or suspended by someone else)."""


class Status:
    """Condition statuses."""

    TRUE: Final = "True"
    FALSE: Final = "False"
    UNKNOWN: Final = "Unknown"


class Reason:
    """Every reason the operator writes into a condition or an Event of a RetrainJob (CamelCase)."""

    # Training
    JOB_CREATED: Final = "JobCreated"
    """The operator created the run's Job."""
    JOB_FOUND: Final = "JobFound"
    """The run's Job existed already (a restart, or a lost status write); it was not created again."""
    JOB_RUNNING: Final = "JobRunning"
    """The Job runs (neither finished nor suspended)."""
    JOB_SUCCEEDED: Final = "JobSucceeded"
    """The Job completed."""
    JOB_COMPLETED: Final = "Completed"
    """A completed Job that gave no reason of its own."""
    WAITING_FOR_REGISTRY: Final = "WaitingForRegistry"
    """The incumbent could not be read: the run waits instead of starting blind."""
    FALLBACK_TO_FULL: Final = "FallbackToFull"
    """An incremental candidate failed the gate: a full retrain runs (strategy.fallbackToFull)."""
    # Kueue admission
    WAITING_FOR_ADMISSION: Final = "WaitingForAdmission"
    """Queued: the Job carries a Kueue queue name and stays suspended until Kueue admits it."""
    ADMITTED: Final = "Admitted"
    """Queued False: Kueue admitted the Job (it unsuspended it)."""
    PREEMPTED: Final = "Preempted"
    """Queued: Kueue suspended an admitted Job again (preemption or eviction); it waits for a new admission."""
    # Suspension
    SUSPENDED_BY_SPEC: Final = "SuspendedBySpec"
    """spec.suspend is true."""
    JOB_SUSPENDED: Final = "JobSuspended"
    """The Job is suspended (by the spec or by someone else)."""
    RESUMED: Final = "Resumed"
    """The Job runs again."""
    # Evaluation
    EVALUATED: Final = "Evaluated"
    """Both models were evaluated."""
    # Decisions (kretrain.promotion)
    PROMOTED: Final = "Promoted"
    """The candidate passed the gate and became the incumbent."""
    DRY_RUN: Final = "DryRun"
    """The candidate passed the gate; promotion.mode is dryRun, so the incumbent stays."""
    GATE_FAILED: Final = "GateFailed"
    """The candidate failed the gate."""
    INCUMBENT_CHANGED: Final = "IncumbentChanged"
    """The incumbent changed while the run was evaluated: the decision is not applied."""
    MISSING_EVALUATION: Final = "MissingEvaluation"
    """The report lacks an evaluation the spec requires (state Rejected)."""
    REPORT_MISMATCH: Final = "ReportMismatch"
    """The report does not belong to the run (state Failed)."""
    AWAITING_APPROVAL: Final = "AwaitingApproval"
    """The candidate passed the gate under promotion.approval Manual and waits for the approve annotation."""
    APPROVAL_REJECTED: Final = "ApprovalRejected"
    """A person rejected the passing candidate with the reject annotation (state Rejected)."""
    # Failures
    INVALID_SPEC: Final = "InvalidSpec"
    """The spec does not validate or the operator's policy refuses it."""
    JOB_REJECTED: Final = "JobRejected"
    """The API server refused the run's Job or ConfigMap for good."""
    JOB_FAILED: Final = "JobFailed"
    """The Job failed (or a Job reason the status pattern would refuse)."""
    JOB_NOT_OWNED: Final = "JobNotOwned"
    """An object under the run's Job (or TrainJob) name is not controlled by this RetrainJob (its controller
    ownerReference names another uid, or none): someone else made it; it is neither adopted nor followed."""
    JOB_LOST: Final = "JobLost"
    """The Job is gone and the run left no report."""
    NO_REPORT: Final = "NoReport"
    """The Job succeeded but left no report."""
    INVALID_REPORT: Final = "InvalidReport"
    """report.json is oversized or does not validate (after MAX_RECORD_TRIES tries)."""
    REPORT_UNSIGNED: Final = "ReportUnsigned"
    """report.json carries no MAC under the run's stage key (missing or wrong `.hmac`, or the key in the run's
    ConfigMap is gone, malformed or not the RetrainJob's own): not the run's report, never concluded."""
    INVALID_PROGRESS: Final = "InvalidProgress"
    """progress.json is oversized or does not validate (after MAX_RECORD_TRIES tries)."""
    REGISTRY_UNSAFE: Final = "RegistryUnsafe"
    """The registry's backend ignores conditional writes: promotions are refused."""
    # Data (kretrain.operator.data_findings, from report.json's data summary)
    DATA_VALIDATED: Final = "DataValidated"
    """DataReady: the data stage passed without warnings."""
    DATA_WARNINGS: Final = "DataWarnings"
    """DataReady: the data stage passed with warnings (each also a DataWarning Event, at most 5)."""
    DATA_WARNING: Final = "DataWarning"
    """Event: one warning of the data stage (e.g. a class first labelled in the newest era)."""
    # Events only
    STATUS_CORRECTED: Final = "StatusCorrected"
    """status.runId/jobName said otherwise and were put back (status is a cache)."""
    SUSPENDED: Final = "Suspended"
    """Event: the Job was suspended."""
    TRAINING: Final = "Training"
    """Event: the Job runs."""
    # Events only: telling the serving side after a promotion (kretrain.operator.notify_delivery)
    WEBHOOK_DELIVERED: Final = "WebhookDelivered"
    """Event: the webhook answered 2xx to the signed promotion notice."""
    WEBHOOK_FAILED: Final = "WebhookFailed"
    """Event: the webhook delivery was given up (the promotion stands)."""
    INFERENCE_SERVICE_PATCHED: Final = "InferenceServicePatched"
    """Event: the KServe InferenceService's storageUri now names the promoted version."""
    INFERENCE_SERVICE_FAILED: Final = "InferenceServiceFailed"
    """Event: patching the InferenceService was given up (the promotion stands)."""


DECISION_REASONS: tuple[DecisionReason, ...] = (
    Reason.PROMOTED,
    Reason.DRY_RUN,
    Reason.GATE_FAILED,
    Reason.INCUMBENT_CHANGED,
    Reason.MISSING_EVALUATION,
    Reason.REPORT_MISMATCH,
    Reason.AWAITING_APPROVAL,
    Reason.APPROVAL_REJECTED,
)
"""Every DecisionReason (the same values as the Literal)."""


def all_reasons() -> dict[str, str]:
    """Every Reason constant by its Python name (for tests and docs)."""
    return {k: v for k, v in vars(Reason).items() if k.isupper() and isinstance(v, str)}
