"""resources.cache: the spec's shapes (table-driven) and the /cache volume the Job builder makes of each."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from pydantic import ValidationError

from kretrain.api import RetrainJobSpec
from kretrain.api.pod import CACHE_DIR
from kretrain.api.spec import ResourcesSpec
from kretrain.operator import jobs
from kretrain.operator.cache_volume import cache_disk_bytes, cache_volume
from kretrain.operator.settings import OperatorSettings


@pytest.mark.parametrize(
    ("cache", "error"),
    [
        ({"persistentVolumeClaim": {"claimName": "line-cache"}}, None),
        ({"persistentVolumeClaim": {"claimName": "line.cache.v2"}}, None),
        ({"ephemeral": {"size": "100Gi"}}, None),
        ({"ephemeral": {"size": "100Gi", "storageClassName": "fast-ssd"}}, None),
        ({}, "exactly one"),
        ({"persistentVolumeClaim": {"claimName": "a"}, "ephemeral": {"size": "1Gi"}}, "exactly one"),
        ({"persistentVolumeClaim": {"claimName": "Line_Cache"}}, "claimName"),
        ({"persistentVolumeClaim": {"claimName": "../x"}}, "claimName"),
        ({"persistentVolumeClaim": {"claimName": "a" * 254}}, "claimName"),
        ({"persistentVolumeClaim": {}}, "claimName"),
        ({"ephemeral": {}}, "size"),
        ({"ephemeral": {"size": "1Ki"}}, "between 1Mi and 1024Ti"),
        ({"ephemeral": {"size": "2000Ti"}}, "between 1Mi and 1024Ti"),
        ({"ephemeral": {"size": "10 Gi"}}, "size"),
        ({"ephemeral": {"size": "1Gi", "storageClassName": "Fast SSD"}}, "storageClassName"),
        ({"ephemeral": {"size": "1Gi", "accessModes": ["ReadWriteMany"]}}, "accessModes"),
        ({"hostPath": {"path": "/"}}, "hostPath"),
    ],
    ids=[
        "claim",
        "claim-with-dots",
        "ephemeral-default-class",
        "ephemeral-with-class",
        "empty",
        "both",
        "claim-upper-case",
        "claim-path",
        "claim-too-long",
        "claim-missing-name",
        "ephemeral-no-size",
        "ephemeral-too-small",
        "ephemeral-too-large",
        "ephemeral-bad-quantity",
        "class-with-space",
        "unknown-field",
        "host-path",
    ],
)
def test_cache_shapes(cache: dict[str, Any], error: str | None) -> None:
    if error is None:
        res = ResourcesSpec.model_validate({"cache": cache})
        assert res.cache is not None and res.dump()["cache"] == cache
        return
    with pytest.raises(ValidationError, match=error):
        ResourcesSpec.model_validate({"cache": cache})


def test_default_is_no_cache_volume() -> None:
    assert ResourcesSpec().cache is None and "cache" not in ResourcesSpec().dump()


@pytest.mark.parametrize(
    ("cache", "volume", "disk"),
    [
        (None, {"emptyDir": {"sizeLimit": "50Gi"}}, 50 * 2**30),
        (
            {"persistentVolumeClaim": {"claimName": "line-cache"}},
            {"persistentVolumeClaim": {"claimName": "line-cache"}},
            0,
        ),
        (
            {"ephemeral": {"size": "100Gi"}},
            {
                "ephemeral": {
                    "volumeClaimTemplate": {
                        "metadata": {"labels": {"app": "x"}},
                        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "100Gi"}}},
                    }
                }
            },
            0,
        ),
        (
            {"ephemeral": {"size": "1Ti", "storageClassName": "fast-ssd"}},
            {
                "ephemeral": {
                    "volumeClaimTemplate": {
                        "metadata": {"labels": {"app": "x"}},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Ti"}},
                            "storageClassName": "fast-ssd",
                        },
                    }
                }
            },
            0,
        ),
    ],
    ids=["default-emptydir", "existing-claim", "ephemeral-default-class", "ephemeral-with-class"],
)
def test_cache_volume(cache: dict[str, Any] | None, volume: dict[str, Any], disk: int) -> None:
    res = ResourcesSpec.model_validate({"cache": cache} if cache else {})
    assert cache_volume(res, {"app": "x"}) == {"name": "cache", **volume}
    assert cache_disk_bytes(res) == disk


SETTINGS = OperatorSettings(
    registry="s3://models/registry", s3_endpoint="http://s3.local:8333", trainer_image="trainer:test", metrics_port=0
)


def _job(cache: dict[str, Any] | None) -> dict[str, Any]:
    resources: dict[str, Any] = {"scratchSize": "10Gi", "cacheSize": "40Gi", "tmpSize": "2Gi"}
    if cache is not None:
        resources["cache"] = cache
    spec = RetrainJobSpec.model_validate(
        {"model": "line", "dataset": {"uri": "s3://data/line", "eras": ["q1"]}, "resources": resources}
    )
    return jobs.build_job(
        name="ns-rtj-0123abcd",
        namespace="ns",
        run="ns-rtj-0123abcd",
        spec=jobs.resolve_spec(spec, SETTINGS),
        incumbent_version=None,
        object_labels=jobs.labels("uid-1", "ns-rtj-0123abcd"),
        settings=SETTINGS,
    )


@pytest.mark.parametrize(
    ("cache", "source", "storage"),
    [
        (None, "emptyDir", "53Gi"),
        ({"persistentVolumeClaim": {"claimName": "line-cache"}}, "persistentVolumeClaim", "13Gi"),
        ({"ephemeral": {"size": "500Gi", "storageClassName": "fast"}}, "ephemeral", "13Gi"),
    ],
    ids=["emptydir", "claim", "ephemeral"],
)
def test_the_job_mounts_the_cache_volume(cache: dict[str, Any] | None, source: str, storage: str) -> None:
    job = _job(cache)
    kubernetes_validate.validate(job, "1.32", strict=True)
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(volumes["cache"]) == {"name", source}
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["cache"] == {"name": "cache", "mountPath": CACHE_DIR}  # read-write, at the contract's path
    requests = pod["containers"][0]["resources"]["requests"]
    assert requests["ephemeral-storage"] == storage  # the cache counts against node disk only as an emptyDir
    if source == "ephemeral":
        template = volumes["cache"]["ephemeral"]["volumeClaimTemplate"]
        assert template["metadata"]["labels"] == job["metadata"]["labels"]
