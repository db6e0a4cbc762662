"""Pull a dataset's eras from S3 into the local cache (only new or changed objects) or scan a local copy."""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kretrain.api import DatasetSpec

if TYPE_CHECKING:
    from kretrain.store import ObjectStore, SyncResult

ERA_PARALLELISM = 2
"""Eras synced at once; each sync is itself parallel (the store's thread pool)."""


@dataclass
class PulledDataset:
    """A dataset in the local cache: per era, object key (relative to the era) -> local file."""

    root: Path
    classes_yaml: bytes | None
    era_files: dict[str, dict[str, Path]]
    era_hashes: dict[str, str]
    sync: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0
    classes_error: str | None = None
    """Why `classes.yaml` could not be read (over its size cap); the run fails with this reason."""
    era_objects: dict[str, dict[str, tuple[str, int]]] = field(default_factory=dict)
    """era -> key -> (ETag, size) of the objects pulled (mtime in ns for a local copy): the validation cache's key."""


def cache_root(cache_dir: Path, uri: str) -> Path:
    """`<cache>/<bucket>/<prefix>`: where a dataset URI is mirrored."""
    from kretrain.store import parse_s3_uri, safe_local_path

    bucket, prefix = parse_s3_uri(uri)
    return safe_local_path(Path(cache_dir), f"{bucket}/{prefix}" if prefix else bucket)


def era_hash(entries: list[tuple[str, str, int]]) -> str:
    """sha256 over sorted (key, etag, size) lines: changes when any object of the era changes."""
    h = hashlib.sha256()
    for key, etag, size in sorted(entries):
        h.update(f"{key}\t{etag}\t{size}\n".encode())
    return h.hexdigest()


def pull_dataset(dataset: DatasetSpec, store: ObjectStore, cache_dir: Path) -> PulledDataset:
    """Sync `classes.yaml` and every era of the dataset into the cache; unchanged objects are skipped."""
    from kretrain.limits import MAX_CLASSES_BYTES
    from kretrain.store import ObjectTooLarge, join_uri
    from kretrain.trainer.data.validation import DataValidationError
    from kretrain.trainer.data_import.markers import EraBeingWritten, check_era_settled

    start = time.perf_counter()
    root = cache_root(cache_dir, dataset.uri)
    root.mkdir(parents=True, exist_ok=True)
    classes_yaml: bytes | None = None
    classes_error: str | None = None
    try:
        classes_yaml = store.get_bytes(join_uri(dataset.uri, "classes.yaml"), max_bytes=MAX_CLASSES_BYTES)
    except FileNotFoundError:
        pass
    except ObjectTooLarge as exc:
        classes_error = str(exc)
    else:
        (root / "classes.yaml").write_bytes(classes_yaml)

    def one(era: str) -> tuple[str, SyncResult, str, list[tuple[str, str, int]]]:
        uri = join_uri(dataset.uri, era)
        result = store.sync_down(uri, root / era)
        # The sync's result lists (key, etag, size) of exactly the remote objects: no second listing.
        entries = [(o.key, o.etag, o.size) for o in result.objects.values()]
        try:  # an era `kretrain data import` was writing or replacing meanwhile is not used
            check_era_settled(store, uri, {key: etag for key, etag, _ in entries})
        except EraBeingWritten as exc:
            raise DataValidationError(str(exc)) from None
        return era, result, era_hash(entries), entries

    with ThreadPoolExecutor(max_workers=max(1, min(ERA_PARALLELISM, len(dataset.eras)))) as pool:
        done = list(pool.map(one, dataset.eras))
    era_files = {era: dict(result.files) for era, result, _, _ in done}
    sync = {
        era: {"downloaded": r.downloaded, "skipped": r.skipped, "bytes": r.bytes, "objects": len(r.files)}
        for era, r, _, _ in done
    }
    return PulledDataset(
        root=root,
        classes_yaml=classes_yaml,
        era_files=era_files,
        era_hashes={era: h for era, _, h, _ in done},
        era_objects={era: {k: (etag, size) for k, etag, size in entries} for era, _, _, entries in done},
        sync=sync,
        seconds=time.perf_counter() - start,
        classes_error=classes_error,
    )


def scan_local(root: Path, eras: list[str]) -> PulledDataset:
    """A local dataset directory in the S3 era layout, as if pulled (era hashes over path, mtime, size)."""
    root = Path(root)
    era_files: dict[str, dict[str, Path]] = {}
    hashes: dict[str, str] = {}
    objects: dict[str, dict[str, tuple[str, int]]] = {}
    for era in eras:
        base = root / era
        files = (
            {p.relative_to(base).as_posix(): p for p in sorted(base.rglob("*")) if p.is_file()} if base.is_dir() else {}
        )
        files = {k: p for k, p in files.items() if not p.name.startswith(".")}
        era_files[era] = files
        stats = {k: p.stat() for k, p in files.items()}
        objects[era] = {k: (str(st.st_mtime_ns), st.st_size) for k, st in stats.items()}
        hashes[era] = era_hash([(k, etag, size) for k, (etag, size) in objects[era].items()])
    from kretrain.limits import MAX_CLASSES_BYTES

    classes = root / "classes.yaml"
    size = classes.stat().st_size if classes.exists() else 0
    too_large = size > MAX_CLASSES_BYTES
    error = f"{classes} is {size} bytes, over the limit of {MAX_CLASSES_BYTES}; not read" if too_large else None
    return PulledDataset(
        root=root,
        classes_yaml=classes.read_bytes() if classes.exists() and not too_large else None,
        era_files=era_files,
        era_hashes=hashes,
        classes_error=error,
        era_objects=objects,
    )
