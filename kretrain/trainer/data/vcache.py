"""Per-object validation results kept beside the dataset cache, keyed by (ETag, size, validator version)."""

from __future__ import annotations

import collections
import functools
import hashlib
import itertools
import math
import os
import re
import secrets
from pathlib import Path
from typing import Annotated, Any

import PIL
from pydantic import Field, StringConstraints, ValidationError, model_validator

from kretrain.api.base import ApiModel
from kretrain.trainer.data import inspection
from kretrain.trainer.data.inspection import InspectResult, InspectTask, inspect_all
from kretrain.trainer.data.records import Box, ImageRecord

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
MAX_PROBLEMS = inspection.MAX_FINDINGS_PER_LABEL_FILE + 3
"""Most problems cached for one image (label problems are capped per file, plus image problems)."""

Code = Annotated[str, StringConstraints(max_length=64, pattern=r"^[a-z_]+$")]
Message = Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS)]


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


Identity = tuple[str, int, str | None, int | None]
"""(image ETag, image size, label ETag, label size) of the objects a result was computed from (label None: no label)."""


Key = Annotated[str, StringConstraints(max_length=4096)]
Etag = Annotated[str, StringConstraints(max_length=256)]
Size = Annotated[int, Field(ge=0)]
Pixels = Annotated[int, Field(ge=0, le=2**31)]


class EraValidationCache(ApiModel):
    """The cache file of one era, one column per field (compact and fast to validate): entry i is
    `keys[i]`, `imageEtags[i]`, ..., its boxes the next `boxCounts[i]` of `boxClasses` (4 coordinates each
    in `boxCoords`). Stored at `<cache>/.kretrain-validation/<digest of dataset URI and era>.json`."""

    version: str = Field(max_length=64)
    """`validator_version()` of the writer; another version makes the whole file stale."""
    classes: int = Field(ge=1)
    """Number of classes the labels were checked against (class ids out of range depend on it)."""
    keys: list[Key] = Field(default_factory=list, max_length=MAX_ENTRIES)
    """Image keys relative to the era folder."""
    image_etags: list[Etag] = Field(default_factory=list)
    """ETag of each image (the local file's mtime in ns for a local dataset)."""
    image_sizes: list[Size] = Field(default_factory=list)
    """Size of each image in bytes."""
    label_etags: list[Etag | None] = Field(default_factory=list)
    """ETag of each image's label file (None: the image had none)."""
    label_sizes: list[Size | None] = Field(default_factory=list)
    """Size of each label file (None: no label file)."""
    sha: list[Annotated[str, StringConstraints(max_length=32)]] = Field(default_factory=list)
    """blake2b-128 (hex) of each image's bytes, for duplicate detection; empty when unreadable."""
    width: list[Pixels] = Field(default_factory=list)
    """Width in pixels (0 when not decoded)."""
    height: list[Pixels] = Field(default_factory=list)
    """Height in pixels (0 when not decoded)."""
    brightness: list[float | None] = Field(default_factory=list)
    """Mean grey level 0-255 (None when not decoded)."""
    box_counts: list[Annotated[int, Field(ge=0, le=MAX_CACHED_BOXES)]] = Field(default_factory=list)
    """Valid boxes of each image."""
    box_classes: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)
    """Class id of every box, image after image."""
    box_coords: list[float] = Field(default_factory=list)
    """cx, cy, w, h of every box, image after image."""
    problems: dict[int, Annotated[list[tuple[Code, Message]], Field(max_length=MAX_PROBLEMS)]] = Field(
        default_factory=dict, max_length=MAX_ENTRIES
    )
    """Entry index -> its problems (code, message); any problem excludes the image. Images without
    problems are not listed."""

    @model_validator(mode="after")
    def _columns_agree(self) -> EraValidationCache:
        n = len(self.keys)
        columns = (self.image_etags, self.image_sizes, self.label_etags, self.label_sizes, self.sha, self.width)
        if any(len(c) != n for c in (*columns, self.height, self.brightness, self.box_counts)):
            raise ValueError("columns differ in length")
        boxes = sum(self.box_counts)
        if len(self.box_classes) != boxes or len(self.box_coords) != 4 * boxes:
            raise ValueError("box columns do not match boxCounts")
        if any(not 0 <= i < n for i in self.problems) or len(set(self.keys)) != n:
            raise ValueError("a problem index out of range, or a key twice")
        return self


class EraEntries:
    """One era's loaded cache: lookups by key and identity."""

    def __init__(self, doc: EraValidationCache | None = None) -> None:
        self.doc = doc
        self.index: dict[str, int] = {}
        self.offsets: list[int] = []
        if doc is not None:
            self.index = {k: i for i, k in enumerate(doc.keys)}
            self.offsets = [0, *itertools.accumulate(doc.box_counts)]

    def __len__(self) -> int:
        return len(self.index)

    def get(self, key: str, ident: Identity) -> InspectResult | None:
        """The cached result of `key` when it was computed from the same objects, else None."""
        i = self.index.get(key)
        doc = self.doc
        if i is None or doc is None:
            return None
        if (doc.image_etags[i], doc.image_sizes[i], doc.label_etags[i], doc.label_sizes[i]) != ident:
            return None
        lo, hi = self.offsets[i], self.offsets[i + 1]
        cls, xy = doc.box_classes, doc.box_coords
        boxes: list[Box] = [(cls[j], xy[4 * j], xy[4 * j + 1], xy[4 * j + 2], xy[4 * j + 3]) for j in range(lo, hi)]
        bright = doc.brightness[i]
        problems = [(c, m) for c, m in doc.problems.get(i, [])]
        return doc.sha[i], doc.width[i], doc.height[i], math.nan if bright is None else bright, boxes, problems


