"""What an import will write: one item per image (boxes still in source form) and the source's classes."""

from __future__ import annotations

import io
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from PIL import Image, UnidentifiedImageError

from kretrain.trainer.data.split import Split
from kretrain.trainer.data_import.errors import MAX_LABEL_BYTES, ImportInputError
from kretrain.trainer.data_import.geometry import (
    BoxError,
    YoloBox,
    coco_to_yolo,
    label_line,
    polygon_to_yolo,
    voc_to_yolo,
    yolo_to_yolo,
)
from kretrain.trainer.data_import.source import Source

Format = Literal["ultralytics", "coco", "voc"]
FORMATS: tuple[Format, ...] = ("ultralytics", "coco", "voc")


@dataclass(frozen=True)
class RawBox:
    """One box as the source states it (converted once the image's real size is known)."""

    cls: int
    """Source class id."""
    kind: Literal["coco", "voc"]
    coords: tuple[float, float, float, float]
    """COCO: x, y, w, h in pixels; VOC: xmin, ymin, xmax, ymax (1-based pixels)."""
    ref: str
    """Where it comes from, e.g. `annotation id 7` or `object 2`."""


@dataclass
class ImportItem:
    """One image of the source and what becomes of it in the era."""

    key: str
    """Era-relative image key, `images/...`."""
    source: Source
    rel: str
    """The image's name in `source`."""
    origin: str
    """The annotation file that names the image (for messages)."""
    boxes: list[RawBox] = field(default_factory=list)
    label_rel: str | None = None
    """Ultralytics: the YOLO label file in `source` (None or missing: a background image)."""
    expected_size: tuple[int, int] | None = None
    """Width and height the annotation states (checked against the image)."""
    split: Split | None = None
    """The source's own split of the image, if it has one."""


@dataclass
class ImportPlan:
    """Everything read from the source's annotations, before any image is opened."""

    format: Format
    source: str
    """The source as given, for the marker and messages."""
    classes: dict[int, str]
    """Source class id -> name."""
    used: set[int]
    """Source class ids that have boxes (all declared ones for Ultralytics)."""
    items: list[ImportItem]
    skipped: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(reason, class name) -> annotations not imported (crowd, difficult)."""
    notes: list[str] = field(default_factory=list)
    """Things worth telling the user that are not errors (e.g. images without annotation file)."""


def image_size(data: bytes, where: str) -> tuple[int, int]:
    """Width and height from an image's header; ImportInputError naming the file if it is not an image."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except (UnidentifiedImageError, OSError, ValueError, ImportError) as exc:
        # ImportError: once Ultralytics is imported its patched Image.open answers an unidentified image by
        # importing pi_heif (not installed) instead of raising UnidentifiedImageError.
        raise ImportInputError(f"{where}: not a readable image ({type(exc).__name__}: {exc})") from exc


def _yolo_lines(text: str, where: str, ids: dict[int, int], classes: dict[int, str]) -> list[tuple[int, YoloBox]]:
    out: list[tuple[int, YoloBox]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        toks = line.split()
        if not toks:
            continue
        try:
            values = [float(t) for t in toks]
        except ValueError:
            raise ImportInputError(f"{where} line {lineno}: not a number in {line.strip()[:80]!r}") from None
        if not all(math.isfinite(v) for v in values):
            raise ImportInputError(f"{where} line {lineno}: not a finite number in {line.strip()[:80]!r}")
        cls_f = values[0]
        if cls_f != int(cls_f) or int(cls_f) not in classes:
            raise ImportInputError(f"{where} line {lineno}: class id {toks[0]!r} is not one of the dataset's names")
        try:
            if len(values) == 5:
                box = yolo_to_yolo(*values[1:])
            elif len(values) >= 7 and len(values) % 2 == 1:
                box = polygon_to_yolo(values[1:])
            else:
                raise BoxError(f"expected `class cx cy w h` or a polygon, got {len(values)} fields")
        except BoxError as exc:
            raise ImportInputError(f"{where} line {lineno}: {exc}") from None
        out.append((ids[int(cls_f)], box))
    return out


def label_boxes(
    item: ImportItem, width: int, height: int, ids: dict[int, int], classes: dict[int, str]
) -> list[tuple[int, YoloBox]]:
    """The item's boxes as (line class id, YOLO box) for an image of the given real size.

    ImportInputError names the annotation file and the annotation when a box is outside the image,
    has zero area, or (Ultralytics) a label line is malformed.
    """
    if item.expected_size is not None and item.expected_size != (width, height):
        ew, eh = item.expected_size
        raise ImportInputError(
            f"{item.origin}: {item.rel} is {width}x{height} pixels but the annotation says {ew}x{eh}"
        )
    if item.label_rel is not None:
        if item.source.size(item.label_rel) is None:
            return []
        data = item.source.read(item.label_rel, MAX_LABEL_BYTES, "label file")
        where = item.source.describe(item.label_rel)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ImportInputError(f"{where}: label file is not UTF-8 text") from None
        return _yolo_lines(text, where, ids, classes)
    out: list[tuple[int, YoloBox]] = []
    for box in item.boxes:
        try:
            if box.kind == "coco":
                yolo = coco_to_yolo(box.coords, width, height)
            else:
                yolo = voc_to_yolo(*box.coords, width, height)
        except BoxError as exc:
            raise ImportInputError(f"{item.origin}: {item.rel} {box.ref}: {exc}") from None
        out.append((ids[box.cls], yolo))
    return out


def label_text(boxes: list[tuple[int, YoloBox]]) -> str:
    """The YOLO label file for the boxes (empty for a background image)."""
    return "".join(label_line(c, b) for c, b in boxes)
