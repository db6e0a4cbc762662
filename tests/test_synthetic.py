"""Synthetic shapes generator: deterministic per seed, stable when extended, exact defects, era shift."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from kretrain.trainer.synthetic import DEFAULT_CLASSES, Defects, EraConfig, demo_eras, generate_dataset, generate_era


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    eras = demo_eras(images=12, seed=3)
    generate_dataset(tmp_path / "a", eras, DEFAULT_CLASSES, imgsz=32)
    generate_dataset(tmp_path / "b", demo_eras(images=12, seed=3), DEFAULT_CLASSES, imgsz=32)
    generate_dataset(tmp_path / "c", demo_eras(images=12, seed=4), DEFAULT_CLASSES, imgsz=32)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys()
    assert sum(a[k] != c[k] for k in a if k.endswith(".png")) >= 20
    assert yaml.safe_load((tmp_path / "a" / "classes.yaml").read_text()) == {"names": DEFAULT_CLASSES}


def test_more_images_keep_existing_ones(tmp_path: Path) -> None:
    era = EraConfig("e", 10, ["circle", "square"], (30, 30, 30), 1.0, (0.2, 0.4), 7)
    generate_era(tmp_path / "a", era, 32, DEFAULT_CLASSES)
    bigger = EraConfig("e", 12, ["circle", "square"], (30, 30, 30), 1.0, (0.2, 0.4), 7)
    generate_era(tmp_path / "b", bigger, 32, DEFAULT_CLASSES)
    extra = EraConfig("e", 2, ["circle", "square"], (30, 30, 30), 1.0, (0.2, 0.4), 7, start=10)
    generate_era(tmp_path / "c", extra, 32, DEFAULT_CLASSES)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert all(b[k] == v for k, v in a.items())
    assert set(b) == set(a) | set(c)
    assert all(b[k] == v for k, v in c.items())


def test_labels_are_valid_yolo_boxes_of_the_era_classes(tmp_path: Path) -> None:
    eras = demo_eras(images=30)
    generate_dataset(tmp_path, eras, DEFAULT_CLASSES, imgsz=64)
    for era, allowed in (("era1", {0, 1, 2}), ("era2", {0, 1, 2, 3})):
        ids: set[int] = set()
        for label in (tmp_path / era / "labels").glob("*.txt"):
            for line in label.read_text().splitlines():
                c, *xywh = line.split()
                cx, cy, w, h = map(float, xywh)
                ids.add(int(c))
                assert 0 < w <= 1 and 0 < h <= 1
                eps = 1e-5  # labels are written with 6 decimals
                assert cx - w / 2 >= -eps and cx + w / 2 <= 1 + eps and cy - h / 2 >= -eps and cy + h / 2 <= 1 + eps
        assert ids == allowed, era  # the last class ("cross") appears only from era2


def test_demo_eras_are_strongly_shifted(tmp_path: Path) -> None:
    generate_dataset(tmp_path, demo_eras(images=20), DEFAULT_CLASSES, imgsz=64)

    def brightness(era: str) -> float:
        return float(
            np.mean([np.asarray(Image.open(p).convert("L")).mean() for p in (tmp_path / era / "images").glob("*.png")])
        )

    def box_side(era: str) -> float:
        sides = [
            float(line.split()[3])
            for p in (tmp_path / era / "labels").glob("*.txt")
            for line in p.read_text().splitlines()
        ]
        return float(np.mean(sides))

    assert brightness("era1") < 60 < 150 < brightness("era2")
    assert box_side("era1") > 2 * box_side("era2")


def test_defects_are_injected_exactly(tmp_path: Path) -> None:
    d = Defects(
        corrupt_images=2, bad_label_lines=2, out_of_range_ids=1, bad_boxes=2, orphan_labels=3, background_images=2
    )
    era = EraConfig("e", 15, ["circle"], (0, 0, 0), 1.0, (0.3, 0.4), 0, defects=d)
    generate_era(tmp_path, era, 32, DEFAULT_CLASSES)
    images = sorted((tmp_path / "e" / "images").glob("*.png"))
    labels = sorted((tmp_path / "e" / "labels").glob("*.txt"))
    assert len(images) == 15
    assert len(labels) == 15 - 2 + 3  # background images have none; orphans are extra
    undecodable = 0
    for p in images:
        try:
            with Image.open(p) as im:
                im.load()
        except Exception:
            undecodable += 1
    assert undecodable == 2
    assert sum("orphan" in p.name for p in labels) == 3
    lines = [line for p in labels for line in p.read_text().splitlines()]
    assert sum(len(line.split()) != 5 or line.startswith("x") for line in lines) == 2
    assert sum(line.startswith(f"{len(DEFAULT_CLASSES) + 3} ") for line in lines) == 1


def test_too_many_defects_and_unknown_classes_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="defects requested"):
        generate_era(
            tmp_path, EraConfig("e", 1, ["circle"], (0, 0, 0), 1.0, (0.3, 0.4), 0, defects=Defects(corrupt_images=2))
        )
    with pytest.raises(ValueError, match="not in the dataset's class list"):
        generate_era(tmp_path, EraConfig("e", 1, ["hexagon"], (0, 0, 0), 1.0, (0.3, 0.4), 0), 32, DEFAULT_CLASSES)