def _document(version: str, classes: int, rows: list[tuple[str, Identity, InspectResult]]) -> EraValidationCache:
    cols: dict[str, list[Any]] = {name: [] for name in _COLUMNS}
    problems: dict[int, list[tuple[str, str]]] = {}
    for key, (ietag, isize, letag, lsize), (sha, width, height, bright, boxes, probs) in rows:
        odd = len(probs) > MAX_PROBLEMS or any(
            len(m) > MAX_MESSAGE_CHARS or not _CODE.match(c) or m.startswith(_UNSTABLE) for c, m in probs
        )
        if odd or len(boxes) > MAX_CACHED_BOXES:
            continue  # a read error, a long exception text, very many boxes: inspected again next time
        if probs:
            problems[len(cols["keys"])] = list(probs)
        for name, value in zip(
            _COLUMNS[:10],
            (key, ietag, isize, letag, lsize, sha, width, height, None if math.isnan(bright) else bright, len(boxes)),
            strict=True,
        ):
            cols[name].append(value)
        for box in boxes:
            cols["box_classes"].append(box[0])
            cols["box_coords"].extend(box[1:])
    fields: dict[str, Any] = {"version": version, "classes": classes, "problems": problems, **cols}
    return EraValidationCache.model_construct(**fields)


_COLUMNS = (
    "keys",
    "image_etags",
    "image_sizes",
    "label_etags",
    "label_sizes",
    "sha",
    "width",
    "height",
    "brightness",
    "box_counts",
    "box_classes",
    "box_coords",
)
_CODE = re.compile(r"^[a-z_]{1,64}$")
_UNSTABLE = (inspection.READ_ERROR, inspection.LABEL_READ_ERROR)
"""Results of failed reads depend on the moment, not on the object: they are inspected again every run."""


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

    def load(self, era: str) -> EraEntries:
        """The era's usable entries; empty when the file is missing, too large, malformed or stale."""
        path = self.path(era)
        try:
            with path.open("rb") as fh:
                data = fh.read(MAX_CACHE_FILE_BYTES + 1)
        except OSError:
            return EraEntries()
        try:
            doc = EraValidationCache.model_validate_json(data) if len(data) <= MAX_CACHE_FILE_BYTES else None
        except ValidationError:
            doc = None
        if doc is None or doc.version != self.version or doc.classes != self.classes:
            self.stats["ignoredFiles"] += 1
            return EraEntries()
        return EraEntries(doc)

    def save(self, era: str, rows: list[tuple[str, Identity, InspectResult]]) -> None:
        """Replace the era's file with these results (written to a unique temporary name, then renamed)."""
        data = _document(self.version, self.classes, rows).model_dump_json(by_alias=True).encode()
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


def object_identity(objects: dict[str, tuple[str, int]], key: str, lkey: str | None) -> Identity | None:
    """The (image, label) object versions, or None when one of them is not in `objects` (not cacheable)."""
    image = objects.get(key)
    if image is None:
        return None
    if lkey is None:
        return image[0], image[1], None, None
    label = objects.get(lkey)
    return None if label is None else (image[0], image[1], label[0], label[1])


def inspect_cached(
    flat: list[ImageRecord],
    tasks: list[InspectTask],
    idents: list[Identity | None],
    cache: ValidationCache,
    workers: int | None,
) -> list[InspectResult]:
    """`inspect_all`, answering unchanged images from the cache and saving every era that had a miss
    (or whose file held other images: deleted ones are dropped)."""
    results: list[InspectResult | None] = []
    loaded: dict[str, EraEntries] = {}
    for rec, ident in zip(flat, idents, strict=True):
        entries = loaded.get(rec.era)
        if entries is None:
            entries = loaded[rec.era] = cache.load(rec.era)
        results.append(None if ident is None else entries.get(rec.key, ident))
    missing = [i for i, r in enumerate(results) if r is None]
    cache.stats["hits"] += len(flat) - len(missing)
    cache.stats["misses"] += len(missing)
    for i, res in zip(missing, inspect_all([tasks[i] for i in missing], workers), strict=True):
        results[i] = res
    done = [r for r in results if r is not None]
    per_era = collections.Counter(r.era for r in flat)
    changed = {flat[i].era for i in missing} | {e for e, entries in loaded.items() if len(entries) != per_era[e]}
    for era in changed:
        rows = [
            (rec.key, ident, res)
            for rec, ident, res in zip(flat, idents, done, strict=True)
            if rec.era == era and ident is not None
        ]
        cache.save(era, rows)
    return done
