"""The RetrainSchedule API: a RetrainJob template plus triggers (a new complete era, or cron) that stamp out runs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kretrain.api.base import ApiModel
from kretrain.api.resource import ObjectMeta
from kretrain.api.spec import NAME_PATTERN, S3Uri, SplitSpec
from kretrain.api.spec import RetrainJobSpec as _RetrainJobSpec

SCHEDULE_KIND = "RetrainSchedule"
SCHEDULE_PLURAL = "retrainschedules"
SCHEDULE_SINGULAR = "retrainschedule"
SCHEDULE_SHORT_NAMES = ["rts"]

MAX_ERAS = 64
"""Most eras one RetrainJob takes (DatasetSpec.eras); a schedule with more complete eras needs `window`."""
MARKER_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._\-]{0,62}$"
CRON_PATTERN = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\S+( \S+){4})$"
TIME_ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+){0,2}$"

ConcurrencyPolicy = Literal["Forbid", "Replace", "Allow"]
TriggerKind = Literal["newEra", "cron"]
DecisionAction = Literal["Started", "Skipped", "Waiting", "Pruned", "Error"]


class TemplateDatasetSpec(ApiModel):
    """The template's dataset: like a RetrainJob's, but the schedule fills in `eras` from what it finds."""

    uri: S3Uri
    """S3 prefix of the dataset (`s3://bucket/prefix`): `classes.yaml` and one folder per era, polled by the
    `newEra` trigger. Eras are ordered by folder name (plain string order, so use sortable names such as
    `2026-01` or `era-0007`); the last ones are the new eras."""
    window: int | None = Field(default=None, ge=1, le=MAX_ERAS)
    """Train on the last N complete eras; unset: every complete era (at most 64)."""
    new_eras: int = Field(default=1, ge=1)
    """How many of the last eras count as new (incremental runs train on these plus replay)."""
    classes: list[str] | None = Field(default=None, min_length=1)
    """Expected class names in id order; when set, `classes.yaml` must match it exactly."""
    split: SplitSpec = Field(default_factory=SplitSpec)
    """Deterministic train/val/test split of every era."""
    max_bad_fraction: float = Field(default=0.05, ge=0, le=1)
    """Largest share of bad images/labels tolerated (they are excluded and listed) before the run fails."""


class RetrainJobTemplate(_RetrainJobSpec):
    """A RetrainJob spec whose `dataset.eras` the schedule fills (the other fields are copied as they are)."""

    dataset: TemplateDatasetSpec  # type: ignore[assignment]
    """The data: the schedule adds the complete eras (all of them, or the last `window`)."""

    @model_validator(mode="after")
    def _incremental_needs_history(self) -> RetrainJobTemplate:
        """Replaces RetrainJobSpec's check (which needs the eras): an incremental window needs an older era."""
        window = self.dataset.window
        if self.strategy.type == "incremental" and window is not None and window <= self.dataset.new_eras:
            raise ValueError(
                f"incremental strategy needs at least one older era: dataset.window ({window}) must be larger "
                f"than dataset.newEras ({self.dataset.new_eras})"
            )
        return self


class NewEraTrigger(ApiModel):
    """Start a run when a new complete era folder appears under `template.dataset.uri`."""

    poll_seconds: int = Field(default=300, ge=1, le=86400)
    """Seconds between listings of the dataset prefix."""
    complete_when: Literal["marker", "settled"] = "marker"
    """`marker`: an era is complete once `<era>/<marker>` exists; `settled`: once no object under it changed
    (keys, sizes, ETags) for `settleSeconds`."""
    marker: str = Field(default="_READY", pattern=MARKER_PATTERN)
    """Name of the marker object inside an era folder (`completeWhen: marker`)."""
    settle_seconds: int = Field(default=600, ge=1, le=7 * 86400)
    """Quiet time after which an era without a marker counts as complete (`completeWhen: settled`)."""
    run_existing: bool = False
    """Start a run for the newest complete era already there when the schedule is first seen; by default the
    eras found first are the baseline and only a later era starts a run."""
    max_objects_per_era: int = Field(default=100_000, ge=1, le=1_000_000)
    """Most objects listed per era in `settled` mode; a larger era is reported and not used."""


class CronTrigger(ApiModel):
    """Start a run on the current complete eras on a schedule (e.g. a monthly full retrain)."""

    schedule: str = Field(pattern=CRON_PATTERN, max_length=128)
    """Cron expression with five fields (minute hour day-of-month month day-of-week) or `@daily`, `@monthly`..."""
    time_zone: str = Field(default="UTC", pattern=TIME_ZONE_PATTERN, max_length=64)
    """IANA time zone the schedule is read in (e.g. `Europe/Berlin`)."""


