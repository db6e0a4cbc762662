"""Trainer pod disk bounds: every emptyDir has a sizeLimit and the container requests its ephemeral storage."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pydantic
import pytest

from kretrain.api import RetrainJobSpec
from kretrain.api.spec import storage_bytes
from kretrain.operator import jobs
from kretrain.operator.settings import OperatorSettings

SETTINGS = OperatorSettings(registry="s3://models/registry", trainer_image="trainer:test", metrics_port=0)


def build(resources: dict[str, Any]) -> dict[str, Any]:
    spec = RetrainJobSpec.model_validate(
        {"model": "m", "dataset": {"uri": "s3://data/set", "eras": ["e1"]}, "resources": resources}
    )
    resolved = jobs.resolve_spec(spec, SETTINGS)
    return jobs.build_job(
        name="ns-rtj-0123abcd",
        namespace="ns",
        run="ns-rtj-0123abcd",
        spec=resolved,
        incumbent_version=None,
        object_labels=jobs.labels("uid", "ns-rtj-0123abcd"),
        settings=SETTINGS,
    )


# (id, resources, sizeLimits of scratch/cache/tmp/dshm, ephemeral-storage request = limit)
CASES = [
    ("defaults", {}, ("20Gi", "50Gi", "2Gi", "2Gi"), "73Gi"),
    (
        "small",
        {"scratchSize": "512Mi", "cacheSize": "1Gi", "tmpSize": "256Mi", "shmSize": "64Mi"},
        ("512Mi", "1Gi", "256Mi", "64Mi"),
        "2816Mi",
    ),
    (
        "decimal-units",
        {"scratchSize": "10G", "cacheSize": "100G", "tmpSize": "1G"},
        ("10G", "100G", "1G", "2Gi"),
        str(111 * 10**9 + 2**30),
    ),
    ("large", {"scratchSize": "1Ti", "cacheSize": "4Ti", "tmpSize": "8Gi"}, ("1Ti", "4Ti", "8Gi", "2Gi"), "5129Gi"),
]


@pytest.mark.parametrize(("resources", "limits", "ephemeral"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_empty_dir_is_bounded_and_storage_requested(
    resources: dict[str, Any], limits: tuple[str, str, str, str], ephemeral: str
) -> None:
    job = build(resources)
    pod = job["spec"]["template"]["spec"]
    empty_dirs = {v["name"]: v["emptyDir"] for v in pod["volumes"] if "emptyDir" in v}
    assert set(empty_dirs) == {"scratch", "cache", "tmp", "dshm"}
    assert all("sizeLimit" in e for e in empty_dirs.values()), "an emptyDir without sizeLimit fills the node's disk"
    assert tuple(empty_dirs[n]["sizeLimit"] for n in ("scratch", "cache", "tmp", "dshm")) == limits
    assert empty_dirs["dshm"]["medium"] == "Memory"
    [container] = pod["containers"]
    res = container["resources"]
    assert res["requests"]["ephemeral-storage"] == res["limits"]["ephemeral-storage"] == ephemeral
    disk = sum(storage_bytes(empty_dirs[n]["sizeLimit"]) for n in ("scratch", "cache", "tmp"))
    assert storage_bytes(ephemeral) == disk + jobs.LOG_ALLOWANCE
    kubernetes_validate.validate(job, "1.32", strict=True)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("scratchSize", "0"),
        ("cacheSize", "100k"),  # below 1Mi
        ("tmpSize", "2000Ti"),  # above 1024Ti
        ("scratchSize", "10Gi "),
        ("cacheSize", "1e9"),
        ("tmpSize", "500m"),  # millibytes
        ("scratchSize", "-1Gi"),
        ("cacheSize", "10Gi\n"),
    ],
)
def test_bad_disk_sizes_are_refused_naming_the_field(field: str, value: str) -> None:
    with pytest.raises(pydantic.ValidationError) as exc:
        RetrainJobSpec.model_validate(
            {"model": "m", "dataset": {"uri": "s3://data/set", "eras": ["e1"]}, "resources": {field: value}}
        )
    assert [e["loc"] for e in exc.value.errors()] == [("resources", field)]


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [("1", 1), ("1k", 1000), ("1Ki", 1024), ("1.5G", 1_500_000_000), ("0.5Mi", 2**19), ("1.0001k", 1001)],
)
def test_storage_quantities_parse_to_bytes(quantity: str, expected: int) -> None:
    assert storage_bytes(quantity) == expected
