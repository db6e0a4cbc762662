"""Output of the continual benchmark: the text and Markdown tables, and the charts (PNG, SVG, chart JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from continual_analysis import GOAL_COMPUTE_RATIO, GOAL_METRIC_RATIO

METRIC = "mAP50-95"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _pm(stat: dict[str, Any] | None, digits: int = 3) -> str:
    return "-" if stat is None else f"{stat['mean']:.{digits}f} ± {stat['spread']:.{digits}f}"


def _stops(s: dict[str, Any]) -> str:
    return "; ".join(f"{era}: {'/'.join(str(e) for e in eps)}" for era, eps in s["stops"].items())


def table_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The summary table: one row per strategy."""
    headers = [
        "strategy", f"pooled {METRIC}", "vs full", "image-epochs", "vs full", "gate",
        "stopping epochs (per step, per seed)", "Pareto",
    ]  # fmt: skip
    rows = []
    for s in doc["strategies"]:
        rows.append(
            [
                s["name"],
                _pm(s["pooled"]),
                _pct(s["metric_ratio"]),
                _pm(s["image_epochs"], 0),
                _pct(s["compute_ratio"]),
                f"{s['passes']}/{s['seeds_run']}",
                _stops(s),
                "*" if s["pareto"] else "",
            ]
        )
    return headers, rows


def _matrix_rows(s: dict[str, Any], labels: list[str]) -> list[list[str]]:
    return [[label, *(_pm(c) for c in row)] for label, row in zip(labels, s["matrix"], strict=True)]


def tables(doc: dict[str, Any]) -> str:
    """Everything a user reads before choosing, as text."""
    from kretrain.tables import render_table

    eras: list[str] = doc["eras"]
    out = [
        f"Final models after {eras[-1]} ({METRIC}, mean ± spread over {doc['size']['seeds']} training seeds; pooled = "
        "every era's test split together; image-epochs summed over the retraining steps; gate = seeds whose "
        "every step passed the default gate; * = on the Pareto front of pooled vs image-epochs)"
    ]
    headers, rows = table_rows(doc)
    out += [render_table(headers, rows), ""]
    out.append("Forgetting per era (best value since the era was learned minus the final value; positive = forgotten)")
    frows = [[s["name"], *(_pm(s["forgetting"][e]) for e in eras[:-1])] for s in doc["strategies"]]
    out += [render_table(["strategy", *(f"forgetting {e}" for e in eras[:-1])], frows), ""]
    for s in doc["strategies"]:
        out.append(f"Accuracy matrix, {s['name']} ({s['label']}); rows: model after each step, columns: test era")
        out += [render_table(["model", *eras], _matrix_rows(s, doc["matrix_rows"])), ""]
    out.append("When to use each strategy (generated from the numbers above):")
    out += [f"  {s['name']}: {s['advice']}" for s in doc["strategies"]]
    goal = doc.get("goal")
    if goal:
        out += ["", goal_text(goal)]
    return "\n".join(out)


def goal_text(goal: dict[str, Any]) -> str:
    """The goal check in one sentence, with the shortfall and the noise band when it is not met."""
    head = (
        f"Goal (the cheapest strategy passing the gate on every seed reaches >= {_pct(GOAL_METRIC_RATIO)} of full's "
        f"pooled {METRIC} with <= {_pct(GOAL_COMPUTE_RATIO)} of its image-epochs): "
    )
    if goal["met"]:
        return head + f"MET by {goal['best']}"
    if goal["metric_shortfall"] is None:
        return head + f"NOT MET (full's pooled {METRIC} is 0, so no ratio exists; closest: {goal['best']})"
    return head + (
        f"NOT MET; closest: {goal['best']}, {_pct(goal['metric_shortfall'])} short of the metric bound and "
        f"{_pct(goal['compute_excess'])} over the compute bound (its seed spread: ±{_pct(goal['noise_band'])} of "
        "full's pooled)"
    )


def markdown(doc: dict[str, Any]) -> str:
    """The summary table, forgetting, the accuracy matrices and the advice as Markdown (for the docs)."""
    eras: list[str] = doc["eras"]

    def row(cells: list[Any]) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"

    headers, rows = table_rows(doc)
    lines = [row(headers), row(["---"] * len(headers)), *(row([f"`{r[0]}`", *r[1:]]) for r in rows), ""]
    fh = ["strategy", *(f"forgetting {e}" for e in eras[:-1])]
    lines += [row(fh), row(["---"] * len(fh))]
    lines += [row([f"`{s['name']}`", *(_pm(s["forgetting"][e]) for e in eras[:-1])]) for s in doc["strategies"]]
    lines.append("")
    for s in doc["strategies"]:
        lines += [f"`{s['name']}` ({s['label']}):", "", row(["model", *eras]), row(["---"] * (len(eras) + 1))]
        lines += [row(r) for r in _matrix_rows(s, doc["matrix_rows"])]
        lines.append("")
    lines += [f"- `{s['name']}`: {s['advice']}" for s in doc["strategies"]]
    if doc.get("goal"):
        lines += ["", goal_text(doc["goal"])]
    return "\n".join(lines)


