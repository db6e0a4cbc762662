"""Post-training checks: pure decisions (table-driven) and real detections on a trained tiny model."""

from __future__ import annotations

import copy
import math
import random
import shutil
from pathlib import Path

import pytest
import yaml
from _trainer_fixtures import tiny_dataset, tiny_model

from kretrain.trainer import checks


@pytest.mark.parametrize(
    ("train", "val", "max_gap", "passed"),
    [
        (0.6, 0.01, 0.3, False),  # the DESIGN.md example: train 0.63, val < 0.01
        (0.9, 0.85, 0.3, True),
        (0.5, 0.2, 0.3, True),  # exactly at the threshold passes
        (0.5, 0.19, 0.3, False),
        (0.2, 0.4, 0.3, True),  # val above train is no overfit
    ],
)
def test_gap_decision(train: float, val: float, max_gap: float, passed: bool) -> None:
    r = checks.gap_decision(train, val, max_gap)
    assert r.name == "generalizationGap" and r.passed is passed and r.threshold == max_gap
    assert r.value == pytest.approx(train - val)


@pytest.mark.parametrize(
    ("before", "after", "expected", "diff", "passed", "why"),
    [
        (225, 168, 168, 4e-7, True, ""),
        (225, 169, 168, 4e-7, False, "layer count 169 differs"),
        (225, 168, 168, 0.05, False, "outputs differ"),
        (225, 168, 168, math.inf, False, "outputs differ"),
    ],
)
def test_fusion_decision(before: int, after: int, expected: int, diff: float, passed: bool, why: str) -> None:
    r = checks.fusion_decision(before, after, expected, diff, 1e-3)
    assert r.passed is passed and why in r.detail


@pytest.mark.parametrize(
    ("rows", "passed", "value"),
    [
        ([{"epoch": 1, "train/box_loss": 1.0, "val/box_loss": 2.0}], True, 0),
        ([{"epoch": 1, "train/box_loss": 1.0}, {"epoch": 2, "train/box_loss": float("nan")}], False, 1),
        ([{"epoch": 1, "train/cls_loss": float("inf"), "val/dfl_loss": float("nan")}], False, 2),
        ([], False, None),
    ],
)
def test_finite_loss(rows: list[dict[str, float]], passed: bool, value: float | None) -> None:
    r = checks.finite_loss_check(rows)
    assert r.passed is passed and r.value == value


@pytest.mark.parametrize(("n", "passed"), [(0, False), (1, True), (57, True)])
def test_predicts_something(n: int, passed: bool) -> None:
    assert checks.predicts_something_check(n, 10).passed is passed


# -- real models ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    base = tmp_path_factory.getbasetemp()
    return tiny_dataset(base), tiny_model(base)


def _mismatched_val(d: dict, dest: Path) -> Path:
    """A val set whose labels belong to other images: a train/val distribution mismatch (broken pipeline)."""
    src = [Path(p) for p in Path(d["lists"]["era1"]["val"]).read_text().split()]
    src += [Path(p) for p in Path(d["lists"]["era2"]["val"]).read_text().split()]
    labels = [p.parent.parent / "labels" / (p.stem + ".txt") for p in src]
    shuffled = labels[1:] + labels[:1]
    (dest / "images").mkdir(parents=True)
    (dest / "labels").mkdir()
    for img, lab in zip(src, shuffled, strict=True):
        shutil.copyfile(img, dest / "images" / img.name)
        shutil.copyfile(lab, dest / "labels" / (img.stem + ".txt"))
    data = yaml.safe_load(Path(d["yaml"]["all"]).read_text())
    data["val"] = str(dest / "images")
    out = dest / "mismatch.yaml"
    out.write_text(yaml.safe_dump(data))
    return out


@pytest.mark.slow
def test_generalization_gap_on_real_model(setup: tuple[dict, Path], tmp_path: Path) -> None:
    from ultralytics import YOLO

    d, best = setup
    kw = dict(imgsz=64, batch=16, plots=False, verbose=False, project=str(tmp_path), name="v", exist_ok=True, workers=0)
    good_val = float(YOLO(str(best)).val(data=str(d["yaml"]["all"]), **kw).box.map50)
    ok = checks.generalization_gap_check(best, Path(d["yaml"]["all"]), good_val, tmp_path / "ok", 64)
    assert ok.passed, ok.detail
    bad_yaml = _mismatched_val(d, tmp_path / "mismatch")
    bad_val = float(YOLO(str(best)).val(data=str(bad_yaml), **kw).box.map50)
    bad = checks.generalization_gap_check(best, bad_yaml, bad_val, tmp_path / "bad", 64)
    assert not bad.passed, bad.detail
    assert bad.value is not None and bad.value > 0.3 and bad_val < 0.1


def _images(d: dict) -> list[Path]:
    return sorted(Path(p) for p in d["test_eras"])[:8]


