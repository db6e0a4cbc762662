"""fallbackToFull decisions and the full-retrain spec that follows a rejected incremental run (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from kretrain.api import Comparison, Decision, Evaluation, Metrics, RetrainJobSpec
from kretrain.promotion import Conclusion, fallback_spec, wants_fallback

M = Metrics.model_validate({"mAP50-95": 0.5, "mAP50": 0.6, "precision": 0.5, "recall": 0.5})


def spec(**strategy: Any) -> RetrainJobSpec:
    return RetrainJobSpec.model_validate(
        {"model": "m", "dataset": {"uri": "s3://data/set", "eras": ["a", "b"]}, "strategy": strategy}
    )


def conclusion(reason: str) -> Conclusion:
    comparison = Comparison(candidate=Evaluation(pooled=M))
    return Conclusion(Decision(promoted=False, passed=reason != "GateFailed"), comparison, reason, "v", None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("strategy", "reason", "expected"),
    [
        ({"type": "incremental", "fallbackToFull": True}, "GateFailed", True),
        ({"type": "incremental", "fallbackToFull": False}, "GateFailed", False),
        ({"type": "incremental", "fallbackToFull": True}, "Promoted", False),
        ({"type": "incremental", "fallbackToFull": True}, "DryRun", False),
        ({"type": "incremental", "fallbackToFull": True}, "IncumbentChanged", False),  # passed: not the model's fault
        ({"type": "full", "fallbackToFull": True}, "GateFailed", False),
    ],
)
def test_wants_fallback(strategy: dict[str, Any], reason: str, expected: bool) -> None:
    assert wants_fallback(spec(**strategy), conclusion(reason)) is expected


def test_fallback_spec_is_a_full_retrain_from_the_same_start() -> None:
    incremental = spec(type="incremental", fallbackToFull=True, replay={"fraction": 0.2}, lr0=0.002, optimizer="SGD")
    full = fallback_spec(incremental)
    assert full.strategy.type == "full" and full.strategy.replay is None and not full.strategy.fallback_to_full
    assert full.strategy.effective_base_weights == "incumbent"  # the incremental run's start, not random init
    assert (full.strategy.lr0, full.strategy.optimizer) == (0.002, "SGD")
    assert full.dataset == incremental.dataset and full.promotion == incremental.promotion
    assert spec(type="incremental", baseWeights="v-7").strategy.base_weights == "v-7"
    assert fallback_spec(spec(type="incremental", baseWeights="v-7")).strategy.base_weights == "v-7"
