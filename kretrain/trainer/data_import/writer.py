"""Write an import plan as an era: images and labels in parallel, splits.yaml, classes.yaml, `_READY` last."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import yaml

from kretrain.trainer.data.split import Split
from kretrain.trainer.data.validation import label_key_for, read_class_names
from kretrain.trainer.data_import.classmap import ClassMapError, ClassMapping, map_classes
from kretrain.trainer.data_import.errors import MAX_IMAGE_BYTES, MAX_YAML_BYTES, ImportInputError
from kretrain.trainer.data_import.markers import IMPORTING_NAME, MARKERS, READY_NAME, ReadyMarker
from kretrain.trainer.data_import.names import check_era
from kretrain.trainer.data_import.parallel import bounded_map
from kretrain.trainer.data_import.plan import ImportItem, ImportPlan, image_size, label_boxes, label_text
from kretrain.trainer.data_import.splits import SPLITS_NAME, splits_document

if TYPE_CHECKING:
    from kretrain.store import ObjectStore

CLASSES_NAME = "classes.yaml"


@dataclass
class ImportResult:
    """What an import did, for the summary table."""

    era: str
    uri: str
    status: Literal["created", "unchanged", "replaced", "resumed"]
    images: int = 0
    backgrounds: int = 0
    boxes: Counter[str] = field(default_factory=Counter)
    skipped: Counter[tuple[str, str]] = field(default_factory=Counter)
    written: int = 0
    deleted: int = 0
    classes: list[str] = field(default_factory=list)
    added_classes: list[str] = field(default_factory=list)
    unused_classes: list[str] = field(default_factory=list)
    splits: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Done:
    key: str
    md5: dict[str, str]
    """Object key -> md5 of its content (the image, and its label unless a background)."""
    boxes: list[int]


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _line_classes(store: ObjectStore, uri: str) -> tuple[list[str] | None, str | None]:
    info = store.head(uri)
    if info is None:
        return None, None
    if info.size > MAX_YAML_BYTES:
        raise ImportInputError(f"{uri}: {info.size} bytes, more than the limit of {MAX_YAML_BYTES}")
    try:
        return read_class_names(store.get_bytes(uri), uri), info.etag
    except ValueError as exc:
        raise ImportInputError(str(exc)) from None


def _check_keys(items: list[ImportItem]) -> None:
    seen: dict[str, str] = {}
    for item in items:
        for key in (item.key, label_key_for(item.key)):
            where = item.source.describe(item.rel)
            if key in seen and seen[key] != where:
                raise ImportInputError(f"{where} and {seen[key]} would both be written as {key} (rename one)")
            if key in seen and key == item.key:
                raise ImportInputError(
                    f"{item.origin}: {item.rel} is listed twice (annotations of one image must be merged)"
                )
            seen[key] = where


class _Writer:
    """One import's state: the mapping, the era's existing objects, and what this run wrote."""

    def __init__(self, store: ObjectStore, era_uri: str, plan: ImportPlan, mapping: ClassMapping) -> None:
        self.store, self.era_uri, self.plan, self.mapping = store, era_uri, plan, mapping
        self.existing = {o.key: o.etag for o in store.list(era_uri)}
        self.written: list[str] = []
        self._lock = threading.Lock()

    def _put(self, key: str, data: bytes, md5: str, write: bool) -> None:
        if write and self.existing.get(key) != md5:
            from kretrain.store import join_uri

            self.store.put_bytes(join_uri(self.era_uri, key), data)
            with self._lock:
                self.written.append(key)

    def process(self, item: ImportItem, write: bool) -> _Done:
        """Read one image, convert its boxes with its real size, and (if `write`) upload what changed."""
        data = item.source.read(item.rel, MAX_IMAGE_BYTES, "image")
        width, height = image_size(data, item.source.describe(item.rel))
        boxes = label_boxes(item, width, height, self.mapping.ids, self.plan.classes)
        md5 = {item.key: _md5(data)}
        self._put(item.key, data, md5[item.key], write)
        del data
        if boxes:
            label = label_text(boxes).encode()
            lkey = label_key_for(item.key)
            md5[lkey] = _md5(label)
            self._put(lkey, label, md5[lkey], write)
        return _Done(item.key, md5, [c for c, _ in boxes])

    def run(self, items: list[ImportItem], write: bool, workers: int) -> list[_Done]:
        """`process` over the items in parallel; the results in item order."""
        done = {d.key: d for d in bounded_map(lambda it: self.process(it, write), items, workers)}
        return [done[it.key] for it in items]

    def begin(self, exclusive: bool) -> None:
        """Write `_IMPORTING`; `exclusive` (a fresh era) fails if another import got there first."""
        from kretrain.store import PreconditionFailed, join_uri

        uri = join_uri(self.era_uri, IMPORTING_NAME)
        body = json.dumps({"importedBy": "kretrain data import", "source": self.plan.source}).encode()
        try:
            if exclusive:
                self.store.put_if_absent(uri, body)
            else:
                self.store.put_bytes(uri, body)
        except PreconditionFailed:
            raise ImportInputError(f"{uri} exists: another import is writing this era") from None

    def delete(self, keys: list[str]) -> None:
        """Delete era objects (in parallel)."""
        from kretrain.store import join_uri

        for _ in bounded_map(lambda k: self.store.delete(join_uri(self.era_uri, k)), keys, self.store.max_workers):
            pass


def content_digest(objects: dict[str, str]) -> str:
    """sha256 over sorted `key<TAB>md5` lines (the marker's record of the era's content)."""
    h = hashlib.sha256()
    for key in sorted(objects):
        h.update(f"{key}\t{objects[key]}\n".encode())
    return h.hexdigest()


def import_dataset(
    plan: ImportPlan,
    store: ObjectStore,
    to: str,
    era: str,
    *,
    allow_new_classes: bool = False,
    keep_splits: bool = False,
    replace: bool = False,
    workers: int = 16,
) -> ImportResult:
    """Write the plan as era `era` of the line at `to`; `_READY` is written last, and only on success.

    `_IMPORTING` is written before anything else and deleted after `_READY`. A fresh era whose import
    fails has what this run wrote deleted again. An era that exists is first compared (every image
    read and converted, nothing written): identical content and classes change nothing; different
    content is refused unless `replace` (or the era has no `_READY`, or still has `_IMPORTING`: an
    earlier import that did not finish), and then `_IMPORTING` is written, `_READY` removed, changed
    objects written, stale ones deleted, and `_READY` written again last.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from kretrain.store import PreconditionFailed, StoreError, join_uri

    check_era(era)
    era_uri = join_uri(to, era)
    line, etag = _line_classes(store, join_uri(to, CLASSES_NAME))
    try:
        mapping = map_classes(line, plan.classes, plan.used, allow_new=allow_new_classes, where=plan.source)
    except ClassMapError as exc:
        raise ImportInputError(str(exc)) from None
    _check_keys(plan.items)
    assignment: dict[str, Split] = {it.key: it.split for it in plan.items if it.split is not None}
    if keep_splits and not assignment:
        raise ImportInputError(f"{plan.source}: --keep-splits, but the source has no train/val/test split of its own")
    extra: dict[str, bytes] = {SPLITS_NAME: splits_document(assignment)} if keep_splits else {}
    writer = _Writer(store, era_uri, plan, mapping)
    result = ImportResult(era=era, uri=era_uri, status="created", skipped=plan.skipped, notes=list(plan.notes))
    result.classes, result.added_classes, result.unused_classes = mapping.classes, mapping.added, mapping.unused
    if keep_splits:
        result.splits = Counter(assignment.values())
    if not writer.existing:
        writer.begin(exclusive=True)
        try:
            done = writer.run(plan.items, True, workers)
            for name, data in extra.items():
                writer._put(name, data, _md5(data), True)
        except BaseException:
            # Take back what this run wrote; if the store fails here too, the original error is the one
            # reported, and the era, without _READY, is completed by the next run.
            with contextlib.suppress(StoreError, ClientError, BotoCoreError):
                writer.delete([*writer.written, IMPORTING_NAME])
            raise
    else:
        done = writer.run(plan.items, False, workers)
        planned = {k: v for d in done for k, v in d.md5.items()} | {k: _md5(v) for k, v in extra.items()}
        current = {k: v for k, v in writer.existing.items() if k not in MARKERS}
        ready = READY_NAME in writer.existing and IMPORTING_NAME not in writer.existing
        if planned == current and ready and mapping.classes == line:
            result.status = "unchanged"
        else:
            differ = sorted(k for k in planned.keys() | current.keys() if planned.get(k) != current.get(k))
            if ready and not replace:
                raise ImportInputError(
                    f"{era_uri} already holds different content ({len(differ)} objects differ, first {differ[0]!r}); "
                    "pass --replace to replace the era"
                    if differ
                    else f"{era_uri}: the import would change classes.yaml; pass --replace"
                )
            result.status = "replaced" if ready else "resumed"
            writer.begin(exclusive=False)  # stays if this fails: the half-replaced era is marked as such
            if READY_NAME in writer.existing:
                store.delete(join_uri(era_uri, READY_NAME))
            changed = set(differ)
            by_key = {d.key: d.md5 for d in done}
            writer.run([it for it in plan.items if by_key[it.key].keys() & changed], True, workers)
            for name, data in extra.items():
                writer._put(name, data, _md5(data), True)
            stale = sorted(current.keys() - planned.keys())
            writer.delete(stale)
            result.deleted = len(stale)
    objects = {k: v for d in done for k, v in d.md5.items()} | {k: _md5(v) for k, v in extra.items()}
    result.written = len(writer.written)
    result.images = len(done)
    result.backgrounds = sum(1 for d in done if not d.boxes)
    result.boxes = Counter(mapping.classes[c] for d in done for c in d.boxes)
    if result.status == "unchanged":
        return result
    if mapping.classes != line:
        body = yaml.safe_dump({"names": mapping.classes}, sort_keys=False).encode()
        classes_uri = join_uri(to, CLASSES_NAME)
        try:
            if etag is None:
                store.put_if_absent(classes_uri, body)
            else:
                store.compare_and_swap(classes_uri, body, etag)
        except PreconditionFailed:
            raise ImportInputError(
                f"{classes_uri} changed while importing (another import?); re-run to map the classes again"
            ) from None
    marker = ReadyMarker(
        format=plan.format,
        source=plan.source,
        images=result.images,
        boxes=sum(result.boxes.values()),
        content_digest=content_digest(objects),
    )
    store.put_json(join_uri(era_uri, READY_NAME), marker.dump())
    store.delete(join_uri(era_uri, IMPORTING_NAME))
    return result
