"""Validate pulled eras: decodable images, well-formed labels, duplicates, class lists and new classes."""

from __future__ import annotations

import hashlib
import io
import math
import multiprocessing
import os
import sys
import time
import unicodedata
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml
from PIL import Image, ImageStat, UnidentifiedImageError

from kretrain.limits import MAX_CLASSES_BYTES, MAX_LABEL_BYTES
from kretrain.trainer.data.split import Split

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

Severity = Literal["error", "warning", "info"]
Box = tuple[int, float, float, float, float]


class DataValidationError(Exception):
    """The data cannot be trained on (the data report says why, in detail)."""


def unsafe_key_reason(key: str) -> str | None:
    """Why an object key (or path) cannot go into an image list, or None when it can.

    Ultralytics reads its image lists with `str.splitlines()`, which also splits on U+0085, U+2028,
    U+2029, VT, FF and U+001C-U+001E: a key holding one of them would inject a second path into the list.
    Refused: the store's UNSAFE_KEY_CATEGORIES (controls, format characters, line/paragraph separators,
    surrogates), which cover every character `splitlines` splits on (checked as well).
    """
    from kretrain.store import UNSAFE_KEY_CATEGORIES

    if key.isprintable():  # the common case, in C: none of those categories
        return None
    for ch in key:
        cat = unicodedata.category(ch)
        if cat in UNSAFE_KEY_CATEGORIES or len(f"a{ch}a".splitlines()) > 1:
            name = unicodedata.name(ch, "")
            return f"contains U+{ord(ch):04X}{' ' + name if name else ''} (category {cat})"
    return None


@dataclass
class Finding:
    """One validation finding; `excluded` says whether it removed an item from training and evaluation."""

    severity: Severity
    code: str
    era: str
    key: str
    message: str
    excluded: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the data report."""
        return {
            "severity": self.severity,
            "code": self.code,
            "era": self.era,
            "key": self.key,
            "message": self.message,
            "excluded": self.excluded,
        }


@dataclass
class ImageRecord:
    """One image of an era after inspection."""

    era: str
    key: str
    """Object key relative to the era folder, e.g. `images/x.png`."""
    path: Path
    label_path: Path | None
    sha: str = ""
    width: int = 0
    height: int = 0
    brightness: float = math.nan
    boxes: list[Box] = field(default_factory=list)
    split: Split = "train"
    excluded: bool = False

    @property
    def background(self) -> bool:
        """An image without objects (no label file or an empty one)."""
        return not self.boxes


@dataclass
class ValidationResult:
    """Everything validation found: records per era (excluded ones flagged), findings, fatal errors."""

    records: dict[str, list[ImageRecord]]
    findings: list[Finding]
    orphan_labels: dict[str, int]
    fatal: list[str]
    new_classes: dict[str, dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per phase: `inspect` (hash, decode, labels), `split`, `checks` (duplicates, classes)."""
    unsafe_keys: dict[str, int] = field(default_factory=dict)
    """Files per era whose key cannot be listed safely (`unsafe_key_reason`); excluded, counted as bad."""

    def kept(self, era: str) -> list[ImageRecord]:
        """The era's images that passed validation."""
        return [r for r in self.records[era] if not r.excluded]

    @property
    def items(self) -> int:
        """Images, orphan label files and unsafe keys: what the bad share is measured against."""
        return (
            sum(len(r) for r in self.records.values())
            + sum(self.orphan_labels.values())
            + sum(self.unsafe_keys.values())
        )

    @property
    def bad_items(self) -> int:
        """Excluded images, orphan label files and files with unsafe keys."""
        excluded = sum(1 for recs in self.records.values() for r in recs if r.excluded)
        return excluded + sum(self.orphan_labels.values()) + sum(self.unsafe_keys.values())

    @property
    def bad_fraction(self) -> float:
        """Share of bad items."""
        return self.bad_items / self.items if self.items else 0.0


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
        return "", 0, 0, math.nan, [], [("undecodable_image", f"cannot read: {exc}")]
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
            problems.append(("malformed_label", f"label file unreadable: {exc}"))
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


def label_key_for(image_key: str) -> str:
    """The label key Ultralytics uses for an image key: `images/a/b.png` -> `labels/a/b.txt`."""
    parts = PurePosixPath(image_key).with_suffix(".txt").parts
    return str(PurePosixPath("labels", *parts[1:]))


