"""One resolve_spec: the spec as the trainer gets it, unset storage/image fields filled from explicit defaults."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from kretrain.api import RetrainJobSpec
from kretrain.api.spec import S3_URI_PATTERN


class SpecError(ValueError):
    """The spec cannot be resolved or turned into a Job (the message names the field)."""


class SpecDefaults(BaseModel):
    """What fills a spec's unset fields: the operator's settings (OperatorSettings.spec_defaults) or, for
    `kretrain run`, the caller's environment (local.local_defaults). A None default leaves the field unset."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)

    source: str
    """Where these defaults come from, for error messages (`the operator (KRETRAIN_REGISTRY)`)."""
    registry: str | None = Field(default=None, pattern=S3_URI_PATTERN)
    """Default spec.storage.registry; the resolved spec must have one."""
    endpoint: str | None = None
    """Default spec.storage.endpoint (None: AWS itself)."""
    region: str | None = None
    """Default spec.storage.region (None: the spec's own default)."""
    credentials_secret: str | None = None
    """Default spec.storage.credentialsSecret (the operator's; None for a local run, which has no Secrets)."""
    image: str | None = None
    """Default spec.resources.image (the operator's trainer image; None for a local run)."""


def resolve_spec(spec: RetrainJobSpec, defaults: SpecDefaults) -> RetrainJobSpec:
    """The spec with every unset storage field and the image filled from `defaults` (explicit values win).

    Raises SpecError naming spec.storage.registry when neither the spec nor the defaults name a registry.
    The result is validated again as a RetrainJobSpec (a default that breaks a field's rule is refused here).
    """
    raw = spec.dump()
    storage, resources = raw.setdefault("storage", {}), raw.setdefault("resources", {})
    if not storage.get("registry"):
        if defaults.registry is None:
            raise SpecError(f"spec.storage.registry: unset, and {defaults.source} has no default registry")
        storage["registry"] = defaults.registry
    filled = (
        (storage, "endpoint", defaults.endpoint),
        (storage, "region", defaults.region),
        (storage, "credentialsSecret", defaults.credentials_secret),
        (resources, "image", defaults.image),
    )
    for part, key, value in filled:
        if not part.get(key) and value:
            part[key] = value
    return RetrainJobSpec.model_validate(raw)
