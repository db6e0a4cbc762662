"""Per-object validation results kept beside the dataset cache, keyed by (ETag, size, validator version)."""

from __future__ import annotations

import functools
import hashlib
import math
import os
import secrets
from pathlib import Path
from typing import Annotated

import PIL
from pydantic import Field, StringConstraints, ValidationError

from kretrain.api.base import ApiModel
from kretrain.trainer.data import inspection
from kretrain.trainer.data.inspection import InspectResult, InspectTask, inspect_all
from kretrain.trainer.data.records import ImageRecord

CACHE_DIR_NAME = ".kretrain-validation"
"""Folder of the validation cache in the dataset cache's top level (no bucket name starts with a dot)."""
RULES_REVISION = 1
"""Bump when a validation rule changes outside `inspection.py` (that module's source is hashed anyway)."""
MAX_CACHE_FILE_BYTES = 64 * 1024 * 1024
"""Largest era cache file read; a larger one is ignored (the era is validated again)."""
MAX_CACHED_BOXES = 1000
"""Images with more boxes than this are not cached (rare; they are inspected on every run)."""
MAX_MESSAGE_CHARS = 2000
"""Longest cached problem message; an image with a longer one is not cached."""
MAX_ENTRIES = 1_000_000
"""Most images one era cache file may describe."""

Code = Annotated[str, StringConstraints(max_length=64, pattern=r"^[a-z_]+$")]
Message = Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS)]
CachedBox = tuple[int, float, float, float, float]


@functools.cache
def validator_version() -> str:
    """Digest of everything an image's inspection result depends on besides its bytes.

    The source of `inspection.py` (so editing a rule there cannot leave stale results behind, bump or
    not), its limits, Pillow's version (decoding) and RULES_REVISION (for rules that live elsewhere).
    """
    h = hashlib.sha256(f"rules {RULES_REVISION}\npillow {PIL.__version__}\n".encode())
    for name in sorted(dir(inspection)):
        if name.isupper():
            value = getattr(inspection, name)
            value = sorted(value) if isinstance(value, (set, frozenset)) else value  # set order varies by process
            h.update(f"{name}={value!r}\n".encode())
    source = inspection.__file__
    if source and source.endswith(".py") and os.path.isfile(source):
        h.update(Path(source).read_bytes())
    return h.hexdigest()[:32]


class ObjectId(ApiModel):
    """Which version of an object a result was computed from."""

    etag: str = Field(max_length=256)
    """The object's ETag (from the sync manifest), or the local file's mtime in ns for a local dataset."""
    size: int = Field(ge=0)
    """The object's size in bytes."""


class CachedInspection(ApiModel):
    """The inspection result of one image and its label file, as `inspection.inspect_image` returned it."""

    image: ObjectId
    """The image object the result belongs to."""
    label: ObjectId | None = None
    """The label object read with it (None: the image had no label file)."""
    sha: str = Field(default="", pattern=r"^([0-9a-f]{32})?$")
    """blake2b-128 of the image bytes (duplicate detection); empty when the image could not be read."""
    width: int = Field(default=0, ge=0, le=2**31)
    """Width in pixels (0 when not decoded)."""
    height: int = Field(default=0, ge=0, le=2**31)
    """Height in pixels (0 when not decoded)."""
    brightness: float | None = None
    """Mean grey level 0-255; None when not decoded (NaN in the record)."""
    boxes: list[CachedBox] = Field(default_factory=list, max_length=MAX_CACHED_BOXES)
    """Valid boxes (class, cx, cy, w, h)."""
    problems: list[tuple[Code, Message]] = Field(
        default_factory=list, max_length=inspection.MAX_FINDINGS_PER_LABEL_FILE + 3
    )
    """Problems found (code, message); any problem excludes the image."""

    def result(self) -> InspectResult:
        """The `inspect_image` tuple this entry stands for."""
        brightness = math.nan if self.brightness is None else self.brightness
        return self.sha, self.width, self.height, brightness, list(self.boxes), list(self.problems)


class EraValidationCache(ApiModel):
    """The cache file of one era: `<cache>/.kretrain-validation/<digest of dataset URI and era>.json`."""

    version: str = Field(max_length=64)
    """`validator_version()` of the writer; another version makes the whole file stale."""
    classes: int = Field(ge=1)
    """Number of classes the labels were checked against (class ids out of range depend on it)."""
    entries: dict[Annotated[str, StringConstraints(max_length=4096)], CachedInspection] = Field(
        default_factory=dict, max_length=MAX_ENTRIES
    )
    """Image key relative to the era folder -> its result."""


