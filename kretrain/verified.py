"""Verified downloads: an S3 object reaches a local path only after its sha256 matched a pinned hash.

One policy for every model file (weights, checkpoints, model YAMLs): the expected sha256 comes from a record
the caller trusts, never from a `.sha256` object beside the file (whoever can write the file can write that
too). The records are the spec's `s3://...@sha256:<hex>` pin, the registry's version.json, and for a run's
own `last.pt` the `last.pt.sha256` record this run's trainer wrote with it (the run folder has one writer).
No pin, or a malformed one: nothing is downloaded (`Unpinned`); a required file then fails the run naming
the field or version, an optional checkpoint is ignored (the run starts over from its start weights).
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from pathlib import Path
from typing import Protocol

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
"""A pinned sha256: 64 lowercase hex digits."""


class Downloader(Protocol):
    """What fetch_verified needs from an object store (kretrain.store.ObjectStore)."""

    def download_file(self, uri: str, path: Path, *, max_bytes: int | None = None) -> Path:
        """Download `uri` to `path` (refused over `max_bytes`)."""
        ...


class VerificationError(RuntimeError):
    """A file that is not handed out: no valid pin, or bytes that differ from it (callers add the field/version)."""


class Unpinned(VerificationError):
    """There is no valid pinned sha256 to verify against, so nothing was downloaded."""


class HashMismatch(VerificationError):
    """The downloaded bytes have another sha256 than the pin; they were deleted before anything read them."""

    def __init__(self, uri: str, expected: str, actual: str) -> None:
        super().__init__(f"{uri} has sha256 {actual}, but {expected} is pinned")
        self.uri, self.expected, self.actual = uri, expected, actual


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_pin(sha256: str | None, what: str) -> str:
    """The pin, lower-cased, if it is 64 hex digits; else Unpinned naming `what`."""
    pin = (sha256 or "").strip().lower()
    if not SHA256_HEX.fullmatch(pin):
        raise Unpinned(f"{what}: no valid pinned sha256 ({(sha256 or '')[:80]!r}); refusing to download it")
    return pin


def fetch_verified(
    store: Downloader, uri: str, dest: Path, *, sha256: str | None, max_bytes: int | None, reuse: bool = False
) -> Path:
    """Download `uri` to `dest` and return `dest` only if its bytes have the pinned `sha256`.

    The bytes go to a unique temporary name beside `dest`, are hashed, and are renamed onto `dest` only on a
    match: nothing at `dest` (where a loader looks) ever holds unverified bytes, and after any failure
    (Unpinned, HashMismatch, the store's ObjectTooLarge over `max_bytes`, an I/O error) nothing is at `dest`.
    With `reuse`, a file already at `dest` with the pinned hash is kept without downloading.
    """
    expected = check_pin(sha256, uri)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if reuse and dest.is_file() and sha256_file(dest) == expected:
        return dest
    dest.unlink(missing_ok=True)
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.unverified"
    try:
        store.download_file(uri, tmp, max_bytes=max_bytes)
        actual = sha256_file(tmp)
        if actual != expected:
            raise HashMismatch(uri, expected, actual)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
