"""A bounded parallel map over threads: lazy input, results handed back in the caller's thread, first error wins."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def parallel_map(
    items: Iterable[T],
    fn: Callable[[T], R],
    on_done: Callable[[T, R], None] | None = None,
    *,
    max_workers: int = 16,
    thread_name_prefix: str = "s3",
) -> None:
    """Run `fn` over `items` on `max_workers` threads; `on_done(item, result)` in the caller's thread per success.

    `items` is consumed lazily, at most 4 x max_workers ahead of the workers, so a generator can feed
    the pool while it is still producing (a listing still under way). On the first error (of fn, of
    on_done or of the iterator itself), nothing new is started and queued work is cancelled; calls
    already running finish and are reported to on_done (so a sync manifest records them); then the
    first error is raised. A generator stopped early is closed.
    """
    workers = max(1, int(max_workers))
    source = iter(items)
    window = 4 * workers
    pending: dict[Future[R], T] = {}
    first_error: BaseException | None = None

    def fail(exc: BaseException) -> None:
        nonlocal first_error
        if first_error is None:
            first_error = exc
            for other in pending:
                other.cancel()

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=thread_name_prefix)
    try:
        while True:
            while first_error is None and len(pending) < window:
                try:
                    item = next(source)
                except StopIteration:
                    break
                except BaseException as source_exc:
                    fail(source_exc)
                    break
                pending[pool.submit(fn, item)] = item
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                item = pending.pop(fut)
                if fut.cancelled():
                    continue
                fn_exc = fut.exception()
                if fn_exc is not None:
                    fail(fn_exc)
                    continue
                if on_done is None:
                    continue
                try:
                    on_done(item, fut.result())
                except BaseException as cb_exc:
                    fail(cb_exc)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # nothing is queued unless we leave on an error
        close = getattr(source, "close", None)
        if close is not None:
            close()  # a generator stopped early releases what it holds (a listing pool)
    if first_error is not None:
        raise first_error
