"""Metrics of one model on the mixed-era test set: pooled, per era, per class."""

from __future__ import annotations

from pydantic import Field

from kretrain.api.base import ApiModel
from kretrain.api.intervals import PairedBootstrap
from kretrain.api.spec import MetricName


class Metrics(ApiModel):
    """Detection metrics on one set of test images."""

    map50_95: float = Field(ge=0, le=1, alias="mAP50-95")
    """COCO-style mAP averaged over IoU 0.50:0.95."""
    map50: float = Field(ge=0, le=1, alias="mAP50")
    """mAP at IoU 0.50."""
    precision: float = Field(ge=0, le=1)
    """Mean precision over classes present."""
    recall: float = Field(ge=0, le=1)
    """Mean recall over classes present."""
    images: int = Field(default=0, ge=0)
    """Images evaluated."""
    instances: int = Field(default=0, ge=0)
    """Labelled boxes evaluated."""
    per_class: dict[str, float] = Field(default_factory=dict)
    """mAP50-95 of each class that has labels in this set."""
    class_instances: dict[str, int] = Field(default_factory=dict)
    """Labelled boxes of each class in this set (the support of its per-class AP)."""

    def get(self, metric: MetricName) -> float:
        """The value of a named metric."""
        return {
            "mAP50-95": self.map50_95,
            "mAP50": self.map50,
            "precision": self.precision,
            "recall": self.recall,
        }[metric]


class Evaluation(ApiModel):
    """One model evaluated on the union of every era's test split."""

    model_version: str | None = None
    """Registry version evaluated (unset for a fresh candidate)."""
    pooled: Metrics
    """Metrics on all eras' test images together."""
    eras: dict[str, Metrics] = Field(default_factory=dict)
    """Metrics on each era's test images alone."""


class EraDelta(ApiModel):
    """Candidate minus incumbent on one set of test images."""

    candidate: float
    """Candidate's metric."""
    incumbent: float
    """Incumbent's metric."""
    delta: float
    """candidate - incumbent."""
    low: float | None = None
    """Lower bound of the paired-bootstrap interval of the delta (unset without intervals)."""
    high: float | None = None
    """Upper bound of the paired-bootstrap interval of the delta (unset without intervals)."""


class Comparison(ApiModel):
    """Both models' metrics side by side, with per-era deltas of the gate metric."""

    metric: MetricName = "mAP50-95"
    """The metric the deltas are computed on."""
    candidate: Evaluation
    """The candidate's evaluation."""
    incumbent: Evaluation | None = None
    """The incumbent's evaluation on the same images (unset for the first model of a line)."""
    pooled: EraDelta | None = None
    """Pooled delta (unset without an incumbent)."""
    eras: dict[str, EraDelta] = Field(default_factory=dict)
    """Delta per era (eras both models were evaluated on)."""
    confidence: float | None = None
    """Level of the intervals in `pooled` and `eras` (unset without intervals)."""


def compare(
    candidate: Evaluation,
    incumbent: Evaluation | None,
    metric: MetricName,
    intervals: PairedBootstrap | None = None,
) -> Comparison:
    """Side-by-side comparison of two evaluations on the chosen metric, with the bootstrap's intervals when
    `intervals` was computed on this metric against this incumbent."""
    if incumbent is None:
        return Comparison(metric=metric, candidate=candidate)
    usable = intervals is not None and intervals.metric == metric
    usable = usable and intervals is not None and intervals.incumbent_version == incumbent.model_version

    def delta(c: Metrics, i: Metrics, era: str | None) -> EraDelta:
        cv, iv = c.get(metric), i.get(metric)
        ci = None
        if usable and intervals is not None:
            ci = intervals.pooled if era is None else intervals.eras.get(era)
        return EraDelta(candidate=cv, incumbent=iv, delta=cv - iv, low=ci and ci.low, high=ci and ci.high)

    eras = {e: delta(m, incumbent.eras[e], e) for e, m in candidate.eras.items() if e in incumbent.eras}
    return Comparison(
        metric=metric,
        candidate=candidate,
        incumbent=incumbent,
        pooled=delta(candidate.pooled, incumbent.pooled, None),
        eras=eras,
        confidence=intervals.confidence if usable and intervals is not None else None,
    )
