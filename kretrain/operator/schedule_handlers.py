"""Thin Kopf timer of RetrainSchedules: read the object, list its runs and eras, apply schedule.plan, patch status."""

from __future__ import annotations

import datetime
import logging
from functools import lru_cache
from typing import Any

import kopf
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from kretrain.api import (
    API_VERSION,
    GROUP,
    KIND,
    SCHEDULE_PLURAL,
    VERSION,
    NewEraTrigger,
    RetrainScheduleSpec,
    RetrainScheduleStatus,
)
from kretrain.api.schedule import ScheduleDecision
from kretrain.operator import jobs, schedule
from kretrain.operator.kube import KubeError
from kretrain.operator.schedule_kube import RunsApi
from kretrain.operator.schedule_scan import ScanError, poll_dataset, poll_endpoint, scan
from kretrain.operator.settings import get_settings
from kretrain.operator.status_write import write_status
from kretrain.store import ObjectStore, StoreError

RTS = (GROUP, VERSION, SCHEDULE_PLURAL)
LABEL_SCHEDULE_UID = "kretrain.dev/schedule-uid"
LABEL_TRIGGER = "kretrain.dev/trigger"
ANNOTATION_REASON = "kretrain.dev/trigger-reason"


class ScheduleSettings(BaseSettings):
    """How often schedules are looked at (environment prefix KRETRAIN_SCHEDULE_)."""

    model_config = SettingsConfigDict(env_prefix="KRETRAIN_SCHEDULE_", extra="ignore", use_attribute_docstrings=True)

    tick: float = Field(default=10.0, gt=0, le=3600)
    """Seconds between looks at each RetrainSchedule (its pollSeconds and cron slots are checked each time)."""


_settings = get_settings()
_tick = ScheduleSettings().tick


@lru_cache(maxsize=1)
def _api() -> RunsApi:
    return RunsApi(_settings)


@lru_cache(maxsize=64)
def _store(endpoint: str | None, region: str) -> ObjectStore:
    # The operator's own credentials (its environment); few tries: the next tick tries again.
    return ObjectStore(endpoint_url=endpoint, region=region, max_attempts=3)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _children(namespace: str, uid: str) -> list[schedule.Child]:
    """This schedule's RetrainJobs: labelled with its uid AND owned by it (a label alone is not trusted)."""
    out = []
    for obj in _api().list_runs(namespace, f"{LABEL_SCHEDULE_UID}={uid}"):
        meta = obj.get("metadata") or {}
        if not any(ref.get("uid") == uid for ref in meta.get("ownerReferences") or []):
            continue
        state = (obj.get("status") or {}).get("state")
        out.append(schedule.Child(str(meta.get("name")), state if isinstance(state, str) else None,
                                  str(meta.get("creationTimestamp") or "")))  # fmt: skip
    return out


def _run_object(body: kopf.Body, plan: schedule.Plan) -> dict[str, Any]:
    assert plan.spec is not None and plan.run is not None and plan.trigger is not None
    obj: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": plan.run,
            "namespace": body.metadata.namespace,
            "labels": {LABEL_SCHEDULE_UID: body.metadata.uid or "", LABEL_TRIGGER: plan.trigger},
            "annotations": {ANNOTATION_REASON: plan.summary},
        },
        "spec": plan.spec.dump(),
    }
    kopf.append_owner_reference(obj, owner=body)  # not kopf.adopt: the schedule's labels stay its own (see handlers)
    return obj


def _status(body: kopf.Body) -> RetrainScheduleStatus:
    """The previous status; a malformed one (status is not trusted to steer) counts as none."""
    try:
        return RetrainScheduleStatus.model_validate(dict(body.status))
    except ValidationError:
        return RetrainScheduleStatus()


def _decision(now: datetime.datetime, action: str, reason: str, summary: str, **extra: Any) -> ScheduleDecision:
    return ScheduleDecision.model_validate(
        {"time": schedule.format_time(now), "action": action, "reason": reason, "summary": summary[:1024], **extra}
    )


def _same(a: ScheduleDecision | None, b: ScheduleDecision) -> bool:
    return a is not None and (a.action, a.reason, a.run, a.summary) == (b.action, b.reason, b.run, b.summary)


def _record(body: kopf.Body, patch: kopf.Patch, status: RetrainScheduleStatus, decision: ScheduleDecision) -> None:
    """Patch the status only when it changed, and post an Event only when the decision did (a schedule that keeps
    waiting costs no write per tick; its decision keeps the time it was first made)."""
    last = status.last_decision
    if _same(last, decision):
        assert last is not None
        decision = last
    elif decision.action in ("Started", "Skipped", "Error"):
        kind = "Warning" if decision.action == "Error" else "Normal"
        reason = {"Started": schedule.EVENT_STARTED, "Skipped": schedule.EVENT_SKIPPED}.get(decision.action)
        kopf.event(body, type=kind, reason=reason or decision.reason, message=decision.summary)
    status.last_decision = decision
    status.summary = decision.summary
    old, new = dict(body.status), status.dump()
    if old == new:
        return
    for key, value in new.items():
        patch.status[key] = value
    for key in old.keys() - new.keys():
        patch.status[key] = None  # merge patch: a field that no longer applies (e.g. the cron trigger was removed)


