"""Listing a prefix in chunks: the first level, then its folders a few at a time, new folders first."""

from __future__ import annotations

from collections.abc import Container, Generator
from concurrent.futures import ThreadPoolExecutor, as_completed

from kretrain.storage.location import S3Location
from kretrain.storage.transport import ObjectInfo, Transport

# Sub-prefix listings that run at once (listing is server CPU; downloads should not wait behind it).
LIST_CONCURRENCY = 4


def list_chunks(
    transport: Transport, loc: S3Location, known: Container[str] = (), *, concurrency: int | None = None
) -> Generator[list[ObjectInfo], None, None]:
    """Every object under `loc` (keys relative to it, unsorted), in chunks as listings complete.

    The first level is listed with a delimiter, then its folders `LIST_CONCURRENCY` at a time; each
    folder is yielded as soon as its listing is done, so a caller can start on it while the others are
    still being listed. First-level folders not in `known` (new eras, the likely downloads) go first.
    Directory markers (`a/`) and the prefix itself are not objects of the tree and are left out.
    """
    pfx = loc.prefix

    def relative(raw: list[ObjectInfo]) -> list[ObjectInfo]:
        return [ObjectInfo(o.key[len(pfx) :], o.size, o.etag) for o in raw if o.key[len(pfx) :] and o.key[-1] != "/"]

    objects, prefixes = transport.list(loc.bucket, pfx, delimiter=True)
    yield relative(objects)
    if not prefixes:
        return
    prefixes.sort(key=lambda p: p[len(pfx) :].rstrip("/") in known)  # stable: new folders first
    width = min(concurrency or LIST_CONCURRENCY, len(prefixes))
    pool = ThreadPoolExecutor(max_workers=width, thread_name_prefix="s3ls")
    try:
        futures = [pool.submit(transport.list, loc.bucket, p) for p in prefixes]
        for fut in as_completed(futures):
            yield relative(fut.result()[0])
    finally:
        # Stopped early (an error): drop the queued listings; do not wait for the running ones.
        pool.shutdown(wait=False, cancel_futures=True)


def list_sorted(transport: Transport, loc: S3Location) -> list[ObjectInfo]:
    """Every object under `loc` (recursive), keys relative to it, sorted by key."""
    out = [obj for chunk in list_chunks(transport, loc) for obj in chunk]
    out.sort(key=lambda o: o.key)
    return out
