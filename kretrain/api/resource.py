"""The RetrainJob custom resource as a whole: identity of the API and the object envelope."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kretrain.api.spec import RetrainJobSpec
from kretrain.api.status import RetrainJobStatus

GROUP = "kretrain.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "RetrainJob"
PLURAL = "retrainjobs"
SINGULAR = "retrainjob"
SHORT_NAMES = ["rtj"]


class ObjectMeta(BaseModel):
    """The part of Kubernetes object metadata kretrain reads."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9\-.]{0,251}[a-z0-9])?$")
    """Object name."""
    namespace: str | None = None
    """Namespace."""
    uid: str | None = None
    """Server-assigned uid."""
    generation: int | None = None
    """Spec generation."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations."""


class RetrainJob(BaseModel):
    """A RetrainJob manifest as applied with kubectl."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    api_version: Literal["kretrain.dev/v1alpha1"] = Field(alias="apiVersion")
    """API group and version."""
    kind: Literal["RetrainJob"]
    """Kind."""
    metadata: ObjectMeta
    """Object metadata."""
    spec: RetrainJobSpec
    """Desired run."""
    status: RetrainJobStatus | None = None
    """Observed state."""

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> RetrainJob:
        """Parse and validate a manifest dict (raises pydantic.ValidationError)."""
        return cls.model_validate(manifest)
