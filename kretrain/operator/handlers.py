"""Thin Kopf handlers: parse the object, call one lifecycle function, apply its status patch and events."""

from __future__ import annotations

import logging
import socket
import threading
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import kopf

from kretrain.api import GROUP, PLURAL, TERMINAL_STATES, VERSION, RetrainJobSpec
from kretrain.operator import lifecycle, metrics, notify_delivery, policy, status_write
from kretrain.operator.kube import Kube
from kretrain.operator.settings import get_settings

if TYPE_CHECKING:
    from kretrain.registry import Registry

RTJ = (GROUP, VERSION, PLURAL)
_settings = get_settings()


@lru_cache(maxsize=64)
def _registry(endpoint: str | None, region: str, uri: str) -> Registry:
    from kretrain.registry import Registry
    from kretrain.store import ObjectStore

    # Never sign with the operator's credentials for an endpoint outside the policy (resolve_spec refuses such
    # specs already; this guards every other way an endpoint could reach here).
    policy.require_allowed_endpoint(endpoint, _settings)
    # Credentials: the operator's own environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
    # Few tries per call: a handler must not block on an unreachable registry for half a minute of
    # backoff; kopf retries the handler itself (TemporaryError) and the status says it is waiting.
    return Registry(ObjectStore(endpoint_url=endpoint, region=region, max_attempts=3), uri)


def _registry_for(spec: RetrainJobSpec) -> Registry:
    assert spec.storage.registry is not None  # resolve_spec guarantees it
    return _registry(spec.storage.endpoint, spec.storage.region, spec.storage.registry)


@lru_cache(maxsize=1)
def deps() -> lifecycle.Deps:
    """The lifecycle's dependencies for this process (built on first use)."""
    return lifecycle.Deps(
        settings=_settings,
        kube=Kube(_settings),
        registry_for=_registry_for,
        # owner references only: kopf.adopt would also copy the RetrainJob's labels (kueue.x-k8s.io/priority-class,
        # queue-name, a GitOps tool's tracking label) onto the Job, outside the operator policy
        adopt=lambda objs: kopf.append_owner_reference(objs),
        actor=f"kretrain-operator@{socket.gethostname()}",
    )


def _apply(outcome: lifecycle.Outcome, body: kopf.Body, patch: kopf.Patch, handler: str, timer: bool = False) -> None:
    for key, value in outcome.status.items():
        patch.status[key] = value
    if timer:  # written now: when the write fails, no event is posted and no decision counted for it
        _write(body, patch)
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    uid = body.metadata.uid or ""
    metrics.observe_state(uid, outcome.state or body.status.get("state"))
    status = {**body.status, **outcome.status}  # the status after this patch (progress is replaced whole)
    metrics.observe_progress(
        uid, body.metadata.namespace or "", body.metadata.name or "", status.get("state"), status.get("progress")
    )
    if outcome.state in TERMINAL_STATES:
        metrics.count_decision(outcome.state, outcome.decision_reason)
    if outcome.permanent_error:
        raise kopf.PermanentError(outcome.permanent_error)
    if outcome.retry:
        metrics.HANDLER_ERRORS.labels(handler=handler).inc()
        delay = _settings.retry_delay if outcome.retry_delay is None else outcome.retry_delay
        raise kopf.TemporaryError(outcome.retry, delay=delay)


