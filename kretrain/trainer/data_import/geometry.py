"""Pure box conversions to YOLO's normalised (cx, cy, w, h), with bounds checks and small-overshoot clipping."""

from __future__ import annotations

import math

PIXEL_TOLERANCE = 1.0
"""How far (pixels) a COCO or VOC box may stick out of its image before it is an error; less is clipped."""
NORM_TOLERANCE = 1e-3
"""How far a normalised YOLO box may stick out of [0, 1] before it is an error; less is clipped."""

YoloBox = tuple[float, float, float, float]


class BoxError(ValueError):
    """A box that cannot be converted (outside its image, zero area, not finite)."""


def _finite(*values: float) -> None:
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise BoxError(f"coordinates must be finite numbers, got {list(values)}")


def pixel_edges_to_yolo(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> YoloBox:
    """Edges in pixels (continuous, origin top-left) -> normalised (cx, cy, w, h) of the clipped box."""
    _finite(x0, y0, x1, y1)
    if width <= 0 or height <= 0:
        raise BoxError(f"image size {width}x{height} is not positive")
    tol = PIXEL_TOLERANCE
    if x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol:
        raise BoxError(f"box [{x0:g}, {y0:g}, {x1:g}, {y1:g}] (x0 y0 x1 y1) extends outside the {width}x{height} image")
    x0, y0 = max(0.0, x0), max(0.0, y0)
    x1, y1 = min(float(width), x1), min(float(height), y1)
    if x1 <= x0 or y1 <= y0:
        raise BoxError(f"box [{x0:g}, {y0:g}, {x1:g}, {y1:g}] (x0 y0 x1 y1) has zero area")
    return (x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height


def coco_to_yolo(bbox: tuple[float, float, float, float], width: int, height: int) -> YoloBox:
    """COCO `bbox` [x, y, w, h] in pixels from the top-left corner -> normalised (cx, cy, w, h)."""
    x, y, w, h = bbox
    _finite(x, y, w, h)
    if w <= 0 or h <= 0:
        raise BoxError(f"bbox {list(bbox)} has zero or negative width/height")
    return pixel_edges_to_yolo(x, y, x + w, y + h, width, height)


def voc_to_yolo(xmin: float, ymin: float, xmax: float, ymax: float, width: int, height: int) -> YoloBox:
    """VOC `bndbox` (1-based pixel indices) -> normalised (cx, cy, w, h), as Ultralytics' own VOC conversion.

    Ultralytics computes cx = (xmin + xmax) / 2 - 1 and w = xmax - xmin, i.e. edges xmin - 1 and xmax - 1.
    """
    _finite(xmin, ymin, xmax, ymax)
    if xmax <= xmin or ymax <= ymin:
        raise BoxError(f"bndbox xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g} has zero or negative size")
    return pixel_edges_to_yolo(xmin - 1, ymin - 1, xmax - 1, ymax - 1, width, height)


def yolo_to_yolo(cx: float, cy: float, w: float, h: float) -> YoloBox:
    """A normalised YOLO box checked against [0, 1] (NORM_TOLERANCE allowed, then clipped)."""
    _finite(cx, cy, w, h)
    if w <= 0 or h <= 0:
        raise BoxError(f"box (cx={cx:g}, cy={cy:g}, w={w:g}, h={h:g}) has zero or negative size")
    x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    lo, hi = -NORM_TOLERANCE, 1 + NORM_TOLERANCE
    if not (lo <= x0 and lo <= y0 and x1 <= hi and y1 <= hi):
        raise BoxError(f"box (cx={cx:g}, cy={cy:g}, w={w:g}, h={h:g}) extends outside [0, 1]")
    x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(1.0, x1), min(1.0, y1)
    return (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0


def polygon_to_yolo(coords: list[float]) -> YoloBox:
    """A normalised segmentation polygon (x1 y1 x2 y2 ...) -> its bounding box as (cx, cy, w, h)."""
    if len(coords) < 6 or len(coords) % 2:
        raise BoxError(f"a polygon needs an even number (>= 6) of coordinates, got {len(coords)}")
    _finite(*coords)
    xs, ys = coords[0::2], coords[1::2]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    return yolo_to_yolo((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0)


def label_line(cls: int, box: YoloBox) -> str:
    """One YOLO label line: `cls cx cy w h` with 6 decimals."""
    cx, cy, w, h = box
    return f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n"
