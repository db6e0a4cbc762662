"""Constructed per-image detection statistics of two models on the same test images, for gate tests."""

from __future__ import annotations

import numpy as np

from kretrain.api import Evaluation
from kretrain.trainer.evaluate import STAT_KEYS, PerImageStats, group_metrics

NAMES = {0: "circle", 1: "square", 2: "triangle"}


def images(eras: dict[str, int], seed: int = 0, labels: int = 2) -> list[tuple[str, str, np.ndarray]]:
    """(path, era, target classes) of each test image: `eras` maps era -> image count."""
    rng = np.random.default_rng(seed)
    return [
        (f"/test/{era}/{i}.png", era, rng.integers(0, len(NAMES), labels).astype(float))
        for era, n in eras.items()
        for i in range(n)
    ]


def model_stats(
    test: list[tuple[str, str, np.ndarray]], quality: dict[tuple[str, int], float], seed: int
) -> PerImageStats:
    """A model that finds each labelled box of (era, class) with probability `quality[(era, class)]` (default
    quality[(era, -1)]): a found box is a confident true positive (correct at the first 5-10 IoU thresholds),
    a missed one leaves a low-confidence false positive of its class."""
    rng = np.random.default_rng(seed)
    out = PerImageStats(names=dict(NAMES))
    for path, era, targets in test:
        tp, conf, pred = [], [], []
        for cls in targets:
            q = quality.get((era, int(cls)), quality.get((era, -1), 0.5))
            if rng.random() < q:
                k = int(rng.integers(5, 11))
                tp.append([True] * k + [False] * (10 - k))
                conf.append(rng.uniform(0.5, 1.0))
            else:
                tp.append([False] * 10)
                conf.append(rng.uniform(0.0, 0.6))
            pred.append(cls)
        out.files.append(path)
        row = {
            "tp": np.array(tp, dtype=bool).reshape(-1, 10),
            "conf": np.array(conf),
            "pred_cls": np.array(pred),
            "target_cls": targets,
            "target_img": np.unique(targets),
        }
        for key in STAT_KEYS:
            out.stats[key].append(row[key])
    return out


def evaluation(stats: PerImageStats, test: list[tuple[str, str, np.ndarray]], version: str | None) -> Evaluation:
    """The Evaluation kretrain reports for these statistics (Ultralytics' ap_per_class per era and pooled)."""
    pooled, eras = group_metrics(stats, {p: e for p, e, _ in test}, NAMES)
    return Evaluation(model_version=version, pooled=pooled, eras=eras)
