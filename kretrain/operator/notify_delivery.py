"""After a promotion: the signed webhook and the KServe InferenceService patch, each at least once, recorded in status.

A Kopf timer runs `step` on a Promoted RetrainJob while `pending` says a delivery is unfinished. Every attempt
rebuilds the notice from the registry (never from the status, which anyone allowed to patch it may rewrite):
the run is the operator's own (run_names) and the pointer (incumbent or spec.promotion.alias) must still name
it. Nothing here changes the decision or the registry; a failed attempt is recorded with the next one's time
(notify.record_attempt), never slept for.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from kretrain import aliases
from kretrain.api import RetrainJobSpec
from kretrain.api.conditions import Reason
from kretrain.api.status import Notification
from kretrain.operator import bounds, notify
from kretrain.operator.kube import KubeError, UnsafeName
from kretrain.operator.status_patch import Event, Outcome, StatusBuilder, parse_spec, parse_status, run_names
from kretrain.operator.steps import REGISTRY_ERRORS, Deps, waiting


class ServingApi(Protocol):
    """The two calls of kretrain.operator.kube.Kube this step makes."""

    def secret_value(self, namespace: str, name: str, key: str) -> bytes | None: ...
    def patch_inference_service(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...


def _targets(spec: Mapping[str, Any]) -> set[str]:
    serving = spec.get("serving") if isinstance(spec, Mapping) else None
    if not isinstance(serving, Mapping):
        return set()
    return {k for k in ("webhook", "inferenceService") if serving.get(k)}


def pending(body: Mapping[str, Any]) -> bool:
    """Kopf's `when` of the timer: a Promoted RetrainJob with a spec.serving target not yet delivered or given up."""
    status = body.get("status")
    if not isinstance(status, Mapping) or status.get("state") != "Promoted":
        return False
    wanted = _targets(body.get("spec") or {})
    records = status.get("notifications")
    done = {
        r.get("kind")
        for r in (records if isinstance(records, list) else [])
        if isinstance(r, Mapping) and (r.get("delivered") or r.get("givenUp"))
    }
    return bool(wanted - done)


