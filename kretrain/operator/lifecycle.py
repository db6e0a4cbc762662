"""The RetrainJob lifecycle as plain functions: each step reads the object and returns a status patch and events.

start, set_suspend and poll are here; finish and start_fallback (kretrain.operator.conclusion) end a run; what
the steps share (Deps, the run's objects, which faults retry) is kretrain.operator.steps. Every name stays
importable from this module.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kretrain.api import TERMINAL_STATES, RetrainJobSpec
from kretrain.api.conditions import Cond, Reason, Status
from kretrain.operator import bounds, jobs, kueue
from kretrain.operator.conclusion import finish, start_fallback
from kretrain.operator.kube import KubeError
from kretrain.operator.report_trust import UntrustedReport, read_signed_report
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
from kretrain.operator.steps import (
    REFUSED_RETRY_DELAY,
    REGISTRY_ERRORS,
    TRANSIENT_KUBE_STATUS,
    Deps,
    JobRejected,
    KubeApi,
    controlled_by,
    create_run_objects,
    find_runs,
    get_run,
    not_owned_message,
    patch_run,
    run_pods,
    transient,
    waiting,
    workload_names,
)
from kretrain.registry import InvalidRunRecord

if TYPE_CHECKING:
    from kretrain.registry import Registry

__all__ = [
    "MAX_RECORD_TRIES",
    "REFUSED_RETRY_DELAY",
    "REGISTRY_ERRORS",
    "TRANSIENT_KUBE_STATUS",
    "Deps",
    "Event",
    "JobRejected",
    "KubeApi",
    "Outcome",
    "StatusBuilder",
    "condition_reason",
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

MAX_RECORD_TRIES = 3
"""A malformed or oversized progress.json/report.json fails the run on this try (Kopf counts the tries)."""
CONCLUDING = threading.Lock()
"""One run's report is read and concluded at a time: a report may hold MAX_REPORT_BYTES of JSON (several hundred
MiB once parsed), and runs finishing together (Kopf polls them in parallel threads) must not add up past the
operator's memory limit."""


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
    ours = workload_names(jname) | workload_names(jobs.job_name(jobs.fallback_run_id(run)))
    try:
        existing = find_runs(deps, ns, jobs.selector(uid), parsed[1] if not isinstance(parsed, str) else None)
    except KubeError as exc:
        return waiting(f"cannot list Jobs in {ns}", exc)
    mine = [j for j in existing if (j.get("metadata") or {}).get("name") in ours]
    foreign = [j for j in mine if not controlled_by(j, uid)]
    if foreign:  # labels anyone may set: never taken for the run's own, never patched
        return failed(body, Reason.JOB_NOT_OWNED, not_owned_message(foreign[0], uid), now, permanent=True)
    if isinstance(parsed, str):
        # Invalid now, e.g. the admin tightened the policy while a run was under way: stop its Job too.
        running = [j for j in mine if not _finished(j)]
        try:
            for job in running:
                patch_run(deps, ns, job, {"spec": {"suspend": True}})
        except KubeError as exc:
            return waiting("cannot suspend the Job of a run whose spec is now invalid", exc)
        stopped = f" (Job {', '.join(j['metadata']['name'] for j in running)} suspended)" if running else ""
        return failed(body, Reason.INVALID_SPEC, f"invalid spec: {parsed}{stopped}", now, permanent=True)
    spec, resolved = parsed
    if mine:
        if status.job_name and status.state:
            return Outcome()  # a resumed operator: the run is already under way
        build = StatusBuilder(body, now).names(run, jname)
        build.status.state = "Suspended" if spec.suspend else "Training"
        build.condition(Cond.TRAINING, Status.TRUE, Reason.JOB_FOUND, f"Job {jname} of run {run} already exists")
        _queued(build, spec, resolved, deps)
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
    if queue := _queued(build, spec, resolved, deps):
        events.append(Event("Normal", Reason.WAITING_FOR_ADMISSION, f"Job {jname} waits for Kueue queue {queue}"))
    if spec.suspend:
        build.condition(Cond.SUSPENDED, Status.TRUE, Reason.SUSPENDED_BY_SPEC, "spec.suspend is true: the Job waits")
        events.append(Event("Normal", Reason.SUSPENDED, f"Job {jname} created suspended (spec.suspend is true)"))
    if not created:
        events = [Event("Normal", Reason.JOB_FOUND, f"Job {jname} already existed (409); not created again")]
    return Outcome(status=build.build(), events=events)


