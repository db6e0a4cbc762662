"""Conclude a finished run: apply the promotion policy and move the incumbent pointer at most once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kretrain.api import Comparison, Decision, ModelRef, RetrainJobSpec, RunReport, compare
from kretrain.policy import decide
from kretrain.registry import IncumbentChanged, Registry, now_rfc3339

Reason = Literal["Promoted", "DryRun", "GateFailed", "IncumbentChanged"]


@dataclass
class Conclusion:
    """The decision on a run, the comparison it was based on, and a CamelCase reason for conditions."""

    decision: Decision
    comparison: Comparison
    reason: Reason
    candidate_version: str
    expected_incumbent: str | None


def wants_fallback(spec: RetrainJobSpec, conclusion: Conclusion) -> bool:
    """Whether a full retrain must follow: an incremental candidate failed the gate and fallbackToFull is on."""
    strategy = spec.strategy
    return strategy.type == "incremental" and strategy.fallback_to_full and conclusion.reason == "GateFailed"


def fallback_spec(spec: RetrainJobSpec) -> RetrainJobSpec:
    """The full-retrain spec that follows a rejected incremental run: same data, gate, knobs and start
    weights (the incumbent, unless the spec named others), every era's training split, no replay, and no
    further fallback."""
    strategy = spec.strategy.model_copy(
        update={
            "type": "full",
            "replay": None,
            "fallback_to_full": False,
            "base_weights": spec.strategy.effective_base_weights,
        }
    )
    return spec.model_copy(update={"strategy": strategy})


def expected_incumbent(report: RunReport) -> str | None:
    """The incumbent version the run was evaluated against (the promotion's If-Match)."""
    if report.incumbent is not None:
        return report.incumbent.version
    if report.incumbent_evaluation is not None:
        return report.incumbent_evaluation.model_version
    return None


def conclude(
    registry: Registry, report: RunReport, spec: RetrainJobSpec, actor: str, now: str | None = None
) -> Conclusion:
    """Decide with the policy and, when the gate passes in auto mode, promote with a conditional write.

    Idempotent: when the candidate already is the incumbent (an earlier attempt promoted it), nothing
    is written again. A promotion decided against an incumbent that has changed since is refused by
    the registry and reported as `IncumbentChanged`, never applied over the new incumbent.
    """
    decision = decide(
        report.candidate_evaluation, report.incumbent_evaluation, report.checks, spec.promotion, spec.dataset.eras
    )
    decision.decided_at = now or now_rfc3339()
    candidate = report.candidate.version if report.candidate else report.run_id
    expected = expected_incumbent(report)
    reason: Reason = "Promoted" if decision.promoted else ("DryRun" if decision.passed else "GateFailed")
    if decision.promoted:
        current: ModelRef | None = registry.incumbent(spec.model)
        if current is not None and current.version == candidate:
            decision.reasons.append(f"{candidate} is already the incumbent (an earlier attempt promoted it).")
        else:
            try:
                registry.promote(
                    spec.model, candidate, expected=expected, reason=decision.summary or "passed the gate", actor=actor
                )
            except IncumbentChanged as exc:
                now_current = getattr(exc, "current", None)
                decision.promoted = False
                decision.reasons.append(
                    f"Not promoted: the incumbent changed from {expected or 'none'} to "
                    f"{getattr(now_current, 'version', now_current) or 'another version'} while the run was "
                    "evaluated; the decision was made against the old incumbent, so it is not applied."
                )
                decision.summary = "not promoted: incumbent changed"
                reason = "IncumbentChanged"
    comparison = compare(report.candidate_evaluation, report.incumbent_evaluation, spec.promotion.metric)
    return Conclusion(decision, comparison, reason, candidate, expected)
