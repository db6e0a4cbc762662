"""A bounded thread pool map: results as they complete, at most a window of items in memory, first error wins."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def bounded_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """fn over items on `workers` threads, yielding results in completion order.

    At most 2 x workers items are in flight (an image each, so memory stays bounded whatever the
    dataset's size). On the first error nothing new starts, queued work is cancelled, running work
    finishes, and the error is raised.
    """
    source = iter(items)
    pending: set[Future[R]] = set()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="import") as pool:
        try:
            while True:
                for item in source:
                    pending.add(pool.submit(fn, item))
                    if len(pending) >= 2 * max(1, workers):
                        break
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        finally:
            for fut in pending:
                fut.cancel()
