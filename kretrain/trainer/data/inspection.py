"""Per-image inspection: hash, decode and bounds-check one image, parse its YOLO label file."""

from __future__ import annotations

import hashlib
import io
import math
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image, ImageStat, UnidentifiedImageError

from kretrain.limits import MAX_CLASSES_BYTES, MAX_LABEL_BYTES
from kretrain.trainer.data.records import Box

IMAGE_EXTENSIONS = frozenset({"bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm"})
"""Image file extensions Ultralytics loads (lower case)."""
BOX_TOLERANCE = 1e-3
"""How far a box edge may stick out of [0, 1] (rounding in label writers) before it is an error."""
MIN_IMAGE_SIDE = 10
"""Ultralytics drops images smaller than this (pixels), so they are excluded here with a finding."""
MAX_FINDINGS_PER_LABEL_FILE = 5
"""Problems reported per label file; the rest are counted in the last message."""
POOL_THRESHOLD = 1000
"""Below this many images the inspection runs in-process (a pool's start-up would cost more)."""
MAX_IMAGE_BYTES = 64 * 1024 * 1024
"""Largest image file read (checked on the file's size before reading it)."""
MAX_IMAGE_PIXELS = 8192 * 8192
"""Largest image decoded (width x height from the header, checked before decoding: decompression bombs)."""
MAX_BOXES_PER_LABEL = 10_000
"""Most boxes one label file may hold (Ultralytics keeps at most 300 detections an image by default)."""
LABEL_FILE_LIMIT = MAX_LABEL_BYTES
"""Largest label file read (bytes; `kretrain.limits.MAX_LABEL_BYTES`), checked before reading it."""
CLASSES_FILE_LIMIT = MAX_CLASSES_BYTES
"""Largest classes.yaml read (bytes; `kretrain.limits.MAX_CLASSES_BYTES`)."""
READ_ERROR = "cannot read:"
"""Start of the message of an image that could not be read (an I/O error, perhaps passing: never cached)."""
LABEL_READ_ERROR = "label file unreadable:"
"""Start of the message of a label file that could not be read or decoded (never cached)."""


def _number(tok: str) -> float:
    value = float(tok)
    if not math.isfinite(value):
        raise ValueError(tok)
    return value


def parse_labels(text: str, nc: int) -> tuple[list[Box], list[tuple[str, str]]]:
    """Parse a YOLO detection label file: boxes and problems as (code, message) pairs.

    Codes: `malformed_label` (not 5 numeric fields, non-integer class), `class_out_of_range`,
    `box_out_of_bounds` (coordinates or edges outside [0, 1]), `zero_area_box` (width or height <= 0),
    `too_many_boxes` (more than MAX_BOXES_PER_LABEL; parsing stops there).
    """
    boxes: list[Box] = []
    problems: list[tuple[str, str]] = []  # the first MAX_FINDINGS_PER_LABEL_FILE - 1 and the latest one
    total = 0

    def note(code: str, message: str) -> None:
        nonlocal total
        total += 1
        if len(problems) < MAX_FINDINGS_PER_LABEL_FILE:
            problems.append((code, message))
        else:
            problems[-1] = (code, message)

    for lineno, line in enumerate(text.splitlines(), 1):
        toks = line.split(maxsplit=5)
        if not toks:
            continue
        if len(boxes) >= MAX_BOXES_PER_LABEL:
            note("too_many_boxes", f"more than {MAX_BOXES_PER_LABEL} boxes; line {lineno} and on not read")
            break
        if len(toks) != 5:
            got = len(toks) if len(toks) < 6 else "more"
            note("malformed_label", f"line {lineno}: expected 5 fields (class cx cy w h), got {got}")
            continue
        try:
            cls_f = _number(toks[0])
            cx, cy, w, h = (_number(t) for t in toks[1:])
        except ValueError:
            note("malformed_label", f"line {lineno}: not a number in {line.strip()[:80]!r}")
            continue
        if cls_f != int(cls_f):
            note("malformed_label", f"line {lineno}: class id {toks[0][:40]!r} is not an integer")
            continue
        cls = int(cls_f)
        if not 0 <= cls < nc:
            note("class_out_of_range", f"line {lineno}: class id {cls} not in [0, {nc - 1}]")
            continue
        if w <= 0 or h <= 0:
            note("zero_area_box", f"line {lineno}: box has zero area (w={w}, h={h})")
            continue
        lo, hi = -BOX_TOLERANCE, 1 + BOX_TOLERANCE
        edges = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        if not all(lo <= v <= hi for v in (cx, cy, w, h, *edges)):
            note("box_out_of_bounds", f"line {lineno}: box (cx={cx}, cy={cy}, w={w}, h={h}) extends outside [0, 1]")
            continue
        boxes.append((cls, cx, cy, w, h))
    if total > MAX_FINDINGS_PER_LABEL_FILE:
        rest = total - MAX_FINDINGS_PER_LABEL_FILE + 1
        problems[-1] = (problems[-1][0], f"and {rest} more problem lines")
    return boxes, problems


