"""One PNG page of dataset statistics and drift, readable at a glance (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _share(hist: list[int]) -> np.ndarray:
    arr = np.asarray(hist, dtype=np.float64)
    return arr / arr.sum() if arr.sum() > 0 else arr


def _centres(bins: list[float | None]) -> np.ndarray:
    edges = np.asarray([b for b in bins if b is not None], dtype=np.float64)
    return (edges[:-1] + edges[1:]) / 2


def render_chart(stats: dict[str, Any], path: Path) -> Path:
    """Draw counts per split, class shares, box sizes, brightness, boxes per image and drift into `path`."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    eras = list(stats["eras"])
    classes: list[str] = stats["classes"]
    drift = stats["drift"]
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    fig.subplots_adjust(left=0.05, right=0.98, top=0.92, bottom=0.1, wspace=0.3, hspace=0.35)
    fig.suptitle(f"Dataset statistics: {len(eras)} era(s), {len(classes)} classes", fontsize=14)
    x = np.arange(len(eras))

    ax = axes[0, 0]
    bottom = np.zeros(len(eras))
    for split, colour in (("train", "#4c72b0"), ("val", "#dd8452"), ("test", "#55a868")):
        counts = np.asarray([stats["eras"][e][split]["images"] for e in eras], dtype=np.float64)
        ax.bar(x, counts, bottom=bottom, label=split, color=colour)
        bottom += counts
    ax.set_xticks(x, eras, rotation=30, ha="right")
    ax.set_title("Images per era and split")
    ax.legend()

    ax = axes[0, 1]
    width = 0.8 / max(1, len(eras))
    cx = np.arange(len(classes))
    for i, era in enumerate(eras):
        ax.bar(cx + i * width - 0.4 + width / 2, _share(stats["eras"][era]["all"]["classHistogram"]), width, label=era)
    ax.set_xticks(cx, classes, rotation=30, ha="right")
    ax.set_title("Class share of boxes")
    ax.legend(fontsize=8)

    ax = axes[0, 2]
    for era in eras:
        box = stats["eras"][era]["all"]["boxSize"]
        ax.plot(_centres(box["bins"]), _share(box["histogram"]), marker="o", label=era)
    ax.set_xlabel("box size sqrt(w*h), fraction of the image")
    ax.set_title("Box size distribution")
    ax.legend(fontsize=8)

    ax = axes[1, 0]
    for era in eras:
        bright = stats["eras"][era]["all"]["brightness"]
        ax.plot(_centres(bright["bins"]), _share(bright["histogram"]), marker=".", label=era)
    ax.set_xlabel("mean image brightness (0-255)")
    ax.set_title("Brightness distribution")
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    for era in eras:
        hist = stats["eras"][era]["all"]["boxesPerImage"]["histogram"]
        ax.plot(np.arange(len(hist)), _share(hist), marker="o", label=era)
    ax.set_xlabel("boxes per image (last bin: 10+)")
    ax.set_title("Boxes per image")
    ax.legend(fontsize=8)

    ax = axes[1, 2]
    labels: list[str] = []
    class_vals: list[float] = []
    size_vals: list[float] = []
    for pair in drift["eraPairs"]:
        labels.append(f"{pair['a']} vs {pair['b']}")
        class_vals.append(pair["classJsd"] or 0.0)
        size_vals.append(pair["boxSizeJsd"] or 0.0)
    for era, entry in drift["trainVal"].items():
        labels.append(f"{era} train vs val")
        class_vals.append(entry["classJsd"] or 0.0)
        size_vals.append(entry["boxSizeJsd"] or 0.0)
    threshold = float(drift["threshold"])
    y = np.arange(len(labels))
    if labels:
        ax.barh(
            y - 0.2,
            class_vals,
            0.4,
            label="class JSD",
            color=["#c44e52" if v > threshold else "#8172b2" for v in class_vals],
        )
        ax.barh(
            y + 0.2,
            size_vals,
            0.4,
            label="box-size JSD",
            hatch="//",
            color=["#c44e52" if v > threshold else "#64b5cd" for v in size_vals],
        )
        for i, (cv, sv) in enumerate(zip(class_vals, size_vals, strict=True)):
            ax.text(min(cv, 0.85) + 0.01, i - 0.2, f"{cv:.3f}", va="center", fontsize=8)
            ax.text(min(sv, 0.85) + 0.01, i + 0.2, f"{sv:.3f}", va="center", fontsize=8)
        ax.set_yticks(y, labels, fontsize=8)
        ax.invert_yaxis()
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold}")
    ax.set_xlim(0, 1)
    ax.set_title("Drift (Jensen-Shannon divergence; red = flagged)")
    ax.legend(fontsize=8, loc="lower right")

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
