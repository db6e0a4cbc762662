"""The RetrainJob spec: what to retrain, on which data, how, and when to promote (its sections are spec_*.py)."""

from __future__ import annotations

from pydantic import Field, model_validator

from kretrain.api.base import ApiModel
from kretrain.api.spec_dataset import DatasetSpec, SplitSpec
from kretrain.api.spec_export import ExportFormat, ExportSpec
from kretrain.api.spec_promotion import CHECK_NAMES, MetricName, MinImprovement, PromotionSpec
from kretrain.api.spec_resources import (
    STORAGE_QUANTITY_PATTERN,
    SUBDOMAIN_PATTERN,
    CacheClaimSpec,
    CacheEphemeralSpec,
    CacheVolumeSpec,
    ResourcesSpec,
    Toleration,
    storage_bytes,
)
from kretrain.api.spec_serving import (
    DNS_SUBDOMAIN_PATTERN,
    WEBHOOK_URL_PATTERN,
    InferenceServiceRef,
    SecretKeyRef,
    ServingSpec,
    WebhookSpec,
)
from kretrain.api.spec_storage import CREDENTIAL_KEYS, StorageSpec
from kretrain.api.spec_strategy import AugmentationSpec, ReplaySpec, StrategySpec, split_pin
from kretrain.api.spec_types import (
    BUILTIN_YAML_PATTERN,
    ERA_PATTERN,
    NAME_PATTERN,
    PIN_SEPARATOR,
    QUANTITY_PATTERN,
    S3_URI_PATTERN,
    SHA256_PATTERN,
    VERSION_PATTERN,
    EraName,
    Quantity,
    S3Uri,
)

__all__ = [
    "BUILTIN_YAML_PATTERN",
    "CHECK_NAMES",
    "CREDENTIAL_KEYS",
    "DNS_SUBDOMAIN_PATTERN",
    "ERA_PATTERN",
    "NAME_PATTERN",
    "PIN_SEPARATOR",
    "QUANTITY_PATTERN",
    "S3_URI_PATTERN",
    "SHA256_PATTERN",
    "STORAGE_QUANTITY_PATTERN",
    "SUBDOMAIN_PATTERN",
    "VERSION_PATTERN",
    "WEBHOOK_URL_PATTERN",
    "AugmentationSpec",
    "CacheClaimSpec",
    "CacheEphemeralSpec",
    "CacheVolumeSpec",
    "DatasetSpec",
    "EraName",
    "ExportFormat",
    "ExportSpec",
    "InferenceServiceRef",
    "MetricName",
    "MinImprovement",
    "PromotionSpec",
    "Quantity",
    "ReplaySpec",
    "ResourcesSpec",
    "RetrainJobSpec",
    "S3Uri",
    "SecretKeyRef",
    "ServingSpec",
    "SplitSpec",
    "StorageSpec",
    "StrategySpec",
    "Toleration",
    "WebhookSpec",
    "split_pin",
    "storage_bytes",
]


class RetrainJobSpec(ApiModel):
    """One retraining run of a model line: data, strategy, promotion gate and compute."""

    model: str = Field(pattern=NAME_PATTERN)
    """Name of the model line in the registry (e.g. `traffic-detector`)."""
    dataset: DatasetSpec
    """The eras to train and evaluate on."""
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    """Full retrain or incremental with replay, and the training knobs."""
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)
    """When the candidate replaces the incumbent."""
    export: ExportSpec = Field(default_factory=ExportSpec)
    """Serving artifacts (ONNX, TensorRT) exported and parity-checked in the trainer pod."""
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    """Compute for the training pod."""
    storage: StorageSpec = Field(default_factory=StorageSpec)
    """S3 endpoint, registry and the credentials Secret."""
    serving: ServingSpec = Field(default_factory=ServingSpec)
    """Telling the serving side after a promotion: a webhook, a KServe InferenceService."""
    suspend: bool = False
    """Suspend the run (the Job's pods are stopped); the only field that may change after creation."""
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    """Deadline for the training Job; past it the run fails."""
    backoff_limit: int = Field(default=2, ge=0, le=100)
    """Pod retries before the Job fails (a restarted pod resumes from the last checkpoint)."""

    @model_validator(mode="after")
    def _incremental_needs_history(self) -> RetrainJobSpec:
        if self.strategy.type == "incremental" and not self.dataset.old_eras:
            raise ValueError(
                "incremental strategy needs at least one older era to replay and to guard against forgetting; "
                f"dataset.eras has {len(self.dataset.eras)} era(s) and newEras is {self.dataset.new_eras}"
            )
        return self
