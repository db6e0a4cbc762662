"""The end of a run: conclude its report (decide, promote at most once, record), or start its full-retrain fallback."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kretrain.api import Fallback, RetrainJobSpec, RunReport
from kretrain.api.conditions import Cond, Reason, Status
from kretrain.operator import bounds, jobs, kueue
from kretrain.operator.data_findings import data_ready
from kretrain.operator.kube import KubeError
from kretrain.operator.status_patch import (
    Event,
    Outcome,
    StatusBuilder,
    failed,
    fallback_started,
    metric_text,
    run_names,
)
from kretrain.operator.steps import REGISTRY_ERRORS, Deps, JobRejected, create_run_objects, waiting
from kretrain.promotion import Conclusion, conclude, fallback_spec, wants_fallback
from kretrain.registry import ConditionalWritesIgnored


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
            annotations=meta.get("annotations") or {},  # promotion.approval Manual: kretrain.dev/approve
        )
    except ConditionalWritesIgnored as exc:  # the verdict is kept: retrying could never promote
        return failed(body, Reason.REGISTRY_UNSAFE, bounds.short(str(exc), bounds.MAX_CONDITION_MESSAGE), now)
    build = StatusBuilder(body, now)
    if wants_fallback(spec, conclusion) and not fallback_started(body):
        return start_fallback(body, spec, resolved, conclusion, deps)
    decision, reason = bounds.decision(conclusion.decision), conclusion.reason
    text = bounds.short(" ".join(decision.reasons) or decision.summary, bounds.MAX_CONDITION_MESSAGE)
    build.names(run, jname).status.decision = decision
    if conclusion.failed:
        return failed(body, reason, f"run {run}: the report was refused: {text}", now, build=build)
    new = build.status
    new.state = "Promoted" if decision.promoted else "Rejected"
    if reason == Reason.AWAITING_APPROVAL:  # not terminal: polled again until the annotation names the candidate
        new.state = "AwaitingApproval"
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
    data_reason, data_message, data_events = data_ready(report.data)  # kretrain.operator.data_findings
    build.condition(Cond.DATA_READY, Status.TRUE, data_reason, data_message)
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
            "Normal" if reason in (Reason.DRY_RUN, Reason.AWAITING_APPROVAL) else "Warning",
            reason,
            bounds.short(f"Not promoted {run}: {text}"),
        )
    if reason == Reason.AWAITING_APPROVAL:
        waited = build.current.state == "AwaitingApproval"  # one Event when the wait starts, not one per poll
        return Outcome(status=patch, events=[] if waited else [*data_events, event])
    return Outcome(status=patch, events=[*data_events, event], decision_reason=reason)


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
    if (queue := kueue.queue_name(resolved, deps.settings)) is not None:  # the new Job waits for Kueue too
        new.state = "Queued"
        wait = f"the full retrain's Job waits for admission by Kueue queue {queue}"
        build.condition(Cond.QUEUED, Status.TRUE, Reason.WAITING_FOR_ADMISSION, wait)
    events = [
        Event("Warning", Reason.GATE_FAILED, bounds.short(f"Not promoted {first_run}: {' '.join(rejected.reasons)}")),
        Event("Normal", Reason.FALLBACK_TO_FULL, f"Created Job {jname}: full retrain of run {run} against {against}"),
    ]
    return Outcome(status=build.build(), events=events)
