"""Paired bootstrap of candidate vs incumbent over per-image detection statistics (numpy; trainer pod only)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kretrain.api.intervals import ClassInterval, EraInterval, PairedBootstrap
from kretrain.api.spec import MetricName
from kretrain.bootstrap_ap import class_ap

NIOU = 10
"""IoU thresholds per true-positive row (Ultralytics' 0.50:0.95)."""
FAST_METRICS = ("mAP50-95", "mAP50")
"""Metrics resampled by `bootstrap_ap.class_ap` (all resamples at once); precision and recall call
Ultralytics' `ap_per_class` once per resample, model and era."""


class ImageStats(Protocol):
    """Per-image statistics of one validation pass (kretrain.trainer.evaluate.PerImageStats)."""

    files: list[str]
    stats: dict[str, list[np.ndarray]]


@dataclass
class _Packed:
    """One model's statistics on one era's images, concatenated, with each image's slice."""

    tp: np.ndarray
    conf: np.ndarray
    pred_cls: np.ndarray
    p_start: np.ndarray
    p_len: np.ndarray
    target_cls: np.ndarray
    t_start: np.ndarray
    t_len: np.ndarray

    @classmethod
    def of(cls, stats: Mapping[str, Sequence[np.ndarray]], rows: Sequence[int]) -> _Packed:
        tps = [np.asarray(stats["tp"][i], dtype=bool).reshape(-1, NIOU) for i in rows]
        confs = [np.asarray(stats["conf"][i], dtype=float).reshape(-1) for i in rows]
        preds = [np.asarray(stats["pred_cls"][i], dtype=float).reshape(-1) for i in rows]
        targets = [np.asarray(stats["target_cls"][i], dtype=float).reshape(-1) for i in rows]
        p_len = np.array([len(c) for c in confs], dtype=np.int64)
        t_len = np.array([len(t) for t in targets], dtype=np.int64)
        return cls(
            tp=np.concatenate(tps, 0) if tps else np.zeros((0, NIOU), bool),
            conf=np.concatenate(confs) if confs else np.zeros(0),
            pred_cls=np.concatenate(preds) if preds else np.zeros(0),
            p_start=np.cumsum(p_len) - p_len,
            p_len=p_len,
            target_cls=np.concatenate(targets) if targets else np.zeros(0),
            t_start=np.cumsum(t_len) - t_len,
            t_len=t_len,
        )

    def draw(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row indices of the predictions and of the targets of `images` (repeats included)."""
        return _ragged(self.p_start, self.p_len, images), _ragged(self.t_start, self.t_len, images)


def _ragged(starts: np.ndarray, lens: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Concatenated `range(starts[i], starts[i] + lens[i])` for every i in `images`, without a Python loop."""
    n = lens[images]
    total = int(n.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    return np.repeat(starts[images] - (np.cumsum(n) - n), n) + np.arange(total)


def score(
    tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray, metric: MetricName
) -> tuple[float, dict[int, float]]:
    """The metric and per-class AP50-95 of one set of detections, with Ultralytics' own `ap_per_class`
    (the numbers `Metric.mean_results` gives: mean over classes with labels; 0 without labels)."""
    from ultralytics.utils.metrics import ap_per_class

    if len(target_cls) == 0:
        return 0.0, {}
    out = ap_per_class(tp, conf, pred_cls, target_cls)
    p, r, ap, classes = out[2], out[3], out[5], out[6]
    values = {
        "mAP50-95": float(ap.mean()) if len(ap) else 0.0,
        "mAP50": float(ap[:, 0].mean()) if len(ap) else 0.0,
        "precision": float(p.mean()) if len(p) else 0.0,
        "recall": float(r.mean()) if len(r) else 0.0,
    }
    return values[metric], {int(c): float(ap[i].mean()) for i, c in enumerate(classes)}


def _scores(parts: Sequence[_Packed], counts: Sequence[np.ndarray], metric: MetricName) -> tuple[np.ndarray, dict[int, np.ndarray]]:  # fmt: skip
    """Per resample, one model on the union of `parts` (eras) drawn `counts` (R, images) times: the metric and
    each labelled class's AP50-95 (NaN in a resample without its labels), by `bootstrap_ap.class_ap`."""
    sizes = [len(p.p_len) for p in parts]
    offsets = np.cumsum(sizes) - sizes
    drawn = np.hstack(list(counts))
    tp = np.concatenate([p.tp for p in parts], 0)
    conf = np.concatenate([p.conf for p in parts])
    pred = np.concatenate([p.pred_cls for p in parts])
    image = np.concatenate(
        [np.repeat(np.arange(len(p.p_len)), p.p_len) + o for p, o in zip(parts, offsets, strict=True)]
    )
    t_image = np.concatenate(
        [np.repeat(np.arange(len(p.t_len)), p.t_len) + o for p, o in zip(parts, offsets, strict=True)]
    )
    t_cls = np.concatenate([p.target_cls for p in parts])
    order = np.argsort(-conf)  # as ap_per_class sorts
    tp, pred, image = tp[order], pred[order], image[order]
    aps: dict[int, np.ndarray] = {}
    for c in np.unique(t_cls):
        labels = drawn @ np.bincount(t_image[t_cls == c], minlength=drawn.shape[1])
        mine = pred == c
        aps[int(c)] = class_ap(tp[mine], image[mine], drawn, labels)
    if not aps:
        return np.zeros(drawn.shape[0]), {}
    stack = np.stack(list(aps.values()))  # (classes, R, 10)
    per = stack.mean(2) if metric == "mAP50-95" else stack[:, :, 0]
    present = np.isfinite(per).sum(0)
    value = np.where(present > 0, np.nansum(per, 0) / np.maximum(present, 1), 0.0)
    return value, {c: a.mean(1) for c, a in aps.items()}


def _resampled(
    packed: Mapping[str, tuple[_Packed, _Packed]], draws: Mapping[str, np.ndarray], metric: MetricName
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, dict[int, np.ndarray]]]:
    """Candidate - incumbent in every resample at once: pooled, per era, per (era, class)."""
    counts = {}
    for e, d in draws.items():
        r, n = d.shape
        counts[e] = np.bincount((d + n * np.arange(r)[:, None]).ravel(), minlength=r * n).reshape(r, n)
    eras = list(draws)
    scores = [{e: _scores([packed[e][m]], [counts[e]], metric) for e in eras} for m in (0, 1)]
    pooled = [_scores([packed[e][m] for e in eras], [counts[e] for e in eras], metric)[0] for m in (0, 1)]
    era_d = {e: scores[0][e][0] - scores[1][e][0] for e in eras}
    class_d = {e: {c: a - scores[1][e][1][c] for c, a in scores[0][e][1].items()} for e in eras}
    return pooled[0] - pooled[1], era_d, class_d


def _interval(point: float, deltas: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(point, low, high): the percentile interval of the finite `deltas` (the point alone when none)."""
    finite = deltas[np.isfinite(deltas)]
    if finite.size == 0:
        return point, point, point
    low, high = np.quantile(finite, [(1 - confidence) / 2, (1 + confidence) / 2])
    clip = lambda x: float(min(1.0, max(-1.0, x)))  # noqa: E731
    return clip(point), clip(min(low, high)), clip(max(low, high))


def _eras_of(
    candidate: ImageStats, incumbent: ImageStats, groups: Mapping[str, str]
) -> dict[str, list[tuple[int, int]]]:
    """Per era (sorted): (candidate row, incumbent row) of each of its images, in the candidate's order."""
    if len(set(candidate.files)) != len(candidate.files):
        raise ValueError("the candidate's evaluation lists an image twice; images must be unique")
    inc_row = {f: i for i, f in enumerate(incumbent.files)}
    if set(inc_row) != set(candidate.files) or len(inc_row) != len(incumbent.files):
        raise ValueError(
            f"candidate and incumbent were evaluated on different images ({len(candidate.files)} vs "
            f"{len(incumbent.files)}); a paired bootstrap needs the same test images for both"
        )
    eras: dict[str, list[tuple[int, int]]] = {}
    for row, f in enumerate(candidate.files):
        if f not in groups:
            raise ValueError(f"evaluated image {f} has no era")
        eras.setdefault(groups[f], []).append((row, inc_row[f]))
    return dict(sorted(eras.items()))


def paired_bootstrap(
    candidate: ImageStats,
    incumbent: ImageStats,
    groups: Mapping[str, str],
    names: Mapping[int, str],
    *,
    metric: MetricName,
    confidence: float,
    resamples: int,
    seed: int,
    incumbent_version: str | None,
) -> PairedBootstrap:
    """Percentile intervals of candidate - incumbent: the metric per era and pooled, AP50-95 per (era, class).

    Every resample draws each era's n test images n times with replacement (stratified by era) from one
    `numpy.random.default_rng(seed)`, the same draw for both models; the pooled value of a resample is the
    metric on the union of its era draws. `groups` maps each evaluated image path to its era.
    """
    started = time.perf_counter()
    eras = _eras_of(candidate, incumbent, groups)
    packed = {
        e: (_Packed.of(candidate.stats, [c for c, _ in rows]), _Packed.of(incumbent.stats, [i for _, i in rows]))
        for e, rows in eras.items()
    }
    rng = np.random.default_rng(seed)
    draws = {e: rng.integers(0, len(rows), size=(resamples, len(rows))) for e, rows in eras.items()}
    identity = {e: np.arange(len(rows)) for e, rows in eras.items()}

    def one(pick: Mapping[str, np.ndarray]) -> tuple[float, dict[str, tuple[float, dict[int, float]]]]:
        """Candidate - incumbent pooled, and per era (delta, per-class AP deltas), for one draw."""
        pooled: list[float] = []
        per_era: dict[str, tuple[float, dict[int, float]]] = {}
        for model in (0, 1):
            parts = []
            for e, images in pick.items():
                pk = packed[e][model]
                p_rows, t_rows = pk.draw(images)
                part = (pk.tp[p_rows], pk.conf[p_rows], pk.pred_cls[p_rows], pk.target_cls[t_rows])
                parts.append(part)
                value, classes = score(*part, metric)
                if model == 0:
                    per_era[e] = (value, classes)
                else:
                    cv, cc = per_era[e]
                    per_era[e] = (cv - value, {c: cc[c] - ap for c, ap in classes.items() if c in cc})
            joined = [np.concatenate([p[k] for p in parts], 0) for k in range(4)]
            pooled.append(score(joined[0], joined[1], joined[2], joined[3], metric)[0])
        return pooled[0] - pooled[1], per_era

    point_pooled, point_eras = one(identity)
    if metric in FAST_METRICS:
        pooled_d, era_d, class_d = _resampled(packed, draws, metric)
    else:  # precision / recall: Ultralytics' ap_per_class on every resample
        pooled_d = np.empty(resamples)
        era_d = {e: np.empty(resamples) for e in eras}
        class_d = {e: {c: np.full(resamples, np.nan) for c in point_eras[e][1]} for e in eras}
        for r in range(resamples):
            pooled_d[r], per_era = one({e: d[r] for e, d in draws.items()})
            for e, (value, classes) in per_era.items():
                era_d[e][r] = value
                for c, v in classes.items():
                    class_d[e][c][r] = v

    def cells(e: str) -> dict[str, ClassInterval]:
        cand_pk, inc_pk = packed[e]
        _, cand_ap = score(cand_pk.tp, cand_pk.conf, cand_pk.pred_cls, cand_pk.target_cls, metric)
        _, inc_ap = score(inc_pk.tp, inc_pk.conf, inc_pk.pred_cls, inc_pk.target_cls, metric)
        out = {}
        for c, d in class_d[e].items():
            point, low, high = _interval(point_eras[e][1][c], d, confidence)
            out[names.get(c, str(c))] = ClassInterval(
                delta=point, low=low, high=high, instances=int((cand_pk.target_cls == c).sum()),
                candidate=cand_ap[c], incumbent=inc_ap[c], resamples=int(np.isfinite(d).sum()),
            )  # fmt: skip
        return out

    era_intervals = {}
    for e, rows in eras.items():
        point, low, high = _interval(point_eras[e][0], era_d[e], confidence)
        era_intervals[e] = EraInterval(delta=point, low=low, high=high, images=len(rows), classes=cells(e))
    point, low, high = _interval(point_pooled, pooled_d, confidence)
    return PairedBootstrap(
        metric=metric,
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        incumbent_version=incumbent_version,
        pooled=EraInterval(delta=point, low=low, high=high, images=sum(len(r) for r in eras.values())),
        eras=era_intervals,
        seconds=round(time.perf_counter() - started, 3),
    )
