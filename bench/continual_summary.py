"""Pure summaries of the continual benchmark: per-seed chains to mean +- spread, Pareto front, goal, advice."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from continual_analysis import (
    GOAL_COMPUTE_RATIO,
    GOAL_METRIC_RATIO,
    accuracy_matrix,
    best_goal,
    dominator,
    forgetting,
    goal_results,
    mean_spread,
    pareto_front,
    ratio,
)

Step = Mapping[str, Any]
"""One step as `dataclasses.asdict(StepResult)`."""


def _stat(values: Sequence[float]) -> dict[str, Any]:
    mean, spread = mean_spread(values)
    return {"mean": mean, "spread": spread, "min": min(values), "max": max(values), "values": list(values)}


def seed_result(steps: Sequence[Step], row0: Mapping[str, float], eras: Sequence[str]) -> dict[str, Any]:
    """One seed's chain: accuracy matrix (row 0: the era-1 model), forgetting, final pooled, compute, gate."""
    matrix = accuracy_matrix([row0, *(s["candidate"] for s in steps)], eras)
    learned = {era: i for i, era in enumerate(eras)}
    return {
        "seed": steps[0]["seed"],
        "steps": [dict(s) for s in steps],
        "matrix": matrix,
        "forgetting": forgetting(matrix, eras, learned),
        "pooled": steps[-1]["pooled"],
        "image_epochs": sum(s["image_epochs"] for s in steps),
        "wall_seconds": round(sum(s["wall_seconds"] for s in steps), 2),
        "process_seconds": round(sum(s["process_seconds"] for s in steps), 2),
        "passed_all": all(s["passed"] for s in steps),
        "gate": [s["passed"] for s in steps],
    }


def strategy_summary(meta: Mapping[str, Any], seeds: Sequence[dict[str, Any]], eras: Sequence[str]) -> dict[str, Any]:
    """Mean +- spread over seeds of one strategy: pooled, image-epochs, matrix cells, forgetting; gate count
    and stopping epochs per step. `meta`: the strategy's description (name, label, ...)."""
    rows = len(seeds[0]["matrix"])
    cells: list[list[dict[str, Any] | None]] = []
    for i in range(rows):
        row: list[dict[str, Any] | None] = []
        for j in range(len(eras)):
            vals = [s["matrix"][i][j] for s in seeds if s["matrix"][i][j] is not None]
            row.append(_stat(vals) if vals else None)
        cells.append(row)
    forgot: dict[str, dict[str, Any] | None] = {}
    for era in eras:
        vals = [s["forgetting"][era] for s in seeds if s["forgetting"][era] is not None]
        forgot[era] = _stat(vals) if vals else None
    steps_n = len(seeds[0]["steps"])
    return {
        **meta,
        "seeds": list(seeds),
        "pooled": _stat([s["pooled"] for s in seeds]),
        "image_epochs": _stat([float(s["image_epochs"]) for s in seeds]),
        "wall_seconds": _stat([s["wall_seconds"] for s in seeds]),
        "passes": sum(1 for s in seeds if s["passed_all"]),
        "seeds_run": len(seeds),
        "stops": {
            seeds[0]["steps"][k]["eras"][-1]: [s["steps"][k]["epochs_completed"] for s in seeds] for k in range(steps_n)
        },
        "best_epochs": {
            seeds[0]["steps"][k]["eras"][-1]: [s["steps"][k]["best_epoch"] for s in seeds] for k in range(steps_n)
        },
        "planned_epochs": {
            seeds[0]["steps"][k]["eras"][-1]: [s["steps"][k]["epochs_planned"] for s in seeds] for k in range(steps_n)
        },
        "matrix": cells,
        "forgetting": forgot,
    }


def compare(summaries: Sequence[dict[str, Any]], reference: str) -> dict[str, Any]:
    """Ratios to the reference (from the mean image-epochs and mean pooled), Pareto front, goal, advice.

    Adds `metric_ratio`, `compute_ratio`, `pareto` and `advice` to every summary (in place) and returns the
    front and the goal check.
    """
    by = {s["name"]: s for s in summaries}
    ref = by.get(reference)
    points = {s["name"]: (s["image_epochs"]["mean"], s["pooled"]["mean"]) for s in summaries}
    front = pareto_front(points)
    for s in summaries:
        s["metric_ratio"] = ratio(s["pooled"]["mean"], ref["pooled"]["mean"]) if ref else None
        s["compute_ratio"] = ratio(s["image_epochs"]["mean"], ref["image_epochs"]["mean"]) if ref else None
        s["pareto"] = s["name"] in front
    passing = {n: p for n, p in points.items() if by[n]["passes"] == by[n]["seeds_run"]}
    for s in summaries:  # only a strategy the gate accepted on every seed is recommended instead
        s["dominated_by"] = dominator(s["name"], {**passing, s["name"]: points[s["name"]]})
    for s in summaries:
        s["advice"] = advice(s, ref, by)
    goal = None
    others = [s["name"] for s in summaries if s["name"] != reference]
    if ref is not None and others:
        pooled = {n: by[n]["pooled"]["mean"] for n in by}
        compute = {n: by[n]["image_epochs"]["mean"] for n in by}
        passes = {n: by[n]["passes"] == by[n]["seeds_run"] for n in by}
        per = goal_results(pooled, compute, reference, others, passes)
        best = best_goal(per)
        assert best is not None
        band = by[best.strategy]["pooled"]["spread"] / ref["pooled"]["mean"] if ref["pooled"]["mean"] > 0 else None
        goal = {
            "metric_ratio_required": GOAL_METRIC_RATIO,
            "compute_ratio_allowed": GOAL_COMPUTE_RATIO,
            "per_strategy": [{**asdict(g), "met": g.met} for g in per],
            "best": best.strategy,
            "met": best.met,
            "metric_shortfall": None if best.metric_ratio is None else max(0.0, GOAL_METRIC_RATIO - best.metric_ratio),
            "compute_excess": None if best.compute_ratio is None else max(0.0, best.compute_ratio - GOAL_COMPUTE_RATIO),
            "noise_band": band,
        }
    return {"pareto_front": front, "goal": goal}


