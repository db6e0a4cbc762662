"""The promotion gate: a pure function of both evaluations, the checks and the spec's thresholds."""

from __future__ import annotations

from collections.abc import Callable

from kretrain.api.evaluation import Evaluation, Metrics
from kretrain.api.intervals import PairedBootstrap
from kretrain.api.report import RunReport
from kretrain.api.spec import MetricName, PromotionSpec, RetrainJobSpec
from kretrain.api.status import CheckResult, Decision
from kretrain.policy_guards import class_guard, era_bound, pooled_bounds, usable_intervals

# Comparisons allow this much floating-point slack, so a candidate exactly at a bound (e.g.
# 0.50 + 0.01 computed as 0.51000000000000001) is not rejected by rounding.
EPSILON = 1e-9


def _f(x: float) -> str:
    return f"{x:.4f}"


def _signed(x: float) -> str:
    return f"{x:+.4f}"


def decide(
    candidate: Evaluation,
    incumbent: Evaluation | None,
    checks: list[CheckResult],
    promotion: PromotionSpec,
    eras: list[str],
    intervals: PairedBootstrap | None = None,
) -> Decision:
    """Decide whether `candidate` replaces `incumbent`; every reason is a sentence with the numbers.

    The gate passes only when all of these hold:

    - every check named in `promotion.requiredChecks` was run and passed (a failed check that is not
      required is reported but does not block);
    - every era in `eras` is present in the candidate's evaluation and, when there is an incumbent,
      in the incumbent's (a missing era fails, naming the era and the model);
    - the pooled metric is at least `promotion.minMetric` when that floor is set (for every
      candidate, not only the first model of a line);
    - with an incumbent, on the pooled mixed-era test set: candidate >= incumbent + minImprovement.absolute
      AND candidate >= incumbent * (1 + minImprovement.relative). With both bounds 0, a candidate
      equal to the incumbent passes this bound (ties are allowed; set a bound above 0 to require a
      strict gain);
    - with an incumbent, no era in `eras` drops by more than `promotion.maxEraRegression` (absolute):
      candidate_era >= incumbent_era - maxEraRegression (the forgetting guard).

    - with an incumbent, no (era, class) cell with at least `minClassSupport` test instances loses more than
      `maxClassRegression` of its AP50-95 (classes new in an era are reported, not guarded).

    With `promotion.uncertainty: bootstrap` and `intervals` computed on the gate metric against this
    incumbent, the bounds apply to the paired-bootstrap intervals instead of the point estimates: the pooled
    delta's lower bound must reach both minImprovement bounds (superiority), each era's lower bound must be
    >= -maxEraRegression (non-inferiority; an era whose interval straddles the bound is inconclusive and blocks,
    one entirely below it is forgetting), and a class cell rejects only when its whole interval lies below
    -maxClassRegression. Without usable intervals the point estimates decide and a reason says so.

    Without an incumbent (first model of a line) only the checks, era coverage of the candidate and
    the optional floor apply. All comparisons allow a slack of 1e-9 for floating-point rounding.

    `passed` is the gate's verdict; `promoted` is `passed` in `auto` mode and always False in
    `dryRun` mode (a reason says so). `decided_at` is left unset: the caller stamps the time, which
    keeps this function pure.
    """
    metric = promotion.metric
    reasons: list[str] = []
    failures: list[str] = []

    def fail(msg: str) -> None:
        reasons.append(msg)
        failures.append(msg)

    # -- required checks
    by_name = {c.name: c for c in checks}
    for name in promotion.required_checks:
        check = by_name.get(name)
        if check is None:
            fail(f"Required check '{name}' was not run, so the candidate cannot be promoted.")
        elif not check.passed:
            fail(f"Required check '{name}' failed{_check_numbers(check)}{_detail(check)}.")
        else:
            reasons.append(f"Required check '{name}' passed{_check_numbers(check)}.")
    for check in checks:
        if check.name not in promotion.required_checks and not check.passed:
            reasons.append(
                f"Check '{check.name}' failed{_check_numbers(check)}{_detail(check)}; "
                "it is not required, so it does not block promotion."
            )

    # -- era coverage
    for era in eras:
        if era not in candidate.eras:
            fail(f"Era '{era}' is missing from the candidate's evaluation; every era must be evaluated.")
        if incumbent is not None and era not in incumbent.eras:
            fail(f"Era '{era}' is missing from the incumbent's evaluation; the two models cannot be compared on it.")

    cand_pooled = candidate.pooled.get(metric)

    # -- floor
    if promotion.min_metric is not None:
        if cand_pooled + EPSILON >= promotion.min_metric:
            reasons.append(f"Pooled {metric} {_f(cand_pooled)} meets the floor minMetric {_f(promotion.min_metric)}.")
        else:
            fail(f"Pooled {metric} {_f(cand_pooled)} is below the floor minMetric {_f(promotion.min_metric)}.")

    if incumbent is None:
        reasons.append(
            f"No incumbent: this is the first model of the line (pooled {metric} {_f(cand_pooled)}), "
            "so only the checks, era coverage and the optional floor apply."
        )
    else:
        _compare(candidate, incumbent, promotion, eras, reasons, fail, intervals)

    passed = not failures
    if passed and promotion.mode == "dryRun":
        reasons.append("Dry run: the candidate passed the gate, but mode is dryRun, so it is not promoted.")
    promoted = passed and promotion.mode == "auto"
    return Decision(
        promoted=promoted,
        passed=passed,
        mode=promotion.mode,
        summary=_summary(passed, promoted, metric, cand_pooled, incumbent, failures),
        reasons=reasons,
    )


