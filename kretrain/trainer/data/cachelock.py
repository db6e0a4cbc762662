"""An exclusive lock per dataset in a shared dataset cache, held while a run pulls and validates into it."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_DIR_NAME = ".kretrain-locks"
"""Folder of the lock files in the cache's top level (no bucket name starts with a dot)."""
LOCK_TIMEOUT_SECONDS = 3600.0
"""How long a run waits for another run's data stage on the same dataset before it gives up."""
POLL_SECONDS = 0.2
"""How often a waiting run tries the lock again."""


class CacheLockTimeout(TimeoutError):
    """Another run held the dataset's cache lock for longer than the timeout."""


def lock_path(cache_dir: Path, dataset_uri: str) -> Path:
    """The dataset's lock file (its name is a digest of the URI, so any URI maps to one safe name)."""
    digest = hashlib.sha256(dataset_uri.encode()).hexdigest()[:40]
    return Path(cache_dir) / LOCK_DIR_NAME / f"{digest}.lock"


@contextlib.contextmanager
def dataset_lock(cache_dir: Path, dataset_uri: str, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[float]:
    """Hold the dataset's exclusive `flock` (released when the process dies); yields the seconds waited.

    Two runs sharing a cache (a ReadWriteMany volume of one model line) thus never sync the same era
    folder, its manifest or the validation cache at the same time; runs on other datasets do not wait.
    """
    path = lock_path(cache_dir, dataset_uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    start = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - start > timeout:
                    raise CacheLockTimeout(
                        f"another run has held the cache lock {path} of {dataset_uri} for over {timeout:.0f} s"
                    ) from None
                time.sleep(POLL_SECONDS)
        yield time.monotonic() - start
    finally:
        os.close(fd)  # closing the descriptor releases the lock
