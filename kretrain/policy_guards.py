"""The gate's interval-aware bounds and the per-class x era forgetting guard (pure; reads numbers only)."""

from __future__ import annotations

from collections.abc import Callable

from kretrain.api.evaluation import Evaluation
from kretrain.api.intervals import Interval, PairedBootstrap
from kretrain.api.spec import PromotionSpec

EPSILON = 1e-9
"""Floating-point slack of every comparison (as in kretrain.policy)."""

Fail = Callable[[str], None]


def _f(x: float) -> str:
    return f"{x:.4f}"


def _s(x: float) -> str:
    return f"{x:+.4f}"


def _name(text: str) -> str:
    """A class or era name from the report, quoted and cut (it is report content)."""
    return repr(text if len(text) <= 64 else text[:61] + "...")


def ci_text(ci: Interval, confidence: float) -> str:
    """`+0.0123, 95% CI [-0.0100, +0.0340]`."""
    return f"{_s(ci.delta)}, {confidence * 100:g}% CI [{_s(ci.low)}, {_s(ci.high)}]"


def usable_intervals(
    intervals: PairedBootstrap | None, incumbent: Evaluation, promotion: PromotionSpec, reasons: list[str]
) -> PairedBootstrap | None:
    """The report's intervals when the spec decides on them and they were computed on the gate metric against
    this incumbent at the spec's confidence; otherwise None, with a reason saying the point estimates decide.

    Falling back cannot be used to loosen the gate beyond what a trainer could do anyway: every interval is
    bounded by its point estimate (the gate uses min(low, delta); kretrain/interval_checks.py refuses intervals
    that contradict the evaluations), so the point estimates are the most lenient decision any report gets."""
    if promotion.uncertainty == "pointEstimate":
        return None
    why = None
    if intervals is None:
        why = "the report carries no bootstrap intervals (an older trainer, or uncertainty was off in the pod)"
    elif intervals.metric != promotion.metric:
        why = f"the report's intervals are on {intervals.metric}, not on the gate metric {promotion.metric}"
    elif intervals.incumbent_version != incumbent.model_version:
        why = (
            f"the report's intervals compare against {_name(str(intervals.incumbent_version))}, not the "
            f"evaluated incumbent {_name(str(incumbent.model_version))}"
        )
    elif abs(intervals.confidence - promotion.confidence) > 1e-9:
        why = (
            f"the report's intervals are at {intervals.confidence * 100:g}% confidence, not the "
            f"{promotion.confidence * 100:g}% promotion.confidence asks for"
        )
    if why is not None:
        reasons.append(f"Decided on point estimates: {why}.")
        return None
    return intervals


def pooled_bounds(ci: Interval, incumbent_value: float, promotion: PromotionSpec, confidence: float, reasons: list[str], fail: Fail, point: float | None = None) -> None:  # fmt: skip
    """Pooled superiority: the lower bound of the pooled delta reaches both minImprovement bounds.

    The lower bound used is never above the point estimate `point` (candidate - incumbent as the evaluations
    report it; default the interval's own delta): intervals never pass what the point estimates fail. The
    interval's pooled delta may differ slightly from the evaluations' (the bootstrap joins the eras in another
    image order, so tied confidences sort differently), which is why the evaluations' value is used here."""
    metric = promotion.metric
    absolute = promotion.min_improvement.absolute
    relative_gain = incumbent_value * promotion.min_improvement.relative
    need = max(absolute, relative_gain)
    numbers = f"pooled {metric} delta {ci_text(ci, confidence)}"
    bounds = f"minImprovement.absolute +{_f(absolute)}, relative +{promotion.min_improvement.relative * 100:.2f}%"
    if min(ci.low, ci.delta if point is None else point) + EPSILON >= need:
        reasons.append(f"Improvement shown: {numbers}; the lower bound reaches +{_f(need)} ({bounds}).")
    elif ci.delta + EPSILON >= need:
        fail(
            f"Improvement not shown: {numbers}; the point estimate reaches +{_f(need)} ({bounds}), but the "
            "lower bound does not: the gain is within the evaluation's noise."
        )
    else:
        fail(f"Improvement too small: {numbers}; the lower bound must reach +{_f(need)} ({bounds}).")


