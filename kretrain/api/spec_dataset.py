"""The dataset section of the RetrainJob spec: where the eras live and how each is split."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from kretrain.api.base import ApiModel
from kretrain.api.spec_types import EraName, S3Uri


class SplitSpec(ApiModel):
    """How each era is split into train/val/test by hashing each image's object key."""

    val: float = Field(default=0.15, gt=0, lt=0.5)
    """Share of each era's images that goes to validation."""
    test: float = Field(default=0.15, gt=0, lt=0.5)
    """Share of each era's images held out for the mixed-era test set."""
    seed: int = Field(default=0, ge=0)
    """Seed mixed into the key hash; changing it reshuffles every era's split."""


class DatasetSpec(ApiModel):
    """Where the data lives and which eras to use."""

    uri: S3Uri
    """S3 prefix of the dataset (`s3://bucket/prefix`), holding `classes.yaml` and one folder per era."""
    eras: list[EraName] = Field(min_length=1, max_length=64)
    """Era folder names under `uri`, oldest first; the last `newEras` of them are the new data."""
    new_eras: int = Field(default=1, ge=1)
    """How many of the last eras count as new (incremental runs train on these plus replay)."""
    classes: list[str] | None = Field(default=None, min_length=1)
    """Expected class names in id order; when set, `classes.yaml` must match it exactly."""
    split: SplitSpec = Field(default_factory=SplitSpec)
    """Deterministic train/val/test split of every era."""
    max_bad_fraction: float = Field(default=0.05, ge=0, le=1)
    """Largest share of bad images/labels tolerated (they are excluded and listed) before the run fails."""

    @field_validator("eras")
    @classmethod
    def _unique_eras(cls, eras: list[str]) -> list[str]:
        seen = [e for i, e in enumerate(eras) if e in eras[:i]]
        if seen:
            raise ValueError(f"era names must be unique; repeated: {', '.join(sorted(set(seen)))}")
        return eras

    @model_validator(mode="after")
    def _new_eras_in_range(self) -> DatasetSpec:
        if self.new_eras > len(self.eras):
            raise ValueError(f"newEras ({self.new_eras}) is larger than the number of eras ({len(self.eras)})")
        if self.split.val + self.split.test >= 0.9:
            raise ValueError("split.val + split.test must leave at least 10% of each era for training")
        return self

    @property
    def old_eras(self) -> list[str]:
        """Eras before the new ones."""
        return self.eras[: len(self.eras) - self.new_eras]

    @property
    def latest_eras(self) -> list[str]:
        """The new eras."""
        return self.eras[len(self.eras) - self.new_eras :]
