"""The RetrainJob spec: what to retrain, on which data, how, and when to promote."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from kretrain.api.base import ApiModel
from kretrain.api.ultralytics_args import RESERVED_TRAIN_ARGS, ULTRALYTICS_TRAIN_ARGS

S3_URI_PATTERN = r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[A-Za-z0-9._\-/]*)?$"
NAME_PATTERN = r"^[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?$"
ERA_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,62}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"
BUILTIN_YAML_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*\.ya?ml$"
"""An Ultralytics built-in model YAML name (a bare file name that ships inside the ultralytics package)."""
PIN_SEPARATOR = "@sha256:"
"""Separates an s3:// model file from the sha256 of its content: `s3://bucket/key.pt@sha256:<64 hex>`."""
SHA256_PATTERN = r"^[0-9a-f]{64}$"

S3Uri = Annotated[str, Field(pattern=S3_URI_PATTERN, max_length=1024)]
EraName = Annotated[str, Field(pattern=ERA_PATTERN)]
Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN)]

CREDENTIAL_KEYS = re.compile(r"(access.?key|secret|password|token|session)", re.IGNORECASE)

CHECK_NAMES = ("generalizationGap", "fusionConsistency", "finiteLoss", "predictsSomething", "exportParity")
"""Names of the post-training checks the trainer runs (see kretrain.trainer.checks)."""

MetricName = Literal["mAP50-95", "mAP50", "precision", "recall"]


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


