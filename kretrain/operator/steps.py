"""What every RetrainJob lifecycle step shares: its dependencies, the run's Job and ConfigMap, the faults it retries."""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from kretrain.api import ModelRef, RetrainJobSpec
from kretrain.operator import bounds, jobs, jobs_multinode, trainjob
from kretrain.operator.kube import RETRYABLE_STATUS, Kube, KubeError
from kretrain.operator.settings import OperatorSettings
from kretrain.operator.status_patch import Outcome
from kretrain.registry import RegistryError
from kretrain.resolve import SpecError
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
    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None: ...


class TrainJobApi(Protocol):
    """The TrainJob calls the lifecycle uses (kretrain.operator.trainjob_kube.TrainJobs)."""

    def crd_exists(self) -> bool: ...
    def find(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...
    def get(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def create(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]: ...
    def patch(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...


@dataclass
class Deps:
    """What the lifecycle needs from the outside world (the handlers build it; tests can too)."""

    settings: OperatorSettings
    kube: KubeApi
    registry_for: Callable[[RetrainJobSpec], Registry]
    adopt: Callable[[list[dict[str, Any]]], None]
    actor: str = "kretrain-operator"
    trainjobs: TrainJobApi | None = None
    """TrainJob calls (KRETRAIN_MULTINODE trainjob or auto); unset: made from `kube` when it is a Kube."""
    now: Callable[[], str] = field(default=lambda: datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


def controlled_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether `obj`'s controller ownerReference is the RetrainJob of `uid` (the operator adopts every object it
    makes with kopf.append_owner_reference: controller true). Labels prove nothing: anyone may set them."""
    meta = obj.get("metadata")
    refs = meta.get("ownerReferences") if isinstance(meta, Mapping) else None
    return isinstance(refs, list) and any(
        isinstance(r, Mapping) and r.get("uid") == uid and r.get("controller") is True for r in refs
    )


def not_owned_message(obj: Mapping[str, Any], uid: str) -> str:
    """Why a run's Job/TrainJob is not taken for the run's own (Reason.JOB_NOT_OWNED)."""
    kind, name = obj.get("kind") or "Job", (obj.get("metadata") or {}).get("name")
    return (
        f"{kind} {name} has the run's name but is not controlled by this RetrainJob (no controller ownerReference "
        f"with uid {uid}): someone else created it; it is not adopted or followed. Delete it and create a new "
        "RetrainJob"
    )


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


def trainjob_api(deps: Deps) -> TrainJobApi | None:
    """The TrainJob calls when the operator may train through TrainJobs (KRETRAIN_MULTINODE trainjob or auto)."""
    if deps.settings.multinode == "indexedjob":
        return None
    if deps.trainjobs is None and isinstance(deps.kube, Kube):
        from kretrain.operator.trainjob_kube import TrainJobs

        deps.trainjobs = TrainJobs(deps.kube)
    return deps.trainjobs


def _may_have_trainjob(spec: RetrainJobSpec | None) -> bool:
    """nodes > 1, or a spec that no longer parses (its run may have a TrainJob to stop)."""
    return spec is None or spec.resources.nodes > 1


def find_runs(deps: Deps, ns: str, label_selector: str, spec: RetrainJobSpec | None) -> list[dict[str, Any]]:
    """A RetrainJob's Jobs, and its TrainJobs when it may have some (TrainJobs enabled, `spec` None or nodes > 1)."""
    found = deps.kube.find_jobs(ns, label_selector)
    api = trainjob_api(deps)
    if api is not None and _may_have_trainjob(spec):
        found += api.find(ns, label_selector)
    return found


def workload_names(jname: str) -> set[str]:
    """The names a run's workload may have: its Job's, or its TrainJob's."""
    return {jname, trainjob.name(jname)}


def get_run(deps: Deps, ns: str, jname: str, spec: RetrainJobSpec | None) -> dict[str, Any] | None:
    """A run's TrainJob (when it may have one) or else its Job; None when neither exists."""
    api = trainjob_api(deps)
    if api is not None and _may_have_trainjob(spec):
        found = api.get(ns, trainjob.name(jname))
        if found is not None:
            return found
    return deps.kube.get_job(ns, jname)


def is_trainjob(obj: Mapping[str, Any]) -> bool:
    return obj.get("kind") == trainjob.KIND and str(obj.get("apiVersion", "")).startswith(trainjob.GROUP + "/")


def patch_run(deps: Deps, ns: str, obj: Mapping[str, Any], patch: dict[str, Any]) -> None:
    """Merge-patch a run's Job or TrainJob (spec.suspend)."""
    name = obj["metadata"]["name"]
    api = trainjob_api(deps) if is_trainjob(obj) else None
    if api is not None:
        api.patch(ns, name, patch)
    else:
        deps.kube.patch_job(ns, name, patch)


def run_pods(deps: Deps, ns: str, obj: Mapping[str, Any], jname: str) -> list[dict[str, Any]]:
    """The pods of a run's Job, or of its TrainJob's node Job."""
    return deps.kube.job_pods(ns, trainjob.child_job(obj["metadata"]["name"]) if is_trainjob(obj) else jname)


def create_run_objects(
    ns: str, uid: str, run: str, jname: str, resolved: RetrainJobSpec, incumbent: ModelRef | None, deps: Deps
) -> bool:
    """Create a run's spec ConfigMap and Job, adopted by the RetrainJob; False when the Job already existed
    (409). Raises JobRejected when the API server refuses them, KubeError when it should be retried."""
    object_labels = jobs.labels(uid, jname)
    configmap = jobs.build_configmap(jname, ns, resolved, object_labels, secrets.token_hex(32))
    job = jobs.build_job(
        name=jname,
        namespace=ns,
        run=run,
        spec=resolved,
        incumbent_version=incumbent.version if incumbent else None,
        object_labels=object_labels,
        settings=deps.settings,
    )
    api, mode = trainjob_api(deps), deps.settings.multinode
    multi = resolved.resources.nodes > 1
    if api is not None and trainjob.wanted(resolved, mode, multi and mode == "auto" and api.crd_exists()):
        return _create_trainjob(ns, jname, configmap, job, resolved, api, deps)
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


def _create_trainjob(
    ns: str,
    jname: str,
    configmap: dict[str, Any],
    job: dict[str, Any],
    resolved: RetrainJobSpec,
    api: TrainJobApi,
    deps: Deps,
) -> bool:
    """The run's ConfigMap and Kubeflow Trainer TrainJob (in place of the Indexed Job and its Service)."""
    try:
        tj = trainjob.build(job, resolved)
    except SpecError as exc:
        raise JobRejected(f"cannot train run {jname} as a TrainJob: {exc}") from exc
    deps.adopt([configmap, tj])
    try:
        deps.kube.create(configmap)
        _, created = api.create(tj)
    except KubeError as exc:
        if exc.status == 404:
            msg = f"TrainJob {tj['metadata']['name']}: the API server serves no TrainJobs (is Kubeflow Trainer installed?)"
            raise JobRejected(msg) from exc
        if exc.status in (400, 403, 422):
            raise JobRejected(f"the API server rejected TrainJob {tj['metadata']['name']}: {exc.message}") from exc
        raise
    return created
