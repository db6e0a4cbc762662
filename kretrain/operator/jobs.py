"""Pure builders of the trainer's batch/v1 Job and spec ConfigMap (no I/O, no kopf)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kretrain.api import RetrainJobSpec
from kretrain.api.pod import CACHE_DIR as CACHE_DIR  # the pod contract's paths, re-exported
from kretrain.api.pod import CREDENTIAL_ENV, SHM_DIR, STAGE_KEY_FILE, TMP_DIR, PodContract
from kretrain.api.pod import SCRATCH_DIR as SCRATCH_DIR
from kretrain.api.pod import SPEC_DIR as SPEC_DIR
from kretrain.api.pod import SPEC_FILE as SPEC_FILE
from kretrain.api.pod import TERMINATION_LOG as TERMINATION_LOG
from kretrain.api.spec import storage_bytes
from kretrain.operator import jobs_multinode, kueue, policy
from kretrain.operator.cache_volume import cache_disk_bytes, cache_volume
from kretrain.operator.settings import OperatorSettings
from kretrain.resolve import SpecError as SpecError
from kretrain.resolve import resolve_spec as fill_spec

LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_UID = "kretrain.dev/retrainjob-uid"
"""Label with the owning RetrainJob's uid: the key the operator finds its Job by."""
LABEL_RUN = "kretrain.dev/run"
"""Label with the Job name (the run id, shortened to a label value when needed)."""
MANAGED_BY = "kretrain-operator"

CONTAINER = "trainer"
MAX_RUN_ID = 128  # registry version ids: ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$
MAX_JOB_NAME = 63  # Job names become the `job-name` label of their pods
LOG_ALLOWANCE = 2**30
"""Ephemeral storage beyond the emptyDirs: container logs (the root filesystem is read-only)."""


def _shorten(value: str, limit: int) -> str:
    """`value` if short enough, else a prefix plus 8 hex chars of its sha256 (deterministic, unique)."""
    if len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"{value[: limit - 9].rstrip('-.')}-{digest}"


def run_id(namespace: str, name: str, uid: str) -> str:
    """The run id (= registry version) of a RetrainJob: `<namespace>-<name>-<uid[:8]>`."""
    return _shorten(f"{namespace}-{name}-{uid[:8]}", MAX_RUN_ID)


def fallback_run_id(run: str) -> str:
    """The run id of the full retrain that follows a rejected incremental run (fallbackToFull)."""
    return _shorten(f"{run}-full", MAX_RUN_ID)


def job_name(run: str) -> str:
    """The Job (and ConfigMap) name of a run: the run id, shortened to 63 characters when longer."""
    return _shorten(run, MAX_JOB_NAME)


def labels(uid: str, name: str) -> dict[str, str]:
    """Labels of every object the operator creates for a RetrainJob."""
    return {
        LABEL_NAME: "kretrain",
        LABEL_COMPONENT: "trainer",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_UID: uid,
        LABEL_RUN: name,
    }


def selector(uid: str) -> str:
    """Label selector of a RetrainJob's Job."""
    return f"{LABEL_UID}={uid}"


def fill_defaults(spec: RetrainJobSpec, settings: OperatorSettings) -> RetrainJobSpec:
    """The spec with the operator's defaults for registry, endpoint, region, credentials Secret and image filled in."""
    return fill_spec(spec, settings.spec_defaults())


def resolve_spec(spec: RetrainJobSpec, settings: OperatorSettings) -> RetrainJobSpec:
    """The spec as the trainer gets it: defaults filled in (fill_defaults) and checked against the policy.

    Raises SpecError when the result is outside the operator policy (image, Secret, endpoint, priority
    class, tolerations: see kretrain/operator/policy.py), naming each field and the rule.
    """
    resolved = fill_defaults(spec, settings)
    try:
        policy.check(resolved, settings)
    except policy.PolicyError as exc:
        raise SpecError(f"outside the operator policy: {exc}") from None
    return resolved


def _quantity(n_bytes: int) -> str:
    """A byte count as a Kubernetes quantity (`73Gi`, `1536Mi`, or plain bytes)."""
    for unit, scale in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20)):
        if n_bytes % scale == 0:
            return f"{n_bytes // scale}{unit}"
    return str(n_bytes)