def _at(now: str) -> datetime:
    return datetime.strptime(now, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _give_up(record: Notification, now: datetime, why: str) -> Notification:
    """A record that will not be tried again (the policy refuses it, the promotion was superseded)."""
    tried = notify.record_attempt(record, now, None, why)
    return tried.model_copy(update={"given_up": True, "next_attempt_at": None})


def _notice(body: Mapping[str, Any], spec: RetrainJobSpec, resolved: RetrainJobSpec, deps: Deps) -> (
    notify.PromotionNotice | str
):  # fmt: skip
    """The notice of this RetrainJob's promotion, or why there is none to tell (the pointer names another version)."""
    meta = body["metadata"]
    run, _ = run_names(body)
    registry = deps.registry_for(resolved)
    pointer = spec.promotion.alias or "incumbent"
    if spec.promotion.alias:
        moved = aliases.get_alias(registry, spec.model, spec.promotion.alias)
        version, previous, at = (moved.version, moved.previous, moved.at) if moved else (None, None, None)
    else:
        ptr = registry.incumbent_pointer(spec.model)
        version, previous, at = (ptr.version, ptr.previous, ptr.promoted_at) if ptr else (None, None, None)
    if version != run:
        named = f"names {bounds.short(version, 80)!r}" if version else "names no version"
        return f"the {pointer} of {spec.model} {named}, not {run}: this promotion is no longer current"
    assert resolved.storage.registry is not None  # resolve_spec guarantees it
    info = registry.version_info(spec.model, run)
    try:
        return notify.build_notice(
            registry=resolved.storage.registry, info=info, pointer=pointer, previous=previous,
            namespace=meta["namespace"], retrain_job=meta["name"], promoted_at=at or deps.now(),
        )  # fmt: skip
    except ValueError as exc:  # a ValidationError: version.json is the trainer's, it may not fit a notice
        return bounds.short(f"version {run} of {spec.model} cannot be told: {exc}", 400)


def _webhook(
    record: Notification, notice: notify.PromotionNotice, spec: RetrainJobSpec, ns: str, deps: Deps, kube: ServingApi,
    now: datetime,
) -> Notification:  # fmt: skip
    """One webhook attempt (the policy was checked by parse_spec): the key from the Secret, one POST."""
    hook = spec.serving.webhook
    assert hook is not None
    delay = deps.settings.notify_retry_delay
    ref = hook.secret_ref
    try:
        key = kube.secret_value(ns, ref.name, ref.key)
    except (KubeError, UnsafeName) as exc:
        return notify.record_attempt(record, now, None, f"cannot read Secret {ref.name}: {exc}", delay)
    if key is None:
        return notify.record_attempt(record, now, None, f"Secret {ref.name} has no key {ref.key!r}", delay)
    try:
        notify.check_key(key)
    except ValueError as exc:
        return notify.record_attempt(record, now, None, f"Secret {ref.name} key {ref.key!r}: {exc}", delay)
    status, error = notify.post(hook.url, notice, key, int(time.time()))
    return notify.record_attempt(record, now, status, error, delay)


def _inference_service(
    record: Notification, notice: notify.PromotionNotice, name: str, ns: str, deps: Deps, kube: ServingApi,
    now: datetime,
) -> Notification:  # fmt: skip
    """One InferenceService attempt: a merge patch of its predictor's storageUri (same namespace only)."""
    try:
        patch = notify.inference_service_patch(notice)
    except ValueError as exc:
        return _give_up(record, now, bounds.short(str(exc), 512))
    try:
        kube.patch_inference_service(ns, name, patch)
    except (KubeError, UnsafeName) as exc:
        status = exc.status if isinstance(exc, KubeError) else None
        return notify.record_attempt(record, now, status, bounds.short(str(exc), 512), deps.settings.notify_retry_delay)
    return notify.record_attempt(record, now, 200, None)


def step(body: Mapping[str, Any], deps: Deps, kube: ServingApi) -> Outcome:
    """Make every due attempt for this RetrainJob's promotion and record it in status.notifications.

    A spec the policy refuses now (tightened after the promotion) gives every unfinished delivery up.
    """
    if not pending(body) or parse_status(body.get("status")).state != "Promoted":
        return Outcome()
    parsed = parse_spec(body, deps.settings)
    if isinstance(parsed, str):
        try:
            spec = RetrainJobSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            return Outcome()  # no spec.serving to act on
        return _record(body, spec, deps, bounds.short(f"not told: {parsed}", 400), kube)
    spec, resolved = parsed
    try:
        notice = _notice(body, spec, resolved, deps)
    except REGISTRY_ERRORS as exc:  # S3 unreachable or a record unreadable: the timer tries again
        return waiting(f"cannot read the promoted version of {spec.model}", exc)
    return _record(body, spec, deps, notice, kube)


def _record(
    body: Mapping[str, Any], spec: RetrainJobSpec, deps: Deps, notice: notify.PromotionNotice | str, kube: ServingApi
) -> Outcome:
    """The due attempts for `notice` (a str: why none is made; unfinished deliveries are given up)."""
    ns, stamp = body["metadata"]["namespace"], deps.now()
    now = _at(stamp)
    build = StatusBuilder(body, stamp)
    notice_id = f"{ns}/{body['metadata']['name']}/{run_names(body)[0]}/{spec.promotion.alias or 'incumbent'}"
    known = {(r.kind, r.notice_id): r for r in build.current.notifications}
    wanted: list[tuple[Any, str]] = []
    if spec.serving.webhook:
        wanted.append(("webhook", notify.url_host(spec.serving.webhook.url)))
    if spec.serving.inference_service:
        wanted.append(("inferenceService", spec.serving.inference_service.name))
    records, events = [], list[Event]()
    for kind, target in wanted:
        old = known.get((kind, notice_id)) or Notification(kind=kind, notice_id=notice_id, target=target)
        rec = old
        if isinstance(notice, str):
            rec = old if old.given_up or old.delivered else _give_up(old, now, notice)
        elif notify.due(old, now) and kind == "webhook":
            rec = _webhook(old, notice, spec, ns, deps, kube, now)
        elif notify.due(old, now):
            rec = _inference_service(old, notice, target, ns, deps, kube, now)
        records.append(rec)
        if rec.delivered and not old.delivered:
            what = Reason.WEBHOOK_DELIVERED if kind == "webhook" else Reason.INFERENCE_SERVICE_PATCHED
            events.append(Event("Normal", what, bounds.short(f"{notice_id} -> {target} (attempt {rec.attempts})")))
        elif rec.given_up and not old.given_up:
            what = Reason.WEBHOOK_FAILED if kind == "webhook" else Reason.INFERENCE_SERVICE_FAILED
            msg = f"{notice_id} -> {target}: gave up after {rec.attempts} attempt(s): {rec.last_error}"
            events.append(Event("Warning", what, bounds.short(msg)))
    build.status.notifications = records
    return Outcome(status=build.build(), events=events)
