"""Prometheus metrics of the operator and a small HTTP server for /metrics and /healthz."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kretrain.api.status import State

STATES: tuple[str, ...] = State.__args__  # type: ignore[attr-defined]

REGISTRY = CollectorRegistry()
DECISIONS = Counter(
    "kretrain_decisions_total",
    "Terminal outcomes of RetrainJobs: promoted, rejected (with the condition reason) or failed (with why).",
    ["outcome", "reason"],
    registry=REGISTRY,
)
HANDLER_SECONDS = Histogram(
    "kretrain_handler_seconds",
    "Latency of the operator's handlers.",
    ["handler"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
HANDLER_ERRORS = Counter(
    "kretrain_handler_retries_total", "Handler runs that asked to be retried.", ["handler"], registry=REGISTRY
)

_states: dict[str, str] = {}
_lock = threading.Lock()
_started = time.monotonic()


class _StateCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "kretrain_retrainjobs", "RetrainJobs seen by this operator, by state.", labels=["state"]
        )
        with _lock:
            counts = {s: 0 for s in STATES}
            for state in _states.values():
                counts[state] = counts.get(state, 0) + 1
        for state, count in sorted(counts.items()):
            family.add_metric([state], count)
        yield family


REGISTRY.register(_StateCollector())

MAX_PROGRESS_SERIES = 1000
"""RetrainJobs whose training progress is exported at once (a bound on the series of the progress gauges)."""
_progress: dict[str, tuple[str, str, int, int, float | None]] = {}
_PROGRESS_LABELS = ["retrainjob_namespace", "retrainjob"]  # not `namespace`: Prometheus' target label


class _ProgressCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        epoch = GaugeMetricFamily(
            "kretrain_training_epoch", "Epochs completed by a training RetrainJob.", labels=_PROGRESS_LABELS
        )
        epochs = GaugeMetricFamily(
            "kretrain_training_epochs", "Epochs planned for a training RetrainJob.", labels=_PROGRESS_LABELS
        )
        eta = GaugeMetricFamily(
            "kretrain_training_eta_seconds",
            "Estimated seconds until a RetrainJob's training ends.",
            labels=_PROGRESS_LABELS,
        )
        with _lock:
            rows = list(_progress.values())
        for ns, name, done, planned, left in rows:
            epoch.add_metric([ns, name], done)
            epochs.add_metric([ns, name], planned)
            if left is not None:
                eta.add_metric([ns, name], left)
        yield from (epoch, epochs, eta)


REGISTRY.register(_ProgressCollector())


def observe_progress(uid: str, namespace: str, name: str, state: object, progress: object) -> None:
    """Remember a RetrainJob's status.progress while its state is Training (forgotten in any other state)."""
    with _lock:
        if state != "Training" or not isinstance(progress, Mapping):
            _progress.pop(uid, None)
            return
        done, planned, left = progress.get("epoch"), progress.get("epochs"), progress.get("etaSeconds")
        if not isinstance(done, int) or not isinstance(planned, int):
            return
        if uid not in _progress and len(_progress) >= MAX_PROGRESS_SERIES:
            return
        eta = float(left) if isinstance(left, int | float) and math.isfinite(left) else None
        _progress[uid] = (namespace, name, done, planned, eta)


def observe_state(uid: str, state: str | None) -> None:
    """Remember the state of one RetrainJob (None: unknown yet)."""
    if state:
        with _lock:
            _states[uid] = state


def forget(uid: str) -> None:
    """A RetrainJob was deleted."""
    with _lock:
        _states.pop(uid, None)
        _progress.pop(uid, None)


def count_decision(state: str | None, reason: str | None) -> None:
    """Count a terminal outcome."""
    if state in ("Promoted", "Rejected", "Failed"):
        DECISIONS.labels(outcome=state.lower(), reason=reason or "Unknown").inc()


@contextmanager
def timed(handler: str) -> Iterator[None]:
    """Observe a handler's latency."""
    start = time.perf_counter()
    try:
        yield
    finally:
        HANDLER_SECONDS.labels(handler=handler).observe(time.perf_counter() - start)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/metrics"):
            body, ctype = generate_latest(REGISTRY), CONTENT_TYPE_LATEST
        elif self.path.startswith(("/healthz", "/readyz")):
            body, ctype = f"ok {time.monotonic() - _started:.0f}s\n".encode(), "text/plain"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve /metrics and /healthz on a daemon thread; returns the server (`.server_port`, `.shutdown()`)."""
    server = ThreadingHTTPServer((host, port), _Handler)
    threading.Thread(target=server.serve_forever, name="kretrain-metrics", daemon=True).start()
    return server