class TriggerSpec(ApiModel):
    """What starts a run; at least one trigger."""

    new_era: NewEraTrigger | None = None
    """Start a run when a new complete era lands."""
    cron: CronTrigger | None = None
    """Start a run on a schedule."""

    @model_validator(mode="after")
    def _at_least_one(self) -> TriggerSpec:
        if self.new_era is None and self.cron is None:
            raise ValueError("set trigger.newEra, trigger.cron or both")
        return self


class RetrainScheduleSpec(ApiModel):
    """A template RetrainJob and when to stamp one out, with CronJob-like concurrency and history limits."""

    template: RetrainJobTemplate
    """The RetrainJob spec of every run; `dataset.eras` is filled with the complete eras found."""
    trigger: TriggerSpec
    """When a run starts."""
    concurrency_policy: ConcurrencyPolicy = "Forbid"
    """With a run still active: `Forbid` skips the new run, `Replace` deletes the active run first, `Allow`
    runs both."""
    suspend: bool = False
    """Stop starting runs (active runs continue); eras are still listed and reported."""
    successful_runs_history_limit: int = Field(default=3, ge=0, le=100)
    """Finished runs (Promoted or Rejected) kept; older ones are deleted. Registry versions are never deleted."""
    failed_runs_history_limit: int = Field(default=1, ge=0, le=100)
    """Failed runs kept; older ones are deleted."""


class ScheduleDecision(ApiModel):
    """What the schedule decided last, and why."""

    time: str
    """When it was decided (RFC 3339)."""
    action: DecisionAction
    """`Started`, `Skipped`, `Waiting`, `Pruned` or `Error`."""
    reason: str = Field(max_length=64)
    """Machine-readable reason (a constant of kretrain.operator.schedule)."""
    summary: str = Field(max_length=1024)
    """One sentence for people."""
    trigger: TriggerKind | None = None
    """The trigger that asked for the run, if any."""
    run: str | None = Field(default=None, pattern=NAME_PATTERN)
    """The RetrainJob concerned, if any."""


class RetrainScheduleStatus(ApiModel):
    """Observed state of a RetrainSchedule (written by the operator)."""

    eras: list[str] = Field(default_factory=list, max_length=1024)
    """Complete eras found under the dataset URI, oldest first."""
    pending_eras: list[str] = Field(default_factory=list, max_length=1024)
    """Era folders not complete yet (no marker, or still changing)."""
    invalid_names: list[str] = Field(default_factory=list, max_length=20)
    """Folder names under the dataset URI that break the era name pattern (not used; at most 20 shown)."""
    settle: dict[str, str] = Field(default_factory=dict, max_length=1024)
    """`settled` mode bookkeeping: era -> `<fingerprint>@<time first seen unchanged>`."""
    latest_era: str | None = None
    """Newest complete era; a run was started (or skipped) for it."""
    last_trigger: TriggerKind | None = None
    """The trigger of the last run started."""
    last_trigger_time: str | None = None
    """When the last run was started (RFC 3339)."""
    last_trigger_reason: str | None = Field(default=None, max_length=1024)
    """Why the last run was started."""
    last_cron_time: str | None = None
    """The last cron slot handled (RFC 3339), started or skipped."""
    next_schedule_time: str | None = None
    """The next cron slot (RFC 3339), when a cron trigger is set."""
    last_poll_time: str | None = None
    """When the dataset URI was last listed."""
    active: list[str] = Field(default_factory=list, max_length=1024)
    """RetrainJobs of this schedule still running."""
    last_run: str | None = Field(default=None, pattern=NAME_PATTERN)
    """The RetrainJob started last."""
    last_decision: ScheduleDecision | None = None
    """The last decision with its summary."""
    summary: str | None = Field(default=None, max_length=1024)
    """The last decision's summary (shown by `kubectl get rts`)."""


class RetrainSchedule(BaseModel):
    """A RetrainSchedule manifest as applied with kubectl."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    api_version: Literal["kretrain.dev/v1alpha1"] = Field(alias="apiVersion")
    """API group and version."""
    kind: Literal["RetrainSchedule"]
    """Kind."""
    metadata: ObjectMeta
    """Object metadata."""
    spec: RetrainScheduleSpec
    """Template and triggers."""
    status: RetrainScheduleStatus | None = None
    """Observed state."""

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> RetrainSchedule:
        """Parse and validate a manifest dict (raises pydantic.ValidationError)."""
        return cls.model_validate(manifest)


def stamp(template: RetrainJobTemplate, eras: list[str]) -> _RetrainJobSpec:
    """The RetrainJob spec of a run on `eras` (oldest first): the template with `dataset.eras` set to all of them
    or the last `window` (raises pydantic.ValidationError when the result is no valid RetrainJob spec)."""
    raw = template.dump()
    dataset = raw["dataset"]
    window = dataset.pop("window", None)
    dataset["eras"] = list(eras[-window:] if window else eras)
    return _RetrainJobSpec.model_validate(raw)
