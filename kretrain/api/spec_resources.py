"""The resources section of the RetrainJob spec: GPUs, nodes, CPU, memory, disks and the dataset cache volume."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from kretrain.api.base import ApiModel
from kretrain.api.spec_types import NAME_PATTERN, Quantity


class Toleration(ApiModel):
    """A pod toleration (as in core/v1)."""

    key: str | None = None
    """Taint key."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """`Exists` or `Equal`."""
    value: str | None = None
    """Taint value for `Equal`."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to tolerate (all when unset)."""
    toleration_seconds: int | None = Field(default=None, ge=0)
    """For NoExecute: how long the pod stays bound after the taint appears."""


STORAGE_QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(k|Ki|Mi|Gi|Ti|M|G|T)?$"
_STORAGE_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_STORAGE_UNITS |= {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def storage_bytes(quantity: str) -> int:
    """Bytes of a storage quantity such as `20Gi` or `1.5G` (rounded up to a whole byte)."""
    match = re.fullmatch(STORAGE_QUANTITY_PATTERN, quantity)
    if match is None:
        raise ValueError(f"not a storage quantity: {quantity!r}")
    number, unit = quantity[: len(quantity) - len(match.group(2) or "")], match.group(2) or ""
    whole, _, frac = number.partition(".")
    scale = _STORAGE_UNITS[unit]
    return int(whole) * scale + -(-int(frac or "0") * scale // 10 ** len(frac))


SUBDOMAIN_PATTERN = r"^[a-z0-9]([a-z0-9\-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9\-]*[a-z0-9])?)*$"
"""A Kubernetes object name that may hold dots (PersistentVolumeClaim, StorageClass): a DNS subdomain."""


class CacheClaimSpec(ApiModel):
    """An existing PersistentVolumeClaim in the RetrainJob's namespace mounted as the dataset cache."""

    claim_name: str = Field(max_length=253, pattern=SUBDOMAIN_PATTERN)
    """Name of the claim. ReadWriteOnce: one run at a time (the next run of the line reuses it);
    ReadWriteMany: shared by the runs of a model line, which take turns per dataset for the pull and
    validation (a lock file in the cache) and train concurrently."""


class CacheEphemeralSpec(ApiModel):
    """A generic ephemeral volume (a claim created with the pod and deleted with it) as the dataset cache."""

    storage_class_name: str | None = Field(default=None, max_length=253, pattern=SUBDOMAIN_PATTERN)
    """StorageClass of the claim (unset: the cluster's default class)."""
    size: str = Field(pattern=STORAGE_QUANTITY_PATTERN)
    """Requested size of the claim (a Kubernetes quantity, 1Mi to 1024Ti)."""

    @field_validator("size")
    @classmethod
    def _size_in_range(cls, size: str) -> str:
        if not 2**20 <= storage_bytes(size) <= 2**50:
            raise ValueError(f"{size!r} must be between 1Mi and 1024Ti")
        return size


class CacheVolumeSpec(ApiModel):
    """Where the dataset cache (`/cache`) lives when not in the default emptyDir: exactly one source."""

    persistent_volume_claim: CacheClaimSpec | None = None
    """An existing claim: the eras pulled and the validation results survive the pod, so the next run
    pulls and decodes only what is new."""
    ephemeral: CacheEphemeralSpec | None = None
    """A volume of a storage class and size that lives as long as the pod (a cache larger than the
    node's ephemeral storage allows)."""

    @model_validator(mode="after")
    def _exactly_one(self) -> CacheVolumeSpec:
        if (self.persistent_volume_claim is None) == (self.ephemeral is None):
            raise ValueError("resources.cache: set exactly one of persistentVolumeClaim and ephemeral")
        return self


class ResourcesSpec(ApiModel):
    """Compute and local disk for the training pod."""

    gpus: int = Field(default=1, ge=0, le=16)
    """NVIDIA GPUs (`nvidia.com/gpu`); more than one trains with DDP over all of them; 0 trains on CPU."""
    nodes: int = Field(default=1, ge=1, le=64)
    """Pods (nodes) to train across with `torchrun` (c10d rendezvous): more than one makes an Indexed Job with a
    headless Service (docs/install.md, "Beyond one node"); 1 is the single training pod."""
    gpus_per_node: int | None = Field(default=None, ge=0, le=16)
    """GPUs of each pod when `nodes` > 1 (one torchrun process per GPU; 0: one CPU process with gloo); sets
    `gpus` to the same number (`gpus` is always per pod). Unset: `gpus`."""
    cpu: Quantity = "4"
    """CPU request and limit (a Kubernetes quantity)."""
    memory: Quantity = "16Gi"
    """Memory request and limit (a Kubernetes quantity)."""
    shm_size: Quantity = "2Gi"
    """Size of the memory-backed `/dev/shm` (data-loader workers need it)."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels the pod must run on."""
    tolerations: list[Toleration] = Field(default_factory=list)
    """Tolerations (e.g. for tainted GPU nodes); their keys must be allowed by the operator policy."""
    priority_class_name: str | None = Field(default=None, pattern=NAME_PATTERN)
    """PriorityClass of the training pod (only those the operator policy allows; default: none)."""
    queue_name: str | None = Field(default=None, pattern=NAME_PATTERN)
    """Kueue LocalQueue (in the RetrainJob's namespace) that admits the Job: sets the `kueue.x-k8s.io/queue-name`
    label and creates the Job suspended, for Kueue to unsuspend on admission (unset: the operator's default queue,
    if any; with none the Job is not queued)."""
    image: str | None = Field(default=None, max_length=512)
    """Trainer image; default is the operator's configured trainer image (the operator policy bounds it)."""
    scratch_size: str = Field(default="20Gi", pattern=STORAGE_QUANTITY_PATTERN)
    """Size limit of the `/scratch` emptyDir (run folder: prepared lists, checkpoints, exported weights)."""
    cache_size: str = Field(default="50Gi", pattern=STORAGE_QUANTITY_PATTERN)
    """Size limit of the `/cache` emptyDir (local mirror of the dataset's eras); unused with `cache`."""
    cache: CacheVolumeSpec | None = None
    """A persistent or ephemeral volume for `/cache` instead of the emptyDir (unset: an emptyDir of cacheSize,
    emptied with every pod)."""
    tmp_size: str = Field(default="2Gi", pattern=STORAGE_QUANTITY_PATTERN)
    """Size limit of the `/tmp` emptyDir (library config and caches). The pod's ephemeral-storage request
    and limit are scratchSize + cacheSize (without `cache`) + tmpSize plus 1Gi for logs."""

    @property
    def per_node_gpus(self) -> int:
        """GPUs of each training pod (`gpusPerNode` when set: `gpus` then equals it)."""
        return self.gpus

    @model_validator(mode="before")
    @classmethod
    def _gpus_per_node(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        per_node = raw.get("gpusPerNode", raw.get("gpus_per_node"))
        if per_node is None:
            return raw
        if raw.get("nodes", 1) == 1:
            raise ValueError("gpusPerNode applies only with nodes > 1 (one pod: set gpus)")
        if "gpus" in raw and raw["gpus"] != per_node:
            raise ValueError(f"gpus ({raw['gpus']}) and gpusPerNode ({per_node}) disagree: set one of them")
        return {**raw, "gpus": per_node}

    @field_validator("scratch_size", "cache_size", "tmp_size")
    @classmethod
    def _disk_in_range(cls, size: str) -> str:
        if not 2**20 <= storage_bytes(size) <= 2**50:
            raise ValueError(f"{size!r} must be between 1Mi and 1024Ti")
        return size