def ephemeral_storage(spec: RetrainJobSpec) -> str:
    """The trainer container's ephemeral-storage request and limit: its emptyDirs on disk plus logs."""
    res = spec.resources
    disk = storage_bytes(res.scratch_size) + cache_disk_bytes(res) + storage_bytes(res.tmp_size)
    return _quantity(disk + LOG_ALLOWANCE)


def spec_json(spec: RetrainJobSpec) -> str:
    """The resolved spec as the trainer reads it (camelCase JSON, stable key order)."""
    return json.dumps(spec.dump(), sort_keys=True, indent=2)


def build_configmap(
    name: str, namespace: str, spec: RetrainJobSpec, object_labels: dict[str, str], stage_key: str
) -> dict[str, Any]:
    """The ConfigMap holding the resolved spec and the run's stage key (random hex, made by the caller), mounted
    at /etc/kretrain/ (spec.json, stage.key): only the run's pods (and whoever may read ConfigMaps in the
    namespace) know the key, so the line's other trainers cannot forge this run's resume records."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(object_labels)},
        "data": {SPEC_FILE: spec_json(spec), STAGE_KEY_FILE: stage_key},
    }


def build_job(
    *,
    name: str,
    namespace: str,
    run: str,
    spec: RetrainJobSpec,
    incumbent_version: str | None,
    object_labels: dict[str, str],
    settings: OperatorSettings,
) -> dict[str, Any]:
    """The training Job for a resolved spec (see the trainer pod contract in docs/internals.md)."""
    res, storage = spec.resources, spec.storage
    if res.image is None or storage.credentials_secret is None or storage.registry is None or storage.region is None:
        raise SpecError("build_job needs a resolved spec (resolve_spec fills image, registry, region and credentials)")
    secret = storage.credentials_secret
    env: list[dict[str, Any]] = [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}} for key in CREDENTIAL_ENV
    ]
    contract = PodContract.in_cluster(
        run_id=run, incumbent_version=incumbent_version, endpoint=storage.endpoint, region=storage.region
    )
    env += [{"name": key, "value": value} for key, value in contract.to_env().items()]
    compute = {"cpu": res.cpu, "memory": res.memory, "ephemeral-storage": ephemeral_storage(spec)}
    limits: dict[str, str] = dict(compute)
    if res.gpus > 0:
        limits["nvidia.com/gpu"] = str(res.gpus)
    container = {
        "name": CONTAINER,
        "image": res.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["kretrain", "train", "--spec", f"{SPEC_DIR}/{SPEC_FILE}"],
        "env": env,
        "resources": {"requests": dict(compute), "limits": limits},
        "volumeMounts": [
            {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
            {"name": "scratch", "mountPath": SCRATCH_DIR},
            {"name": "cache", "mountPath": CACHE_DIR},
            {"name": "tmp", "mountPath": TMP_DIR},
            {"name": "dshm", "mountPath": SHM_DIR},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "fsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {
                "name": "spec",
                "configMap": {"name": name, "items": [{"key": k, "path": k} for k in (SPEC_FILE, STAGE_KEY_FILE)]},
            },
            {"name": "scratch", "emptyDir": {"sizeLimit": res.scratch_size}},
            cache_volume(res, object_labels),
            {"name": "tmp", "emptyDir": {"sizeLimit": res.tmp_size}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": res.shm_size}},
        ],
    }
    if res.node_selector:
        pod_spec["nodeSelector"] = dict(res.node_selector)
    if res.tolerations:
        pod_spec["tolerations"] = [t.dump() for t in res.tolerations]
    if res.priority_class_name:
        pod_spec["priorityClassName"] = res.priority_class_name
    if settings.trainer_service_account:
        pod_spec["serviceAccountName"] = settings.trainer_service_account
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "completions": 1,
        "parallelism": 1,
        "suspend": spec.suspend,
        "template": {"metadata": {"labels": dict(object_labels)}, "spec": pod_spec},
    }
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if settings.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = settings.ttl_seconds_after_finished
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(object_labels)},
        "spec": job_spec,
    }
    job = kueue.queue_job(job, kueue.queue_name(spec, settings), spec.suspend)  # no queue: unchanged
    return jobs_multinode.to_indexed(job, spec) if res.nodes > 1 else job  # nodes: 1 stays exactly as it was