def read_class_names(data: bytes | str, source: str) -> list[str]:
    """Class names from a `classes.yaml` (`names: [...]` or `names: {0: a, 1: b}`); ValueError naming the file."""
    if len(data) > CLASSES_FILE_LIMIT:
        raise ValueError(f"{source} is {len(data)} bytes, over the limit of {CLASSES_FILE_LIMIT}")
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML: {exc}") from exc
    names = doc.get("names") if isinstance(doc, dict) else None
    if isinstance(names, dict):
        try:
            ordered = [names[i] for i in range(len(names))]
        except KeyError as exc:
            raise ValueError(f"{source}: `names` keys must be 0..{len(names) - 1}") from exc
        names = ordered
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{source}: expected `names:` with a non-empty list of class names")
    if len(set(names)) != len(names):
        raise ValueError(f"{source}: class names are not unique: {names}")
    return list(names)


def _read_capped(path: Path, source: str) -> bytes:
    """A classes.yaml's bytes; ValueError (naming it) when it is over CLASSES_FILE_LIMIT, before reading."""
    size = path.stat().st_size
    if size > CLASSES_FILE_LIMIT:
        raise ValueError(f"{source} is {size} bytes, over the limit of {CLASSES_FILE_LIMIT}; not read")
    return path.read_bytes()


def _era_layout(era: str, files: dict[str, Path]) -> tuple[dict[str, Path], dict[str, Path], list[Finding]]:
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    findings: list[Finding] = []
    for key, path in files.items():
        unsafe = unsafe_key_reason(key)
        if unsafe is not None:
            findings.append(Finding("error", "unsafe_key", era, ascii(key), f"key {unsafe}; excluded", excluded=True))
            continue
        if key.endswith(".cache"):
            # Ultralytics loads `<labels folder>.cache` (e.g. <era>/labels.cache) with np.load(allow_pickle=True)
            # before checking it: a data contributor's object there runs code in the trainer (and its DDP workers).
            Path(path).unlink(missing_ok=True)
            why = "is a *.cache file, which Ultralytics would unpickle (code execution); removed from the local copy"
            findings.append(Finding("error", "unsafe_key", era, ascii(key), why, excluded=True))
            continue
        top = key.split("/", 1)[0]
        ext = key.rsplit(".", 1)[-1].lower() if "." in key else ""
        if top == "images" and ext in IMAGE_EXTENSIONS and "images" in key.split("/")[1:-1]:
            # Ultralytics takes an image's label from its *last* `/images/` folder: for images/x/images/y.png it
            # reads images/x/labels/y.txt, a file this validator never checked (size, boxes, classes).
            why = "has a second images/ folder: Ultralytics would read its label from another file; excluded"
            findings.append(Finding("error", "unsafe_key", era, ascii(key), why, excluded=True))
        elif top == "images" and ext in IMAGE_EXTENSIONS:
            images[key] = path
        elif top == "labels" and ext == "txt":
            labels[key] = path
        elif key in ("classes.yaml", "splits.yaml", "_READY", "_IMPORTING") or key.startswith("."):
            continue
        else:
            findings.append(Finding("info", "ignored_file", era, key, "not an image under images/ or a .txt label"))
    return images, labels, findings


