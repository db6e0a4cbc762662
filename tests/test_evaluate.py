"""Mixed-era evaluation: one validation pass, per-era metrics equal to Ultralytics' val() on each era alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _trainer_fixtures import tiny_dataset, tiny_model

from kretrain.trainer.evaluate import PerImageStats, evaluate, group_metrics


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    base = tmp_path_factory.getbasetemp()
    return tiny_dataset(base), tiny_model(base)


@pytest.mark.slow
def test_per_era_metrics_equal_val_on_each_era_alone(setup: tuple[dict, Path], tmp_path: Path) -> None:
    from ultralytics import YOLO

    d, best = setup
    ev, stats = evaluate(best, Path(d["yaml"]["test"]), d["test_eras"], imgsz=64, project=tmp_path, workers=0)
    assert set(ev.eras) == {"era1", "era2"}
    assert len(stats.files) == ev.pooled.images == len(d["test_eras"])
    for era in ("era1", "era2"):
        r = YOLO(str(best)).val(
            data=str(d["yaml"][f"{era}.test"]), imgsz=64, batch=16, plots=False, verbose=False,
            project=str(tmp_path), name="v", exist_ok=True, workers=0,
        )  # fmt: skip
        m = ev.eras[era]
        assert m.map50_95 == pytest.approx(float(r.box.map), abs=1e-9)
        assert m.map50 == pytest.approx(float(r.box.map50), abs=1e-9)
        assert m.precision == pytest.approx(float(r.box.mp), abs=1e-6)  # interpolated at max-F1: float noise
        assert m.recall == pytest.approx(float(r.box.mr), abs=1e-6)
        names = r.names
        real = {names[int(c)]: float(r.box.all_ap[i].mean()) for i, c in enumerate(r.box.ap_class_index)}
        assert m.per_class == pytest.approx(real, abs=1e-9)
    # the pooled numbers equal val() on the union
    r = YOLO(str(best)).val(
        data=str(d["yaml"]["test"]), imgsz=64, batch=16, plots=False, verbose=False, project=str(tmp_path),
        name="v", exist_ok=True, workers=0,
    )  # fmt: skip
    assert ev.pooled.map50_95 == pytest.approx(float(r.box.map), abs=1e-9)
    assert ev.pooled.map50 > 0.3  # the shared tiny model learned


def _stat(tp: list[bool], conf: list[float], pred: list[int], target: list[int]) -> dict[str, np.ndarray]:
    return {
        "tp": np.array([[t] * 10 for t in tp], dtype=bool).reshape(-1, 10),
        "conf": np.array(conf, dtype=float),
        "pred_cls": np.array(pred, dtype=float),
        "target_cls": np.array(target, dtype=float),
        "target_img": np.unique(np.array(target, dtype=float)),
    }


def test_group_metrics_splits_by_era_and_rejects_unknown_images() -> None:
    res = PerImageStats()
    for f, s in [
        ("/d/a1.png", _stat([True], [0.9], [0], [0])),  # era a: perfect
        ("/d/b1.png", _stat([False], [0.9], [1], [1])),  # era b: a miss and a false positive
    ]:
        res.files.append(f)
        for k, v in s.items():
            res.stats[k].append(v)
    pooled, eras = group_metrics(res, {"/d/a1.png": "a", "/d/b1.png": "b"}, {0: "circle", 1: "square"})
    assert eras["a"].map50 == pytest.approx(0.995) and eras["a"].per_class == {"circle": pytest.approx(0.995)}
    assert eras["b"].map50 == 0.0 and eras["b"].instances == 1 and eras["b"].images == 1
    assert pooled.images == 2 and pooled.instances == 2
    assert eras["a"].class_instances == {"circle": 1} and pooled.class_instances == {"circle": 1, "square": 1}
    assert set(pooled.per_class) == {"circle", "square"}
    with pytest.raises(ValueError, match="no era"):
        group_metrics(res, {"/d/a1.png": "a"}, {0: "circle", 1: "square"})
