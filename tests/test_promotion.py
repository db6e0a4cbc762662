"""fallbackToFull decisions and the full-retrain spec that follows a rejected incremental run (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from kretrain.api import Comparison, Decision, Evaluation, Metrics, PromotionSpec, RetrainJobSpec
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


# -- the gate on paired-bootstrap intervals, from constructed per-image statistics ---------------------------

GATE_CASES = [
    # id, images per era, candidate quality, incumbent quality, promotion overrides, passes, phrases in reasons
    # (a|b: either); (era, -1) is the quality of every class of the era without its own entry
    ("tiny-gain-within-noise", {"era1": 40, "era2": 40}, {("era1", -1): 0.72, ("era2", -1): 0.72},
     {("era1", -1): 0.7, ("era2", -1): 0.7}, {}, False, ["Improvement not shown|Improvement too small", "95% CI ["]),
    ("clear-gain", {"era1": 40, "era2": 40}, {("era1", -1): 0.95, ("era2", -1): 0.95},
     {("era1", -1): 0.5, ("era2", -1): 0.5}, {}, True, ["Improvement shown", "non-inferior"]),
    ("significant-drop-on-one-era", {"era1": 60, "era2": 60}, {("era1", -1): 0.3, ("era2", -1): 0.98},
     {("era1", -1): 0.9, ("era2", -1): 0.3}, {}, False, ["Era 'era1' regressed", "(forgetting)"]),
    ("small-era-drop-within-noise", {"era1": 60, "small": 6}, {("era1", -1): 0.95, ("small", -1): 0.75},
     {("era1", -1): 0.5, ("small", -1): 0.8}, {"maxClassRegression": None}, False,
     ["Era 'small' inconclusive: 6 test images", "95% CI ["]),
    ("class-forgotten-in-one-era", {"era1": 80, "era2": 80},
     {("era1", -1): 0.99, ("era1", 2): 0.0, ("era2", -1): 0.99},
     {("era1", -1): 0.6, ("era2", -1): 0.6}, {"maxEraRegression": 0.5}, False,
     ["Class 'triangle' in era 'era1' regressed", "(forgetting)"]),
    ("class-forgotten-point-estimate", {"era1": 80, "era2": 80},
     {("era1", -1): 0.99, ("era1", 2): 0.0, ("era2", -1): 0.99},
     {("era1", -1): 0.6, ("era2", -1): 0.6}, {"maxEraRegression": 0.5, "uncertainty": "pointEstimate"}, False,
     ["Class 'triangle' in era 'era1' regressed", "Absolute improvement holds"]),
    ("tiny-gain-point-estimate-passes", {"era1": 40, "era2": 40}, {("era1", -1): 0.75, ("era2", -1): 0.75},
     {("era1", -1): 0.7, ("era2", -1): 0.7}, {"uncertainty": "pointEstimate"}, True, ["Absolute improvement holds"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("eras", "cand_q", "inc_q", "overrides", "passes", "phrases"),
    [c[1:] for c in GATE_CASES],
    ids=[c[0] for c in GATE_CASES],
)
def test_gate_on_intervals(
    eras: dict[str, int],
    cand_q: dict[tuple[str, int], float],
    inc_q: dict[tuple[str, int], float],
    overrides: dict[str, Any],
    passes: bool,
    phrases: list[str],
) -> None:
    from _gate_fixtures import NAMES, evaluation, images, model_stats

    from kretrain.bootstrap import paired_bootstrap
    from kretrain.policy import decide

    test = images(eras)
    cand, inc = model_stats(test, cand_q, seed=1), model_stats(test, inc_q, seed=2)
    promotion = PromotionSpec.model_validate({"resamples": 200, "requiredChecks": [], **overrides})
    intervals = paired_bootstrap(
        cand, inc, {p: e for p, e, _ in test}, NAMES, metric=promotion.metric, confidence=promotion.confidence,
        resamples=promotion.resamples, seed=0, incumbent_version="v1",
    )  # fmt: skip
    decision = decide(evaluation(cand, test, None), evaluation(inc, test, "v1"), [], promotion, list(eras), intervals)
    text = "\n".join(decision.reasons)
    assert decision.passed is passes, text
    for phrase in phrases:
        assert any(p in text for p in phrase.split("|")), text
    if promotion.uncertainty == "pointEstimate":
        assert "CI [" not in text
