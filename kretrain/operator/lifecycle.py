"""The RetrainJob lifecycle as plain functions: each step reads the object and returns a status patch and events."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from kretrain.api import TERMINAL_STATES, Fallback, ModelRef, RetrainJobSpec, RunReport
from kretrain.api.conditions import Cond, Reason, Status
from kretrain.operator import bounds, jobs
from kretrain.operator.kube import KubeError
from kretrain.operator.settings import OperatorSettings
from kretrain.operator.status_patch import (
    Event,
    Outcome,
    StatusBuilder,
    condition_reason,
    correct_names,
    failed,
    job_state,
    metric_text,
    parse_spec,
    parse_status,
    run_names,
    spec_error_message,
    termination_message,
    with_condition,
)
from kretrain.promotion import Conclusion, conclude, fallback_spec, wants_fallback
from kretrain.registry import ConditionalWritesIgnored, InvalidRunRecord, RegistryError
from kretrain.store import StoreError, StoreUnavailable

if TYPE_CHECKING:
    from kretrain.registry import Registry

__all__ = [
    "MAX_RECORD_TRIES",
    "REFUSED_RETRY_DELAY",
    "REGISTRY_ERRORS",
    "Deps",
    "Event",
    "JobRejected",
    "KubeApi",
    "Outcome",
    "StatusBuilder",
    "correct_names",
    "create_run_objects",
    "failed",
    "finish",
    "job_state",
    "metric_text",
    "parse_spec",
    "parse_status",
    "poll",
    "run_names",
    "set_suspend",
    "spec_error_message",
    "start",
    "start_fallback",
    "termination_message",
    "transient",
    "waiting",
    "with_condition",
]

REGISTRY_ERRORS = (StoreError, RegistryError)
"""What a registry call raises when S3 or a record is at fault (anything else is a bug and reaches Kopf)."""
KNOWN_FAULTS = (StoreError, RegistryError, KubeError)
"""The faults a step turns into a retry; any other exception is a bug and reaches Kopf (its own backoff)."""
TRANSIENT_KUBE_STATUS = frozenset({0, 408, 429})
"""KubeError statuses worth a quick retry besides 5xx (0: the API server was not reached)."""
REFUSED_RETRY_DELAY = 60.0
"""Seconds before trying again after a fault someone has to fix (access denied, an unreadable record): Kopf's own
default backoff. A transient fault is retried after KRETRAIN_RETRY_DELAY."""
MAX_RECORD_TRIES = 3
"""A malformed or oversized progress.json/report.json fails the run on this try (Kopf counts the tries)."""
CONCLUDING = threading.Lock()
"""One run's report is read and concluded at a time: a report may hold MAX_REPORT_BYTES of JSON (several hundred
MiB once parsed), and runs finishing together (Kopf polls them in parallel threads) must not add up past the
operator's memory limit."""


class KubeApi(Protocol):
    """The part of kretrain.operator.kube.Kube the lifecycle uses."""

    def find_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...
    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def create(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]: ...
    def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...
    def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]: ...


