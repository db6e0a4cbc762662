"""The RetrainJob lifecycle as plain functions: each step reads the object and returns a status patch and events."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from kretrain.api import TERMINAL_STATES, Fallback, ModelRef, RetrainJobSpec, RunReport
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
    run_names,
    spec_error_message,
    termination_message,
    with_condition,
)
from kretrain.promotion import Conclusion, conclude, fallback_spec, wants_fallback
from kretrain.registry import ConditionalWritesIgnored, InvalidRunRecord, RegistryError
from kretrain.store import StoreError

if TYPE_CHECKING:
    from kretrain.registry import Registry

__all__ = [
    "MAX_RECORD_TRIES",
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
    "poll",
    "run_names",
    "set_suspend",
    "spec_error_message",
    "start",
    "start_fallback",
    "termination_message",
    "with_condition",
]

REGISTRY_ERRORS = (StoreError, RegistryError, ClientError, BotoCoreError)
"""What a registry call raises when S3 or a record is at fault (anything else is a bug and reaches Kopf)."""
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
    meta, status = body["metadata"], dict(body.get("status") or {})
    if status.get("state") in TERMINAL_STATES:
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
        return Outcome(retry=f"cannot list Jobs in {ns}: {exc}")
    if isinstance(parsed, str):
        # Invalid now, e.g. the admin tightened the policy while a run was under way: stop its Job too.
        running = [j for j in existing if (j.get("metadata") or {}).get("name") in ours and not _finished(j)]
        try:
            for job in running:
                deps.kube.patch_job(ns, job["metadata"]["name"], {"spec": {"suspend": True}})
        except KubeError as exc:
            return Outcome(retry=f"cannot suspend the Job of a run whose spec is now invalid: {exc}")
        stopped = f" (Job {', '.join(j['metadata']['name'] for j in running)} suspended)" if running else ""
        return failed(body, "InvalidSpec", f"invalid spec: {parsed}{stopped}", now, permanent=True)
    spec, resolved = parsed
    if any((j.get("metadata") or {}).get("name") in ours for j in existing):
        if status.get("jobName") and status.get("state"):
            return Outcome()  # a resumed operator: the run is already under way
        build = StatusBuilder(body, now).set(
            runId=run, jobName=jname, state="Suspended" if spec.suspend else "Training"
        )
        build.condition("Training", "True", "JobFound", f"Job {jname} of run {run} already exists")
        return Outcome(status=build.build(), events=[Event("Normal", "JobFound", f"Using existing Job {jname}")])
    if status.get("jobName"):
        return Outcome()  # the Job existed and is gone (TTL or deleted): the poller settles the run
    try:
        incumbent = deps.registry_for(resolved).incumbent(spec.model)
    except REGISTRY_ERRORS as exc:  # S3 unreachable or the pointer unreadable: wait, do not start blind
        msg = f"cannot read the incumbent of model {spec.model} from {resolved.storage.registry}: {exc}"
        waiting = StatusBuilder(body, now).set(state="Pending", runId=run)
        waiting.condition("Training", "False", "WaitingForRegistry", msg[:2000])
        return Outcome(status=waiting.build() if status.get("state") != "Pending" else {}, retry=msg)
    try:
        created = create_run_objects(ns, uid, run, jname, resolved, incumbent, deps)
    except JobRejected as exc:
        return failed(body, "JobRejected", str(exc), now, True)
    except KubeError as exc:
        return Outcome(retry=f"cannot create Job {jname}: {exc}")
    against = f"incumbent {incumbent.version}" if incumbent else "no incumbent (first model of the line)"
    build = StatusBuilder(body, now).set(
        runId=run,
        jobName=jname,
        state="Suspended" if spec.suspend else "Training",
        incumbent=incumbent.dump() if incumbent else None,
    )
    build.condition("Training", "True", "JobCreated", f"Job {jname} trains run {run} against {against}")
    events = [Event("Normal", "JobCreated", f"Created Job {jname} for run {run} against {against}")]
    if spec.suspend:
        build.condition("Suspended", "True", "SuspendedBySpec", "spec.suspend is true: the Job waits")
        events.append(Event("Normal", "Suspended", f"Job {jname} created suspended (spec.suspend is true)"))
    if not created:
        events = [Event("Normal", "JobFound", f"Job {jname} already existed (409); not created again")]
    return Outcome(status=build.build(), events=events)


def set_suspend(body: Mapping[str, Any], suspend: bool, deps: Deps) -> Outcome:
    """Suspend or resume the run's Job after a change of spec.suspend."""
    meta, status = body["metadata"], dict(body.get("status") or {})
    if status.get("state") in TERMINAL_STATES or not status.get("jobName"):
        return Outcome()
    _, jname = run_names(body)
    try:
        if deps.kube.get_job(meta["namespace"], jname) is not None:
            deps.kube.patch_job(meta["namespace"], jname, {"spec": {"suspend": suspend}})
    except KubeError as exc:
        return Outcome(retry=f"cannot patch Job {jname}: {exc}")
    build, events = StatusBuilder(body, deps.now()), list[Event]()
    correct_names(body, build, events, *run_names(body))
    if suspend:
        build.set(state="Suspended").condition("Suspended", "True", "SuspendedBySpec", "spec.suspend is true")
        return Outcome(build.build(), [*events, Event("Normal", "Suspended", f"Suspended Job {jname}")])
    build.set(state="Training").condition("Suspended", "False", "Resumed", "spec.suspend is false")
    return Outcome(build.build(), [*events, Event("Normal", "Resumed", f"Resumed Job {jname}")])


