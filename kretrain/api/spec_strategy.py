"""The strategy section of the RetrainJob spec: full or incremental, replay, start weights, training knobs."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from kretrain.api.base import ApiModel
from kretrain.api.spec_types import (
    BUILTIN_YAML_PATTERN,
    PIN_SEPARATOR,
    S3_URI_PATTERN,
    SHA256_PATTERN,
    VERSION_PATTERN,
)
from kretrain.api.ultralytics_args import RESERVED_TRAIN_ARGS, ULTRALYTICS_TRAIN_ARGS


class ReplaySpec(ApiModel):
    """Replay for incremental runs: a share of every older era's training images mixed in."""

    enabled: bool = True
    """Mix older eras into the run; `false` trains on the new eras only (naive incremental, prone to forgetting)."""
    fraction: float = Field(default=0.5, gt=0, le=1)
    """Share of each older era's training images replayed (era-balanced), in (0, 1]. The default, 0.5, beat 0.3
    at the same image-epochs in the strategy benchmark (pooled mAP50-95 and gate passes; docs/strategies.md)."""
    seed: int = Field(default=0, ge=0)
    """Seed of the replay sample."""


class AugmentationSpec(ApiModel):
    """Augmentation knobs passed to Ultralytics (unset = Ultralytics' default)."""

    mosaic: float | None = Field(default=None, ge=0, le=1)
    """Probability of mosaic augmentation."""
    mixup: float | None = Field(default=None, ge=0, le=1)
    """Probability of mixup."""
    cutmix: float | None = Field(default=None, ge=0, le=1)
    """Probability of cutmix."""
    hsv_h: float | None = Field(default=None, ge=0, le=1)
    """Hue jitter (fraction)."""
    hsv_s: float | None = Field(default=None, ge=0, le=1)
    """Saturation jitter (fraction)."""
    hsv_v: float | None = Field(default=None, ge=0, le=1)
    """Brightness jitter (fraction)."""
    degrees: float | None = Field(default=None, ge=0, le=180)
    """Rotation range in degrees."""
    translate: float | None = Field(default=None, ge=0, le=1)
    """Translation as a fraction of the image size."""
    scale: float | None = Field(default=None, ge=0, le=1)
    """Scale gain range."""
    fliplr: float | None = Field(default=None, ge=0, le=1)
    """Probability of a horizontal flip."""
    close_mosaic: int | None = Field(default=None, ge=0)
    """Disable mosaic for the last N epochs."""


def split_pin(value: str) -> tuple[str, str] | None:
    """`s3://b/k.pt@sha256:<hex>` -> `("s3://b/k.pt", "<hex>")`; None for a value without a pin."""
    if not value.startswith("s3://") or PIN_SEPARATOR not in value:
        return None
    uri, _, digest = value.rpartition(PIN_SEPARATOR)
    return uri, digest


def _model_file_form(value: str, suffixes: tuple[str, ...], what: str) -> str:
    """Check a model-file reference: an Ultralytics built-in YAML name or a pinned s3:// URI (normalised)."""
    example = f"s3://bucket/key{suffixes[0]}@sha256:<64 hex digits>"
    if value.startswith("s3://"):
        uri, sep, digest = value.rpartition(PIN_SEPARATOR)
        if not sep:
            raise ValueError(
                f"an s3:// model file must pin its content: write {example} (the sha256 of the file); "
                f"got {value!r}. A .sha256 file next to it proves nothing: whoever can write one can write both"
            )
        if not re.fullmatch(SHA256_PATTERN, digest.lower()):
            raise ValueError(f"malformed sha256 pin {digest!r}: expected 64 hexadecimal digits ({example})")
        if not re.fullmatch(S3_URI_PATTERN, uri) or "/../" in f"{uri}/" or "/./" in f"{uri}/":
            raise ValueError(f"malformed s3 URI {uri!r}: expected {example}")
        if not uri.endswith(suffixes):
            raise ValueError(f"{uri!r} must name {what} file ({' or '.join(suffixes)})")
        return f"{uri}{PIN_SEPARATOR}{digest.lower()}"
    if "://" in value:
        scheme = value.split("://", 1)[0]
        raise ValueError(
            f"{scheme}:// is not allowed: model files come only from the registry, Ultralytics' built-in "
            f"models or a pinned {example}; got {value!r}"
        )
    if re.search(r"[/\\~]", value) or value.startswith("."):
        raise ValueError(
            f"local paths are not allowed ({value!r}): the trainer image's files are not part of the spec; "
            f"use an Ultralytics built-in model name or a pinned {example}"
        )
    if value.endswith((".yaml", ".yml")) and re.fullmatch(BUILTIN_YAML_PATTERN, value) and len(value) <= 128:
        return value
    raise ValueError(f"must be an Ultralytics built-in model YAML name (e.g. yolov8n.yaml) or a pinned {example}")