def _entry(image: ObjectId, label: ObjectId | None, res: InspectResult) -> CachedInspection | None:
    sha, width, height, brightness, boxes, problems = res
    if len(boxes) > MAX_CACHED_BOXES or any(len(m) > MAX_MESSAGE_CHARS for _, m in problems):
        return None
    try:
        return CachedInspection(
            image=image,
            label=label,
            sha=sha,
            width=width,
            height=height,
            brightness=None if math.isnan(brightness) else brightness,
            boxes=boxes,
            problems=problems,
        )
    except ValidationError:  # an unusual result (e.g. a long exception text): inspected again next time
        return None


class ValidationCache:
    """Reads and writes the era cache files of one dataset (files are replaced atomically, never edited)."""

    def __init__(self, directory: Path, dataset_uri: str, classes: int) -> None:
        self.directory = Path(directory)
        self.dataset_uri = dataset_uri
        self.classes = classes
        self.version = validator_version()
        self.stats = {"hits": 0, "misses": 0, "ignoredFiles": 0}
        """Images answered from the cache, images inspected, cache files ignored (stale or corrupt)."""

    def path(self, era: str) -> Path:
        """The era's cache file; its name is a digest, never taken from stored content."""
        digest = hashlib.sha256(f"{self.dataset_uri}\0{era}".encode()).hexdigest()[:40]
        return self.directory / f"{digest}.json"

    def load(self, era: str) -> dict[str, CachedInspection]:
        """The era's usable entries; empty when the file is missing, too large, malformed or stale."""
        path = self.path(era)
        try:
            with path.open("rb") as fh:
                data = fh.read(MAX_CACHE_FILE_BYTES + 1)
        except OSError:
            return {}
        try:
            doc = EraValidationCache.model_validate_json(data) if len(data) <= MAX_CACHE_FILE_BYTES else None
        except ValidationError:
            doc = None
        if doc is None or doc.version != self.version or doc.classes != self.classes:
            self.stats["ignoredFiles"] += 1
            return {}
        return doc.entries

    def lookup(
        self, entries: dict[str, CachedInspection], key: str, image: ObjectId, label: ObjectId | None
    ) -> InspectResult | None:
        """The cached result for this image and label version, or None."""
        hit = entries.get(key)
        if hit is None or hit.image != image or hit.label != label:
            return None
        return hit.result()

    def save(self, era: str, results: dict[str, tuple[ObjectId, ObjectId | None, InspectResult]]) -> None:
        """Replace the era's file with these results (written to a unique temporary name, then renamed)."""
        entries = {}
        for key, (image, label, res) in results.items():
            entry = _entry(image, label, res)
            if entry is not None:
                entries[key] = entry
        doc = EraValidationCache(version=self.version, classes=self.classes, entries=entries)
        data = doc.model_dump_json(by_alias=True).encode()
        if len(data) > MAX_CACHE_FILE_BYTES:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.path(era)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            tmp.write_bytes(data)
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)


def object_identity(
    objects: dict[str, tuple[str, int]], key: str, lkey: str | None
) -> tuple[ObjectId, ObjectId | None] | None:
    """(image, label) object versions, or None when one of them is not in `objects` (not cacheable)."""
    image = objects.get(key)
    label = objects.get(lkey) if lkey is not None else None
    if image is None or (lkey is not None and label is None):
        return None
    return ObjectId(etag=image[0], size=image[1]), None if label is None else ObjectId(etag=label[0], size=label[1])


def inspect_cached(
    flat: list[ImageRecord],
    tasks: list[InspectTask],
    idents: list[tuple[ObjectId, ObjectId | None] | None],
    cache: ValidationCache,
    workers: int | None,
) -> list[InspectResult]:
    """`inspect_all`, answering unchanged images from the cache and saving every era that had a miss."""
    results: list[InspectResult | None] = []
    loaded: dict[str, dict[str, CachedInspection]] = {}
    for rec, ident in zip(flat, idents, strict=True):
        if rec.era not in loaded:
            loaded[rec.era] = cache.load(rec.era)
        results.append(None if ident is None else cache.lookup(loaded[rec.era], rec.key, *ident))
    missing = [i for i, r in enumerate(results) if r is None]
    cache.stats["hits"] += len(flat) - len(missing)
    cache.stats["misses"] += len(missing)
    for i, res in zip(missing, inspect_all([tasks[i] for i in missing], workers), strict=True):
        results[i] = res
    done = [r for r in results if r is not None]
    changed = {flat[i].era for i in missing} | {
        e for e, entries in loaded.items() if len(entries) != sum(1 for r in flat if r.era == e)
    }
    for era in changed:
        cache.save(
            era,
            {
                rec.key: (ident[0], ident[1], res)
                for rec, ident, res in zip(flat, idents, done, strict=True)
                if rec.era == era and ident is not None
            },
        )
    return done
