"""The sync manifest: which objects (ETag, size) a local mirror folder holds complete copies of."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field, ValidationError

from kretrain.api.base import ApiModel
from kretrain.storage.localfs import atomic_write
from kretrain.storage.transport import ObjectInfo

# Name of the manifest that `sync_down` keeps in the local folder it mirrors into.
MANIFEST_NAME = ".kretrain-sync.json"
# A manifest larger than this is ignored (the folder is then synced again from scratch).
MAX_MANIFEST_BYTES = 256 * 1024 * 1024


class ManifestEntry(ApiModel):
    """One object the folder holds a complete copy of, as it was listed when it was downloaded."""

    etag: str = Field(max_length=1024)
    """The object's ETag without quotes."""
    size: int = Field(ge=0)
    """The object's size in bytes."""


class SyncManifest(ApiModel):
    """`.kretrain-sync.json`: written by one sync, read by the next (possibly another process or pod)."""

    version: int = Field(default=1, ge=1, le=1)
    """Format version (1)."""
    objects: dict[str, ManifestEntry] = Field(default_factory=dict)
    """Object key (relative to the synced prefix) -> what was downloaded for it."""


def read_manifest(local_dir: Path) -> dict[str, ObjectInfo]:
    """key -> ObjectInfo of every object a mirror folder holds (empty if the manifest is missing, too large or corrupt)."""
    path = Path(local_dir) / MANIFEST_NAME
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            return {}
        manifest = SyncManifest.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return {}
    return {key: ObjectInfo(key, entry.size, entry.etag) for key, entry in manifest.objects.items()}


def write_manifest(local_dir: Path, objects: dict[str, ObjectInfo]) -> None:
    """Write the manifest atomically (the same document `SyncManifest` reads, without validating each entry again)."""
    doc = {"version": 1, "objects": {key: {"etag": o.etag, "size": o.size} for key, o in objects.items()}}
    atomic_write(Path(local_dir) / MANIFEST_NAME, json.dumps(doc, separators=(",", ":")).encode())