def chart_data(doc: dict[str, Any]) -> dict[str, Any]:
    """The compute chart's data: one point per strategy (mean and spread of both axes), the front, the bounds."""
    ref = next((s for s in doc["strategies"] if s["name"] == doc["reference"]), None)
    return {
        "x": "image-epochs (summed over the retraining steps)",
        "y": f"final pooled {METRIC}",
        "points": [
            {
                "strategy": s["name"],
                "image_epochs": s["image_epochs"]["mean"],
                "image_epochs_spread": s["image_epochs"]["spread"],
                "pooled": s["pooled"]["mean"],
                "pooled_spread": s["pooled"]["spread"],
                "passes": s["passes"],
                "seeds": s["seeds_run"],
                "pareto": s["pareto"],
            }
            for s in doc["strategies"]
        ],
        "pareto_front": doc["pareto_front"],
        "goal_metric": None if ref is None else GOAL_METRIC_RATIO * ref["pooled"]["mean"],
        "goal_compute": None if ref is None else GOAL_COMPUTE_RATIO * ref["image_epochs"]["mean"],
    }


def charts(doc: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    """Pooled metric vs image-epochs with the Pareto front (PNG, SVG, JSON data) and mean accuracy matrices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    data = chart_data(doc)
    paths = [out_dir / f"{stem}-compute.json"]
    paths[0].write_text(json.dumps(data, indent=2))
    fig, ax = plt.subplots(figsize=(8, 5))
    for p in data["points"]:
        colour = "tab:blue" if p["passes"] == p["seeds"] else "tab:red"
        ax.errorbar([p["image_epochs"]], [p["pooled"]], xerr=[p["image_epochs_spread"]], yerr=[p["pooled_spread"]],
                    fmt="o", color=colour, capsize=3, ms=7 if p["pareto"] else 5)  # fmt: skip
        ax.annotate(p["strategy"], (p["image_epochs"], p["pooled"]), textcoords="offset points", xytext=(6, 4),
                    fontsize=8)  # fmt: skip
    pts = {p["strategy"]: p for p in data["points"]}
    front = [pts[n] for n in data["pareto_front"]]
    ax.step([p["image_epochs"] for p in front], [p["pooled"] for p in front], where="post", color="black", lw=1,
            label="Pareto front")  # fmt: skip
    if data["goal_metric"] is not None:
        ax.axhline(data["goal_metric"], ls="--", lw=1, color="grey", label=f"{_pct(GOAL_METRIC_RATIO)} of full")
        ax.axvline(
            data["goal_compute"], ls=":", lw=1, color="grey", label=f"{_pct(GOAL_COMPUTE_RATIO)} of full's compute"
        )
    ax.plot([], [], "o", color="tab:red", label="rejected by the gate on some seed")
    ax.set_xlabel(data["x"])
    ax.set_ylabel(data["y"])
    ax.set_title(f"Pooled mixed-era {METRIC} vs compute (mean ± spread over seeds)")
    top = max(p["pooled"] + p["pooled_spread"] for p in data["points"])
    ax.set_xlim(0, 1.15 * max(p["image_epochs"] + p["image_epochs_spread"] for p in data["points"]))
    ax.set_ylim(0, min(1.0, max(0.05, 1.15 * top)))
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    for ext in ("png", "svg"):
        path = out_dir / f"{stem}-compute.{ext}"
        fig.savefig(path, dpi=110)
        paths.append(path)
    plt.close(fig)

    eras: list[str] = doc["eras"]
    results: list[dict[str, Any]] = doc["strategies"]
    cols = min(5, len(results))
    nrows = -(-len(results) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(2.6 * cols + 1.5, 2.9 * nrows), squeeze=False, layout="constrained")
    for k, ax in enumerate(axes.flat):
        if k >= len(results):
            ax.axis("off")
            continue
        r = results[k]
        m = np.array([[np.nan if c is None else c["mean"] for c in row] for row in r["matrix"]], dtype=float)
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                text = "n/a" if np.isnan(m[i, j]) else f"{m[i, j]:.2f}"
                colour = "grey" if np.isnan(m[i, j]) else "black" if m[i, j] > 0.6 else "white"
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)
        ax.set_xticks(range(len(eras)), eras, fontsize=7)
        ax.set_yticks(range(len(doc["matrix_rows"])), doc["matrix_rows"] if k % cols == 0 else [], fontsize=7)
        ax.set_title(r["name"], fontsize=8)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label=METRIC)
    path = out_dir / f"{stem}-matrix.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [*paths, path]
