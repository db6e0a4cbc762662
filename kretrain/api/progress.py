"""The trainer's per-epoch progress record (`runs/<run-id>/progress.json`): one model the trainer writes and the operator reads."""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import Field, model_validator

from kretrain.api.base import ApiModel

MAX_EPOCHS = 10000
"""The most epochs a spec can plan (spec.strategy.epochs has the same bound)."""
MAX_SECONDS = 10 * 365 * 24 * 3600.0
"""Upper bound of any duration in progress.json (ten years): larger values are a bug or an attack."""
MAX_METRIC = 1e9
"""Upper bound of the absolute value of a metric or loss in progress.json."""
MAX_METRICS = 64
"""The most metrics one progress.json may carry (Ultralytics reports about a dozen)."""

Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)]
MetricValue = Annotated[float, Field(ge=-MAX_METRIC, le=MAX_METRIC, allow_inf_nan=False)]
METRIC_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.()/\-]{0,63}$"
MetricName = Annotated[str, Field(pattern=METRIC_NAME)]


class RunProgress(ApiModel):
    """Progress of a running trainer after its latest epoch; every number finite and bounded."""

    epoch: int = Field(ge=0, le=MAX_EPOCHS)
    """Epochs completed (this attempt and earlier ones of the same run)."""
    epochs: int = Field(ge=0, le=MAX_EPOCHS)
    """Epochs planned."""
    metrics: dict[MetricName, MetricValue] = Field(default_factory=dict, max_length=MAX_METRICS)
    """The latest epoch's validation metrics and training losses, by kretrain's names (e.g. `mAP50-95`)."""
    elapsed_seconds: Seconds | None = None
    """Training seconds spent so far, over every attempt of the run."""
    eta_seconds: Seconds | None = None
    """Estimated seconds until training finishes."""
    checkpoint_epoch: int | None = Field(default=None, ge=0, le=MAX_EPOCHS)
    """Epoch of the last last.pt upload queued before this record (a resume starts there)."""
    updated_at: str | None = Field(default=None, max_length=64)
    """When the trainer wrote this record (RFC 3339)."""

    @model_validator(mode="after")
    def _epoch_within_plan(self) -> RunProgress:
        if self.epoch > self.epochs:
            raise ValueError(f"epoch ({self.epoch}) is larger than epochs ({self.epochs})")
        return self


def finite_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics a RunProgress can carry: finite, within +-MAX_METRIC, at most MAX_METRICS (NaN losses dropped)."""
    out = {
        k: float(v)
        for k, v in metrics.items()
        if re.fullmatch(METRIC_NAME, k) and math.isfinite(v) and abs(v) <= MAX_METRIC
    }
    return dict(list(out.items())[:MAX_METRICS])
