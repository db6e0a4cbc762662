"""Paired bootstrap: point estimates equal Ultralytics' per-era metrics, resamples are paired and seeded."""

from __future__ import annotations

import numpy as np
import pytest
from _gate_fixtures import NAMES, evaluation, images, model_stats

from kretrain.api.intervals import PairedBootstrap
from kretrain.bootstrap import paired_bootstrap, score
from kretrain.trainer.evaluate import PerImageStats

TEST = images({"era1": 30, "era2": 20})
GROUPS = {p: e for p, e, _ in TEST}
CAND = model_stats(TEST, {("era1", -1): 0.8, ("era2", -1): 0.7}, seed=1)
INC = model_stats(TEST, {("era1", -1): 0.6, ("era2", -1): 0.7}, seed=2)


def boot(cand: PerImageStats = CAND, inc: PerImageStats = INC, **kw: object) -> PairedBootstrap:
    args: dict = {"metric": "mAP50-95", "confidence": 0.95, "resamples": 100, "seed": 0, "incumbent_version": "v1"}
    return paired_bootstrap(cand, inc, GROUPS, NAMES, **{**args, **kw})


@pytest.fixture(scope="module")
def b() -> PairedBootstrap:
    return boot()


def test_point_estimates_are_ultralytics_metrics_of_each_era(b: PairedBootstrap) -> None:
    c, i = evaluation(CAND, TEST, None), evaluation(INC, TEST, "v1")
    assert b.pooled.delta == pytest.approx(c.pooled.map50_95 - i.pooled.map50_95, abs=1e-12)
    assert b.pooled.images == 50 and {e: v.images for e, v in b.eras.items()} == {"era1": 30, "era2": 20}
    for era in ("era1", "era2"):
        assert b.eras[era].delta == pytest.approx(c.eras[era].map50_95 - i.eras[era].map50_95, abs=1e-12)
        cells = b.eras[era].classes
        assert set(cells) == set(c.eras[era].per_class)
        for name, cell in cells.items():
            assert cell.candidate == pytest.approx(c.eras[era].per_class[name], abs=1e-12)
            assert cell.incumbent == pytest.approx(i.eras[era].per_class[name], abs=1e-12)
            assert cell.instances == c.eras[era].class_instances[name]
            assert cell.low <= cell.delta <= cell.high or cell.resamples < 100


def test_intervals_cover_the_true_direction_and_are_deterministic(b: PairedBootstrap) -> None:
    assert b.eras["era1"].low > 0  # the candidate is clearly better on era1
    assert b.eras["era2"].low < 0 < b.eras["era2"].high  # equal quality: the interval straddles 0
    assert b.pooled.low <= b.pooled.delta <= b.pooled.high
    again = boot()
    assert again.eras == b.eras and again.pooled == b.pooled  # same seed, same intervals
    assert boot(seed=1).pooled != b.pooled  # another seed draws other resamples


def test_identical_models_have_a_zero_interval() -> None:
    same = boot(CAND, CAND)
    assert (same.pooled.low, same.pooled.high) == (0.0, 0.0)
    assert all((e.low, e.high) == (0.0, 0.0) for e in same.eras.values())


@pytest.mark.parametrize("metric", ["mAP50-95", "mAP50", "recall"])
def test_a_resample_is_ultralytics_metric_on_the_repeated_images(metric: str) -> None:
    """One resample by hand: the images drawn, repeated, through ap_per_class, give the reported bounds' values
    (mAP50-95 and mAP50 go through bootstrap_ap.class_ap, recall through ap_per_class itself)."""
    one = boot(CAND, INC, resamples=1, metric=metric)
    rng = np.random.default_rng(0)
    rows = {e: [k for k, (_, era, _) in enumerate(TEST) if era == e] for e in ("era1", "era2")}
    draws = {e: rng.integers(0, len(r), size=(1, len(r)))[0] for e, r in rows.items()}

    def value(stats: PerImageStats, picked: list[int]) -> float:
        cat = [np.concatenate([stats.stats[k][j] for j in picked], 0) for k in ("tp", "conf", "pred_cls", "target_cls")]
        return score(cat[0], cat[1], cat[2], cat[3], metric)[0]  # type: ignore[arg-type]

    era1 = [rows["era1"][j] for j in draws["era1"]]
    expected = value(CAND, era1) - value(INC, era1)
    assert one.eras["era1"].low == pytest.approx(expected, abs=1e-12) == one.eras["era1"].high
    both = era1 + [rows["era2"][j] for j in draws["era2"]]
    assert one.pooled.low == pytest.approx(value(CAND, both) - value(INC, both), abs=1e-12)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda s: s.files.pop() and [v.pop() for v in s.stats.values()], "different images"),
        (lambda s: s.files.__setitem__(0, s.files[1]), "twice"),
    ],
    ids=["missing-image", "duplicate-image"],
)
def test_unpaired_statistics_are_refused(change, match: str) -> None:  # type: ignore[no-untyped-def]
    bad = model_stats(TEST, {}, seed=3)
    change(bad)
    with pytest.raises(ValueError, match=match):
        boot(bad, INC) if match == "twice" else boot(CAND, bad)


def test_image_without_era_is_refused() -> None:
    with pytest.raises(ValueError, match="no era"):
        paired_bootstrap(
            CAND, INC, {}, NAMES, metric="mAP50", confidence=0.9, resamples=10, seed=0, incumbent_version=None
        )


def test_class_ap_equals_ap_per_class_on_repeated_detections() -> None:
    """bootstrap_ap.class_ap against Ultralytics on 60 resamples of one class (many false positives, some images
    without labels or detections, one resample drawing an image without labels only)."""
    from ultralytics.utils.metrics import ap_per_class

    from kretrain.bootstrap_ap import class_ap

    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, 40)
    tps, confs, image = [], [], []
    for i, n in enumerate(labels):
        k = int(rng.integers(0, 25))
        t = np.zeros((k, 10), bool)
        t[: min(k, n)] = rng.random((min(k, n), 10)) < np.linspace(1, 0.2, 10)
        tps.append(t)
        confs.append(rng.random(k))
        image.extend([i] * k)
    tp, conf, img = np.concatenate(tps), np.concatenate(confs), np.array(image)
    order = np.argsort(-conf)
    tp, conf, img = tp[order], conf[order], img[order]
    counts = np.stack([np.bincount(rng.integers(0, 40, 40), minlength=40) for _ in range(60)])
    counts[0], counts[1] = 1, 0  # the test set itself; a draw of image 0 alone
    counts[1, int(np.argmin(labels))] = 3
    got = class_ap(tp, img, counts, counts @ labels)
    for r in range(60):
        rows = np.repeat(np.arange(len(img)), counts[r][img])
        n = int(counts[r] @ labels)
        if n == 0:
            assert np.isnan(got[r]).all()
            continue
        want = ap_per_class(tp[rows], conf[rows], np.zeros(len(rows)), np.zeros(n))[5][0]
        assert np.abs(got[r] - want).max() < 1e-12, r
