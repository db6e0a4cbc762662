"""Validate pulled eras: layout, duplicates, class lists and new classes (per-image checks: `inspection`)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from kretrain.trainer.data.inspection import (
    BOX_TOLERANCE,
    CLASSES_FILE_LIMIT,
    IMAGE_EXTENSIONS,
    LABEL_FILE_LIMIT,
    MAX_BOXES_PER_LABEL,
    MAX_FINDINGS_PER_LABEL_FILE,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    MIN_IMAGE_SIDE,
    POOL_THRESHOLD,
    ImageTooLarge,
    InspectResult,
    InspectTask,
    decode_image,
    default_workers,
    inspect_all,
    inspect_image,
    parse_labels,
)
from kretrain.trainer.data.records import (
    Box,
    DataValidationError,
    Finding,
    ImageRecord,
    Severity,
    ValidationResult,
    unsafe_key_reason,
)
from kretrain.trainer.data.split import Split
from kretrain.trainer.data.vcache import Identity, ValidationCache, inspect_cached, object_identity

__all__ = [
    "BOX_TOLERANCE",
    "CLASSES_FILE_LIMIT",
    "IMAGE_EXTENSIONS",
    "LABEL_FILE_LIMIT",
    "MAX_BOXES_PER_LABEL",
    "MAX_FINDINGS_PER_LABEL_FILE",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "MIN_IMAGE_SIDE",
    "POOL_THRESHOLD",
    "Box",
    "DataValidationError",
    "Finding",
    "ImageRecord",
    "ImageTooLarge",
    "InspectResult",
    "InspectTask",
    "Severity",
    "ValidationResult",
    "decode_image",
    "default_workers",
    "inspect_all",
    "inspect_image",
    "label_key_for",
    "parse_labels",
    "read_class_names",
    "unsafe_key_reason",
    "validate_eras",
]


def label_key_for(image_key: str) -> str:
    """The label key Ultralytics uses for an image key: `images/a/b.png` -> `labels/a/b.txt`.

    Plain keys (`images/...`, no empty or `.` segment, a suffix) take a string fast path that gives what
    the PurePosixPath form gives (tested on both); anything else takes that form.
    """
    name = image_key.rpartition("/")[2]
    dot = name.rfind(".")
    plain = image_key.startswith("images/") and "//" not in image_key and "/./" not in image_key
    if plain and 0 < dot < len(name) - 1 and name != "..":
        return f"labels/{image_key[7 : len(image_key) - len(name)]}{name[:dot]}.txt"
    return label_key_slow(image_key)


def label_key_slow(image_key: str) -> str:
    """`label_key_for` through PurePosixPath (normalises `//` and `.` segments)."""
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
    cache: ValidationCache | None = None,
    objects: dict[str, dict[str, tuple[str, int]]] | None = None,
) -> ValidationResult:
    """Validate every era (oldest first) and assign splits.

    With `cache` and `objects` (era -> key -> (ETag, size) of what was pulled), an image whose image
    and label objects are unchanged since an earlier run is not read again: its inspection result comes
    from the cache, which is rewritten for every era that had a miss. Everything after inspection
    (splits, duplicates, class checks, statistics) runs on all images as before, so the outcome is the same.

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
    idents: list[Identity | None] = []
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
            idents.append(object_identity(objects.get(era, {}), key, lkey if label else None) if objects else None)
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
    flat = [r for era in era_files for r in records[era]]
    results = inspect_cached(flat, tasks, idents, cache, workers) if cache else inspect_all(tasks, workers)
    t1 = time.perf_counter()
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