def _pct(x: float | None) -> str:
    return "?" if x is None else f"{100 * x:.0f}%"


_REJECTIONS = (
    (("Era ",), " regressed", "forgetting shown on {eras}"),
    (("Era ",), " inconclusive", "too few test images to show {eras} did not drop by more than maxEraRegression"),
    (("Improvement too small", "Improvement not shown"), "", "no gain over the incumbent shown"),
    (("Required check ",), " failed", "a required check failed"),
    (("Required check ",), " was not run", "a required check was not run"),
    (("Class ",), " regressed", "an (era, class) cell regressed"),
)
"""(how the reason starts, what its head before the first ':' or '.' holds, the phrase): kretrain.policy's wording."""


def rejections(s: Mapping[str, Any]) -> list[str]:
    """Why the gate rejected the strategy's failed steps, from the decisions' own reasons, one phrase per kind
    (in _REJECTIONS' order); a passed step's reasons are not looked at."""
    found: dict[str, set[str]] = {}
    for seed in s.get("seeds") or []:
        for step in seed.get("steps") or []:
            if step.get("passed"):
                continue
            for reason in step.get("reasons") or []:
                head = reason.split(":", 1)[0].split(".", 1)[0]
                for starts, marker, phrase in _REJECTIONS:
                    if head.startswith(starts) and marker in head:
                        era = head.split("'")[1] if starts == ("Era ",) and "'" in head else ""
                        found.setdefault(phrase, set()).update([era] if era else [])
    return [p.format(eras=", ".join(sorted(found[p])) or "an era") for _, _, p in _REJECTIONS if p in found]


def advice(s: Mapping[str, Any], ref: Mapping[str, Any] | None, by: Mapping[str, Mapping[str, Any]]) -> str:
    """One sentence on when to use the strategy, from its measured numbers (gate, Pareto front, ratios)."""
    n, runs = s["passes"], s["seeds_run"]
    pooled = f"pooled {s['pooled']['mean']:.3f} ± {s['pooled']['spread']:.3f}"
    cost = f"{s['image_epochs']['mean']:.0f} image-epochs"
    vs = f"{_pct(s['metric_ratio'])} of full's pooled metric at {_pct(s['compute_ratio'])} of its image-epochs"
    if n < runs:
        forgot = [f"{era} {v['mean']:.3f}" for era, v in s["forgetting"].items() if v is not None and v["mean"] > 0.02]
        why = [f"it forgets ({', '.join(forgot)} mAP50-95 lost)"] if forgot else []
        why += [w for w in rejections(s) if not (forgot and w.startswith("forgetting"))]
        text = "; ".join(why) or "its candidates failed the gate"
        return f"Avoid as a default: the default gate rejected it on {runs - n}/{runs} seeds ({text}); {pooled}."
    if s["dominated_by"] is not None:
        d = by[s["dominated_by"]]
        return (
            f"Prefer `{d['name']}`: it reaches pooled {d['pooled']['mean']:.3f} with "
            f"{d['image_epochs']['mean']:.0f} image-epochs, where this one needs {cost} for {s['pooled']['mean']:.3f}."
        )
    if ref is None or s["name"] == ref["name"]:
        return f"The reference the others are measured against: {pooled} at {cost}, gate passed on {n}/{runs} seeds."
    close = abs(s["pooled"]["mean"] - ref["pooled"]["mean"]) <= s["pooled"]["spread"] + ref["pooled"]["spread"]
    noise = " (within the seed spread of full)" if close else ""
    mr, cr = s["metric_ratio"] or 0.0, s["compute_ratio"] or 0.0
    if mr >= GOAL_METRIC_RATIO and cr <= GOAL_COMPUTE_RATIO:
        return f"Use it by default while old data is kept: {vs}{noise}, gate passed on every seed."
    if cr < 1:
        return f"Use it when compute is tight and {_pct(mr)} of the full retrain's accuracy is enough: {vs}{noise}."
    return f"Use it when accuracy matters more than compute: {vs}{noise}, gate passed on every seed."
