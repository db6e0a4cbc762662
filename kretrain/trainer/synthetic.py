"""Synthetic coloured-shape detection datasets in the S3 era layout, with era shift and injected defects."""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import yaml
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from kretrain.store import ObjectStore

SHAPES = ("circle", "square", "triangle", "cross", "diamond", "ring", "bar", "star")
"""Shape drawn for class id i is SHAPES[i % len(SHAPES)]."""

COLOURS: tuple[tuple[int, int, int], ...] = (
    (230, 40, 40),
    (40, 200, 60),
    (50, 90, 240),
    (240, 200, 30),
    (220, 50, 220),
    (30, 210, 220),
    (250, 140, 20),
    (150, 80, 250),
)
"""Fill colour for class id i is COLOURS[i % len(COLOURS)] (a class is one shape in one colour)."""

DEFAULT_CLASSES = ["circle", "square", "triangle", "cross"]
"""Class names used by the demo eras."""


@dataclass
class Defects:
    """Defects injected into an era, each into distinct images (counts are exact, for tests)."""

    corrupt_images: int = 0
    """Images whose bytes are garbage or truncated (undecodable); their labels stay valid."""
    bad_label_lines: int = 0
    """Images whose label file gets one malformed line (wrong field count or not a number)."""
    out_of_range_ids: int = 0
    """Images whose label file gets one line with a class id >= the number of classes."""
    bad_boxes: int = 0
    """Images whose label file gets a box outside [0, 1] (odd ones) or of zero area (even ones)."""
    orphan_labels: int = 0
    """Extra label files with no image."""
    background_images: int = 0
    """Images with no objects and no label file (valid background images)."""


@dataclass
class EraConfig:
    """One era of synthetic data: which classes appear and how images look."""

    name: str
    images: int
    classes: list[str]
    """Classes that appear in this era (a subset of the dataset's classes)."""
    background: tuple[int, int, int] = (40, 40, 48)
    brightness: float = 1.0
    """Global lighting multiplier applied to the finished image."""
    scale: tuple[float, float] = (0.25, 0.45)
    """Object size range as a fraction of the image side."""
    seed: int = 0
    texture: float = 0.0
    """Background texture strength in [0, 1]: stripes plus pixel noise."""
    objects: tuple[int, int] = (1, 3)
    """Objects per image (inclusive range)."""
    image_format: Literal["png", "jpg"] = "png"
    defects: Defects = field(default_factory=Defects)
    start: int = 0
    """Index of the first image (names are `<era>_<index:06d>`); image i is the same for any count."""


