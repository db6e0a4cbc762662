"""Paired-bootstrap confidence intervals of candidate minus incumbent, as the trainer reports them."""

from __future__ import annotations

from pydantic import Field, model_validator

from kretrain.api.base import ApiModel
from kretrain.api.spec import MetricName

MAX_INTERVAL_ERAS = 64
"""At most this many eras carry intervals (spec.dataset.eras has at most 64)."""
MAX_INTERVAL_CLASSES = 1000
"""At most this many classes per era carry a class interval."""


class Interval(ApiModel):
    """Candidate minus incumbent on one set of test images: the point estimate and its bootstrap interval."""

    delta: float = Field(ge=-1, le=1)
    """Candidate - incumbent on the test images as they are (the point estimate)."""
    low: float = Field(ge=-1, le=1)
    """Lower bound of the percentile interval of the resampled deltas (quantile (1 - confidence) / 2)."""
    high: float = Field(ge=-1, le=1)
    """Upper bound of the percentile interval (quantile (1 + confidence) / 2)."""

    @model_validator(mode="after")
    def _ordered(self) -> Interval:
        if self.low > self.high:
            raise ValueError(f"interval bounds out of order: low {self.low} > high {self.high}")
        return self


class ClassInterval(Interval):
    """Per-class AP50-95 of both models in one era, with the interval of its delta."""

    instances: int = Field(ge=0)
    """Labelled test instances of the class in the era (the cell's support)."""
    candidate: float = Field(ge=0, le=1)
    """Candidate's AP50-95 of the class on the era's test images."""
    incumbent: float = Field(ge=0, le=1)
    """Incumbent's AP50-95 of the class on the era's test images."""
    resamples: int = Field(ge=0)
    """Resamples that contained the class (a resample without one of its instances has no AP for it)."""


class EraInterval(Interval):
    """The gate metric's delta on one era (or pooled), with per-class cells."""

    images: int = Field(ge=0)
    """Test images of the era (each resample draws this many, with replacement)."""
    classes: dict[str, ClassInterval] = Field(default_factory=dict, max_length=MAX_INTERVAL_CLASSES)
    """Per-class AP50-95 cells of classes labelled in the era's test images (empty for pooled)."""


class PairedBootstrap(ApiModel):
    """Paired bootstrap of candidate vs incumbent over the same test images, computed in the trainer pod.

    Each resample draws every era's test images with replacement (stratified by era: an era of n images
    gets n draws), the same draw for both models; the metric is recomputed with Ultralytics' `ap_per_class`
    per era and on the union of the eras' draws (pooled). Only these numbers cross to the operator, never
    the per-image statistics, so the report stays bounded by eras x classes.
    """

    metric: MetricName
    """The gate metric the era and pooled intervals are computed on."""
    confidence: float = Field(ge=0.5, le=0.999)
    """Two-sided level of every interval."""
    resamples: int = Field(ge=1, le=10000)
    """Bootstrap resamples drawn."""
    seed: int = Field(ge=0)
    """Seed of the resampling (deterministic: same stats, spec and seed give the same intervals)."""
    incumbent_version: str | None = Field(default=None, max_length=128)
    """The incumbent version compared (must equal the report's incumbentEvaluation.modelVersion)."""
    pooled: EraInterval
    """The metric on all eras' test images together."""
    eras: dict[str, EraInterval] = Field(default_factory=dict, max_length=MAX_INTERVAL_ERAS)
    """The metric on each era's test images alone, with its class cells."""
    seconds: float = Field(default=0.0, ge=0)
    """Wall-clock seconds the bootstrap took in the pod."""
