"""The registry's version record (`versions/<v>/version.json`) as a model: what a reader may rely on in it."""

from __future__ import annotations

from pydantic import Field

from kretrain.api.base import ApiModel

_SHA256 = r"^[0-9a-f]{64}$"
_URI = r"^s3://[^\s]+$"
# Bounds well inside MAX_RECORD_BYTES: a version trains on at most 64 eras (spec.dataset.eras).
_MAX_ITEMS = 4096


class VersionLineage(ApiModel):
    """Where a version came from."""

    parent: str | None = Field(default=None, max_length=253)
    """Version training started from (None for a fresh model)."""
    eras: list[str] = Field(default_factory=list, max_length=_MAX_ITEMS)
    """Dataset eras trained on, oldest first."""
    era_hashes: dict[str, str] = Field(default_factory=dict, max_length=_MAX_ITEMS)
    """Content hash of each era (over object keys and ETags)."""
    strategy: str = Field(default="full", max_length=64)
    """`full` or `incremental`."""
    compute: dict[str, float | int | str | None] = Field(default_factory=dict, max_length=64)
    """Compute spent (wall/train/GPU seconds, image-epochs)."""


class VersionArtifact(ApiModel):
    """One serving artifact of a version (an ONNX or TensorRT export that passed the exportParity check)."""

    format: str = Field(pattern=r"^[a-z0-9]{1,32}$")
    """Ultralytics export format (`onnx`, `engine`)."""
    uri: str = Field(pattern=_URI, max_length=2048)
    """The committed writer's artifact object, in the version's folder (`model-<writer>.onnx`)."""
    sha256: str = Field(pattern=_SHA256)
    """Hex SHA-256 of the artifact: the authority a reader checks the download against."""
    size: int = Field(ge=0)
    """Size in bytes (a larger object is not downloaded)."""


class VersionRecord(ApiModel):
    """versions/<v>/version.json: the commit marker of a registered version, written once with If-None-Match."""

    model: str = Field(max_length=253)
    """Model line the version belongs to."""
    version: str = Field(max_length=253)
    """The version's name (the run id that produced it)."""
    sha256: str = Field(pattern=_SHA256)
    """Hex SHA-256 of the weights: the authority `fetch_weights` checks the download against."""
    size: int = Field(ge=0)
    """Size of the weights in bytes (a larger object is not downloaded)."""
    uri: str = Field(pattern=_URI, max_length=2048)
    """The committed writer's weights object (in the version's folder; older records: `weights.pt`)."""
    report_uri: str | None = Field(default=None, pattern=_URI, max_length=2048)
    """The committed writer's report object (unset in older records: `report.json`)."""
    spec_uri: str | None = Field(default=None, pattern=_URI, max_length=2048)
    """The committed writer's spec object (unset in older records: `spec.json`)."""
    writer: str | None = Field(default=None, pattern=r"^[0-9a-f]{1,64}$")
    """Id of the writer whose objects this record commits."""
    registered_at: str = Field(max_length=64)
    """When the version was registered (RFC 3339)."""
    lineage: VersionLineage = Field(default_factory=VersionLineage)
    """Where the version came from."""
    metrics: dict[str, float] = Field(default_factory=dict, max_length=256)
    """Pooled metrics of the candidate evaluation, by kretrain's names (e.g. `mAP50-95`)."""
    artifacts: list[VersionArtifact] = Field(default_factory=list, max_length=8)
    """Serving artifacts exported in the trainer and proven equal to the weights (unset in older records)."""


class IncumbentPointer(ApiModel):
    """<model>/incumbent.json: the version in production, replaced only by conditional writes."""

    version: str = Field(max_length=253)
    """The incumbent version."""
    sha256: str = Field(pattern=_SHA256)
    """Its weights' SHA-256 (as in its version record)."""
    uri: str = Field(pattern=_URI, max_length=2048)
    """Its weights object."""
    promoted_at: str | None = Field(default=None, max_length=64)
    """When it became the incumbent (RFC 3339)."""
    previous: str | None = Field(default=None, max_length=253)
    """The incumbent before it (None for the first)."""
    seq: int = Field(ge=1)
    """Number of this promotion or rollback in the line's history (1, 2, ...)."""
    action: str = Field(default="promote", pattern=r"^(promote|rollback)$")
    """`promote` or `rollback`."""
    actor: str = Field(default="", max_length=1024)
    """Who moved the pointer."""
    reason: str = Field(default="", max_length=64 * 1024)
    """Why."""
    txn: str = Field(default="", max_length=64)
    """Id of the write (tells a retried request of ours from another writer's)."""


class HistoryEntry(ApiModel):
    """<model>/history/<seq:08d>.json: one promotion or rollback, written once with If-None-Match."""

    seq: int = Field(ge=1)
    """Number of the entry (its file name)."""
    action: str = Field(pattern=r"^(promote|rollback)$")
    """`promote` or `rollback`."""
    version: str = Field(max_length=253)
    """The version that became the incumbent."""
    previous: str | None = Field(default=None, max_length=253)
    """The incumbent before it."""
    sha256: str | None = Field(default=None, pattern=_SHA256)
    """Its weights' SHA-256."""
    at: str | None = Field(default=None, max_length=64)
    """When (RFC 3339)."""
    actor: str = Field(default="", max_length=1024)
    """Who."""
    reason: str = Field(default="", max_length=64 * 1024)
    """Why."""
    txn: str = Field(default="", max_length=64)
    """Id of the pointer write this entry records."""