def _write(body: kopf.Body, patch: kopf.Patch) -> None:
    """A timer's status, written by the handler (kretrain.operator.status_write), not by Kopf after it."""
    kube = deps().kube
    assert isinstance(kube, Kube)
    status_write.write_status(kube, PLURAL, body, patch, _settings.retry_delay)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any) -> None:
    """Kopf settings: annotation-based bookkeeping (the status schema is structural), timeouts, metrics."""
    settings.persistence.finalizer = _settings.finalizer
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kretrain.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kretrain.dev", key="last-handled-configuration"
    )
    settings.posting.reporting_component = "kretrain-operator"
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    # Kopf's default backoffs give up on the API server after 54 s, and a watch stream that gives up ends the
    # operator (rc 1): ride out an API server upgrade or an etcd hiccup of a few minutes instead (about 5 min).
    settings.networking.error_backoffs = (1, 1, 2, 3, 5, 8, 13, 21, 30, 30, 30, 30, 30, 30, 30, 30)
    # A deleted RetrainJob keeps kopf's finalizer until its timers have stopped. A timer caught mid-call (a sync
    # poll in its thread) is waited for up to instant_exit_timeout, then re-checked every cancellation_polling
    # seconds: kopf's default of 60 s kept deleted runs (and a deleted schedule's runs) around for a minute.
    settings.background.instant_exit_timeout = 2.0
    settings.background.cancellation_polling = 2.0
    settings.peering.lifetime = _settings.peering_lifetime  # read by kopf's keep-alives, which start after this
    # The Kubernetes client imports its typed APIs when first built (5-15 s on a busy node): build it beside kopf's
    # startup, so a standby replica that takes over acts at once instead of after that import.
    threading.Thread(target=deps, name="kretrain-warm-deps", daemon=True).start()
    if _settings.metrics_port:
        server = metrics.serve(_settings.metrics_port)
        logger.info("metrics and health on :%d (/metrics, /healthz)", server.server_port)
    if _settings.registry:
        probe_default_registry(logger)


def probe_default_registry(logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
    """Probe that the default registry's backend honours conditional writes (Registry.check_conditional_writes).

    The operator keeps running either way: a failed verdict is kept on the (cached) Registry object, so every
    promotion through it is refused with the error naming the endpoint; a network error is only logged and
    the probe runs again on the first promotion.
    """
    from kretrain.registry import ConditionalWritesIgnored

    assert _settings.registry is not None
    try:
        _registry(_settings.s3_endpoint, _settings.s3_region, _settings.registry).check_conditional_writes()
    except ConditionalWritesIgnored as exc:
        logger.error("promotions are refused: %s", exc)
    except lifecycle.REGISTRY_ERRORS as exc:
        logger.warning("could not probe the registry's conditional writes (probed again before promoting): %s", exc)
    else:
        logger.info("registry %s: the backend honours conditional writes", _settings.registry)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """KRETRAIN_KUBE_URL (tests, the emulator) without credentials; otherwise in-cluster or kubeconfig."""
    if _settings.kube_url:
        return kopf.ConnectionInfo(server=_settings.kube_url, insecure=True)
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.resume(*RTJ)
@kopf.on.create(*RTJ)
def start(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """Validate, resolve the incumbent, create the Job once."""
    with metrics.timed("start"):
        _apply(lifecycle.start(body, deps()), body, patch, "start")


@kopf.on.update(*RTJ, field="spec.suspend")
def suspend(body: kopf.Body, new: Any, patch: kopf.Patch, **_: Any) -> None:
    """spec.suspend changed: suspend or resume the Job."""
    with metrics.timed("suspend"):
        _apply(lifecycle.set_suspend(body, bool(new), deps()), body, patch, "suspend")


def _running(status: kopf.Status, **_: Any) -> bool:
    return bool(status.get("jobName")) and status.get("state") not in TERMINAL_STATES


@kopf.timer(*RTJ, interval=_settings.poll_interval, when=_running)
def poll(body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
    """Follow the Job and progress.json; decide and promote once the Job has succeeded.

    `retry` is Kopf's count of failed tries in a row of this timer (kept in memory, reset by a success): a
    malformed report or progress fails the run after lifecycle.MAX_RECORD_TRIES tries instead of looping.
    """
    with metrics.timed("poll"):
        _apply(lifecycle.poll(body, deps(), retry=int(kwargs.get("retry") or 0)), body, patch, "poll", timer=True)


def _serving_due(body: kopf.Body, **_: Any) -> bool:
    return notify_delivery.pending(body)


@kopf.timer(*RTJ, interval=_settings.poll_interval, when=_serving_due)
def tell_serving(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """After a promotion: the webhook and the InferenceService (spec.serving), each attempt when it is due."""
    kube = deps().kube
    assert isinstance(kube, Kube)
    with metrics.timed("serving"):
        _apply(notify_delivery.step(body, deps(), kube), body, patch, "serving", timer=True)


@kopf.on.delete(*RTJ, optional=True)
def deleted(body: kopf.Body, **_: Any) -> None:
    """The Job and ConfigMap go with the RetrainJob (owner references); registry versions stay."""
    metrics.forget(body.metadata.uid or "")