def _queued(build: StatusBuilder, spec: RetrainJobSpec, resolved: RetrainJobSpec, deps: Deps) -> str | None:
    """A new run's Job queued on a Kueue LocalQueue (and not held by spec.suspend): state Queued; the queue."""
    queue = kueue.queue_name(resolved, deps.settings)
    if queue is None or spec.suspend:
        return None
    build.status.state = "Queued"
    msg = f"the Job waits for admission by Kueue queue {queue}"
    build.condition(Cond.QUEUED, Status.TRUE, Reason.WAITING_FOR_ADMISSION, msg)
    return queue


def set_suspend(body: Mapping[str, Any], suspend: bool, deps: Deps) -> Outcome:
    """Suspend or resume the run's Job after a change of spec.suspend (a queued Job: see kretrain.operator.kueue)."""
    meta, status = body["metadata"], parse_status(body.get("status"))
    if status.state in TERMINAL_STATES or not status.job_name:
        return Outcome()
    _, jname = run_names(body)
    queue: str | None = None
    parsed = parse_spec(body, deps.settings)
    try:
        job = get_run(deps, meta["namespace"], jname, None if isinstance(parsed, str) else parsed[1])
        if job is not None and not controlled_by(job, meta["uid"]):
            return failed(body, Reason.JOB_NOT_OWNED, not_owned_message(job, meta["uid"]), deps.now(), permanent=True)
        if job is not None:
            queue = kueue.queued(job) or kueue.held(job)
            change = kueue.suspend_patch(job, suspend)
            if change is not None:
                patch_run(deps, meta["namespace"], job, change)
    except KubeError as exc:
        return waiting(f"cannot patch Job {jname}", exc)
    build, events = StatusBuilder(body, deps.now()), list[Event]()
    correct_names(body, build, events, *run_names(body))
    if suspend:
        build.status.state = "Suspended"
        build.condition(Cond.SUSPENDED, Status.TRUE, Reason.SUSPENDED_BY_SPEC, "spec.suspend is true")
        return Outcome(build.build(), [*events, Event("Normal", Reason.SUSPENDED, f"Suspended Job {jname}")])
    build.condition(Cond.SUSPENDED, Status.FALSE, Reason.RESUMED, "spec.suspend is false")
    if queue and job is not None and (kueue.held(job) or job_state(job)[0] == "suspended"):
        build.status.state = "Queued"
        msg = f"spec.suspend is false: the Job waits for admission by Kueue queue {queue}"
        build.condition(Cond.QUEUED, Status.TRUE, Reason.WAITING_FOR_ADMISSION, msg)
        return Outcome(build.build(), [*events, Event("Normal", Reason.RESUMED, f"Released Job {jname} to {queue}")])
    build.status.state = "Training"
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
        job = get_run(deps, ns, jname, resolved)
    except KubeError as exc:
        return waiting(f"cannot read Job {jname}", exc)
    if job is not None and not controlled_by(job, meta["uid"]):  # its state and report are not the run's
        return failed(body, Reason.JOB_NOT_OWNED, not_owned_message(job, meta["uid"]), now, permanent=True)
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
        return _conclude(body, spec, resolved, registry, run, jname, deps, job_gone=True)
    phase, reason, message = job_state(job)
    if phase == "failed":
        try:
            pod_message = termination_message(run_pods(deps, ns, job, jname))
        except KubeError:
            pod_message = ""
        text = f"Job {jname} failed: {reason}" + (f" ({message})" if message else "")
        text += f". Trainer: {pod_message}" if pod_message else ". The pod left no termination message."
        return failed(body, condition_reason(reason, Reason.JOB_FAILED), text, now)
    if phase == "succeeded":
        return _conclude(body, spec, resolved, registry, run, jname, deps, job_gone=False)
    build = StatusBuilder(body, now)
    events: list[Event] = []
    correct_names(body, build, events, run, jname)
    queue = kueue.queued(job)
    if phase == "suspended" and queue:
        _waiting_for_kueue(build, events, jname, queue)
    elif phase == "suspended" and build.current.state != "Suspended":
        build.status.state = "Suspended"
        build.condition(Cond.SUSPENDED, Status.TRUE, Reason.JOB_SUSPENDED, f"Job {jname} is suspended")
        events.append(Event("Normal", Reason.SUSPENDED, f"Job {jname} is suspended"))
    if phase == "running" and build.current.state != "Training":
        build.status.state = "Training"
        if queue:
            build.condition(Cond.QUEUED, Status.FALSE, Reason.ADMITTED, f"Kueue queue {queue} admitted Job {jname}")
        if not queue or build.has_condition(Cond.SUSPENDED):
            build.condition(Cond.SUSPENDED, Status.FALSE, Reason.RESUMED, f"Job {jname} is running")
        events.append(Event("Normal", Reason.TRAINING, f"Job {jname} is running"))
    progress = registry.read_progress(spec.model, run)
    if progress is not None:
        build.status.progress = bounds.progress(progress)
    return Outcome(status=build.build(), events=events)