@dataclass
class Deps:
    """What the lifecycle needs from the outside world (the handlers build it; tests can too)."""

    settings: OperatorSettings
    kube: KubeApi
    registry_for: Callable[[RetrainJobSpec], Registry]
    adopt: Callable[[list[dict[str, Any]]], None]
    actor: str = "kretrain-operator"
    now: Callable[[], str] = field(default=lambda: datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


# ---- faults ------------------------------------------------------------------------------------------
def transient(exc: BaseException) -> bool:
    """Whether trying again soon can succeed with nothing changed: the store or the API server unreachable,
    throttling or failing (StoreUnavailable, KubeError 0/408/429/5xx)."""
    if isinstance(exc, StoreUnavailable):
        return True
    return isinstance(exc, KubeError) and (exc.status in TRANSIENT_KUBE_STATUS or exc.status >= 500)


def waiting(message: str, exc: BaseException, status: dict[str, Any] | None = None) -> Outcome:
    """Try the step again later: soon after a transient fault, after REFUSED_RETRY_DELAY after any other known one."""
    text = bounds.short(f"{message}: {type(exc).__name__}: {exc}")
    return Outcome(status=status or {}, retry=text, retry_delay=None if transient(exc) else REFUSED_RETRY_DELAY)


# ---- run objects -------------------------------------------------------------------------------------
class JobRejected(Exception):
    """The API server refused the run's Job or ConfigMap for good (400, 403, 422)."""


def create_run_objects(
    ns: str, uid: str, run: str, jname: str, resolved: RetrainJobSpec, incumbent: ModelRef | None, deps: Deps
) -> bool:
    """Create a run's spec ConfigMap and Job, adopted by the RetrainJob; False when the Job already existed
    (409). Raises JobRejected when the API server refuses them, KubeError when it should be retried."""
    object_labels = jobs.labels(uid, jname)
    configmap = jobs.build_configmap(jname, ns, resolved, object_labels)
    job = jobs.build_job(
        name=jname,
        namespace=ns,
        run=run,
        spec=resolved,
        incumbent_version=incumbent.version if incumbent else None,
        object_labels=object_labels,
        settings=deps.settings,
    )
    deps.adopt([configmap, job])
    try:
        deps.kube.create(configmap)
        _, created = deps.kube.create(job)
    except KubeError as exc:
        if exc.status in (400, 403, 422):
            raise JobRejected(f"the API server rejected Job {jname}: {exc.message}") from exc
        raise
    return created


# ---- steps -------------------------------------------------------------------------------------------
def _finished(job: Mapping[str, Any]) -> bool:
    """Whether a Job has completed or failed (suspending it would change nothing)."""
    return job_state(job)[0] in ("succeeded", "failed")


def start(body: Mapping[str, Any], deps: Deps) -> Outcome:
    """Validate, resolve the incumbent and create the run's ConfigMap and Job (once, whatever happens)."""
    meta, status = body["metadata"], parse_status(body.get("status"))
    if status.state in TERMINAL_STATES:
        return Outcome()
    now = deps.now()
    parsed = parse_spec(body, deps.settings)
    ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
    run = jobs.run_id(ns, name, uid)
    jname = jobs.job_name(run)
    ours = {jname, jobs.job_name(jobs.fallback_run_id(run))}
    try:
        existing = deps.kube.find_jobs(ns, jobs.selector(uid))
    except KubeError as exc:
        return waiting(f"cannot list Jobs in {ns}", exc)
    if isinstance(parsed, str):
        # Invalid now, e.g. the admin tightened the policy while a run was under way: stop its Job too.
        running = [j for j in existing if (j.get("metadata") or {}).get("name") in ours and not _finished(j)]
        try:
            for job in running:
                deps.kube.patch_job(ns, job["metadata"]["name"], {"spec": {"suspend": True}})
        except KubeError as exc:
            return waiting("cannot suspend the Job of a run whose spec is now invalid", exc)
        stopped = f" (Job {', '.join(j['metadata']['name'] for j in running)} suspended)" if running else ""
        return failed(body, Reason.INVALID_SPEC, f"invalid spec: {parsed}{stopped}", now, permanent=True)
    spec, resolved = parsed
    if any((j.get("metadata") or {}).get("name") in ours for j in existing):
        if status.job_name and status.state:
            return Outcome()  # a resumed operator: the run is already under way
        build = StatusBuilder(body, now).names(run, jname)
        build.status.state = "Suspended" if spec.suspend else "Training"
        build.condition(Cond.TRAINING, Status.TRUE, Reason.JOB_FOUND, f"Job {jname} of run {run} already exists")
        return Outcome(status=build.build(), events=[Event("Normal", Reason.JOB_FOUND, f"Using existing Job {jname}")])
    if status.job_name:
        return Outcome()  # the Job existed and is gone (TTL or deleted): the poller settles the run
    try:
        incumbent = deps.registry_for(resolved).incumbent(spec.model)
    except REGISTRY_ERRORS as exc:  # S3 unreachable or the pointer unreadable: wait, do not start blind
        msg = f"cannot read the incumbent of model {spec.model} from {resolved.storage.registry}"
        wait = StatusBuilder(body, now)
        wait.status.state, wait.status.run_id = "Pending", run
        wait.condition(Cond.TRAINING, Status.FALSE, Reason.WAITING_FOR_REGISTRY, f"{msg}: {exc}"[:2000])
        return waiting(msg, exc, wait.build() if status.state != "Pending" else {})
    try:
        created = create_run_objects(ns, uid, run, jname, resolved, incumbent, deps)
    except JobRejected as exc:
        return failed(body, Reason.JOB_REJECTED, str(exc), now, True)
    except KubeError as exc:
        return waiting(f"cannot create Job {jname}", exc)
    against = f"incumbent {incumbent.version}" if incumbent else "no incumbent (first model of the line)"
    build = StatusBuilder(body, now).names(run, jname)
    build.status.state = "Suspended" if spec.suspend else "Training"
    build.status.incumbent = incumbent
    build.condition(Cond.TRAINING, Status.TRUE, Reason.JOB_CREATED, f"Job {jname} trains run {run} against {against}")
    events = [Event("Normal", Reason.JOB_CREATED, f"Created Job {jname} for run {run} against {against}")]
    if spec.suspend:
        build.condition(Cond.SUSPENDED, Status.TRUE, Reason.SUSPENDED_BY_SPEC, "spec.suspend is true: the Job waits")
        events.append(Event("Normal", Reason.SUSPENDED, f"Job {jname} created suspended (spec.suspend is true)"))
    if not created:
        events = [Event("Normal", Reason.JOB_FOUND, f"Job {jname} already existed (409); not created again")]
    return Outcome(status=build.build(), events=events)


def set_suspend(body: Mapping[str, Any], suspend: bool, deps: Deps) -> Outcome:
    """Suspend or resume the run's Job after a change of spec.suspend."""
    meta, status = body["metadata"], parse_status(body.get("status"))
    if status.state in TERMINAL_STATES or not status.job_name:
        return Outcome()
    _, jname = run_names(body)
    try:
        if deps.kube.get_job(meta["namespace"], jname) is not None:
            deps.kube.patch_job(meta["namespace"], jname, {"spec": {"suspend": suspend}})
    except KubeError as exc:
        return waiting(f"cannot patch Job {jname}", exc)
    build, events = StatusBuilder(body, deps.now()), list[Event]()
    correct_names(body, build, events, *run_names(body))
    if suspend:
        build.status.state = "Suspended"
        build.condition(Cond.SUSPENDED, Status.TRUE, Reason.SUSPENDED_BY_SPEC, "spec.suspend is true")
        return Outcome(build.build(), [*events, Event("Normal", Reason.SUSPENDED, f"Suspended Job {jname}")])
    build.status.state = "Training"
    build.condition(Cond.SUSPENDED, Status.FALSE, Reason.RESUMED, "spec.suspend is false")
    return Outcome(build.build(), [*events, Event("Normal", Reason.RESUMED, f"Resumed Job {jname}")])


def poll(body: Mapping[str, Any], deps: Deps, retry: int = 0) -> Outcome:
    """Follow a started run: progress while it trains, the decision once the Job succeeds, why it failed.

    `retry` is how many tries in a row failed before this one (Kopf's in-memory count, which a status writer
    cannot reset): a malformed or oversized report/progress fails the run on try MAX_RECORD_TRIES.
    """
    meta, status = body["metadata"], parse_status(body.get("status"))
    if status.state in TERMINAL_STATES or not status.job_name:
        return Outcome()
    parsed = parse_spec(body, deps.settings)
    if isinstance(parsed, str):
        return Outcome()
    spec, resolved = parsed
    ns, now = meta["namespace"], deps.now()
    run, jname = run_names(body)
    try:
        job = deps.kube.get_job(ns, jname)
    except KubeError as exc:
        return waiting(f"cannot read Job {jname}", exc)
    try:
        return _follow(body, spec, resolved, job, run, jname, deps)
    except InvalidRunRecord as exc:
        what = Reason.INVALID_REPORT if exc.uri.endswith("/report.json") else Reason.INVALID_PROGRESS
        if retry + 1 >= MAX_RECORD_TRIES:
            return failed(body, what, bounds.short(f"run {run}: {exc} (try {retry + 1} of {MAX_RECORD_TRIES})"), now)
        return Outcome(retry=bounds.short(f"try {retry + 1} of {MAX_RECORD_TRIES}: {exc}"))
    except REGISTRY_ERRORS as exc:  # S3 errors while reading progress/report: try again later
        return waiting(f"cannot read run {run} from the registry", exc)


def _follow(
    body: Mapping[str, Any],
    spec: RetrainJobSpec,
    resolved: RetrainJobSpec,
    job: dict[str, Any] | None,
    run: str,
    jname: str,
    deps: Deps,
) -> Outcome:
    """poll() once the Job was read: the registry reads (their errors are handled by poll)."""
    ns, now = body["metadata"]["namespace"], deps.now()
    registry = deps.registry_for(resolved)
    if job is None:
        with CONCLUDING:
            report = registry.read_run_report(spec.model, run)
            if report is None:
                msg = f"Job {jname} no longer exists and run {run} left no report; create a new RetrainJob to retry"
                return failed(body, Reason.JOB_LOST, msg, now)
            return finish(body, spec, resolved, report, deps)
    phase, reason, message = job_state(job)
    if phase == "failed":
        try:
            pod_message = termination_message(deps.kube.job_pods(ns, jname))
        except KubeError:
            pod_message = ""
        text = f"Job {jname} failed: {reason}" + (f" ({message})" if message else "")
        text += f". Trainer: {pod_message}" if pod_message else ". The pod left no termination message."
        return failed(body, condition_reason(reason, Reason.JOB_FAILED), text, now)
    if phase == "succeeded":
        with CONCLUDING:
            return finish(body, spec, resolved, registry.read_run_report(spec.model, run), deps)
    build = StatusBuilder(body, now)
    events: list[Event] = []
    correct_names(body, build, events, run, jname)
    if phase == "suspended" and build.current.state != "Suspended":
        build.status.state = "Suspended"
        build.condition(Cond.SUSPENDED, Status.TRUE, Reason.JOB_SUSPENDED, f"Job {jname} is suspended")
        events.append(Event("Normal", Reason.SUSPENDED, f"Job {jname} is suspended"))
    if phase == "running" and build.current.state != "Training":
        build.status.state = "Training"
        build.condition(Cond.SUSPENDED, Status.FALSE, Reason.RESUMED, f"Job {jname} is running")
        events.append(Event("Normal", Reason.TRAINING, f"Job {jname} is running"))
    progress = registry.read_progress(spec.model, run)
    if progress is not None:
        build.status.progress = bounds.progress(progress)
    return Outcome(status=build.build(), events=events)


def finish(
    body: Mapping[str, Any], spec: RetrainJobSpec, resolved: RetrainJobSpec, report: RunReport | None, deps: Deps
) -> Outcome:
    """Apply the promotion policy to the run's report, promote at most once, record the decision.

    The decision and the conditional promotion are kretrain.promotion.conclude, the code `kretrain run` uses;
    the run id it binds the report to is the operator's own (run_names), never status.runId or the report's.
    A report that does not belong to the run (ReportMismatch) fails the run. The status keeps pooled and
    per-era figures of the spec's eras; per-class metrics and anything beyond the bounds stay in the report.
    """
    meta, now = body["metadata"], deps.now()
    # status.decision is not consulted: a status writer could set it to stop the run from ever concluding
    # (conclude itself is idempotent; a concluded run's state is terminal and is not polled again).
    run, jname = run_names(body)
    if report is None:
        msg = f"Job {jname} succeeded but runs/{run}/report.json is missing from the registry"
        return failed(body, Reason.NO_REPORT, msg, now)
    metric = spec.promotion.metric
    try:
        conclusion = conclude(
            deps.registry_for(resolved),
            report,
            spec,
            actor=f"{deps.actor} {meta['namespace']}/{meta['name']}",
            now=now,
            run_id=run,
        )
    except ConditionalWritesIgnored as exc:  # the verdict is kept: retrying could never promote
        return failed(body, Reason.REGISTRY_UNSAFE, bounds.short(str(exc), bounds.MAX_CONDITION_MESSAGE), now)
    build = StatusBuilder(body, now)
    if wants_fallback(spec, conclusion) and not build.current.fallback:
        return start_fallback(body, spec, resolved, conclusion, deps)
    decision, reason = bounds.decision(conclusion.decision), conclusion.reason
    text = bounds.short(" ".join(decision.reasons) or decision.summary, bounds.MAX_CONDITION_MESSAGE)
    build.names(run, jname).status.decision = decision
    if conclusion.failed:
        return failed(body, reason, f"run {run}: the report was refused: {text}", now, build=build)
    new = build.status
    new.state = "Promoted" if decision.promoted else "Rejected"
    new.evaluation = bounds.comparison(conclusion.comparison, spec.dataset.eras)
    new.checks = bounds.checks(report.checks)
    new.candidate_metric = metric_text(report.candidate_evaluation.pooled.get(metric))
    new.incumbent_metric = metric_text(
        report.incumbent_evaluation.pooled.get(metric) if report.incumbent_evaluation else None
    )
    if conclusion.candidate:
        new.candidate = conclusion.candidate
    if conclusion.incumbent and reason != Reason.INCUMBENT_CHANGED:
        new.incumbent = conclusion.incumbent
    build.condition(Cond.TRAINING, Status.FALSE, Reason.JOB_SUCCEEDED, f"Job {jname} succeeded")
    build.condition(
        Cond.EVALUATED, Status.TRUE, Reason.EVALUATED, f"{metric} candidate vs incumbent on every era's test split"
    )
    build.condition(Cond.PROMOTED, Status.TRUE if decision.promoted else Status.FALSE, reason, text)
    patch = build.build()
    if bounds.size(patch) > bounds.MAX_STATUS_BYTES:  # huge numbers in the report: keep the pooled figures only
        new.evaluation = bounds.comparison(conclusion.comparison, spec.dataset.eras, with_eras=False)
        patch = build.build()
    if bounds.size(patch) > bounds.MAX_STATUS_BYTES:  # still too large: the report has the checks
        new.checks = []
        patch = build.build()
    event = Event("Normal", Reason.PROMOTED, bounds.short(f"Promoted {run}: {text}"))
    if not decision.promoted:
        event = Event(
            "Normal" if reason == Reason.DRY_RUN else "Warning", reason, bounds.short(f"Not promoted {run}: {text}")
        )
    return Outcome(status=patch, events=[event], decision_reason=reason)


def start_fallback(
    body: Mapping[str, Any], spec: RetrainJobSpec, resolved: RetrainJobSpec, conclusion: Conclusion, deps: Deps
) -> Outcome:
    """fallbackToFull: record why the incremental candidate was rejected and start the full retrain's Job.

    Idempotent like `start`: after a restart the same Job name is created again and 409 means it exists.
    The full run's result becomes the RetrainJob's decision; it never falls back again.
    """
    meta = body["metadata"]
    ns, uid, now = meta["namespace"], meta["uid"], deps.now()
    first_run = jobs.run_id(ns, meta["name"], uid)
    first_job = jobs.job_name(first_run)
    run = jobs.fallback_run_id(first_run)
    jname = jobs.job_name(run)
    try:
        incumbent = deps.registry_for(resolved).incumbent(spec.model)
    except REGISTRY_ERRORS as exc:  # S3 unreachable: wait, do not start blind
        return waiting(f"cannot read the incumbent of model {spec.model}", exc)
    try:
        create_run_objects(ns, uid, run, jname, fallback_spec(resolved), incumbent, deps)
    except JobRejected as exc:
        return failed(body, Reason.JOB_REJECTED, str(exc), now, True)
    except KubeError as exc:
        return waiting(f"cannot create Job {jname}", exc)
    rejected = bounds.decision(conclusion.decision)
    against = f"incumbent {incumbent.version}" if incumbent else "no incumbent"
    build = StatusBuilder(body, now).names(run, jname)
    new = build.status
    new.state = "Training"
    new.fallback = Fallback(run_id=first_run, job_name=first_job, decision=rejected)
    new.progress = None
    new.incumbent = incumbent
    message = f"incremental candidate {first_run} failed the gate ({rejected.summary}); Job {jname} runs a full retrain"
    build.condition(Cond.TRAINING, Status.TRUE, Reason.FALLBACK_TO_FULL, message)
    events = [
        Event("Warning", Reason.GATE_FAILED, bounds.short(f"Not promoted {first_run}: {' '.join(rejected.reasons)}")),
        Event("Normal", Reason.FALLBACK_TO_FULL, f"Created Job {jname}: full retrain of run {run} against {against}"),
    ]
    return Outcome(status=build.build(), events=events)