def validate_eras(
    era_files: dict[str, dict[str, Path]],
    classes: list[str],
    new_eras: Iterable[str],
    split_seed: int,
    val: float,
    test: float,
    workers: int | None = None,
) -> ValidationResult:
    """Validate every era (oldest first) and assign splits.

    `era_files` maps era -> (key relative to the era folder -> local path). Findings: undecodable or
    too-small images, malformed label lines, class ids out of range, boxes outside [0, 1] or of zero
    area (the image is excluded), background images (info), label files without an image, the same
    content twice (across eras, across splits or within a split: later copies are excluded, the
    first in era order then key order is kept), an era `classes.yaml` that differs from the dataset's
    (fatal), an era without images (fatal), and a class first labelled in a new era (warning).
    """
    from kretrain.trainer.data_import.splits import era_split_override, split_with_override

    nc = len(classes)
    findings: list[Finding] = []
    fatal: list[str] = []
    overrides: dict[str, dict[str, Split] | None] = {}
    records: dict[str, list[ImageRecord]] = {}
    orphans: dict[str, int] = {}
    unsafe: dict[str, int] = {}
    tasks: list[InspectTask] = []
    for era, files in era_files.items():
        if "classes.yaml" in files:
            try:
                era_names = read_class_names(
                    _read_capped(files["classes.yaml"], f"{era}/classes.yaml"), f"{era}/classes.yaml"
                )
            except ValueError as exc:
                era_names = None
                msg = str(exc)
            else:
                msg = f"era class list {era_names} differs from the dataset's classes.yaml {classes}"
            if era_names != classes:
                findings.append(Finding("error", "class_list_mismatch", era, "classes.yaml", msg))
                fatal.append(f"era {era!r}: {msg}")
        try:
            overrides[era] = era_split_override(era, files)  # the user's own split, kept by `data import`
        except ValueError as exc:
            findings.append(Finding("error", "invalid_split_manifest", era, "splits.yaml", str(exc)))
            fatal.append(f"era {era!r}: {exc}")
        images, labels, layout = _era_layout(era, files)
        findings.extend(layout)
        unsafe[era] = sum(1 for f in layout if f.code == "unsafe_key")
        recs: list[ImageRecord] = []
        used_labels: set[str] = set()
        for key in sorted(images):
            lkey = label_key_for(key)
            label = labels.get(lkey)
            if label is not None:
                used_labels.add(lkey)
            rec = ImageRecord(era=era, key=key, path=images[key], label_path=label)
            recs.append(rec)
            tasks.append((str(rec.path), str(label) if label else None, nc))
        records[era] = recs
        orphan_keys = sorted(set(labels) - used_labels)
        orphans[era] = len(orphan_keys)
        for key in orphan_keys:
            findings.append(
                Finding("error", "label_without_image", era, key, "label file has no image with the same name")
            )
        if not recs:
            fatal.append(f"era {era!r} has no images under {era}/images/")
            findings.append(Finding("error", "empty_era", era, "", "no images under images/"))

    t0 = time.perf_counter()
    results = inspect_all(tasks, workers)
    t1 = time.perf_counter()
    flat = [r for era in era_files for r in records[era]]
    for rec in flat:
        rec.split = split_with_override(overrides.get(rec.era), split_seed, rec.era, rec.key, val, test)
    t2 = time.perf_counter()
    for rec, (sha, width, height, brightness, boxes, problems) in zip(flat, results, strict=True):
        rec.sha, rec.width, rec.height, rec.brightness, rec.boxes = sha, width, height, brightness, boxes
        for code, message in problems:
            findings.append(Finding("error", code, rec.era, rec.key, message, excluded=True))
        if problems:
            rec.excluded = True
        elif not boxes:
            why = "no label file" if rec.label_path is None else "empty label file"
            findings.append(Finding("info", "background_image", rec.era, rec.key, f"background image ({why})"))

    first: dict[str, ImageRecord] = {}
    for rec in flat:
        if rec.excluded or not rec.sha:
            continue
        seen = first.get(rec.sha)
        if seen is None:
            first[rec.sha] = rec
            continue
        if seen.era != rec.era:
            code, where = "duplicate_across_eras", f"era {seen.era!r} ({seen.split})"
        elif seen.split != rec.split:
            code, where = "duplicate_across_splits", f"{seen.split} split"
        else:
            code, where = "duplicate_within_split", f"the same {rec.split} split"
        msg = f"same content as {seen.era}/{seen.key} in {where}; this {rec.split} copy is excluded"
        findings.append(Finding("error", code, rec.era, rec.key, msg, excluded=True))
        rec.excluded = True

    new_classes = _new_class_warnings(records, classes, list(new_eras), findings)
    timings = {"inspect": t1 - t0, "split": t2 - t1, "checks": time.perf_counter() - t2}
    return ValidationResult(records, findings, orphans, fatal, new_classes, timings, unsafe)


def _new_class_warnings(
    records: dict[str, list[ImageRecord]], classes: list[str], new_eras: list[str], findings: list[Finding]
) -> dict[str, dict[str, Any]]:
    eras = list(records)
    counts: dict[str, list[tuple[int, int]]] = {}  # era -> per class (images, boxes)
    for era in eras:
        per = [[0, 0] for _ in classes]
        for rec in records[era]:
            if rec.excluded:
                continue
            seen: set[int] = set()
            for box in rec.boxes:
                per[box[0]][1] += 1
                seen.add(box[0])
            for c in seen:
                per[c][0] += 1
        counts[era] = [(a, b) for a, b in per]
    out: dict[str, dict[str, Any]] = {}
    for cid, name in enumerate(classes):
        first_era = next((e for e in eras if counts[e][cid][1] > 0), None)
        if first_era is None:
            findings.append(
                Finding("info", "class_unused", "", "", f"class {name!r} (id {cid}) has no boxes in any era")
            )
            continue
        older = eras[: eras.index(first_era)]
        if first_era in new_eras and older:
            images, boxes = counts[first_era][cid]
            later = {e: counts[e][cid][1] for e in eras[eras.index(first_era) :]}
            msg = (
                f"class {name!r} (id {cid}) is first labelled in new era {first_era!r} ({boxes} boxes in "
                f"{images} images); older eras {', '.join(older)} have none, so their images may contain it "
                "unlabelled (teaching the model it is background)"
            )
            findings.append(Finding("warning", "class_new_in_era", first_era, "", msg))
            out[name] = {
                "classId": cid,
                "firstEra": first_era,
                "images": images,
                "boxes": boxes,
                "olderEras": older,
                "boxesByEra": later,
            }
    return out