def poll(body: Mapping[str, Any], deps: Deps, retry: int = 0) -> Outcome:
    """Follow a started run: progress while it trains, the decision once the Job succeeds, why it failed.

    `retry` is how many tries in a row failed before this one (Kopf's in-memory count, which a status writer
    cannot reset): a malformed or oversized report/progress fails the run on try MAX_RECORD_TRIES.
    """
    meta, status = body["metadata"], dict(body.get("status") or {})
    if status.get("state") in TERMINAL_STATES or not status.get("jobName"):
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
        return Outcome(retry=f"cannot read Job {jname}: {exc}")
    try:
        return _follow(body, spec, resolved, job, run, jname, deps)
    except InvalidRunRecord as exc:
        what = "InvalidReport" if exc.uri.endswith("/report.json") else "InvalidProgress"
        if retry + 1 >= MAX_RECORD_TRIES:
            return failed(body, what, bounds.short(f"run {run}: {exc} (try {retry + 1} of {MAX_RECORD_TRIES})"), now)
        return Outcome(retry=bounds.short(f"try {retry + 1} of {MAX_RECORD_TRIES}: {exc}"))
    except REGISTRY_ERRORS as exc:  # S3 errors while reading progress/report: try again later
        return Outcome(retry=bounds.short(f"cannot read run {run} from the registry: {type(exc).__name__}: {exc}"))


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
    status, ns, now = dict(body.get("status") or {}), body["metadata"]["namespace"], deps.now()
    registry = deps.registry_for(resolved)
    if job is None:
        with CONCLUDING:
            report = registry.read_run_report(spec.model, run)
            if report is None:
                msg = f"Job {jname} no longer exists and run {run} left no report; create a new RetrainJob to retry"
                return failed(body, "JobLost", msg, now)
            return finish(body, spec, resolved, report, deps)
    phase, reason, message = job_state(job)
    if phase == "failed":
        try:
            pod_message = termination_message(deps.kube.job_pods(ns, jname))
        except KubeError:
            pod_message = ""
        text = f"Job {jname} failed: {reason}" + (f" ({message})" if message else "")
        text += f". Trainer: {pod_message}" if pod_message else ". The pod left no termination message."
        return failed(body, condition_reason(reason, "JobFailed"), text, now)
    if phase == "succeeded":
        with CONCLUDING:
            return finish(body, spec, resolved, registry.read_run_report(spec.model, run), deps)
    build = StatusBuilder(body, now)
    events: list[Event] = []
    correct_names(body, build, events, run, jname)
    if phase == "suspended" and status.get("state") != "Suspended":
        build.set(state="Suspended").condition("Suspended", "True", "JobSuspended", f"Job {jname} is suspended")
        events.append(Event("Normal", "Suspended", f"Job {jname} is suspended"))
    if phase == "running" and status.get("state") != "Training":
        build.set(state="Training").condition("Suspended", "False", "Resumed", f"Job {jname} is running")
        events.append(Event("Normal", "Training", f"Job {jname} is running"))
    progress = registry.read_progress(spec.model, run)
    if progress is not None:
        new = bounds.progress(progress)
        if new != status.get("progress"):
            build.set(progress=new)
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
    meta, status = body["metadata"], dict(body.get("status") or {})
    now = deps.now()
    # status.decision is not consulted: a status writer could set it to stop the run from ever concluding
    # (conclude itself is idempotent; a concluded run's state is terminal and is not polled again).
    run, jname = run_names(body)
    if report is None:
        msg = f"Job {jname} succeeded but runs/{run}/report.json is missing from the registry"
        return failed(body, "NoReport", msg, now)
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
        return failed(body, "RegistryUnsafe", bounds.short(str(exc), bounds.MAX_CONDITION_MESSAGE), now)
    if wants_fallback(spec, conclusion) and not status.get("fallback"):
        return start_fallback(body, spec, resolved, conclusion, deps)
    decision, reason = bounds.decision(conclusion.decision), conclusion.reason
    text = bounds.short(" ".join(decision.reasons) or decision.summary, bounds.MAX_CONDITION_MESSAGE)
    if conclusion.failed:
        out = failed(body, reason, f"run {run}: the report was refused: {text}", now)
        out.status.update(runId=run, jobName=jname, decision=decision.dump())
        return out
    state = "Promoted" if decision.promoted else "Rejected"
    build = StatusBuilder(body, now).set(
        runId=run,
        jobName=jname,
        state=state,
        decision=decision.dump(),
        evaluation=bounds.comparison(conclusion.comparison, spec.dataset.eras),
        checks=bounds.checks(report.checks),
        candidateMetric=metric_text(report.candidate_evaluation.pooled.get(metric)),
        incumbentMetric=metric_text(
            report.incumbent_evaluation.pooled.get(metric) if report.incumbent_evaluation else None
        ),
    )
    if conclusion.candidate:
        build.set(candidate=conclusion.candidate.dump())
    if conclusion.incumbent and reason != "IncumbentChanged":
        build.set(incumbent=conclusion.incumbent.dump())
    build.condition("Training", "False", "JobSucceeded", f"Job {jname} succeeded")
    build.condition("Evaluated", "True", "Evaluated", f"{metric} candidate vs incumbent on every era's test split")
    build.condition("Promoted", "True" if decision.promoted else "False", reason, text)
    patch = build.build()
    if bounds.size(patch) > bounds.MAX_STATUS_BYTES:  # huge numbers in the report: keep the pooled figures only
        patch["evaluation"] = bounds.comparison(conclusion.comparison, spec.dataset.eras, with_eras=False)
    if bounds.size(patch) > bounds.MAX_STATUS_BYTES:  # still too large: the report has the checks
        patch["checks"] = []
    event = Event("Normal", "Promoted", bounds.short(f"Promoted {run}: {text}"))
    if not decision.promoted:
        event = Event(
            "Normal" if reason == "DryRun" else "Warning", reason, bounds.short(f"Not promoted {run}: {text}")
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
        return Outcome(retry=f"cannot read the incumbent of model {spec.model}: {exc}")
    try:
        create_run_objects(ns, uid, run, jname, fallback_spec(resolved), incumbent, deps)
    except JobRejected as exc:
        return failed(body, "JobRejected", str(exc), now, True)
    except KubeError as exc:
        return Outcome(retry=f"cannot create Job {jname}: {exc}")
    rejected = bounds.decision(conclusion.decision)
    fallback = Fallback(run_id=first_run, job_name=first_job, decision=rejected)
    against = f"incumbent {incumbent.version}" if incumbent else "no incumbent"
    build = StatusBuilder(body, now).set(
        runId=run,
        jobName=jname,
        state="Training",
        fallback=fallback.dump(),
        progress=None,
        incumbent=incumbent.dump() if incumbent else None,
    )
    message = f"incremental candidate {first_run} failed the gate ({rejected.summary}); Job {jname} runs a full retrain"
    build.condition("Training", "True", "FallbackToFull", bounds.short(message, bounds.MAX_CONDITION_MESSAGE))
    events = [
        Event("Warning", "GateFailed", bounds.short(f"Not promoted {first_run}: {' '.join(rejected.reasons)}")),
        Event("Normal", "FallbackToFull", f"Created Job {jname}: full retrain of run {run} against {against}"),
    ]
    return Outcome(status=build.build(), events=events)