def _conclude(
    body: Mapping[str, Any],
    spec: RetrainJobSpec,
    resolved: RetrainJobSpec,
    registry: Registry,
    run: str,
    jname: str,
    deps: Deps,
    *,
    job_gone: bool,
) -> Outcome:
    """A finished (or vanished) run: its report, signed with the run's stage key (kretrain.operator.report_trust),
    concluded by finish(). A report without that MAC fails the run (nothing is promoted or written); a ConfigMap
    that could not be read is tried again."""
    meta, now = body["metadata"], deps.now()
    with CONCLUDING:
        try:
            report = read_signed_report(deps.kube, registry, spec.model, meta["namespace"], meta["uid"], run, jname)
        except KubeError as exc:
            return waiting(f"cannot read ConfigMap {jname} (the stage key of run {run})", exc)
        except UntrustedReport as exc:
            return failed(body, Reason.REPORT_UNSIGNED, f"run {run}: {exc}; not concluded, nothing promoted", now)
        if report is None and job_gone:
            msg = f"Job {jname} no longer exists and run {run} left no report; create a new RetrainJob to retry"
            return failed(body, Reason.JOB_LOST, msg, now)
        return finish(body, spec, resolved, report, deps)


def _waiting_for_kueue(build: StatusBuilder, events: list[Event], jname: str, queue: str) -> None:
    """A queued Job is suspended: state Queued until Kueue admits it (again, when it was preempted)."""
    if build.current.state == "Queued":
        return
    was = next((c for c in build.current.conditions if c.type == Cond.QUEUED), None)
    build.status.state = "Queued"
    if was is not None and was.status == Status.FALSE:  # admitted before: Kueue preempted or evicted it
        msg = f"Kueue suspended Job {jname} again (preempted or evicted); it waits in queue {queue}"
        build.condition(Cond.QUEUED, Status.TRUE, Reason.PREEMPTED, msg)
        events.append(Event("Normal", Reason.PREEMPTED, msg))
    else:
        msg = f"the Job waits for admission by Kueue queue {queue}"
        build.condition(Cond.QUEUED, Status.TRUE, Reason.WAITING_FOR_ADMISSION, msg)
