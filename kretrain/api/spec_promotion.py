"""The promotion section of the RetrainJob spec: the gate a candidate must pass to replace the incumbent."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from kretrain.api.base import ApiModel
from kretrain.api.spec_types import NAME_PATTERN

CHECK_NAMES = ("generalizationGap", "fusionConsistency", "finiteLoss", "predictsSomething", "exportParity")
"""Names of the post-training checks the trainer runs (see kretrain.trainer.checks)."""

MetricName = Literal["mAP50-95", "mAP50", "precision", "recall"]


class MinImprovement(ApiModel):
    """How much better the candidate must be than the incumbent on the pooled mixed-era test set."""

    absolute: float = Field(default=0.0, ge=0, le=1)
    """Minimum absolute gain of the metric (e.g. 0.01 = one point of mAP)."""
    relative: float = Field(default=0.0, ge=0, le=10)
    """Minimum relative gain (0.02 = 2% better than the incumbent)."""


class PromotionSpec(ApiModel):
    """The promotion gate."""

    metric: MetricName = "mAP50-95"
    """The metric compared on the pooled mixed-era test set and on each era."""
    min_improvement: MinImprovement = Field(default_factory=MinImprovement)
    """Required gain over the incumbent; both the absolute and the relative bound must hold."""
    max_era_regression: float = Field(default=0.02, ge=0, le=1)
    """Forgetting guard: no era's metric may drop by more than this (absolute) versus the incumbent."""
    min_metric: float | None = Field(default=None, ge=0, le=1)
    """Floor on the pooled metric; the first model of a line is promoted only above it."""
    required_checks: list[str] = Field(default_factory=lambda: list(CHECK_NAMES))
    """Post-training checks that must pass for promotion."""
    mode: Literal["auto", "dryRun"] = "auto"
    """`auto` promotes a passing candidate; `dryRun` decides and records but never moves the pointer."""
    approval: Literal["Automatic", "Manual"] = "Automatic"
    """`Manual`: a candidate that passes the gate waits in state AwaitingApproval until someone allowed to patch
    the RetrainJob sets the annotation `kretrain.dev/approve: <candidate version>` (then it is promoted with the
    same conditional write; an incumbent that changed meanwhile gives IncumbentChanged) or
    `kretrain.dev/reject: <candidate version>` (then it is rejected). `Automatic`: no person in the loop."""
    alias: str | None = Field(default=None, pattern=NAME_PATTERN)
    """Alias a passing candidate moves (e.g. `staging`, kretrain/aliases.py) instead of the incumbent, which stays
    the baseline it is compared with; unset: the incumbent pointer moves."""
    uncertainty: Literal["bootstrap", "pointEstimate"] = "bootstrap"
    """`bootstrap`: the gate decides on paired-bootstrap confidence intervals of candidate - incumbent
    (pooled superiority: the pooled delta's lower bound >= minImprovement.absolute; per-era non-inferiority:
    each era's lower bound >= -maxEraRegression, an era too small to show it is reported as inconclusive and
    blocks; a class x era cell rejects only when its upper bound is below -maxClassRegression).
    `pointEstimate`: the same bounds on the point estimates alone (the behaviour before intervals). A report
    without intervals (an older trainer) is decided on point estimates, and a reason says so."""
    confidence: float = Field(default=0.95, ge=0.5, le=0.999)
    """Two-sided level of the percentile bootstrap intervals (0.95: the 2.5% and 97.5% quantiles of the
    resampled deltas); a decision on one bound is then one-sided at (1 + confidence) / 2."""
    resamples: int = Field(default=1000, ge=100, le=10000)
    """Bootstrap resamples of the test images (stratified by era, the same resample for both models)."""
    bootstrap_seed: int = Field(default=0, ge=0, le=2**32 - 1)
    """Seed of the resampling: the same report, spec and seed give the same intervals."""
    max_class_regression: float | None = Field(default=0.1, ge=0, le=1)
    """Per-class x era forgetting guard on per-class AP50-95: an (era, class) cell with at least
    minClassSupport test instances rejects when its AP drops by more than this (with `bootstrap`: when even
    the upper bound of its delta is below -maxClassRegression). Unset: no class guard. Classes new in an era
    (no test labels in any older era) are reported, not guarded."""
    min_class_support: int = Field(default=10, ge=1, le=1_000_000)
    """Test instances an (era, class) cell needs before the class guard applies to it."""

    @field_validator("alias")
    @classmethod
    def _alias_not_incumbent(cls, alias: str | None) -> str | None:
        if alias == "incumbent":
            raise ValueError("'incumbent' is not an alias: leave promotion.alias unset to move the incumbent")
        return alias

    @field_validator("required_checks")
    @classmethod
    def _known_checks(cls, checks: list[str]) -> list[str]:
        unknown = [c for c in checks if c not in CHECK_NAMES]
        if unknown:
            raise ValueError(f"unknown checks {unknown}; known: {list(CHECK_NAMES)}")
        return checks
