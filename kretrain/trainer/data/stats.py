"""Dataset statistics per era and split, and Jensen-Shannon drift between eras and between train and val."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np

from kretrain.trainer.data.validation import ImageRecord

DRIFT_THRESHOLD = 0.1
"""Jensen-Shannon divergence (base 2, in [0, 1]) above which a histogram pair is flagged."""
BOX_SIZE_BINS = np.linspace(0.0, 1.0, 11)
"""Bins of box size sqrt(w*h) (normalised): the histogram compared between eras and splits."""
AREA_BINS = np.array([0.0, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0])
"""Bins of normalised box area (w*h)."""
ASPECT_BINS = np.array([-np.inf, -2.0, -1.0, -0.5, -0.25, 0.25, 0.5, 1.0, 2.0, np.inf])
"""Bins of log2(box width / height) in pixels."""
BRIGHTNESS_BINS = np.linspace(0.0, 256.0, 17)
"""Bins of mean image brightness (0-255)."""
MAX_BOXES_BIN = 10
"""Boxes-per-image histogram: 0..9 and `10+`."""


def jensen_shannon(p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray) -> float | None:
    """Jensen-Shannon divergence of two histograms (base 2, 0 = same, 1 = disjoint); None if one is empty."""
    a = np.asarray(p, dtype=np.float64)
    b = np.asarray(q, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"histograms differ in length: {a.shape} vs {b.shape}")
    if a.sum() <= 0 or b.sum() <= 0:
        return None
    a, b = a / a.sum(), b / b.sum()
    m = (a + b) / 2

    def kl(x: np.ndarray) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / m[mask])))

    return max(0.0, min(1.0, 0.5 * kl(a) + 0.5 * kl(b)))


def _percentiles(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {"min": None, "p5": None, "p50": None, "p95": None, "max": None, "mean": None}
    p5, p50, p95 = np.percentile(values, [5, 50, 95])
    return {
        "min": round(float(values.min()), 6),
        "p5": round(float(p5), 6),
        "p50": round(float(p50), 6),
        "p95": round(float(p95), 6),
        "max": round(float(values.max()), 6),
        "mean": round(float(values.mean()), 6),
    }


def _hist(values: np.ndarray, bins: np.ndarray) -> list[int]:
    return [int(x) for x in np.histogram(values, bins=bins)[0]]


def group_stats(records: Sequence[ImageRecord], nc: int) -> dict[str, Any]:
    """Statistics of one group of (valid) images."""
    n = len(records)
    rows = [(*b[1:], r.width, r.height) for r in records for b in r.boxes]
    cls = np.fromiter((b[0] for r in records for b in r.boxes), dtype=np.int64)
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    w, h, iw, ih = arr[:, 2], arr[:, 3], arr[:, 4], arr[:, 5]
    area = w * h
    aspect = np.log2(np.maximum(w * iw, 1e-9) / np.maximum(h * ih, 1e-9)) if arr.size else np.zeros(0)
    per_image = np.fromiter((len(r.boxes) for r in records), dtype=np.int64, count=n)
    brightness = np.fromiter((r.brightness for r in records), dtype=np.float64, count=n)
    sizes = Counter(f"{r.width}x{r.height}" for r in records)
    return {
        "images": n,
        "boxes": int(cls.size),
        "backgroundImages": int((per_image == 0).sum()),
        "classHistogram": [int(x) for x in np.bincount(cls, minlength=nc)[:nc]],
        "boxesPerImage": {
            "mean": round(float(per_image.mean()), 4) if n else None,
            "max": int(per_image.max()) if n else None,
            "histogram": [
                int(x) for x in np.bincount(np.minimum(per_image, MAX_BOXES_BIN), minlength=MAX_BOXES_BIN + 1)
            ],
        },
        "boxArea": {**_percentiles(area), "bins": AREA_BINS.tolist(), "histogram": _hist(area, AREA_BINS)},
        "boxSize": {"bins": BOX_SIZE_BINS.tolist(), "histogram": _hist(np.sqrt(area), BOX_SIZE_BINS)},
        "aspectRatioLog2": {
            **_percentiles(aspect),
            "bins": [None if math.isinf(x) else x for x in ASPECT_BINS.tolist()],
            "histogram": _hist(aspect, ASPECT_BINS),
        },
        "imageSizes": {
            "distinct": len(sizes),
            "top": dict(sizes.most_common(10)),
            "minWidth": min((r.width for r in records), default=None),
            "minHeight": min((r.height for r in records), default=None),
            "maxWidth": max((r.width for r in records), default=None),
            "maxHeight": max((r.height for r in records), default=None),
        },
        "brightness": {
            **_percentiles(brightness),
            "std": round(float(brightness.std()), 4) if n else None,
            "bins": BRIGHTNESS_BINS.tolist(),
            "histogram": _hist(brightness, BRIGHTNESS_BINS),
        },
    }


def _pair(a: dict[str, Any], b: dict[str, Any], threshold: float) -> dict[str, Any]:
    class_jsd = jensen_shannon(a["classHistogram"], b["classHistogram"])
    size_jsd = jensen_shannon(a["boxSize"]["histogram"], b["boxSize"]["histogram"])
    flagged = [name for name, v in (("class", class_jsd), ("boxSize", size_jsd)) if v is not None and v > threshold]
    return {
        "classJsd": None if class_jsd is None else round(class_jsd, 6),
        "boxSizeJsd": None if size_jsd is None else round(size_jsd, 6),
        "flagged": flagged,
    }


def compute_stats(
    kept: dict[str, list[ImageRecord]], classes: list[str], threshold: float = DRIFT_THRESHOLD
) -> tuple[dict[str, Any], list[str]]:
    """Statistics per era (`all`, `train`, `val`, `test`) and drift; returns (stats, drift warnings).

    Drift compares the class histogram and the box-size histogram (JSD) between every pair of eras
    and between train and val of each era; values above `threshold` are flagged and become warnings.
    """
    nc = len(classes)
    per_era: dict[str, dict[str, Any]] = {}
    for era, recs in kept.items():
        per_era[era] = {"all": group_stats(recs, nc)}
        for split in ("train", "val", "test"):
            per_era[era][split] = group_stats([r for r in recs if r.split == split], nc)
    warnings: list[str] = []
    pairs = []
    for a, b in combinations(list(kept), 2):
        entry = {"a": a, "b": b, **_pair(per_era[a]["all"], per_era[b]["all"], threshold)}
        pairs.append(entry)
        for what in entry["flagged"]:
            value = entry["classJsd" if what == "class" else "boxSizeJsd"]
            warnings.append(f"drift between eras {a!r} and {b!r}: {what} histogram JSD {value:.3f} > {threshold}")
    train_val = {}
    for era in kept:
        entry = _pair(per_era[era]["train"], per_era[era]["val"], threshold)
        train_val[era] = entry
        for what in entry["flagged"]:
            value = entry["classJsd" if what == "class" else "boxSizeJsd"]
            warnings.append(
                f"train/val mismatch in era {era!r}: {what} histogram JSD {value:.3f} > {threshold} "
                "(a model may train well and validate badly)"
            )
    stats = {
        "classes": classes,
        "eras": per_era,
        "drift": {"threshold": threshold, "eraPairs": pairs, "trainVal": train_val},
    }
    return stats, warnings
