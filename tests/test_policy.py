"""Table-driven tests of the promotion policy (pure function, no server)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from kretrain.api import CHECK_NAMES, CheckResult, Evaluation, Metrics, PromotionSpec
from kretrain.policy import decide

ERAS = ["spring", "summer", "winter"]


def m(value: float, **other: float) -> Metrics:
    """Metrics whose mAP50-95 is `value` (others default to distinct numbers so a wrong metric shows)."""
    return Metrics(
        map50_95=value,
        map50=other.get("map50", min(1.0, value + 0.2)),
        precision=other.get("precision", 0.9),
        recall=other.get("recall", 0.1),
    )


def ev(pooled: float, eras: dict[str, float] | None = None, **pooled_other: float) -> Evaluation:
    eras = {e: pooled for e in ERAS} if eras is None else eras
    return Evaluation(pooled=m(pooled, **pooled_other), eras={e: m(v) for e, v in eras.items()})


def ok_checks() -> list[CheckResult]:
    return [CheckResult(name=n, passed=True) for n in CHECK_NAMES]


@dataclass
class Case:
    id: str
    candidate: Evaluation
    incumbent: Evaluation | None
    promotion: dict[str, Any] = field(default_factory=dict)
    checks: list[CheckResult] | None = None
    eras: list[str] = field(default_factory=lambda: list(ERAS))
    passed: bool = True
    promoted: bool | None = None  # defaults to `passed`
    must_mention: list[str] = field(default_factory=list)  # substrings some reason must contain
    failures: int | None = None  # number of failing reasons expected (when the case is about counting)


CASES = [
    Case("clear improvement", ev(0.60), ev(0.50), must_mention=["pooled mAP50-95 0.6000 vs incumbent 0.5000"]),
    Case(
        "improves overall but forgets one era",
        ev(0.65, {"spring": 0.70, "summer": 0.75, "winter": 0.40}),
        ev(0.55, {"spring": 0.50, "summer": 0.50, "winter": 0.55}),
        passed=False,
        must_mention=["Era 'winter' regressed", "0.5500 to 0.4000", "-0.1500", "maxEraRegression 0.0200"],
        failures=1,
    ),
    Case(
        "era drop within maxEraRegression",
        ev(0.60, {"spring": 0.70, "summer": 0.70, "winter": 0.49}),
        ev(0.50, {"spring": 0.50, "summer": 0.50, "winter": 0.50}),
        promotion={"maxEraRegression": 0.02},
        must_mention=["Era 'winter': mAP50-95 0.4900 vs incumbent 0.5000 (-0.0100), within the allowed drop"],
    ),
    Case(
        "era drop exactly at maxEraRegression passes",
        ev(0.60, {"spring": 0.70, "summer": 0.70, "winter": 0.48}),
        ev(0.50, {"spring": 0.50, "summer": 0.50, "winter": 0.50}),
        promotion={"maxEraRegression": 0.02},
    ),
    Case(
        "era drop just over maxEraRegression fails",
        ev(0.60, {"spring": 0.70, "summer": 0.70, "winter": 0.4799}),
        ev(0.50, {"spring": 0.50, "summer": 0.50, "winter": 0.50}),
        promotion={"maxEraRegression": 0.02},
        passed=False,
        must_mention=["Era 'winter' regressed"],
    ),
    Case(
        "two eras forgotten, both named",
        ev(0.60, {"spring": 0.30, "summer": 0.90, "winter": 0.30}),
        ev(0.50, {"spring": 0.50, "summer": 0.50, "winter": 0.50}),
        passed=False,
        must_mention=["Era 'spring' regressed", "Era 'winter' regressed"],
        failures=2,
    ),
    Case(
        "absolute bound met",
        ev(0.52),
        ev(0.50),
        promotion={"minImprovement": {"absolute": 0.02}},
        must_mention=["Absolute improvement holds"],
    ),
    Case(
        "absolute bound missed",
        ev(0.515),
        ev(0.50),
        promotion={"minImprovement": {"absolute": 0.02}},
        passed=False,
        must_mention=["Absolute improvement too small", "+0.0150", "+0.0200", "must reach 0.5200"],
    ),
    Case(
        "relative bound met (10% of 0.50 = 0.05)",
        ev(0.55),
        ev(0.50),
        promotion={"minImprovement": {"relative": 0.10}},
        must_mention=["Relative improvement holds", "+10.00%"],
    ),
    Case(
        "relative bound missed though absolute met",
        ev(0.54),
        ev(0.50),
        promotion={"minImprovement": {"absolute": 0.01, "relative": 0.10}},
        passed=False,
        must_mention=["Relative improvement too small", "+8.00%", "at least +10.00%", "must reach 0.5500"],
        failures=1,
    ),
    Case(
        "absolute bound missed though relative met (low incumbent)",
        ev(0.12),
        ev(0.10),
        promotion={"minImprovement": {"absolute": 0.05, "relative": 0.10}},
        passed=False,
        must_mention=["Absolute improvement too small", "Relative improvement holds"],
        failures=1,
    ),
    Case(
        "equal metrics with zero bounds pass (ties allowed)",
        ev(0.50),
        ev(0.50),
        must_mention=["(+0.0000)"],
    ),
    Case(
        "equal metrics with a positive absolute bound fail",
        ev(0.50),
        ev(0.50),
        promotion={"minImprovement": {"absolute": 0.001}},
        passed=False,
        must_mention=["Absolute improvement too small"],
    ),
    Case("worse overall fails even with zero bounds", ev(0.49), ev(0.50), passed=False, failures=2),
    Case(
        "era missing from candidate",
        ev(0.60, {"spring": 0.6, "summer": 0.6}),
        ev(0.50),
        passed=False,
        must_mention=["Era 'winter' is missing from the candidate's evaluation"],
        failures=1,
    ),
    Case(
        "era missing from incumbent",
        ev(0.60),
        ev(0.50, {"spring": 0.5, "summer": 0.5}),
        passed=False,
        must_mention=["Era 'winter' is missing from the incumbent's evaluation"],
        failures=1,
    ),
    Case(
        "failed required check",
        ev(0.70),
        ev(0.50),
        checks=[
            *[CheckResult(name=n, passed=True) for n in CHECK_NAMES if n != "fusionConsistency"],
            CheckResult(
                name="fusionConsistency", passed=False, value=0.3, threshold=0.001, detail="outputs differ after fuse()"
            ),
        ],
        passed=False,
        must_mention=["Required check 'fusionConsistency' failed (value 0.3, threshold 0.001): outputs differ"],
        failures=1,
    ),
    Case(
        "required check not run",
        ev(0.70),
        ev(0.50),
        checks=[CheckResult(name=n, passed=True) for n in CHECK_NAMES if n != "finiteLoss"],
        passed=False,
        must_mention=["Required check 'finiteLoss' was not run"],
        failures=1,
    ),
    Case(
        "failed check that is not required does not block",
        ev(0.70),
        ev(0.50),
        promotion={"requiredChecks": ["finiteLoss"]},
        checks=[CheckResult(name="finiteLoss", passed=True), CheckResult(name="generalizationGap", passed=False)],
        must_mention=["Check 'generalizationGap' failed; it is not required"],
    ),
    Case(
        "first model, checks pass, no floor",
        ev(0.05),
        None,
        must_mention=["No incumbent: this is the first model of the line (pooled mAP50-95 0.0500)"],
    ),
    Case(
        "first model above floor",
        ev(0.31),
        None,
        promotion={"minMetric": 0.3},
        must_mention=["meets the floor minMetric 0.3000"],
    ),
    Case(
        "first model below floor",
        ev(0.29),
        None,
        promotion={"minMetric": 0.3},
        passed=False,
        must_mention=["Pooled mAP50-95 0.2900 is below the floor minMetric 0.3000"],
        failures=1,
    ),
    Case(
        "first model with failed check",
        ev(0.90),
        None,
        checks=[*ok_checks()[:-1], CheckResult(name=CHECK_NAMES[-1], passed=False)],
        passed=False,
        must_mention=[f"Required check '{CHECK_NAMES[-1]}' failed"],
    ),
    Case(
        "first model missing an era",
        ev(0.90, {"spring": 0.9}),
        None,
        passed=False,
        must_mention=["Era 'summer' is missing", "Era 'winter' is missing"],
        failures=2,
    ),
    Case(
        "floor applies with an incumbent too",
        ev(0.25),
        ev(0.20),
        promotion={"minMetric": 0.3},
        passed=False,
        must_mention=["below the floor"],
        failures=1,
    ),
    Case(
        "dry run passes but does not promote",
        ev(0.60),
        ev(0.50),
        promotion={"mode": "dryRun"},
        promoted=False,
        must_mention=["Dry run", "not promoted"],
    ),
    Case(
        "dry run that fails the gate",
        ev(0.40),
        ev(0.50),
        promotion={"mode": "dryRun"},
        passed=False,
        promoted=False,
    ),
    Case(
        "gate metric mAP50 is used instead of mAP50-95",
        ev(0.40, map50=0.80),
        ev(0.50, map50=0.70),
        promotion={"metric": "mAP50", "maxEraRegression": 1.0},
        must_mention=["pooled mAP50 0.8000 vs incumbent 0.7000 (+0.1000)"],
    ),
    Case(
        "bound computed in floats is met exactly",
        ev(0.51),
        ev(0.50),
        promotion={"minImprovement": {"absolute": 0.01}},
    ),
    Case(
        "eras not in the job's list are not judged",
        ev(0.60, {"spring": 0.6, "summer": 0.6, "winter": 0.6, "old": 0.0}),
        ev(0.50, {"spring": 0.5, "summer": 0.5, "winter": 0.5, "old": 0.9}),
    ),
    Case(
        "incumbent at zero: any gain meets a relative bound",
        ev(0.01),
        ev(0.0),
        promotion={"minImprovement": {"relative": 0.5}},
        must_mention=["infinite relative gain"],
    ),
]


def test_table_has_at_least_20_cases() -> None:
    assert len(CASES) >= 20
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decide(case: Case) -> None:
    promotion = PromotionSpec.model_validate(case.promotion)
    checks = ok_checks() if case.checks is None else case.checks
    d = decide(case.candidate, case.incumbent, checks, promotion, case.eras)
    text = "\n".join(d.reasons)
    assert d.passed is case.passed, text
    assert d.promoted is (case.passed if case.promoted is None else case.promoted), text
    assert d.mode == promotion.mode
    for needle in case.must_mention:
        assert needle in text, f"{needle!r} not in reasons:\n{text}"
    if case.failures is not None:
        failing = [r for r in d.reasons if _is_failure(r)]
        assert len(failing) == case.failures, text
    # Every reason is a full sentence.
    assert d.reasons and all(r[0].isupper() and r.endswith(".") for r in d.reasons), text
    if not case.passed:
        assert d.summary.startswith("Rejected: ")
    elif d.promoted:
        assert d.summary.startswith("Promoted: ")
    else:
        assert d.summary.startswith("Passed (dry run")


def _is_failure(reason: str) -> bool:
    return any(k in reason for k in ("regressed", "too small", "is missing", "was not run", "below the floor")) or (
        reason.startswith("Required check") and " failed" in reason
    )


def test_decide_is_pure_and_deterministic() -> None:
    cand, inc = ev(0.6), ev(0.5)
    before = (cand.model_dump(), inc.model_dump())
    a = decide(cand, inc, ok_checks(), PromotionSpec(), ERAS)
    b = decide(cand, inc, ok_checks(), PromotionSpec(), ERAS)
    assert a == b and a.decided_at is None
    assert (cand.model_dump(), inc.model_dump()) == before


def test_summary_leads_with_forgetting_when_pooled_also_fails() -> None:
    """The printer column shows the forgotten era first, even when the pooled bound failed too."""
    from kretrain.api import Evaluation, Metrics, PromotionSpec
    from kretrain.policy import decide

    def ev(e1: float, e2: float, pooled: float) -> Evaluation:
        m = lambda v: Metrics.model_validate({"mAP50-95": v, "mAP50": v, "precision": v, "recall": v})  # noqa: E731
        return Evaluation(pooled=m(pooled), eras={"e1": m(e1), "e2": m(e2)})

    d = decide(ev(0.3, 0.5, 0.4), ev(0.8, 0.1, 0.45), [], PromotionSpec(required_checks=[]), ["e1", "e2"])
    assert not d.passed
    assert d.summary.startswith("Rejected: Era 'e1' regressed"), d.summary
    assert "(+2 more)" in d.summary  # the absolute and the relative bound