FIRST_MODEL_WEIGHTS = "yolov8n.yaml"
"""Where a default full retrain starts when its model line has no incumbent yet (random init)."""


class StrategySpec(ApiModel):
    """How the candidate is trained."""

    type: Literal["full", "incremental"] = "full"
    """`full`: retrain on every era; `incremental`: continue from the incumbent on the new eras plus replay."""
    replay: ReplaySpec | None = None
    """Replay of older eras (incremental only); omitted means the default replay fraction."""
    base_weights: str | None = Field(default=None, max_length=1024)
    """Start weights, one of: `incumbent`; a registry version of this model line (verified against the
    sha256 the registry recorded); an Ultralytics built-in model YAML name such as `yolov8n.yaml` or
    `yolo11s.yaml` (random init; never downloaded); or an `s3://` .pt pinned to its content,
    `s3://bucket/key.pt@sha256:<64 hex digits>` (refused before it is unpickled when its bytes hash to
    anything else; a `.sha256` file next to it is not trusted). Local paths, `file://`, `http(s)://` and
    unpinned `s3://` URIs are refused. Default: `incumbent`, for `full` too (a warm start: measured better than
    random init at the same compute, docs/strategies.md); a line's first model, which has no incumbent, starts
    from `yolov8n.yaml` (random init)."""
    architecture: str | None = Field(default=None, max_length=1024)
    """Model YAML of an extended architecture: an Ultralytics built-in name (e.g. `yolov8n-p2.yaml`) or a
    pinned `s3://bucket/key.yaml@sha256:<64 hex digits>`; weights from `baseWeights` are transferred where
    layers match. The YAML is data: its `activation` must be a `nn.<Activation>(literal args)` from an
    allowlist and every layer a torch.nn or Ultralytics module, checked before Ultralytics reads it."""
    epochs: int = Field(default=50, ge=1, le=10000)
    """Training epochs."""
    patience: int = Field(default=30, ge=0)
    """Early-stopping patience in epochs (0 disables it). A warm start's pooled validation fitness first dips
    while the new era is learned, and converging runs plateau for 20-30 epochs at a time (docs/strategies.md):
    a shorter patience keeps the start weights or stops short."""
    lr0: float | None = Field(default=None, gt=0, le=1)
    """Initial learning rate (needs an explicit `optimizer`; Ultralytics' `auto` ignores it)."""
    optimizer: Literal["auto", "SGD", "Adam", "AdamW", "NAdam", "RAdam", "RMSProp"] | None = None
    """Optimizer; default `auto` for full runs and `SGD` for incremental runs."""
    freeze: int | None = Field(default=None, ge=0, le=1000)
    """Freeze the first N layers of the model (progressive training of extended models)."""
    imgsz: int = Field(default=640, ge=32, le=4096, multiple_of=32)
    """Training and evaluation image size."""
    batch: int = Field(default=16, ge=1, le=4096)
    """Batch size (total across GPUs)."""
    weight_decay: float | None = Field(default=None, ge=0, le=1)
    """Weight decay."""
    dropout: float | None = Field(default=None, ge=0, lt=1)
    """Dropout (classification heads only in Ultralytics; kept for extended architectures)."""
    augmentation: AugmentationSpec = Field(default_factory=AugmentationSpec)
    """Augmentation knobs."""
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    """Any other Ultralytics train argument by its Ultralytics name; checked against Ultralytics' own list."""
    checkpoint_interval_seconds: int = Field(default=60, ge=0, le=86400)
    """Upload the run's last.pt at most this often (seconds; 0 = after every epoch). A restarted pod resumes
    from the last uploaded checkpoint; longer intervals cost less while training, more after a restart."""
    fallback_to_full: bool = False
    """When an incremental candidate fails the promotion gate, run a full retrain automatically (every era,
    no replay, same knobs, starting from the same weights); its result is the run's decision."""

    @field_validator("hyperparameters")
    @classmethod
    def _known_hyperparameters(cls, hp: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(k for k in hp if k not in ULTRALYTICS_TRAIN_ARGS)
        if unknown:
            raise ValueError(f"not Ultralytics train arguments: {', '.join(unknown)}")
        reserved = sorted(k for k in hp if k in RESERVED_TRAIN_ARGS)
        if reserved:
            raise ValueError(
                f"set by kretrain, not by hyperparameters: {', '.join(reserved)} "
                "(use the dedicated strategy/resources fields)"
            )
        for key, value in hp.items():
            if not isinstance(value, (str, int, float, bool, list)) and value is not None:
                raise ValueError(f"{key}: value must be a string, number, boolean or list")
        return hp

    @field_validator("architecture")
    @classmethod
    def _architecture_form(cls, arch: str | None) -> str | None:
        if arch is None:
            return arch
        return _model_file_form(arch, suffixes=(".yaml", ".yml"), what="a model YAML")

    @field_validator("base_weights")
    @classmethod
    def _base_weights_form(cls, bw: str | None) -> str | None:
        if bw is None or bw == "incumbent":
            return bw
        if bw.endswith((".yaml", ".yml")) or "://" in bw or PIN_SEPARATOR in bw or re.search(r"[/\\~]", bw):
            return _model_file_form(bw, suffixes=(".pt",), what="a .pt")
        if not re.fullmatch(VERSION_PATTERN, bw) or ".." in bw:
            raise ValueError(
                "must be 'incumbent', a registry version, an Ultralytics built-in model YAML name or a pinned "
                f"s3://bucket/key.pt@sha256:<64 hex digits>, got {bw!r}"
            )
        return bw

    @model_validator(mode="after")
    def _consistent(self) -> StrategySpec:
        if self.replay is not None and self.type != "incremental":
            raise ValueError("replay applies to incremental runs only (strategy.type is 'full')")
        if self.lr0 is not None and self.optimizer == "auto":
            raise ValueError("lr0 is ignored by optimizer 'auto'; name an optimizer (e.g. SGD) to use lr0")
        return self

    @property
    def effective_optimizer(self) -> str:
        """The optimizer actually used."""
        if self.optimizer is not None:
            return self.optimizer
        return "SGD" if self.type == "incremental" or self.lr0 is not None else "auto"

    @property
    def effective_base_weights(self) -> str:
        """The start weights asked for: `baseWeights`, else `incumbent` (kretrain.trainer.start_weights starts a
        default full retrain of a line without an incumbent from FIRST_MODEL_WEIGHTS)."""
        if self.base_weights is not None:
            return self.base_weights
        return "incumbent"

    @property
    def first_model_fallback(self) -> bool:
        """A line's first model may start from FIRST_MODEL_WEIGHTS: a full retrain that names no `baseWeights`."""
        return self.base_weights is None and self.type == "full"

    @property
    def base_weights_pin(self) -> tuple[str, str] | None:
        """`(s3 uri, sha256)` when the start weights are a pinned s3:// .pt, else None."""
        return split_pin(self.effective_base_weights)

    @property
    def architecture_pin(self) -> tuple[str, str] | None:
        """`(s3 uri, sha256)` when the architecture is a pinned s3:// YAML, else None."""
        return split_pin(self.architecture) if self.architecture else None

    @property
    def effective_replay(self) -> ReplaySpec | None:
        """The replay used (the default for incremental runs that name none)."""
        if self.type != "incremental":
            return None
        replay = self.replay or ReplaySpec()
        return replay if replay.enabled else None