class ReplaySpec(ApiModel):
    """Replay for incremental runs: a share of every older era's training images mixed in."""

    enabled: bool = True
    """Mix older eras into the run; `false` trains on the new eras only (naive incremental, prone to forgetting)."""
    fraction: float = Field(default=0.3, gt=0, le=1)
    """Share of each older era's training images replayed (era-balanced), in (0, 1]."""
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
    unpinned `s3://` URIs are refused. Default: `incumbent` for incremental, `yolov8n.yaml` for full."""
    architecture: str | None = Field(default=None, max_length=1024)
    """Model YAML of an extended architecture: an Ultralytics built-in name (e.g. `yolov8n-p2.yaml`) or a
    pinned `s3://bucket/key.yaml@sha256:<64 hex digits>`; weights from `baseWeights` are transferred where
    layers match. The YAML is data: its `activation` must be a `nn.<Activation>(literal args)` from an
    allowlist and every layer a torch.nn or Ultralytics module, checked before Ultralytics reads it."""
    epochs: int = Field(default=50, ge=1, le=10000)
    """Training epochs."""
    patience: int = Field(default=20, ge=0)
    """Early-stopping patience in epochs (0 disables it)."""
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
        """The start weights actually used."""
        if self.base_weights is not None:
            return self.base_weights
        return "incumbent" if self.type == "incremental" else "yolov8n.yaml"

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


class MinImprovement(ApiModel):
    """How much better the candidate must be than the incumbent on the pooled mixed-era test set."""

    absolute: float = Field(default=0.0, ge=0, le=1)
    """Minimum absolute gain of the metric (e.g. 0.01 = one point of mAP)."""
    relative: float = Field(default=0.0, ge=0, le=10)
    """Minimum relative gain (0.02 = 2% better than the incumbent)."""


class PromotionSpec(ApiModel):
    """The promotion gate."""

    metric: MetricName = "mAP50-95"
    """The metric compared on the pooled mixed-era test set and on each era."""
    min_improvement: MinImprovement = Field(default_factory=MinImprovement)
    """Required gain over the incumbent; both the absolute and the relative bound must hold."""
    max_era_regression: float = Field(default=0.02, ge=0, le=1)
    """Forgetting guard: no era's metric may drop by more than this (absolute) versus the incumbent."""
    min_metric: float | None = Field(default=None, ge=0, le=1)
    """Floor on the pooled metric; the first model of a line is promoted only above it."""
    required_checks: list[str] = Field(default_factory=lambda: list(CHECK_NAMES))
    """Post-training checks that must pass for promotion."""
    mode: Literal["auto", "dryRun"] = "auto"
    """`auto` promotes a passing candidate; `dryRun` decides and records but never moves the pointer."""
    approval: Literal["Automatic", "Manual"] = "Automatic"
    """`Manual`: a candidate that passes the gate waits in state AwaitingApproval until someone allowed to patch
    the RetrainJob sets the annotation `kretrain.dev/approve: <candidate version>` (then it is promoted with the
    same conditional write; an incumbent that changed meanwhile gives IncumbentChanged) or
    `kretrain.dev/reject: <candidate version>` (then it is rejected). `Automatic`: no person in the loop."""
    alias: str | None = Field(default=None, pattern=NAME_PATTERN)
    """Alias a passing candidate moves (e.g. `staging`, kretrain/aliases.py) instead of the incumbent, which stays
    the baseline it is compared with; unset: the incumbent pointer moves."""
    uncertainty: Literal["bootstrap", "pointEstimate"] = "bootstrap"
    """`bootstrap`: the gate decides on paired-bootstrap confidence intervals of candidate - incumbent
    (pooled superiority: the pooled delta's lower bound >= minImprovement.absolute; per-era non-inferiority:
    each era's lower bound >= -maxEraRegression, an era too small to show it is reported as inconclusive and
    blocks; a class x era cell rejects only when its upper bound is below -maxClassRegression).
    `pointEstimate`: the same bounds on the point estimates alone (the behaviour before intervals). A report
    without intervals (an older trainer) is decided on point estimates, and a reason says so."""
    confidence: float = Field(default=0.95, ge=0.5, le=0.999)
    """Two-sided level of the percentile bootstrap intervals (0.95: the 2.5% and 97.5% quantiles of the
    resampled deltas); a decision on one bound is then one-sided at (1 + confidence) / 2."""
    resamples: int = Field(default=1000, ge=100, le=10000)
    """Bootstrap resamples of the test images (stratified by era, the same resample for both models)."""
    bootstrap_seed: int = Field(default=0, ge=0, le=2**32 - 1)
    """Seed of the resampling: the same report, spec and seed give the same intervals."""
    max_class_regression: float | None = Field(default=0.1, ge=0, le=1)
    """Per-class x era forgetting guard on per-class AP50-95: an (era, class) cell with at least
    minClassSupport test instances rejects when its AP drops by more than this (with `bootstrap`: when even
    the upper bound of its delta is below -maxClassRegression). Unset: no class guard. Classes new in an era
    (no test labels in any older era) are reported, not guarded."""
    min_class_support: int = Field(default=10, ge=1, le=1_000_000)
    """Test instances an (era, class) cell needs before the class guard applies to it."""

    @field_validator("alias")
    @classmethod
    def _alias_not_incumbent(cls, alias: str | None) -> str | None:
        if alias == "incumbent":
            raise ValueError("'incumbent' is not an alias: leave promotion.alias unset to move the incumbent")
        return alias

    @field_validator("required_checks")
    @classmethod
    def _known_checks(cls, checks: list[str]) -> list[str]:
        unknown = [c for c in checks if c not in CHECK_NAMES]
        if unknown:
            raise ValueError(f"unknown checks {unknown}; known: {list(CHECK_NAMES)}")
        return checks


ExportFormat = Literal["onnx", "engine"]


def _default_formats() -> list[ExportFormat]:
    return ["onnx"]


