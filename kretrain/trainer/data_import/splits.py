"""`<era>/splits.yaml`: the user's own train/val/test split of an era's images, kept by the data pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from kretrain.api.base import ApiModel
from kretrain.trainer.data.split import Split, split_of
from kretrain.trainer.data_import.names import name_problem

SPLITS_NAME = "splits.yaml"
"""Object name of the split manifest inside an era folder."""
MAX_SPLITS_BYTES = 64 * 1024 * 1024
"""Largest splits.yaml read (about a million keys)."""


class EraSplits(ApiModel):
    """The split an era's importer recorded: image keys (relative to the era) per split.

    The data pipeline puts a listed key in its listed split; keys it does not list (images added
    later, or the source had no split for them) fall back to the key hash, so the split stays
    stable when the era grows.
    """

    version: Literal[1] = 1
    """Format version of this manifest."""
    train: list[str] = Field(default_factory=list)
    """Image keys (`images/...`) the user put in training."""
    val: list[str] = Field(default_factory=list)
    """Image keys the user put in validation."""
    test: list[str] = Field(default_factory=list)
    """Image keys the user held out for testing."""

    @field_validator("train", "val", "test")
    @classmethod
    def _safe_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            problem = name_problem(key)
            if problem is not None:
                raise ValueError(f"key {key!r} {problem}")
            if not key.startswith("images/"):
                raise ValueError(f"key {key!r} is not under images/")
        return keys

    @model_validator(mode="after")
    def _disjoint(self) -> EraSplits:
        seen: dict[str, str] = {}
        for split in ("train", "val", "test"):
            for key in getattr(self, split):
                if key in seen:
                    raise ValueError(f"key {key!r} is listed in both {seen[key]} and {split}")
                seen[key] = split
        return self

    def assignment(self) -> dict[str, Split]:
        """Key -> split for every listed key."""
        out: dict[str, Split] = {}
        for key in self.train:
            out[key] = "train"
        for key in self.val:
            out[key] = "val"
        for key in self.test:
            out[key] = "test"
        return out


def splits_document(assignment: dict[str, Split]) -> bytes:
    """The splits.yaml bytes for a key -> split assignment (keys sorted, so the bytes are stable)."""
    doc = EraSplits(
        train=sorted(k for k, s in assignment.items() if s == "train"),
        val=sorted(k for k, s in assignment.items() if s == "val"),
        test=sorted(k for k, s in assignment.items() if s == "test"),
    )
    return yaml.safe_dump(doc.dump(), sort_keys=False, width=1 << 20).encode()


def read_era_splits(data: bytes, source: str) -> EraSplits:
    """Parse and validate a splits.yaml; ValueError naming `source` and what is wrong."""
    if len(data) > MAX_SPLITS_BYTES:
        raise ValueError(f"{source}: {len(data)} bytes, more than the limit of {MAX_SPLITS_BYTES}")
    try:
        doc = yaml.load(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML: {exc}") from exc
    try:
        return EraSplits.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        raise ValueError(f"{source}: invalid split manifest at {where}: {first['msg']}") from exc


def split_with_override(
    override: dict[str, Split] | None, seed: int, era: str, key: str, val: float, test: float
) -> Split:
    """The split of one image: the era's recorded split if it lists the key, else the key hash (`split_of`)."""
    if override is not None and key in override:
        return override[key]
    return split_of(seed, era, key, val, test)


def era_split_override(era: str, files: dict[str, Path]) -> dict[str, Split] | None:
    """The recorded split of a pulled era (`files`: era key -> local path), or None if it has no splits.yaml.

    For the data pipeline: `split_with_override(override, seed, era, key, val, test)` per image.
    ValueError naming `<era>/splits.yaml` when the manifest is too large or invalid.
    """
    path = files.get(SPLITS_NAME)
    if path is None:
        return None
    source = f"{era}/{SPLITS_NAME}"
    size = path.stat().st_size
    if size > MAX_SPLITS_BYTES:
        raise ValueError(f"{source}: {size} bytes, more than the limit of {MAX_SPLITS_BYTES}")
    return read_era_splits(path.read_bytes(), source).assignment()