def decode_image(data: bytes) -> tuple[int, int, float]:
    """Decode an image fully once: (width, height, mean brightness 0-255); raises on undecodable data.

    JPEGs are decoded at reduced scale (`draft`), which still reads the whole stream, so truncated
    files fail; the size comes from the header and must be at most MAX_IMAGE_PIXELS (ImageTooLarge).
    """
    with Image.open(io.BytesIO(data)) as im:
        width, height = im.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ImageTooLarge(
                f"image is {width}x{height} ({width * height} pixels), over the limit of {MAX_IMAGE_PIXELS}; "
                "not decoded (decompression bomb?)"
            )
        if im.format == "JPEG":
            im.draft("L", (max(1, width // 8), max(1, height // 8)))
        im.load()
        gray = im.convert("L")
        brightness = float(ImageStat.Stat(gray).mean[0])
    return width, height, brightness


class ImageTooLarge(ValueError):
    """An image whose header announces more than MAX_IMAGE_PIXELS pixels."""


class _LabelTooLarge(Exception):
    """A label file over LABEL_FILE_LIMIT (not read)."""


InspectTask = tuple[str, str | None, int]
InspectResult = tuple[str, int, int, float, list[Box], list[tuple[str, str]]]


def inspect_image(task: InspectTask) -> InspectResult:
    """Hash, decode and parse one image and its label file (runs in a worker process)."""
    path, label_path, nc = task
    problems: list[tuple[str, str]] = []
    try:
        size = Path(path).stat().st_size
        if size > MAX_IMAGE_BYTES:
            return "", 0, 0, math.nan, [], [("image_too_large", f"{size} bytes, over the limit of {MAX_IMAGE_BYTES}")]
        data = Path(path).read_bytes()
    except OSError as exc:
        return "", 0, 0, math.nan, [], [("undecodable_image", f"{READ_ERROR} {exc}")]
    sha = hashlib.blake2b(data, digest_size=16).hexdigest()
    width = height = 0
    brightness = math.nan
    try:
        width, height, brightness = decode_image(data)
    except ImageTooLarge as exc:
        problems.append(("image_too_large", str(exc)))
    except Image.DecompressionBombError as exc:
        problems.append(("image_too_large", f"image is a decompression bomb: {exc}"))
    except UnidentifiedImageError:
        problems.append(("undecodable_image", "image does not decode: not a recognised image format"))
    except Exception as exc:
        problems.append(("undecodable_image", f"image does not decode: {type(exc).__name__}: {exc}"))
    else:
        if min(width, height) < MIN_IMAGE_SIDE:
            problems.append(("image_too_small", f"image is {width}x{height}; below {MIN_IMAGE_SIDE} px a side"))
    boxes: list[Box] = []
    if label_path is not None:
        try:
            label_size = Path(label_path).stat().st_size
            if label_size > LABEL_FILE_LIMIT:
                raise _LabelTooLarge(
                    f"label file is {label_size} bytes, over the limit of {LABEL_FILE_LIMIT}; not read"
                )
            text = Path(label_path).read_text(encoding="utf-8")
        except _LabelTooLarge as exc:
            problems.append(("label_too_large", str(exc)))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(("malformed_label", f"{LABEL_READ_ERROR} {exc}"))
        else:
            boxes, label_problems = parse_labels(text, nc)
            problems.extend(label_problems)
    return sha, width, height, brightness, boxes, problems


def default_workers() -> int:
    """Worker processes for inspection: the CPUs this process may use (env KRETRAIN_DATA_WORKERS overrides)."""
    env = os.environ.get("KRETRAIN_DATA_WORKERS")
    if env:
        return max(1, int(env))
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, min(8, os.cpu_count() or 1))


def inspect_all(tasks: list[InspectTask], workers: int | None = None) -> list[InspectResult]:
    """`inspect_image` over every task, in a process pool when there are many."""
    workers = default_workers() if workers is None else workers
    if workers <= 1 or len(tasks) < POOL_THRESHOLD:
        return [inspect_image(t) for t in tasks]
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    chunk = max(64, len(tasks) // (workers * 8))
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method)) as pool:
        return list(pool.map(inspect_image, tasks, chunksize=chunk))