@pytest.mark.slow
def test_fusion_consistency_passes_on_a_trained_model(setup: tuple[dict, Path]) -> None:
    d, best = setup
    r = checks.fusion_check(best, _images(d), 64)
    assert r.passed, r.detail
    assert r.value is not None and r.value < 1e-4


def _model(best: Path):  # type: ignore[no-untyped-def]
    from ultralytics import YOLO

    return copy.deepcopy(YOLO(str(best)).model).float()


@pytest.mark.slow
def test_fusion_that_changes_outputs_is_detected(setup: tuple[dict, Path]) -> None:
    """A Conv whose fused forward is wrong (here: drops its activation) changes outputs after fuse()."""
    from ultralytics.nn.modules import Conv

    class BrokenFuseConv(Conv):
        def forward_fuse(self, x):  # type: ignore[no-untyped-def]
            return self.conv(x)  # forgets self.act: fused != unfused

    d, best = setup
    model = _model(best)
    target = model.model[1]
    assert isinstance(target, Conv)
    target.__class__ = BrokenFuseConv
    r = checks.fusion_check(model, _images(d), 64)
    assert not r.passed and "outputs differ" in r.detail, r.detail


@pytest.mark.slow
def test_fusion_that_changes_layer_count_is_detected(setup: tuple[dict, Path]) -> None:
    """A Conv whose BatchNorm is not where fuse() looks for it stays unfused: one layer too many."""
    d, best = setup
    model = _model(best)
    conv = model.model[1]
    conv.norm = conv.bn  # same numbers, but fuse() only folds `.bn`
    del conv.bn

    def forward(x):  # type: ignore[no-untyped-def]
        return conv.act(conv.norm(conv.conv(x)))

    conv.forward = forward
    conv.forward_fuse = forward
    r = checks.fusion_check(model, _images(d), 64)
    assert not r.passed and "layer count" in r.detail, r.detail


def test_sample_train_yaml_is_deterministic(tmp_path: Path) -> None:
    files = [str(tmp_path / f"im{i}.png") for i in range(50)]
    lst = tmp_path / "train.txt"
    lst.write_text("\n".join(files))
    data = tmp_path / "d.yaml"
    data.write_text(yaml.safe_dump({"train": str(lst), "val": str(lst), "names": ["a"]}))
    a = checks.sample_train_yaml(data, tmp_path / "a", 10)
    b = checks.sample_train_yaml(data, tmp_path / "b", 10)
    la = Path(yaml.safe_load(a.read_text())["val"]).read_text()
    assert la == Path(yaml.safe_load(b.read_text())["val"]).read_text()
    assert len(la.split()) == 10 and set(la.split()) <= set(files)
    random.seed(1)  # the sample does not depend on the global RNG
    c = checks.sample_train_yaml(data, tmp_path / "c", 10)
    assert Path(yaml.safe_load(c.read_text())["val"]).read_text() == la


# -- exportParity (pure decision) ----------------------------------------------------------------


P = checks.FormatParity


@pytest.mark.parametrize(
    ("results", "passed", "value", "must"),
    [
        ([], True, None, ["nothing was exported"]),
        ([P("onnx", 2e-7, 0.58, 0.58)], True, 2e-7, ["onnx: max relative output difference 2e-07", "<= 0.01"]),
        ([P("onnx", 2e-7, 0.58, 0.60)], True, 2e-7, ["drop -0.0200"]),  # the export scoring higher is no drop
        ([P("onnx", 1e-3, 0.58, 0.57)], True, 1e-3, []),  # both exactly at their bounds pass
        ([P("onnx", 0.25, 0.58, 0.58)], False, 0.25, ["> 0.001 (over by 0.249)"]),
        ([P("onnx", 2e-7, 0.58, 0.50)], False, 2e-7, ["drop 0.0800 > maxMetricDrop 0.01, over by 0.0700"]),
        ([P("onnx", math.inf, 0.58, 0.58)], False, None, ["difference inf"]),  # shape mismatch
        ([P("onnx", 2e-7, 0.58, float("nan"))], False, 2e-7, ["maxMetricDrop"]),
        ([P("onnx", 2e-7, None, None)], False, 2e-7, ["mAP50-95 not measured"]),
        ([P("onnx", error="export to onnx failed: boom")], False, None, ["onnx: export to onnx failed: boom"]),
        ([P("onnx", 2e-7, 0.58, 0.58), P("engine", 0.5, 0.58, 0.58)], False, 0.5, ["onnx:", " | engine:"]),
    ],
    ids=[
        "none",
        "equal",
        "higher",
        "at-bounds",
        "outputs",
        "metric",
        "shape",
        "nan-metric",
        "unmeasured",
        "export-failed",
        "worst-format",
    ],
)
def test_export_parity_decision(results: list, passed: bool, value: float | None, must: list[str]) -> None:
    r = checks.export_parity_decision(results, 1e-3, 0.01)
    assert r.name == "exportParity" and r.passed is passed and r.threshold == 1e-3, r.detail
    assert r.value == (pytest.approx(value) if value is not None else None)
    for text in must:
        assert text in r.detail
