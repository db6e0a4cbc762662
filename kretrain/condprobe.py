"""Probe whether an S3 backend honours conditional writes (If-None-Match / If-Match) before promotions rely on them."""

from __future__ import annotations

import contextlib
import hashlib
import uuid

from kretrain.store import ObjectStore, PreconditionFailed, StoreError, join_uri

# Folder (under a registry) of the probe's throw-away objects; each probe uses a fresh key and deletes it.
PROBE_PREFIX = ".kretrain-probe"
_FIRST, _SECOND, _THIRD, _FOURTH = b"probe 1\n", b"probe 2\n", b"probe 3\n", b"probe 4\n"


def probe_conditional_writes(store: ObjectStore, base_uri: str) -> list[str]:
    """What the backend behind `store` does wrong with conditional writes under `base_uri` (empty: nothing).

    On a fresh key `<base_uri>/.kretrain-probe/<uuid>`: a put-if-absent must succeed; a second put-if-absent
    (If-None-Match: *) and a put with a stale If-Match must both fail with 412/409 and leave the object as
    it was; a put with its current ETag in If-Match must succeed. Network and permission errors are raised
    (StoreUnavailable, AccessDenied: StoreErrors): they say nothing about the backend's semantics.
    """
    uri = join_uri(base_uri, PROBE_PREFIX, f"{uuid.uuid4().hex}.txt")
    problems: list[str] = []
    try:
        try:
            etag = store.put_if_absent(uri, _FIRST)
        except PreconditionFailed:
            return [f"a put-if-absent (If-None-Match: *) of the fresh key {uri} was refused"]
        try:
            store.put_if_absent(uri, _SECOND)
            problems.append("a put-if-absent (If-None-Match: *) replaced an existing object")
        except PreconditionFailed:
            pass
        stale = hashlib.md5(b"not the probe's content", usedforsecurity=False).hexdigest()
        try:
            store.compare_and_swap(uri, _THIRD, stale)
            problems.append("a put with a stale If-Match ETag replaced the object")
        except PreconditionFailed:
            pass
        if problems:
            return problems
        if store.get_bytes(uri, max_bytes=64) != _FIRST:
            return ["conditional puts answered 412 but replaced the object anyway"]
        try:
            store.compare_and_swap(uri, _FOURTH, etag)
        except PreconditionFailed:
            problems.append("a put with the object's current ETag in If-Match was refused")
        return problems
    finally:
        with contextlib.suppress(StoreError, OSError):
            store.delete(uri)
