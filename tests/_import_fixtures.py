"""Tiny realistic datasets in Ultralytics, COCO and Pascal VOC form, built in code for the import tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image


def image(path: Path, width: int, height: int, seed: int, fmt: str = "PNG") -> Path:
    """A unique noise image (unique content, so the pipeline sees no duplicates)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), "RGB").save(path, format=fmt)
    return path


def coco_dataset(root: Path) -> Path:
    """COCO with ids 1, 3, 90, a crowd box, mixed sizes, an unannotated image, an overshooting box; returns the JSON.

    Images live in `<root>/images/` (found through the JSON folder's `images/` subfolder).
    """
    sizes = {"a.png": (40, 30), "b.jpg": (64, 48), "c.png": (50, 50), "d.png": (50, 50)}
    images = []
    for i, (name, (w, h)) in enumerate(sizes.items(), 1):
        image(root / "images" / name, w, h, seed=i, fmt="JPEG" if name.endswith(".jpg") else "PNG")
        images.append({"id": i, "file_name": name, "width": w, "height": h, "license": 0})
    annotations = [
        {"id": 10, "image_id": 1, "category_id": 1, "bbox": [4, 3, 10, 6], "iscrowd": 0, "area": 60},
        {"id": 11, "image_id": 1, "category_id": 3, "bbox": [20, 10, 20, 20], "iscrowd": 0},
        {"id": 12, "image_id": 2, "category_id": 90, "bbox": [0, 0, 64, 48], "iscrowd": 0},
        {"id": 13, "image_id": 2, "category_id": 1, "bbox": [1, 1, 30, 30], "iscrowd": 1, "segmentation": {}},
        {"id": 14, "image_id": 4, "category_id": 3, "bbox": [45, 40, 5.5, 10.5], "iscrowd": 0},
    ]
    categories = [
        {"id": 1, "name": "person", "supercategory": "human"},
        {"id": 3, "name": "car"},
        {"id": 90, "name": "toothbrush"},
    ]
    path = root / "annotations.json"
    path.write_text(json.dumps({"info": {}, "images": images, "annotations": annotations, "categories": categories}))
    return path


COCO_LABELS = {
    # line classes.yaml [car, person, toothbrush]: car 0, person 1, toothbrush 2
    "labels/a.txt": "1 0.225000 0.200000 0.250000 0.200000\n0 0.750000 0.666667 0.500000 0.666667\n",
    "labels/b.txt": "2 0.500000 0.500000 1.000000 1.000000\n",
    "labels/d.txt": "0 0.950000 0.900000 0.100000 0.200000\n",
}
"""Hand-computed labels of `coco_dataset` (c.png is a background: no label file; the crowd box is skipped)."""


def voc_xml(
    filename: str, size: tuple[int, int], objects: list[tuple[str, tuple[int, int, int, int], int, int]]
) -> str:
    """A VOC annotation: objects as (name, (xmin, ymin, xmax, ymax), difficult, truncated)."""
    objs = "".join(
        f"<object><name>{n}</name><pose>Unspecified</pose><truncated>{t}</truncated><difficult>{d}</difficult>"
        f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d, t in objects
    )
    return (
        f"<annotation><folder>VOC</folder><filename>{filename}</filename>"
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>"
    )


def voc_dataset(root: Path) -> Path:
    """VOC with a difficult object, a truncated one, ImageSets train/val/test; returns the folder."""
    specs = {
        "x1": ((100, 50), [("dog", (11, 21, 31, 41), 0, 0), ("cat", (51, 1, 101, 51), 0, 1)]),
        "x2": ((60, 40), [("cat", (1, 1, 61, 41), 0, 0), ("dog", (10, 10, 20, 20), 1, 0)]),
        "x3": ((40, 40), [("dog", (5, 5, 15, 25), 0, 0)]),
    }
    for i, (stem, (size, objects)) in enumerate(specs.items(), 1):
        image(root / "JPEGImages" / f"{stem}.jpg", *size, seed=100 + i, fmt="JPEG")
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", size, objects))
    sets = root / "ImageSets" / "Main"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("x1\n")
    (sets / "val.txt").write_text("x2\n")
    (sets / "test.txt").write_text("x3\n")
    (sets / "dog_train.txt").write_text("x1  1\n")  # per-class lists are not splits
    return root


VOC_LABELS = {
    # classes sorted by name on a first import: cat 0, dog 1; x2's dog is difficult (skipped)
    "labels/x1.txt": "1 0.200000 0.600000 0.200000 0.400000\n0 0.750000 0.500000 0.500000 1.000000\n",
    "labels/x2.txt": "0 0.500000 0.500000 1.000000 1.000000\n",
    "labels/x3.txt": "1 0.225000 0.350000 0.250000 0.500000\n",
}


def ultralytics_dataset(root: Path) -> Path:
    """Ultralytics YAML: dict names, `path` relative, train a folder, val a .txt list, test a folder; returns it."""
    data = root / "ds"
    image(data / "images" / "train" / "t1.png", 32, 32, seed=201)
    image(data / "images" / "train" / "t2.png", 48, 32, seed=202)
    image(data / "images" / "val" / "v1.png", 32, 32, seed=203)
    image(data / "images" / "test" / "s1.png", 32, 32, seed=204)
    labels = data / "labels"
    for sub in ("train", "val", "test"):
        (labels / sub).mkdir(parents=True)
    (labels / "train" / "t1.txt").write_text("0 0.5 0.5 0.25 0.25\n1 0.25 0.25 0.1 0.1\n")
    # t2 has no label file: a background image
    (labels / "val" / "v1.txt").write_text("1 0.1 0.2 0.5 0.2 0.3 0.6\n")  # a segmentation polygon
    (labels / "test" / "s1.txt").write_text("\n0 0.9 0.5 0.2 0.2\n")
    (data / "val.txt").write_text("./images/val/v1.png\n")
    doc = {
        "path": "ds",
        "train": "images/train",
        "val": "val.txt",
        "test": ["images/test"],
        "names": {0: "cat", 1: "dog"},
    }
    path = root / "data.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


ULTRALYTICS_LABELS = {
    # line classes.yaml [dog, cat]: the source's cat 0 -> 1, dog 1 -> 0
    "labels/train/t1.txt": "1 0.500000 0.500000 0.250000 0.250000\n0 0.250000 0.250000 0.100000 0.100000\n",
    "labels/val/v1.txt": "0 0.300000 0.400000 0.400000 0.400000\n",
    "labels/test/s1.txt": "1 0.900000 0.500000 0.200000 0.200000\n",
}
