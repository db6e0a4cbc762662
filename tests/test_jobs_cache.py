"""resources.cache: the spec's shapes (table-driven) and the /cache volume the Job builder makes of each."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kretrain.api.spec import ResourcesSpec
from kretrain.operator.cache_volume import cache_disk_bytes, cache_volume


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