def decide_report(report: RunReport, spec: RetrainJobSpec) -> Decision:
    """`decide` on what a run's report holds (evaluations, checks, intervals) under the run's own spec."""
    return decide(
        report.candidate_evaluation,
        report.incumbent_evaluation,
        report.checks,
        spec.promotion,
        spec.dataset.eras,
        report.intervals,
    )


def _compare(
    candidate: Evaluation,
    incumbent: Evaluation,
    promotion: PromotionSpec,
    eras: list[str],
    reasons: list[str],
    fail: Callable[[str], None],
    intervals: PairedBootstrap | None,
) -> None:
    """Pooled improvement bounds, the per-era and the per-class forgetting guards."""
    metric = promotion.metric
    c = candidate.pooled.get(metric)
    i = incumbent.pooled.get(metric)
    ci = usable_intervals(intervals, incumbent, promotion, reasons)
    if ci is not None:
        pooled_bounds(ci.pooled, i, promotion, ci.confidence, reasons, fail, point=c - i)
    else:
        _point_bounds(c, i, promotion, reasons, fail)
    limit = promotion.max_era_regression
    for era in eras:
        ce: Metrics | None = candidate.eras.get(era)
        ie: Metrics | None = incumbent.eras.get(era)
        if ce is None or ie is None:
            continue  # already failed as missing
        if ci is not None and era in ci.eras:
            era_bound(era, ci.eras[era], ci.eras[era].images, limit, metric, ci.confidence, reasons, fail)
            continue
        cv, iv = ce.get(metric), ie.get(metric)
        d = cv - iv
        if cv + EPSILON >= iv - limit:
            reasons.append(
                f"Era '{era}': {metric} {_f(cv)} vs incumbent {_f(iv)} ({_signed(d)}), "
                f"within the allowed drop of {_f(limit)}."
            )
        else:
            fail(
                f"Era '{era}' regressed: {metric} fell from {_f(iv)} to {_f(cv)} ({_signed(d)}), "
                f"more than maxEraRegression {_f(limit)} allows (forgetting)."
            )
    class_guard(candidate, incumbent, ci, promotion, eras, reasons, fail)


def _point_bounds(
    c: float, i: float, promotion: PromotionSpec, reasons: list[str], fail: Callable[[str], None]
) -> None:
    """Both minImprovement bounds on the pooled point estimates."""
    metric = promotion.metric
    delta = c - i
    absolute = promotion.min_improvement.absolute
    relative = promotion.min_improvement.relative
    need_abs = i + absolute
    need_rel = i * (1 + relative)
    numbers = f"pooled {metric} {_f(c)} vs incumbent {_f(i)} ({_signed(delta)})"
    if c + EPSILON >= need_abs:
        reasons.append(f"Absolute improvement holds: {numbers}, at least +{_f(absolute)} required.")
    else:
        fail(
            f"Absolute improvement too small: {numbers}; at least +{_f(absolute)} is required "
            f"(candidate must reach {_f(need_abs)})."
        )
    rel_gain = (delta / i) if i > 0 else float("inf") if delta > 0 else 0.0
    rel_text = f"{rel_gain * 100:+.2f}%" if rel_gain != float("inf") else "infinite relative gain"
    if c + EPSILON >= need_rel:
        reasons.append(f"Relative improvement holds: {numbers}, {rel_text}, at least +{relative * 100:.2f}% required.")
    else:
        fail(
            f"Relative improvement too small: {numbers}, {rel_text}; at least +{relative * 100:.2f}% is required "
            f"(candidate must reach {_f(need_rel)})."
        )


def _check_numbers(check: CheckResult) -> str:
    if check.value is None:
        return ""
    if check.threshold is None:
        return f" (value {check.value:.4g})"
    return f" (value {check.value:.4g}, threshold {check.threshold:.4g})"


def _detail(check: CheckResult) -> str:
    return f": {check.detail.rstrip('.')}" if check.detail else ""


def _summary(
    passed: bool,
    promoted: bool,
    metric: MetricName,
    cand: float,
    incumbent: Evaluation | None,
    failures: list[str],
) -> str:
    vs = f" vs {_f(incumbent.pooled.get(metric))}" if incumbent is not None else " (first model)"
    head = f"{metric} {_f(cand)}{vs}"
    if not passed:
        # Forgetting is the reason an operator most needs to see first (in the printer column).
        headline = next((f for f in failures if "(forgetting)" in f), failures[0])
        more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
        return f"Rejected: {headline}{more}"
    if promoted:
        return f"Promoted: {head}"
    return f"Passed (dry run, not promoted): {head}"