class ExportSpec(ApiModel):
    """Serving artifacts exported in the trainer pod after the checks, each proven equal to the PyTorch model."""

    formats: list[ExportFormat] = Field(default_factory=_default_formats, max_length=2)
    """Ultralytics export formats: `onnx` (checked with onnxruntime on CPU) and `engine` (TensorRT; the pod
    needs a GPU). Empty: nothing is exported and the exportParity check passes with nothing to compare."""
    imgsz: int | None = Field(default=None, ge=32, le=4096, multiple_of=32)
    """Input size of the exported model (unset: strategy.imgsz)."""
    half: bool = False
    """Export FP16 weights (ONNX on CPU is converted with onnxruntime's float16 tool, inputs stay FP32)."""
    dynamic: bool = False
    """Dynamic batch and image size axes."""
    opset: int | None = Field(default=None, ge=9, le=30)
    """ONNX opset (unset: the newest the installed torch and onnx support); checked against the installed onnx."""
    max_output_diff: float | None = Field(default=None, gt=0, le=1)
    """Largest tolerated max|exported - PyTorch| / max(max|PyTorch|, 1) on the test images (unset: 1e-3,
    or 2e-2 with `half`)."""
    max_metric_drop: float = Field(default=0.01, ge=0, le=1)
    """Largest tolerated drop (absolute) of the pooled promotion metric of the exported model versus PyTorch."""

    @field_validator("formats")
    @classmethod
    def _unique_formats(cls, formats: list[str]) -> list[str]:
        if len(set(formats)) != len(formats):
            raise ValueError(f"formats must not repeat a format: {formats}")
        return formats

    @property
    def output_tolerance(self) -> float:
        """The effective output tolerance of the exportParity check."""
        if self.max_output_diff is not None:
            return self.max_output_diff
        return 2e-2 if self.half else 1e-3


class Toleration(ApiModel):
    """A pod toleration (as in core/v1)."""

    key: str | None = None
    """Taint key."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """`Exists` or `Equal`."""
    value: str | None = None
    """Taint value for `Equal`."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to tolerate (all when unset)."""
    toleration_seconds: int | None = Field(default=None, ge=0)
    """For NoExecute: how long the pod stays bound after the taint appears."""


