"""The run report the trainer writes to the registry (report.json) and the operator reads."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from kretrain.api.base import ApiModel
from kretrain.api.evaluation import Evaluation
from kretrain.api.intervals import PairedBootstrap
from kretrain.api.status import CheckResult, ModelRef


class DataSummary(ApiModel):
    """What the data pipeline found."""

    eras: dict[str, dict[str, int]] = Field(default_factory=dict)
    """Per era: image counts per split (`train`, `val`, `test`) and `excluded`."""
    era_hashes: dict[str, str] = Field(default_factory=dict)
    """Content hash of each era (over object keys and ETags)."""
    classes: list[str] = Field(default_factory=list)
    """Class names in id order."""
    errors: int = 0
    """Findings that excluded an item."""
    warnings: list[str] = Field(default_factory=list)
    """Warnings (e.g. a class first labelled in a new era)."""
    train_images: int = 0
    """Images in the training set actually used (after replay sampling)."""
    finding_counts: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict, max_length=256)
    """Findings by `<severity>:<code>` (e.g. `error:undecodable_image`, `warning:class_new_in_era`); empty in
    reports of older trainers."""


class TrainingSummary(ApiModel):
    """How training went."""

    strategy: str
    """`full` or `incremental`."""
    base_weights: str
    """What training started from."""
    epochs_planned: int
    """Epochs asked for."""
    epochs_completed: int
    """Epochs actually run (early stopping may end sooner)."""
    best_epoch: int | None = None
    """Epoch of the best validation fitness."""
    resumed_from_epoch: int | None = None
    """Set when a restarted pod resumed from a checkpoint."""
    final_metrics: dict[str, float] = Field(default_factory=dict)
    """Validation metrics of the last epoch."""
    args: dict[str, Any] = Field(default_factory=dict)
    """The Ultralytics train arguments used."""


class Compute(ApiModel):
    """Compute spent by the run."""

    wall_seconds: float = 0.0
    """Wall-clock seconds of the whole run."""
    train_seconds: float = 0.0
    """Wall-clock seconds of training alone."""
    gpu_seconds: float | None = None
    """GPU-seconds (wall seconds x GPUs) when trained on GPUs."""
    image_epochs: int = 0
    """Training images x epochs completed."""


class RunReport(ApiModel):
    """Everything a run produced, as stored in `runs/<run-id>/report.json` and in the version."""

    run_id: str
    """Run id."""
    model: str
    """Model line."""
    spec: dict[str, Any]
    """The RetrainJob spec the run came from."""
    data: DataSummary
    """Data pipeline summary."""
    training: TrainingSummary
    """Training summary."""
    compute: Compute
    """Compute spent."""
    checks: list[CheckResult] = Field(default_factory=list)
    """Post-training checks."""
    candidate_evaluation: Evaluation
    """Candidate on the mixed-era test set."""
    incumbent_evaluation: Evaluation | None = None
    """Incumbent on exactly the same images (unset for the first model)."""
    intervals: PairedBootstrap | None = None
    """Paired-bootstrap intervals of candidate - incumbent on those images, computed in the pod from the
    per-image statistics (which stay in the pod); unset without an incumbent or with
    promotion.uncertainty=pointEstimate."""
    candidate: ModelRef | None = None
    """Registered candidate version."""
    incumbent: ModelRef | None = None
    """The incumbent at the time of the run."""
    created_at: str | None = None
    """When the report was written (RFC 3339)."""
