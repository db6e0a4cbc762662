"""The run's stage key: an HMAC over the resume records a pod leaves in S3, so only this run's pods can make them.

The operator puts a random key into the run's spec ConfigMap (`stage.key`, mounted read-only beside spec.json):
the line's other trainers can read and write `runs/<run-id>/` in S3 but cannot read this ConfigMap (trainer pods
get no API token), so a checkpoint record, trained stage, evaluated stage or report they plant has no valid MAC
and is ignored (the report's MAC covers the exact bytes written; the operator reads the key back from the
ConfigMap and concludes a run only on a report that verifies: kretrain.operator.report_trust). Without a key (`kretrain run` on a workstation, or a run created before keys) records are neither signed
nor required to be.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path
from typing import Protocol

MAX_KEY_BYTES = 1024
"""Largest key file read."""
MAC_SUFFIX = ".hmac"
"""The MAC of `<record>` is stored as `<record>.hmac` (hex HMAC-SHA256)."""
MAX_MAC_BYTES = 256
"""Largest `.hmac` object read."""
_KEY = re.compile(r"^[0-9a-f]{64}$")
_MAC = re.compile(r"^[0-9a-f]{64}$")


class RecordStore(Protocol):
    """What the records are read from and written to (kretrain.store.ObjectStore)."""

    def put_bytes(self, uri: str, data: bytes) -> str: ...
    def get_bytes(self, uri: str, *, max_bytes: int | None = None) -> bytes: ...


class RunKeyError(ValueError):
    """The run's key file exists but is not a key (the run cannot trust or sign its records)."""


def load_key(path: Path | None) -> bytes | None:
    """The key from `path` (64 hex characters); None when no key file is configured or it does not exist."""
    if path is None or not Path(path).is_file():
        return None
    with open(path, "rb") as f:
        return parse_key(f.read(MAX_KEY_BYTES + 1), str(path))


def parse_key(raw: str | bytes, where: str) -> bytes:
    """The key in `raw` (64 lowercase hex characters, surrounding whitespace allowed; at most MAX_KEY_BYTES are
    looked at), else RunKeyError naming `where` (the file or ConfigMap key it came from)."""
    data = raw.encode("ascii", errors="replace") if isinstance(raw, str) else raw
    text = data[: MAX_KEY_BYTES + 1].decode("ascii", errors="replace").strip()
    if len(data) > MAX_KEY_BYTES or not _KEY.fullmatch(text):
        raise RunKeyError(f"{where}: the run's stage key must be 64 lowercase hex characters")
    return bytes.fromhex(text)


def mac(key: bytes, uri: str, data: bytes) -> str:
    """Hex HMAC-SHA256 of a record's bytes, bound to the URI it is stored at (a record moved elsewhere fails)."""
    return hmac.new(key, b"kretrain-stage\0" + uri.encode() + b"\0" + data, hashlib.sha256).hexdigest()


def verify(key: bytes, uri: str, data: bytes, stored: bytes) -> bool:
    """Whether `stored` (the `.hmac` object's bytes) is the MAC of `data` at `uri` under `key`."""
    text = stored[:MAX_MAC_BYTES].decode("ascii", errors="replace").strip()
    return bool(_MAC.fullmatch(text)) and hmac.compare_digest(text, mac(key, uri, data))


def sign(store: RecordStore, uri: str, data: bytes, key: bytes | None) -> None:
    """With a key, write the MAC of `data` (at `uri`) as `uri.hmac`, for a record written by other code."""
    if key is not None:
        store.put_bytes(uri + MAC_SUFFIX, mac(key, uri, data).encode())


def signed(store: RecordStore, uri: str, data: bytes, key: bytes | None) -> bool:
    """Whether `data` (read from `uri`) carries this run's MAC; always True without a key (nothing is signed)."""
    if key is None:
        return True
    try:
        return verify(key, uri, data, store.get_bytes(uri + MAC_SUFFIX, max_bytes=MAX_MAC_BYTES))
    except FileNotFoundError:
        return False


def put_record(store: RecordStore, uri: str, data: bytes, key: bytes | None) -> None:
    """Write `data` at `uri`; with a key, its MAC first at `uri.hmac` (the record last: no record, no stage)."""
    sign(store, uri, data, key)
    store.put_bytes(uri, data)


def get_record(store: RecordStore, uri: str, key: bytes | None, max_bytes: int) -> bytes:
    """Read the record at `uri` (bounded); with a key, only when its `.hmac` verifies, else `Unsigned`."""
    data: bytes = store.get_bytes(uri, max_bytes=max_bytes)
    if not signed(store, uri, data, key):
        raise Unsigned(f"{uri}: no {MAC_SUFFIX} matching this run's key: not written by this run")
    return data


class Unsigned(ValueError):
    """A record whose MAC is missing or wrong under the run's key: another writer's, ignored."""