STORAGE_QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(k|Ki|Mi|Gi|Ti|M|G|T)?$"
_STORAGE_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_STORAGE_UNITS |= {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def storage_bytes(quantity: str) -> int:
    """Bytes of a storage quantity such as `20Gi` or `1.5G` (rounded up to a whole byte)."""
    match = re.fullmatch(STORAGE_QUANTITY_PATTERN, quantity)
    if match is None:
        raise ValueError(f"not a storage quantity: {quantity!r}")
    number, unit = quantity[: len(quantity) - len(match.group(2) or "")], match.group(2) or ""
    whole, _, frac = number.partition(".")
    scale = _STORAGE_UNITS[unit]
    return int(whole) * scale + -(-int(frac or "0") * scale // 10 ** len(frac))


SUBDOMAIN_PATTERN = r"^[a-z0-9]([a-z0-9\-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9\-]*[a-z0-9])?)*$"
"""A Kubernetes object name that may hold dots (PersistentVolumeClaim, StorageClass): a DNS subdomain."""


class CacheClaimSpec(ApiModel):
    """An existing PersistentVolumeClaim in the RetrainJob's namespace mounted as the dataset cache."""

    claim_name: str = Field(max_length=253, pattern=SUBDOMAIN_PATTERN)
    """Name of the claim. ReadWriteOnce: one run at a time (the next run of the line reuses it);
    ReadWriteMany: shared by the runs of a model line, which take turns per dataset for the pull and
    validation (a lock file in the cache) and train concurrently."""


class CacheEphemeralSpec(ApiModel):
    """A generic ephemeral volume (a claim created with the pod and deleted with it) as the dataset cache."""

    storage_class_name: str | None = Field(default=None, max_length=253, pattern=SUBDOMAIN_PATTERN)
    """StorageClass of the claim (unset: the cluster's default class)."""
    size: str = Field(pattern=STORAGE_QUANTITY_PATTERN)
    """Requested size of the claim (a Kubernetes quantity, 1Mi to 1024Ti)."""

    @field_validator("size")
    @classmethod
    def _size_in_range(cls, size: str) -> str:
        if not 2**20 <= storage_bytes(size) <= 2**50:
            raise ValueError(f"{size!r} must be between 1Mi and 1024Ti")
        return size


class CacheVolumeSpec(ApiModel):
    """Where the dataset cache (`/cache`) lives when not in the default emptyDir: exactly one source."""

    persistent_volume_claim: CacheClaimSpec | None = None
    """An existing claim: the eras pulled and the validation results survive the pod, so the next run
    pulls and decodes only what is new."""
    ephemeral: CacheEphemeralSpec | None = None
    """A volume of a storage class and size that lives as long as the pod (a cache larger than the
    node's ephemeral storage allows)."""

    @model_validator(mode="after")
    def _exactly_one(self) -> CacheVolumeSpec:
        if (self.persistent_volume_claim is None) == (self.ephemeral is None):
            raise ValueError("resources.cache: set exactly one of persistentVolumeClaim and ephemeral")
        return self


class ResourcesSpec(ApiModel):
    """Compute and local disk for the training pod."""

    gpus: int = Field(default=1, ge=0, le=16)
    """NVIDIA GPUs (`nvidia.com/gpu`); more than one trains with DDP over all of them; 0 trains on CPU."""
    nodes: int = Field(default=1, ge=1, le=64)
    """Pods (nodes) to train across with `torchrun` (c10d rendezvous): more than one makes an Indexed Job with a
    headless Service (docs/install.md, "Beyond one node"); 1 is the single training pod."""
    gpus_per_node: int | None = Field(default=None, ge=0, le=16)
    """GPUs of each pod when `nodes` > 1 (one torchrun process per GPU; 0: one CPU process with gloo); sets
    `gpus` to the same number (`gpus` is always per pod). Unset: `gpus`."""
    cpu: Quantity = "4"
    """CPU request and limit (a Kubernetes quantity)."""
    memory: Quantity = "16Gi"
    """Memory request and limit (a Kubernetes quantity)."""
    shm_size: Quantity = "2Gi"
    """Size of the memory-backed `/dev/shm` (data-loader workers need it)."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels the pod must run on."""
    tolerations: list[Toleration] = Field(default_factory=list)
    """Tolerations (e.g. for tainted GPU nodes); their keys must be allowed by the operator policy."""
    priority_class_name: str | None = Field(default=None, pattern=NAME_PATTERN)
    """PriorityClass of the training pod (only those the operator policy allows; default: none)."""
    queue_name: str | None = Field(default=None, pattern=NAME_PATTERN)
    """Kueue LocalQueue (in the RetrainJob's namespace) that admits the Job: sets the `kueue.x-k8s.io/queue-name`
    label and creates the Job suspended, for Kueue to unsuspend on admission (unset: the operator's default queue,
    if any; with none the Job is not queued)."""
    image: str | None = Field(default=None, max_length=512)
    """Trainer image; default is the operator's configured trainer image (the operator policy bounds it)."""
    scratch_size: str = Field(default="20Gi", pattern=STORAGE_QUANTITY_PATTERN)
    """Size limit of the `/scratch` emptyDir (run folder: prepared lists, checkpoints, exported weights)."""
    cache_size: str = Field(default="50Gi", pattern=STORAGE_QUANTITY_PATTERN)
    """Size limit of the `/cache` emptyDir (local mirror of the dataset's eras); unused with `cache`."""
    cache: CacheVolumeSpec | None = None
    """A persistent or ephemeral volume for `/cache` instead of the emptyDir (unset: an emptyDir of cacheSize,
    emptied with every pod)."""
    tmp_size: str = Field(default="2Gi", pattern=STORAGE_QUANTITY_PATTERN)
    """Size limit of the `/tmp` emptyDir (library config and caches). The pod's ephemeral-storage request
    and limit are scratchSize + cacheSize (without `cache`) + tmpSize plus 1Gi for logs."""

    @property
    def per_node_gpus(self) -> int:
        """GPUs of each training pod (`gpusPerNode` when set: `gpus` then equals it)."""
        return self.gpus

    @model_validator(mode="before")
    @classmethod
    def _gpus_per_node(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        per_node = raw.get("gpusPerNode", raw.get("gpus_per_node"))
        if per_node is None:
            return raw
        if raw.get("nodes", 1) == 1:
            raise ValueError("gpusPerNode applies only with nodes > 1 (one pod: set gpus)")
        if "gpus" in raw and raw["gpus"] != per_node:
            raise ValueError(f"gpus ({raw['gpus']}) and gpusPerNode ({per_node}) disagree: set one of them")
        return {**raw, "gpus": per_node}

    @field_validator("scratch_size", "cache_size", "tmp_size")
    @classmethod
    def _disk_in_range(cls, size: str) -> str:
        if not 2**20 <= storage_bytes(size) <= 2**50:
            raise ValueError(f"{size!r} must be between 1Mi and 1024Ti")
        return size


class StorageSpec(ApiModel):
    """S3 connection; credentials come only from a Secret."""

    endpoint: str | None = Field(default=None, max_length=1024, pattern=r"^https?://[^\s/@?#\\%]+(/[^\s?#]*)?$")
    """S3 endpoint URL, `http(s)://host[:port][/path]` without user info, query or fragment (unset: the
    operator's default, or AWS); must be one the operator policy allows."""
    region: str | None = Field(default=None, pattern=r"^[a-z0-9\-]+$")
    """S3 region the requests are signed for (unset: the operator's default, KRETRAIN_S3_REGION, us-east-1
    unless the admin sets another; `kretrain run`: AWS_DEFAULT_REGION)."""
    credentials_secret: str | None = Field(default=None, pattern=NAME_PATTERN)
    """Name of a Secret in the RetrainJob's namespace with keys AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY (unset: the operator's default Secret); must be one the operator policy allows."""
    registry: S3Uri | None = None
    """S3 prefix of the model registry (unset: the operator's default)."""

    @model_validator(mode="before")
    @classmethod
    def _no_inline_credentials(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = {"credentialsSecret", "credentials_secret"}
            inline = sorted(k for k in data if k not in allowed and CREDENTIAL_KEYS.search(str(k)))
            if inline:
                raise ValueError(
                    f"credentials must not be inlined in the spec (found {', '.join(inline)}); "
                    "store them in a Secret and name it in storage.credentialsSecret"
                )
        return data


WEBHOOK_URL_PATTERN = r"^https?://[^\s/@?#\\%]+(/[^\s#]*)?$"
"""http(s)://host[:port][/path][?query] without user info or fragment (as storage.endpoint)."""
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class SecretKeyRef(ApiModel):
    """One key of a Secret in the RetrainJob's namespace."""

    name: str = Field(pattern=NAME_PATTERN)
    """The Secret's name; must be one the operator policy allows (policy.allowedWebhookSecrets)."""
    key: str = Field(default="hmacKey", pattern=r"^[-._a-zA-Z0-9]{1,253}$")
    """The key holding the HMAC key (at least 16 bytes)."""


class WebhookSpec(ApiModel):
    """A webhook told about each promotion: a signed JSON PromotionNotice POSTed, retried with backoff."""

    url: str = Field(pattern=WEBHOOK_URL_PATTERN, max_length=2048)
    """`http(s)://host[:port][/path]` without user info or fragment; its scheme, host and port must be one the
    operator policy allows (policy.allowedWebhookHosts). Put no token in it: the body is HMAC-signed."""
    secret_ref: SecretKeyRef
    """The Secret key with the HMAC-SHA256 key the body is signed with (header X-Kretrain-Signature)."""


class InferenceServiceRef(ApiModel):
    """A KServe InferenceService in the RetrainJob's own namespace."""

    name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)
    """Its name; after a promotion its spec.predictor.model.storageUri is merge-patched to the version's folder."""


class ServingSpec(ApiModel):
    """Who is told after a promotion (each optional, each delivered at least once, recorded in
    status.notifications); a Promoted Event is always posted. A failing delivery never changes the decision."""

    webhook: WebhookSpec | None = None
    """A webhook receiving the signed PromotionNotice."""
    inference_service: InferenceServiceRef | None = None
    """A KServe InferenceService whose storageUri is pointed at the promoted version."""


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
