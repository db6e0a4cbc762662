"""A fault-injecting reverse proxy in front of a Kubernetes API server (the emulator): 500, 409, 429, cut watches.

Point the operator's KRETRAIN_KUBE_URL at `proxy.url`. Each request draws from a seeded RNG and is either
forwarded unchanged (bodies, status, headers; watch streams chunk by chunk as the server writes them) or
answered by the proxy with a fault, counted by kind in `proxy.faults`:

- `500`: an InternalError Status; the request never reaches the server;
- `409` (writes a real API server can answer 409 Conflict: POST, PUT, and a PATCH or DELETE that carries a
  resourceVersion precondition): a Conflict Status ("the object has been modified"), never applied. A merge
  patch without a precondition is retried inside the API server and never answered 409, so it gets none here;
- `429`: a TooManyRequests Status with `Retry-After` (and details.retryAfterSeconds), never applied;
- `lost` (writes only): forwarded and applied, then answered with a 500 (the answer was lost on the way);
- `watch-cut`: a watch stream forwarded for a while, then its connection closed mid-stream (no final chunk);
- `outage`: during `outage(seconds)`, every request is answered 503 and open watch streams are cut (an API
  server being upgraded or its etcd unavailable).

`paused()` forwards everything while a block runs (setup, checks).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import aiohttp.web

from emulator.threaded import ThreadedLoop

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
KINDS = ("500", "409", "429", "lost", "watch-cut", "outage")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host",
               "content-length", "proxy-connection"}  # fmt: skip


@dataclass(frozen=True)
class FaultRates:
    """The share of requests answered with each fault (each drawn independently, in this order)."""

    error_500: float = 0.0
    """Any request: answered 500 without reaching the server."""
    conflict_409: float = 0.0
    """Writes that can conflict (see `can_conflict`): answered 409 Conflict without reaching the server."""
    throttle_429: float = 0.0
    """Any request but a watch: answered 429 with Retry-After."""
    lost_500: float = 0.0
    """Writes: applied by the server, then answered 500."""
    watch_cut: float = 0.0
    """Watch streams: cut after `cut_after` seconds (drawn uniformly from this range)."""
    cut_after: tuple[float, float] = (0.2, 3.0)
    retry_after: int = 1
    """Seconds a 429 asks the client to wait."""
    conflict_any_patch: bool = False
    """Also answer PATCHes without a precondition 409 (no API server does; shows what the client does with it)."""

    @classmethod
    def uniform(cls, rate: float, watch_cut: float | None = None, conflict_any_patch: bool = False) -> FaultRates:
        """Every kind at `rate` (watch streams cut at `watch_cut`, default 4 x rate, at most 1)."""
        cut = min(1.0, 4 * rate) if watch_cut is None else watch_cut
        return cls(error_500=rate, conflict_409=rate, throttle_429=rate, lost_500=rate / 2, watch_cut=cut,
                   conflict_any_patch=conflict_any_patch)  # fmt: skip


def _status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    doc: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": message, "reason": reason, "code": code}  # fmt: skip
    if details:
        doc["details"] = details
    return json.dumps(doc).encode()


def is_watch(request: aiohttp.web.BaseRequest) -> bool:
    return request.query.get("watch", "").lower() in ("1", "true")


def can_conflict(method: str, body: bytes) -> bool:
    """Whether an API server may answer this write 409 Conflict: a create or update, or a patch/delete with a
    resourceVersion precondition (merge/JSON patches without one are retried by the server itself)."""
    if method in ("POST", "PUT"):
        return True
    if method not in ("PATCH", "DELETE") or not body:
        return False
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    if isinstance(doc, dict):
        return bool((doc.get("metadata") or {}).get("resourceVersion") or doc.get("preconditions"))
    return False  # a JSON patch: its `test` op fails with 422, not 409


class FaultProxy(ThreadedLoop):
    """The proxy on a free 127.0.0.1 port, served from its own thread: `start() -> URL`, `stop()`; a context manager."""

    def __init__(self, upstream: str, rates: FaultRates, seed: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.rates = rates
        self.rng = random.Random(seed)
        self.faults: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()  # "GET", "POST", ..., "WATCH": requests seen
        self.writes: deque[tuple[float, str, str]] = deque(maxlen=1000)  # (time.monotonic(), method, path)
        self.url = ""
        self._lock = threading.Lock()
        self._enabled = True
        self._streams: set[asyncio.BaseTransport] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._outage_until = 0.0

    # ---- control (any thread) ------------------------------------------------------------------------
    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No faults while the block runs (what was injected before stays counted)."""
        with self._lock:
            self._enabled = False
        try:
            yield
        finally:
            with self._lock:
                self._enabled = True

    def outage(self, seconds: float) -> None:
        """From now on for `seconds`: every request answered 503, every open watch stream cut."""
        with self._lock:
            self._outage_until = time.monotonic() + seconds
        if self._loop is not None:
            self._loop.call_soon_threadsafe(lambda: [t.abort() for t in list(self._streams)])

    def counts(self) -> dict[str, int]:
        """Faults injected so far, by kind (every kind listed)."""
        with self._lock:
            return {kind: self.faults[kind] for kind in KINDS}

    def _draw(self, method: str, path: str, watch: bool, body: bytes) -> str | None:
        with self._lock:
            self.requests["WATCH" if watch else method] += 1
            if method in WRITES:
                self.writes.append((time.monotonic(), method, path))
            if not self._enabled:
                return None
            if time.monotonic() < self._outage_until:
                return "outage"
            r, write = self.rates, method in WRITES
            if self.rng.random() < r.error_500:
                return "500"
            conflicts = can_conflict(method, body) or (r.conflict_any_patch and method == "PATCH")
            if conflicts and self.rng.random() < r.conflict_409:
                return "409"
            if not watch and self.rng.random() < r.throttle_429:
                return "429"
            if write and self.rng.random() < r.lost_500:
                return "lost"
            if watch and self.rng.random() < r.watch_cut:
                return "watch-cut"
            return None

    def _count(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    # ---- serving -------------------------------------------------------------------------------------
    async def _handle(self, request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            return await self._serve(request)
        except (ConnectionResetError, aiohttp.ClientError):  # the client went away (killed) or upstream did
            return aiohttp.web.Response(status=502)
        finally:
            self._tasks.discard(task)

    async def _serve(self, request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        watch = is_watch(request)
        body = await request.read()
        fault = self._draw(request.method, request.rel_url.path, watch, body)
        if fault == "outage":
            self._count(fault)
            return self._answer(503, _status(503, "ServiceUnavailable", "fault injected: the API server is down"))
        if fault == "500":
            self._count(fault)
            return self._answer(500, _status(500, "InternalError", "fault injected: internal error"))
        if fault == "409":
            self._count(fault)
            msg = "Operation cannot be fulfilled: the object has been modified; please apply your changes to the "
            return self._answer(409, _status(409, "Conflict", msg + "latest version and try again (fault injected)"))
        if fault == "429":
            self._count(fault)
            seconds = self.rates.retry_after
            doc = _status(429, "TooManyRequests", "fault injected: too many requests", {"retryAfterSeconds": seconds})
            return self._answer(429, doc, {"Retry-After": str(seconds)})
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        assert self._session is not None
        upstream = await self._session.request(
            request.method, self.upstream + request.rel_url.raw_path_qs, headers=headers, data=body or None
        )
        async with upstream:
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            if watch and upstream.status == 200:
                return await self._stream(request, upstream, out, fault == "watch-cut")
            payload = await upstream.read()
        if fault == "lost":
            self._count(fault)
            return self._answer(500, _status(500, "InternalError", "fault injected: the answer was lost"))
        return aiohttp.web.Response(status=upstream.status, body=payload, headers=out)

    @staticmethod
    def _answer(code: int, doc: bytes, headers: dict[str, str] | None = None) -> aiohttp.web.Response:
        return aiohttp.web.Response(
            status=code, body=doc, headers={"Content-Type": "application/json", **(headers or {})}
        )

    async def _stream(
        self, request: aiohttp.web.BaseRequest, upstream: aiohttp.ClientResponse, headers: dict[str, str], cut: bool
    ) -> aiohttp.web.StreamResponse:
        """Forward a watch stream as it comes (each chunk as it arrives); with `cut`, close it mid-stream."""
        response = aiohttp.web.StreamResponse(status=upstream.status, headers=headers)
        await response.prepare(request)
        transport = request.transport
        if transport is not None:
            self._streams.add(transport)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.rng.uniform(*self.rates.cut_after) if cut else 1e9)
        try:
            while (left := deadline - loop.time()) > 0:
                try:
                    chunk = await asyncio.wait_for(upstream.content.readany(), timeout=left)
                except TimeoutError:
                    break
                if not chunk:
                    await response.write_eof()
                    return response
                await response.write(chunk)
        except (ConnectionResetError, aiohttp.ClientError, asyncio.CancelledError):
            return response
        finally:
            self._streams.discard(transport)
        self._count("watch-cut")
        if transport is not None:
            transport.abort()  # no terminating chunk: the client sees a stream cut short
        return response

    # ---- lifecycle -----------------------------------------------------------------------------------
    _session: aiohttp.ClientSession | None = None

    def start(self) -> str:
        """Serve on a free port; returns the proxy's base URL."""

        async def serve(ready: Callable[[], None]) -> None:
            assert self._stop is not None
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(timeout=timeout, connector=connector, auto_decompress=False) as session:
                self._session = session
                server = aiohttp.web.Server(self._handle)
                runner = aiohttp.web.ServerRunner(server, handle_signals=False, shutdown_timeout=1)
                await runner.setup()
                site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
                self.url = f"http://127.0.0.1:{port}"
                ready()
                await self._stop.wait()
                for transport in list(self._streams):  # open watches end with the proxy
                    transport.abort()
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                await runner.cleanup()

        return self._start_thread(serve, "kube-fault-proxy", "the fault proxy")

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