@kopf.timer(*RTS, interval=_tick)
def tick(body: kopf.Body, patch: kopf.Patch, logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any) -> None:
    """One look at a schedule; its status is written here (kretrain.operator.status_write), not by Kopf."""
    try:
        _look(body, patch, logger)
    finally:
        write_status(_api(), SCHEDULE_PLURAL, body, patch, _tick)


def _look(body: kopf.Body, patch: kopf.Patch, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
    """Prune history, poll eras when due, start (or skip) a run, record why (in `patch.status`)."""
    now = _now()
    status = _status(body)
    ns, uid, name = body.metadata.namespace or "", body.metadata.uid or "", body.metadata.name or ""
    try:
        spec = RetrainScheduleSpec.model_validate(dict(body.spec))
    except ValidationError as exc:
        msg = "; ".join(f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        _record(body, patch, status, _decision(now, "Error", schedule.INVALID_SCHEDULE, msg))
        return
    try:
        children = _children(ns, uid)
        pruned = schedule.prune(children, spec.successful_runs_history_limit, spec.failed_runs_history_limit)
        for old in pruned:
            _api().delete_run(ns, old)
            kopf.event(body, type="Normal", reason=schedule.EVENT_PRUNED, message=f"deleted old run {old}")
        children = [c for c in children if c.name not in pruned]
    except KubeError as exc:
        raise kopf.TemporaryError(f"cannot list or prune the runs of {ns}/{name}: {exc}", delay=_tick) from exc

    cron_due: datetime.datetime | None = None
    if spec.trigger.cron is not None:
        created = schedule.parse_time(body.metadata.creation_timestamp) or now
        since = schedule.parse_time(status.last_cron_time) or created
        try:
            cron_due, nxt = schedule.cron_slots(spec.trigger.cron.schedule, spec.trigger.cron.time_zone, since, now)
        except ValueError as exc:
            _record(body, patch, status, _decision(now, "Error", schedule.INVALID_SCHEDULE, str(exc)))
            return
        status.next_schedule_time = schedule.format_time(nxt)

    # A cron-only schedule lists the eras when a slot is due, with the default completeness rule (marker).
    trigger = spec.trigger.new_era or NewEraTrigger()
    poll_seconds = spec.trigger.new_era.poll_seconds if spec.trigger.new_era else None
    if schedule.poll_due(poll_seconds, schedule.parse_time(status.last_poll_time), now, cron_due):
        uri = spec.template.dataset.uri
        try:
            endpoint = poll_endpoint(spec.template.storage.endpoint, _settings)
            poll_dataset(uri, _settings)
            found = scan(_store(endpoint, spec.template.storage.region), uri, trigger, status, now)
        except ScanError as exc:
            _record(body, patch, status, _decision(now, "Error", "PollRefused", str(exc)))
            return
        except (StoreError, ClientError, BotoCoreError) as exc:
            _record(body, patch, status, _decision(now, "Error", "PollFailed", f"cannot list {uri}: {exc}"))
            return
        if found.invalid and found.invalid[:20] != status.invalid_names:
            kopf.event(body, type="Warning", reason=schedule.EVENT_INVALID_NAMES,
                       message=f"not era names, not used: {', '.join(found.invalid[:20])}")  # fmt: skip
        for problem in found.problems:
            logger.warning("%s", problem)
        status.eras, status.pending_eras = found.complete, found.pending
        status.invalid_names, status.settle = found.invalid[:20], found.settle
        status.last_poll_time = schedule.format_time(now)

    plan = schedule.plan(name, spec, status, list(status.eras), children, cron_due)
    if plan.action == "Started":
        assert plan.spec is not None
        try:  # the run as the operator would run it: defaults filled in and inside the operator policy
            jobs.resolve_spec(plan.spec, _settings)
        except jobs.SpecError as exc:
            why = f"{plan.why}: the run would be refused: {exc}"
            _record(body, patch, status, _decision(now, "Error", schedule.INVALID_RUN, why, run=plan.run))
            return
        try:
            for old in plan.delete:
                _api().delete_run(ns, old)
            created_now = _api().create_run(_run_object(body, plan))
        except KubeError as exc:
            if exc.status not in schedule.REFUSED_STATUSES:
                raise kopf.TemporaryError(f"cannot start run {plan.run}: {exc}", delay=_tick) from exc
            why = f"the API server refused run {plan.run}: {exc.status} {exc.reason}: {exc.message}"
            _record(body, patch, status, _decision(now, "Error", schedule.RUN_REFUSED, why, run=plan.run))
            return
        if not created_now:
            plan.summary += " (it existed already: not created twice)"
        status.last_run, status.last_trigger = plan.run, plan.trigger
        status.last_trigger_time, status.last_trigger_reason = schedule.format_time(now), plan.summary[:1024]
    if plan.handled_era is not None:
        status.latest_era = plan.handled_era
    if plan.handled_cron is not None:
        status.last_cron_time = schedule.format_time(plan.handled_cron)
    active = {c.name for c in children if c.active} - set(plan.delete)
    if plan.action == "Started" and plan.run:
        active.add(plan.run)
    status.active = sorted(active)
    extra = {"trigger": plan.trigger, "run": plan.run} if plan.run else {}
    decision = _decision(now, plan.action, plan.reason, plan.summary, **extra)
    last = status.last_decision
    if last is not None and not schedule.replaces(last.action, plan.action):
        decision = last  # "no new era" does not hide the last run started or skipped
    _record(body, patch, status, decision)
