"""One class's AP at 10 IoUs in many bootstrap resamples at once, equal to Ultralytics' `ap_per_class` on each
resample's repeated detections (tests compare the two to 1e-12), without repeating them.

A resample repeats each image's detections by its draw count. `ap_per_class` + `compute_ap` interpolate the
precision envelope at 101 recall points; that curve depends only on the points where a true positive arrives:
with the k-th true positive at detection count N_k, the envelope at recall level k/n is E_k = max_{k'>=k} k'/N_k',
and between levels k and k+1 the interpolation runs from A_k (the envelope at the last point of level k: 1 at
level 0 when no false positive comes first, else max(k / (N_{k+1} - 1), E_{k+1})) to E_{k+1}; from the last
level on it is 0 (Ultralytics' sentinel). This costs resamples x IoUs x true positives, not x detections, which
matters at Ultralytics' val confidence of 0.001 (most detections are false positives).
"""

from __future__ import annotations

import numpy as np

AP_X = np.linspace(0, 1, 101)
"""Ultralytics' recall grid of the 101-point interpolation (`ultralytics.utils.metrics._AP_X`)."""
EPS = 1e-16
"""`ap_per_class`'s eps in recall = tp / (labels + eps)."""
CHUNK = 4_000_000
"""Resamples are processed in blocks of about this many array elements."""


def _levels(n_l: np.ndarray) -> np.ndarray:
    """(M, 101): the last recall level k (recall k / (n + eps), as `ap_per_class` computes it) at or below each
    grid point, for each row's label count n."""
    n = n_l[:, None] + EPS
    k = np.floor(AP_X[None, :] * n_l[:, None]).astype(np.int64)
    for _ in range(2):  # floating-point rounding of the floor: move to the exact last level <= x
        k = np.where((k + 1) / n <= AP_X[None, :], k + 1, k)
        k = np.where(k / n > AP_X[None, :], k - 1, k)
    return np.maximum(k, 0)


def _ap_rows(narr: np.ndarray, k_count: np.ndarray, n_l: np.ndarray) -> np.ndarray:
    """AP of each row: `narr` (M, Kmax) detection count at each true-positive arrival (inf beyond the row's
    k_count arrivals), `n_l` (M,) labels."""
    m, kmax = narr.shape
    levels = np.arange(1, kmax + 1, dtype=float)
    p = levels[None, :] / narr  # precision at each arrival (0 in the padding)
    e = np.zeros((m, kmax + 1))
    e[:, :kmax] = np.maximum.accumulate(p[:, ::-1], 1)[:, ::-1]  # e[:, k-1] = E_k; e[:, kmax] = 0
    a = np.zeros((m, kmax + 1))  # a[:, k] = A_k
    a[:, 0] = np.where(narr[:, 0] == 1, 1.0, e[:, 0])
    if kmax > 1:
        q = levels[None, :-1] / (narr[:, 1:] - 1)  # precision of the last point of level k (before arrival k+1)
        a[:, 1:kmax] = np.maximum(q, e[:, 1:kmax])
    k = _levels(n_l)
    idx = np.minimum(k, kmax)
    a_k = np.take_along_axis(a, idx, 1)
    e_next = np.take_along_axis(e, idx, 1)
    n = n_l[:, None] + EPS
    x0, x1 = k / n, (k + 1) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(x0 == AP_X[None, :], a_k, (e_next - a_k) / (x1 - x0) * (AP_X[None, :] - x0) + a_k)
    y = np.where(k < k_count[:, None], value, 0.0)
    return (np.diff(AP_X)[None, :] * (y[:, 1:] + y[:, :-1]) / 2.0).sum(1)


def class_ap(tp: np.ndarray, image: np.ndarray, counts: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AP per resample and IoU of one class, shape (R, 10); NaN where a resample has no label of the class.

    `tp` (D, 10): the class's detections in descending confidence; `image` (D,): each detection's image (a
    column of `counts`); `counts` (R, images): how often each image was drawn; `labels` (R,): labelled
    instances of the class in each resample. Labels but no true positive give AP 0, as in `ap_per_class`.
    """
    r_total = counts.shape[0]
    niou = tp.shape[1]
    out = np.full((r_total, niou), np.nan)
    hit = np.flatnonzero(tp.any(1))
    tps = tp[hit].T.astype(np.int64)  # (10, S)
    block = max(1, CHUNK // max(1, len(image) + niou * max(1, int(labels.max(initial=0)))))
    for b0 in range(0, r_total, block):
        w = counts[b0 : b0 + block][:, image]  # (Rb, D)
        rb = len(w)
        before = np.cumsum(w, 1) - w  # detections ahead of each one
        wj = (w[:, None, hit] * tps[None]).reshape(rb * niou, len(hit))  # arrivals each true positive brings
        nb = np.repeat(before[:, hit], niou, axis=0)
        k_count = wj.sum(1)
        kmax = int(k_count.max(initial=0))
        n_l = np.repeat(labels[b0 : b0 + block].astype(float), niou)
        narr = np.full((rb * niou, max(kmax, 1)), np.inf)
        if kmax:
            flat = np.repeat(np.arange(wj.size), wj.ravel())
            row, s = flat // len(hit), flat % len(hit)
            pos = np.arange(len(flat)) - np.repeat(np.cumsum(k_count) - k_count, k_count)
            copy = pos - (np.cumsum(wj, 1) - wj)[row, s] + 1
            narr[row, pos] = nb[row, s] + copy
        ap = _ap_rows(narr, k_count, n_l).reshape(rb, niou)
        ap[labels[b0 : b0 + block] == 0] = np.nan
        out[b0 : b0 + rb] = ap
    return out
