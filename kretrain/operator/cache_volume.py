"""The pod's `/cache` volume from `resources.cache`: an emptyDir (default), an existing claim or an ephemeral one."""

from __future__ import annotations

from typing import Any

from kretrain.api.spec import ResourcesSpec, storage_bytes

VOLUME_NAME = "cache"
"""Name of the dataset cache volume in the pod spec (mounted at the pod contract's CACHE_DIR)."""


def cache_volume(res: ResourcesSpec, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The pod volume for the dataset cache.

    No `cache`: an emptyDir limited to `cacheSize` (emptied with every pod). `persistentVolumeClaim`:
    the named claim, read-write (the pod's fsGroup makes it writable for the non-root trainer on
    volumes that support ownership). `ephemeral`: a generic ephemeral volume, one ReadWriteOnce claim
    of `size` in `storageClassName` created with the pod (labelled like the Job) and deleted with it.
    """
    cache = res.cache
    if cache is None:
        return {"name": VOLUME_NAME, "emptyDir": {"sizeLimit": res.cache_size}}
    if cache.persistent_volume_claim is not None:
        return {"name": VOLUME_NAME, "persistentVolumeClaim": {"claimName": cache.persistent_volume_claim.claim_name}}
    eph = cache.ephemeral
    if eph is None:  # CacheVolumeSpec's validator makes this unreachable
        raise ValueError("resources.cache: set exactly one of persistentVolumeClaim and ephemeral")
    claim: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": eph.size}}}
    if eph.storage_class_name is not None:
        claim["storageClassName"] = eph.storage_class_name
    template: dict[str, Any] = {"spec": claim}
    if labels:
        template["metadata"] = {"labels": dict(labels)}
    return {"name": VOLUME_NAME, "ephemeral": {"volumeClaimTemplate": template}}


def cache_disk_bytes(res: ResourcesSpec) -> int:
    """Bytes of node ephemeral storage the cache takes: cacheSize for the emptyDir, nothing on a claim."""
    return storage_bytes(res.cache_size) if res.cache is None else 0
