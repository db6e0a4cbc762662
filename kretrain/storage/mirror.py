"""Mirroring a prefix into a local folder: parallel downloads, a manifest to skip unchanged objects and resume."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kretrain.storage.errors import StoreError, UnsafeKeyError
from kretrain.storage.listing import list_chunks
from kretrain.storage.localfs import PART_SUFFIX, regular_file_size, safe_local_path, safe_local_paths
from kretrain.storage.location import S3Location
from kretrain.storage.manifest import MANIFEST_NAME, read_manifest, write_manifest
from kretrain.storage.parallel import parallel_map
from kretrain.storage.transport import ObjectInfo, Transport

# Seconds between manifest rewrites during a sync (so an interrupted sync resumes close to where it stopped).
SAVE_INTERVAL = 1.0


@dataclass
class SyncResult:
    """What `sync_down` did. `files` maps every key (relative to the prefix) to its local path, `objects`
    to the object as listed (key, size, ETag): both hold exactly the objects under the prefix now."""

    downloaded: int
    skipped: int
    bytes: int
    files: dict[str, Path] = field(default_factory=dict)
    deleted: int = 0
    objects: dict[str, ObjectInfo] = field(default_factory=dict)


class _Downloader(Protocol):
    transport: Transport
    max_workers: int

    def download_file(self, uri: str, path: Path, *, max_bytes: int | None = None) -> Path: ...


class _Sync:
    """One run of `sync_down`: the plan (listing -> what to fetch), the downloads and the manifest."""

    def __init__(self, store: _Downloader, loc: S3Location, local_dir: Path) -> None:
        self.store, self.loc, self.local_dir = store, loc, local_dir
        self.manifest = read_manifest(local_dir)
        self.files: dict[str, Path] = {}
        self.objects: dict[str, ObjectInfo] = {}
        self.downloaded = self.skipped = self.bytes = self.deleted = 0
        self.changed = False
        self.saved = time.monotonic()

    def plan(self) -> Iterator[tuple[ObjectInfo, Path]]:
        """What to download, listing chunk by listing chunk; records every listed object."""
        known = {key.partition("/")[0] for key in self.manifest}
        folders_ready: set[str] = set()
        with contextlib.closing(list_chunks(self.store.transport, self.loc, known=known)) as chunks:
            for chunk in chunks:
                yield from self._plan_chunk(chunk, folders_ready)

    def _plan_chunk(self, chunk: list[ObjectInfo], folders_ready: set[str]) -> Iterator[tuple[ObjectInfo, Path]]:
        uri = self.loc.uri
        for obj in chunk:
            if obj.key == MANIFEST_NAME or obj.key.endswith(PART_SUFFIX):
                raise UnsafeKeyError(f"object key {obj.key!r} under {uri} collides with the sync's own files")
        try:
            paths = safe_local_paths(self.local_dir, [o.key for o in chunk])
        except UnsafeKeyError as exc:
            raise UnsafeKeyError(f"{exc} (listed under {uri}); the sync stops, nothing of it is used") from None
        for obj in chunk:
            path = self.files[obj.key] = paths[obj.key]
            self.objects[obj.key] = obj
            entry = self.manifest.get(obj.key)
            if entry and entry.etag == obj.etag and entry.size == obj.size and regular_file_size(path) == obj.size:
                self.skipped += 1
                continue
            folder = obj.key.rpartition("/")[0]
            if folder and folder not in folders_ready:
                self._clear_way(folder)
                folders_ready.add(folder)
            yield obj, path

    def _clear_way(self, folder: str) -> None:
        """Remove files of earlier syncs that sit where `folder` (or a folder above it) must now be."""
        parts = folder.split("/")
        for depth in range(1, len(parts) + 1):
            key = "/".join(parts[:depth])
            if key in self.manifest and key not in self.files:
                self.forget(key)

    def forget(self, key: str) -> None:
        """Delete the local file of a manifest entry that no longer belongs, and the entry."""
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, UnsafeKeyError):
            safe_local_path(self.local_dir, key).unlink()
            self.deleted += 1
        self.manifest.pop(key)
        self.changed = True

    def fetch(self, item: tuple[ObjectInfo, Path]) -> int:
        obj, path = item
        try:
            self.store.download_file(self.loc.join(obj.key).uri, path)
        except IsADirectoryError as exc:
            raise StoreError(
                f"cannot write object {obj.key!r} of {self.loc.uri}: {path} is a folder (objects of an earlier "
                "sync were under that key); remove the folder or the object"
            ) from exc
        return obj.size

    def done(self, item: tuple[ObjectInfo, Path], size: int) -> None:
        obj, _ = item
        self.manifest[obj.key] = obj
        self.downloaded += 1
        self.bytes += size
        self.changed = True
        if time.monotonic() - self.saved > SAVE_INTERVAL:
            write_manifest(self.local_dir, self.manifest)
            self.saved = time.monotonic()

    def run(self) -> SyncResult:
        try:
            parallel_map(self.plan(), self.fetch, self.done, max_workers=self.store.max_workers)
            for key in [k for k in self.manifest if k not in self.files]:
                self.forget(key)
        finally:
            # A sync that changed nothing leaves the manifest as it was (no rewrite of every entry).
            if self.changed or not (self.local_dir / MANIFEST_NAME).exists():
                write_manifest(self.local_dir, self.manifest)
        return SyncResult(
            downloaded=self.downloaded,
            skipped=self.skipped,
            bytes=self.bytes,
            files=self.files,
            deleted=self.deleted,
            objects=self.objects,
        )


def sync_down(store: _Downloader, uri: str, local_dir: Path) -> SyncResult:
    """Mirror every object under `uri` into `local_dir` in parallel; returns what was done.

    The manifest (`.kretrain-sync.json`, see `kretrain.storage.manifest`) in `local_dir` records every
    object that was fully downloaded; objects whose ETag and size match it (and whose local file still
    has that size) are skipped. It is rewritten atomically every second during a sync and at the end
    (also on failure), so an interrupted sync resumes where it stopped. Once the whole listing is in,
    files recorded in the manifest whose objects were deleted remotely are removed locally.

    Listing and downloading overlap: each sub-prefix (an era) is downloaded as soon as its listing
    arrives. Every key of a listing is mapped with `safe_local_paths` before anything from that listing
    is downloaded; an unsafe key stops the sync with UnsafeKeyError, and nothing is ever written
    outside `local_dir`.
    """
    local_dir = Path(local_dir)
    local_dir.mkdir(parents=True, exist_ok=True)
    return _Sync(store, S3Location.parse(uri), local_dir).run()