def _image_rng(era: EraConfig, index: int) -> np.random.Generator:
    digest = hashlib.blake2b(f"{era.seed}\0{era.name}\0{index}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def _background(rng: np.random.Generator, era: EraConfig, imgsz: int) -> np.ndarray:
    base = np.empty((imgsz, imgsz, 3), dtype=np.float32)
    # A small per-image jitter of the background colour keeps every image's content unique.
    base[:] = np.asarray(era.background, dtype=np.float32) + rng.uniform(-8.0, 8.0, size=3).astype(np.float32)
    if era.texture > 0:
        period = int(rng.integers(4, 10))
        phase = int(rng.integers(0, period))
        coords = np.arange(imgsz)
        stripes = ((coords[:, None] + coords[None, :] + phase) // period) % 2
        base += (stripes[..., None] * 2.0 - 1.0) * 40.0 * era.texture
        base += rng.normal(0.0, 25.0 * era.texture, size=base.shape).astype(np.float32)
    return base


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], colour: tuple[int, ...]) -> None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    w, h = x1 - x0, y1 - y0
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=colour)
    elif shape == "cross":
        t = max(1, w // 3)
        draw.rectangle((x0, cy - t / 2, x1, cy + t / 2), fill=colour)
        draw.rectangle((cx - t / 2, y0, cx + t / 2, y1), fill=colour)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(1, w // 5))
    elif shape == "bar":
        draw.rectangle((x0, y0 + h // 3, x1, y1 - h // 3), fill=colour)
    else:  # star
        pts = []
        for k in range(10):
            r = (w / 2) if k % 2 == 0 else (w / 5)
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
        draw.polygon(pts, fill=colour)


def render_image(
    era: EraConfig, index: int, all_classes: list[str], imgsz: int = 64, background_only: bool = False
) -> tuple[Image.Image, list[tuple[int, float, float, float, float]]]:
    """Image number `index` of an era and its YOLO boxes (class id, cx, cy, w, h), deterministic per seed."""
    rng = _image_rng(era, index)
    arr = _background(rng, era, imgsz)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    boxes: list[tuple[int, float, float, float, float]] = []
    ids = [all_classes.index(c) for c in era.classes]
    n = 0 if background_only else int(rng.integers(era.objects[0], era.objects[1] + 1))
    placed: list[tuple[int, int, int, int]] = []
    for _ in range(n):
        for _attempt in range(8):
            side = max(3, round(float(rng.uniform(*era.scale)) * imgsz))
            side = min(side, imgsz - 2)
            x0 = int(rng.integers(0, imgsz - side + 1))
            y0 = int(rng.integers(0, imgsz - side + 1))
            box = (x0, y0, x0 + side, y0 + side)
            if all(box[2] <= p[0] or box[0] >= p[2] or box[3] <= p[1] or box[1] >= p[3] for p in placed):
                break
        else:
            continue
        placed.append(box)
        cid = ids[int(rng.integers(0, len(ids)))]
        _draw_shape(
            draw, SHAPES[cid % len(SHAPES)], (box[0], box[1], box[2] - 1, box[3] - 1), COLOURS[cid % len(COLOURS)]
        )
        boxes.append((cid, (box[0] + box[2]) / 2 / imgsz, (box[1] + box[3]) / 2 / imgsz, side / imgsz, side / imgsz))
    if era.brightness != 1.0:
        lit = np.asarray(img, dtype=np.float32) * era.brightness
        img = Image.fromarray(np.clip(lit, 0, 255).astype(np.uint8), "RGB")
    return img, boxes


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpg":
        img.save(buf, format="JPEG", quality=92)
    else:
        img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _label_text(boxes: list[tuple[int, float, float, float, float]]) -> str:
    return "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in boxes)


def generate_era(root: Path, era: EraConfig, imgsz: int = 64, all_classes: list[str] | None = None) -> None:
    """Write one era as `<root>/<era>/images/<era>_<i>.<ext>` and `<root>/<era>/labels/<era>_<i>.txt`.

    `all_classes` gives the class ids (default: the era's own classes). Defects go into distinct
    images in this order: corrupt, bad label line, out-of-range id, bad box, background; orphan
    label files are extra. Image i depends only on (seed, era name, i), so generating more images
    (or a later `start`) adds images without changing existing ones.
    """
    names = list(all_classes if all_classes is not None else era.classes)
    unknown = [c for c in era.classes if c not in names]
    if unknown:
        raise ValueError(f"era {era.name!r}: classes {unknown} are not in the dataset's class list {names}")
    images_dir = Path(root) / era.name / "images"
    labels_dir = Path(root) / era.name / "labels"
    images_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    d = era.defects
    kinds: list[str] = (
        ["corrupt"] * d.corrupt_images
        + ["bad_line"] * d.bad_label_lines
        + ["bad_id"] * d.out_of_range_ids
        + ["bad_box"] * d.bad_boxes
        + ["background"] * d.background_images
    )
    if len(kinds) > era.images:
        raise ValueError(f"era {era.name!r}: {len(kinds)} defects requested for only {era.images} images")
    ext = "jpg" if era.image_format == "jpg" else "png"
    for i in range(era.images):
        index = era.start + i
        kind = kinds[i] if i < len(kinds) else ""
        stem = f"{era.name}_{index:06d}"
        img, boxes = render_image(era, index, names, imgsz, background_only=kind == "background")
        data = _encode(img, ext)
        if kind == "corrupt":
            data = data[: len(data) // 2] if i % 2 else b"this is not an image\n" + data[:16]
        (images_dir / f"{stem}.{ext}").write_bytes(data)
        if kind == "background":
            continue
        text = _label_text(boxes)
        if kind == "bad_line":
            text += "0 0.5 0.5\n" if i % 2 else "x 0.5 0.5 0.1 0.1\n"
        elif kind == "bad_id":
            text += f"{len(names) + 3} 0.5 0.5 0.1 0.1\n"
        elif kind == "bad_box":
            text += "0 0.95 0.5 0.2 0.2\n" if i % 2 else "0 0.5 0.5 0.0 0.1\n"
        (labels_dir / f"{stem}.txt").write_text(text)
    for j in range(d.orphan_labels):
        (labels_dir / f"{era.name}_orphan_{era.start + j:06d}.txt").write_text("0 0.5 0.5 0.2 0.2\n")


def write_classes(root: Path, classes: list[str]) -> Path:
    """Write `<root>/classes.yaml` (`names: [...]`)."""
    path = Path(root) / "classes.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"names": list(classes)}, sort_keys=False))
    return path


def generate_dataset(root: Path, eras: list[EraConfig], classes: list[str], imgsz: int = 64) -> None:
    """Write every era plus `<root>/classes.yaml`."""
    write_classes(root, classes)
    for era in eras:
        generate_era(root, era, imgsz, classes)


def upload_dataset(root: Path, store: ObjectStore, uri: str) -> int:
    """Upload a generated dataset directory to `uri` (S3 era layout); returns the number of objects."""
    return store.upload_dir(Path(root), uri)


def demo_eras(
    images: int = 200,
    seed: int = 0,
    classes: list[str] | None = None,
    names: tuple[str, str] = ("era1", "era2"),
    image_format: Literal["png", "jpg"] = "png",
) -> list[EraConfig]:
    """Two eras with a strong shift, the second with a class that is new in it.

    Era 1: dark plain background, large objects, every class but the last.
    Era 2: bright striped and noisy background, small objects, every class.
    A model trained on era 2 alone degrades clearly on era 1; one trained on both does well on both.
    """
    names_list = list(classes or DEFAULT_CLASSES)
    if len(names_list) < 2:
        raise ValueError("demo_eras needs at least two classes (the last one is new in the second era)")
    return [
        EraConfig(
            name=names[0],
            images=images,
            classes=names_list[:-1],
            background=(25, 25, 35),
            brightness=0.8,
            scale=(0.35, 0.55),
            seed=seed,
            texture=0.0,
            objects=(1, 2),
            image_format=image_format,
        ),
        EraConfig(
            name=names[1],
            images=images,
            classes=names_list,
            background=(205, 200, 185),
            brightness=1.1,
            scale=(0.12, 0.22),
            seed=seed + 1,
            texture=0.8,
            objects=(2, 4),
            image_format=image_format,
        ),
    ]
