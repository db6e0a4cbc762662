"""What every RetrainJob lifecycle step shares: its dependencies, the run's Job and ConfigMap, the faults it retries."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from kretrain.api import ModelRef, RetrainJobSpec
from kretrain.operator import bounds, jobs, jobs_multinode
from kretrain.operator.kube import RETRYABLE_STATUS, KubeError
from kretrain.operator.settings import OperatorSettings
from kretrain.operator.status_patch import Outcome
from kretrain.registry import RegistryError
from kretrain.store import PreconditionFailed, StoreError, StoreUnavailable

if TYPE_CHECKING:
    from kretrain.registry import Registry

REGISTRY_ERRORS = (StoreError, RegistryError)
"""What a registry call raises when S3 or a record is at fault (anything else is a bug and reaches Kopf)."""
TRANSIENT_KUBE_STATUS = RETRYABLE_STATUS
"""KubeError statuses worth a quick retry besides 5xx (0: the API server was not reached); kube.py's one rule."""
REFUSED_RETRY_DELAY = 60.0
"""Seconds before trying again after a fault someone has to fix (access denied, an unreadable record): Kopf's own
default backoff. A transient fault is retried after KRETRAIN_RETRY_DELAY."""


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


def transient(exc: BaseException) -> bool:
    """Whether trying again soon can succeed with nothing changed: the store or the API server unreachable,
    throttling or failing (StoreUnavailable, KubeError 0/408/429/5xx), or a conditional write that lost a race
    (PreconditionFailed: the next try reads the new state)."""
    if isinstance(exc, StoreUnavailable | PreconditionFailed):
        return True
    return isinstance(exc, KubeError) and exc.retryable


def waiting(message: str, exc: BaseException, status: dict[str, Any] | None = None) -> Outcome:
    """Try the step again later: soon after a transient fault, after REFUSED_RETRY_DELAY after any other known one."""
    text = bounds.short(f"{message}: {type(exc).__name__}: {exc}")
    return Outcome(status=status or {}, retry=text, retry_delay=None if transient(exc) else REFUSED_RETRY_DELAY)


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
    service = [jobs_multinode.build_service(jname, ns, object_labels)] if resolved.resources.nodes > 1 else []
    deps.adopt([configmap, *service, job])
    try:
        deps.kube.create(configmap)
        for obj in service:  # before the Job: its pods' DNS names must exist when they rendezvous
            deps.kube.create(obj)
        _, created = deps.kube.create(job)
    except KubeError as exc:
        if exc.status in (400, 403, 422):
            raise JobRejected(f"the API server rejected Job {jname}: {exc.message}") from exc
        raise
    return created
