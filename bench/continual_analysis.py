"""Pure analysis of the continual benchmark: accuracy matrix, forgetting, compute ratios and the goal check."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Matrix = list[list[float | None]]
"""Rows: the model after each step (row 0: the era-1 model); columns: eras; None: not evaluated."""

GOAL_METRIC_RATIO = 0.95
"""The goal: an incremental setting reaches at least this share of the full retrain's pooled metric..."""
GOAL_COMPUTE_RATIO = 0.50
"""...with at most this share of its image-epochs."""


def accuracy_matrix(rows: Sequence[Mapping[str, float]], eras: Sequence[str]) -> Matrix:
    """The accuracy matrix: `rows[i][era]` is the metric of the model after step i on that era's test split.

    An era missing from a row (the model was not evaluated on it) is None.
    """
    return [[row.get(era) for era in eras] for row in rows]


def forgetting(matrix: Matrix, eras: Sequence[str], learned_at: Mapping[str, int]) -> dict[str, float | None]:
    """Forgetting of each era: the best value it had from the step it was learned until the step before
    the last, minus its value after the last step (positive = forgotten).

    `learned_at[era]` is the row index of the step that first trained on the era. Eras first learned in
    the last step (nothing earlier to forget) and eras with no final value are None.
    """
    last = len(matrix) - 1
    out: dict[str, float | None] = {}
    for j, era in enumerate(eras):
        start = learned_at[era]
        final = matrix[last][j] if last >= 0 else None
        earlier = [matrix[i][j] for i in range(start, last)]
        known = [v for v in earlier if v is not None]
        out[era] = (max(known) - final) if known and final is not None else None
    return out


def mean_forgetting(values: Mapping[str, float | None]) -> float | None:
    """Mean forgetting over the eras that have a value."""
    known = [v for v in values.values() if v is not None]
    return sum(known) / len(known) if known else None


def ratio(value: float, reference: float) -> float | None:
    """value / reference, or None when the reference is not positive."""
    return value / reference if reference > 0 else None


def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and spread (sample standard deviation, n - 1; 0.0 for a single value) of per-seed values."""
    if not values:
        raise ValueError("no values")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Point a = (cost, value) dominates b: no more cost, no less value, and strictly better in one."""
    return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])


def pareto_front(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """Names of the non-dominated points (cost minimised, value maximised), cheapest first."""
    front = [n for n, p in points.items() if not any(dominates(q, p) for m, q in points.items() if m != n)]
    return sorted(front, key=lambda n: (points[n][0], -points[n][1], n))


def dominator(name: str, points: Mapping[str, tuple[float, float]]) -> str | None:
    """Among the points that dominate `name`, the one with the highest value (then the cheapest); None if none."""
    over = [m for m, q in points.items() if m != name and dominates(q, points[name])]
    return max(over, key=lambda m: (points[m][1], -points[m][0], m)) if over else None


@dataclass(frozen=True)
class GoalResult:
    """How one strategy compares with the full retrain."""

    strategy: str
    """Strategy name."""
    metric_ratio: float | None
    """Its mean final pooled metric / the full retrain's."""
    compute_ratio: float | None
    """Its mean image-epochs / the full retrain's."""
    passes_all: bool = True
    """The default gate passed it at every step on every seed."""

    @property
    def met(self) -> bool:
        """It passes the gate on every seed and both bounds of the goal hold."""
        return (
            self.passes_all
            and self.metric_ratio is not None
            and self.compute_ratio is not None
            and self.metric_ratio >= GOAL_METRIC_RATIO
            and self.compute_ratio <= GOAL_COMPUTE_RATIO
        )


def goal_results(
    pooled: Mapping[str, float],
    image_epochs: Mapping[str, float],
    full: str,
    candidates: Sequence[str],
    passes_all: Mapping[str, bool] | None = None,
) -> list[GoalResult]:
    """Each candidate's metric and compute ratios against the full retrain `full`."""
    return [
        GoalResult(
            strategy=name,
            metric_ratio=ratio(pooled[name], pooled[full]),
            compute_ratio=ratio(float(image_epochs[name]), float(image_epochs[full])),
            passes_all=True if passes_all is None else passes_all[name],
        )
        for name in candidates
    ]


def best_goal(results: Sequence[GoalResult]) -> GoalResult | None:
    """The answer to the goal: the cheapest setting that meets it; if none does, the highest metric ratio
    among those passing the gate on every seed within the compute bound, else among those passing on every
    seed, else among all."""
    if not results:
        return None

    def key(r: GoalResult) -> float:
        return r.metric_ratio if r.metric_ratio is not None else float("-inf")

    met = [r for r in results if r.met]
    if met:
        return min(met, key=lambda r: (r.compute_ratio, -key(r)))
    passing = [r for r in results if r.passes_all]
    cheap = [r for r in passing if r.compute_ratio is not None and r.compute_ratio <= GOAL_COMPUTE_RATIO]
    return max(cheap or passing or list(results), key=key)
