"""A server on its own asyncio event loop in a daemon thread: the emulator's and the fault proxy's lifecycle."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable


class ThreadedLoop:
    """Runs `serve(ready)` on a new event loop in a daemon thread until `stop()` sets `_stop`.

    `serve` sets `self.url`, calls `ready()` and waits on `self._stop` (created before it runs).
    """

    url: str = ""
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _stop: asyncio.Event | None = None

    def _start_thread(self, serve: Callable[[Callable[[], None]], Awaitable[None]], name: str, what: str) -> str:
        """Start serving; returns `self.url` once `serve` is ready, RuntimeError naming `what` if it is not in 10 s."""
        ready = threading.Event()
        errors: list[BaseException] = []

        async def main() -> None:
            self._stop = asyncio.Event()
            await serve(ready.set)

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(main())
            except BaseException as exc:
                errors.append(exc)
                ready.set()
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors or not self.url:
            raise RuntimeError(f"{what} did not start: {errors}")
        return self.url

    def stop(self) -> None:
        """Stop serving (open watches end) and wait for the thread."""
        if self._loop and self._stop and self._thread:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