def era_bound(era: str, ci: Interval, images: int, limit: float, metric: str, confidence: float, reasons: list[str], fail: Fail) -> None:  # fmt: skip
    """Per-era non-inferiority: the era's lower bound >= -maxEraRegression passes; an upper bound below it
    rejects (forgetting shown); anything between is inconclusive and blocks."""
    numbers = f"{images} test images, {metric} delta {ci_text(ci, confidence)}"
    if min(ci.low, ci.delta) + EPSILON >= -limit:  # never passes what its own point estimate fails
        reasons.append(f"Era {_name(era)}: {numbers}: no drop beyond maxEraRegression {_f(limit)} (non-inferior).")
    elif ci.high + EPSILON < -limit:
        fail(
            f"Era {_name(era)} regressed: {numbers}: the whole interval lies below -{_f(limit)}, more than "
            "maxEraRegression allows (forgetting)."
        )
    else:
        fail(
            f"Era {_name(era)} inconclusive: {numbers}: too few or too noisy test images to show it did not drop "
            f"by more than maxEraRegression {_f(limit)}; not promoted (add test images to the era, lower "
            "promotion.confidence or raise maxEraRegression)."
        )


def new_classes(candidate: Evaluation, eras: list[str]) -> dict[str, set[str]]:
    """Per era: classes with test labels there and in no earlier era of `eras` (new: reported, not guarded)."""
    seen: set[str] = set()
    new: dict[str, set[str]] = {}
    for i, era in enumerate(eras):
        m = candidate.eras.get(era)
        labelled = set(m.per_class) | set(m.class_instances) if m is not None else set()
        new[era] = labelled - seen if i > 0 else set()
        seen |= labelled
    return new


def class_guard(
    candidate: Evaluation,
    incumbent: Evaluation,
    intervals: PairedBootstrap | None,
    promotion: PromotionSpec,
    eras: list[str],
    reasons: list[str],
    fail: Fail,
) -> None:
    """Per-class x era guard on AP50-95: a cell with >= minClassSupport test instances rejects when its drop
    exceeds maxClassRegression (with intervals: when its whole interval lies below -maxClassRegression)."""
    limit = promotion.max_class_regression
    if limit is None:
        return
    support = promotion.min_class_support
    new = new_classes(candidate, eras)
    checked = small = 0
    for era in eras:
        ce, ie = candidate.eras.get(era), incumbent.eras.get(era)
        if ce is None or ie is None:
            continue
        cells = intervals.eras[era].classes if intervals is not None and era in intervals.eras else None
        for cls in sorted(set(ce.per_class) | set(ce.class_instances)):
            cell = cells.get(cls) if cells is not None else None
            instances = cell.instances if cell is not None else ce.class_instances.get(cls)
            c_ap = cell.candidate if cell is not None else ce.per_class.get(cls, 0.0)
            i_ap = cell.incumbent if cell is not None else ie.per_class.get(cls, 0.0)
            where = f"Class {_name(cls)} in era {_name(era)}"
            if cls in new[era]:
                reasons.append(
                    f"{where} is new (no test labels in an earlier era): AP50-95 {_f(c_ap)} vs incumbent "
                    f"{_f(i_ap)}, reported, not guarded."
                )
                continue
            if instances is None or instances < support:
                small += 1
                continue
            checked += 1
            ap_text = f"AP50-95 {_f(i_ap)} -> {_f(c_ap)}"
            if intervals is not None and cell is not None:
                if cell.high + EPSILON < -limit:
                    fail(
                        f"{where} regressed: {ap_text} ({ci_text(cell, intervals.confidence)}, {instances} "
                        f"instances): the whole interval lies below -{_f(limit)}, more than maxClassRegression "
                        "allows (forgetting)."
                    )
            elif c_ap + EPSILON < i_ap - limit:
                fail(
                    f"{where} regressed: {ap_text} ({_s(c_ap - i_ap)}, {instances} instances), more than "
                    f"maxClassRegression {_f(limit)} allows (forgetting)."
                )
    reasons.append(
        f"Class guard: {checked} (era, class) cells with at least {support} test instances checked against "
        f"maxClassRegression {_f(limit)}" + (f"; {small} smaller cells not guarded." if small else ".")
    )
