"""Kueue admission of training Jobs: the queue label, the hold while spec.suspend is true, and who unsuspends.

A queued Job carries `kueue.x-k8s.io/queue-name` and is created `suspend: true`; Kueue unsuspends it when it
admits its Workload and suspends it again when it preempts or evicts it. The operator therefore never writes
`suspend: false` onto a queued Job. spec.suspend on top of a queue is a *hold*: the operator suspends the Job and
moves the queue name from the label to the annotation `kretrain.dev/held-queue-name` (Kueue ignores a Job without
the label, so it cannot unsuspend it); resuming moves it back, and admission is Kueue's again. Kueue's webhook
allows changing a Job's queue name while the Job is suspended, which both moves are (the hold suspends in the same
patch that drops the label).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kretrain.api import RetrainJobSpec
from kretrain.operator.settings import OperatorSettings

LABEL_QUEUE = "kueue.x-k8s.io/queue-name"
"""The label Kueue admits Jobs by (the LocalQueue's name in the Job's namespace)."""
ANNOTATION_HELD = "kretrain.dev/held-queue-name"
"""The queue name of a queued Job held by spec.suspend (moved off the label so that Kueue leaves it suspended)."""


def queue_name(spec: RetrainJobSpec, settings: OperatorSettings) -> str | None:
    """The LocalQueue of a run: spec.resources.queueName, else the operator's default, else None (not queued)."""
    return spec.resources.queue_name or settings.default_queue_name


def queue_job(job: dict[str, Any], queue: str | None, suspend: bool) -> dict[str, Any]:
    """The Job built for a run, queued on `queue` (unchanged when None): created suspended, labelled, or held."""
    if queue is None:
        return job
    meta = job["metadata"]
    if suspend:
        meta["annotations"] = {**(meta.get("annotations") or {}), ANNOTATION_HELD: queue}
    else:
        meta["labels"] = {**meta["labels"], LABEL_QUEUE: queue}
    job["spec"]["suspend"] = True
    return job


def _meta(job: Mapping[str, Any], field: str) -> Mapping[str, Any]:
    value = (job.get("metadata") or {}).get(field)
    return value if isinstance(value, Mapping) else {}


def queued(job: Mapping[str, Any]) -> str | None:
    """The queue a Job waits in or was admitted from (its Kueue label), or None."""
    value = _meta(job, "labels").get(LABEL_QUEUE)
    return value if isinstance(value, str) and value else None


def held(job: Mapping[str, Any]) -> str | None:
    """The queue of a Job held by spec.suspend (the annotation), or None."""
    value = _meta(job, "annotations").get(ANNOTATION_HELD)
    return value if isinstance(value, str) and value else None


def suspend_patch(job: Mapping[str, Any], suspend: bool) -> dict[str, Any] | None:
    """The merge patch that applies spec.suspend to a Job (None: nothing to write).

    Not queued: `spec.suspend` as asked. Queued: suspending holds it (suspend true, label -> annotation);
    resuming a held Job releases it to its queue (annotation -> label) and leaves `suspend` to Kueue.
    """
    queue, on_hold = queued(job), held(job)
    if suspend and queue:
        return {
            "metadata": {"labels": {LABEL_QUEUE: None}, "annotations": {ANNOTATION_HELD: queue}},
            "spec": {"suspend": True},
        }
    if not suspend and on_hold:
        return {"metadata": {"labels": {LABEL_QUEUE: on_hold}, "annotations": {ANNOTATION_HELD: None}}}
    if not suspend and queue:
        return None  # queued and not held: admission is Kueue's
    return {"spec": {"suspend": suspend}}
