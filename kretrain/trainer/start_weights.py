"""Start weights of a run: fetched and verified (registry, pinned s3, built-in YAML), then the YOLO model built."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kretrain.api import RetrainJobSpec
from kretrain.api.spec_strategy import FIRST_MODEL_WEIGHTS
from kretrain.trainer.modelfiles import (
    MAX_WEIGHTS_BYTES,
    ModelFileError,
    check_loaded_model,
    check_model_file,
    fetch_pinned,
    model_yaml,
    restrict_ultralytics,
    sha256_file,
)
from kretrain.trainer.train_errors import TrainingError

if TYPE_CHECKING:  # pragma: no cover
    from kretrain.registry import Registry
    from kretrain.store import ObjectStore


@dataclass
class StartWeights:
    """What training starts from."""

    description: str
    """What the spec asked for (`incumbent (v3)`, `s3://...pt`, `yolov8n.yaml`)."""
    weights: Path | None = None
    """Verified local .pt, or None for a random init from a YAML."""
    yaml: str | None = None
    """Model YAML (local path or Ultralytics name) to build the network from; None: the .pt's own network."""
    sha256: str | None = None
    """SHA-256 of `weights`."""
    version: str | None = None
    """Registry version the weights came from."""


def resolve_start_weights(
    spec: RetrainJobSpec,
    dest: Path,
    registry: Registry | None = None,
    store: ObjectStore | None = None,
    incumbent_version: str | None = None,
) -> StartWeights:
    """Fetch and verify the start weights named by `strategy.baseWeights` / `strategy.architecture`.

    Nothing is unpickled or parsed before its hash matched:
    - `incumbent` / a registry version: `Registry.fetch_weights` (verified against the registry's record);
    - `s3://...pt@sha256:<hex>`: downloaded and refused unless its sha256 equals the spec's pin (no sidecar);
    - an Ultralytics built-in model YAML name: random init, from the installed package only.
    Every model YAML (built-in or pinned s3) is checked (`modelfiles.check_model_yaml`) and Ultralytics
    reads only the checked copy. With `architecture`, the network is built from that YAML and the
    weights transferred where layers match.
    """
    s = spec.strategy
    base = s.effective_base_weights
    dest.mkdir(parents=True, exist_ok=True)
    start: StartWeights
    try:
        if s.base_weights_pin is not None:
            if store is None:
                raise TrainingError(f"strategy.baseWeights {base}: no object store configured")
            digest = s.base_weights_pin[1]
            local = fetch_pinned(store, base, dest / "base.pt", "strategy.baseWeights", MAX_WEIGHTS_BYTES)
            start = StartWeights(description=base, weights=local, sha256=digest)
        elif base.endswith((".yaml", ".yml")):
            yaml_path = model_yaml(base, "strategy.baseWeights", dest / "base-yaml", store)
            start = StartWeights(description=base, yaml=str(yaml_path))
        else:
            start = _registry_weights(spec, base, dest, registry, incumbent_version)
        if s.architecture:
            arch = model_yaml(s.architecture, "strategy.architecture", dest / "architecture", store)
            start.yaml = str(arch)
            start.description = f"{s.architecture} <- {start.description}"
    except ModelFileError as exc:
        raise TrainingError(str(exc)) from exc
    return start


def _registry_weights(
    spec: RetrainJobSpec, base: str, dest: Path, registry: Registry | None, incumbent_version: str | None
) -> StartWeights:
    if registry is None and spec.strategy.first_model_fallback:
        return _first_model(dest)
    if registry is None:
        raise TrainingError(f"strategy.baseWeights {base!r}: no model registry configured")
    version = base
    pointer = registry.incumbent(spec.model)  # trainers cannot write it: it pins the incumbent's sha256
    if base == "incumbent":
        # The run's incumbent as the operator resolved it ("" = none, evaluated as a first model); looked up
        # only when not given (`kretrain train` without an operator).
        version = (pointer.version if pointer else "") if incumbent_version is None else incumbent_version
        if not version and spec.strategy.first_model_fallback:
            return _first_model(dest)
        if not version:
            raise TrainingError(
                f"strategy.baseWeights is 'incumbent' (strategy.type {spec.strategy.type}) but model "
                f"{spec.model!r} has no incumbent yet; train a first model with strategy.type full"
            )
        if pointer is None or pointer.version != version:  # its weights would be pinned by version.json alone
            raise TrainingError(
                f"strategy.baseWeights is 'incumbent' ({version}), but the incumbent pointer of {spec.model!r} "
                f"now names {pointer.version if pointer else 'nothing'}: it moved since the run started; "
                "start a new run"
            )
    pinned = pointer.sha256 if pointer is not None and pointer.version == version else None
    local = registry.fetch_weights(spec.model, version, dest / version, pinned=pinned)  # TamperedWeights unless ok
    return StartWeights(
        description=f"{base} ({version})" if base == "incumbent" else version,
        weights=local,
        sha256=sha256_file(local),
        version=version,
    )


def build_model(start: StartWeights) -> Any:
    """The Ultralytics YOLO model to train: YAML (random init), .pt, or YAML with weights transferred.

    The YAML (and the model YAML a .pt carries, from which Ultralytics rebuilds the network to train)
    is checked first; `start.weights` must already be verified (`resolve_start_weights`).
    """
    restrict_ultralytics()
    from ultralytics import YOLO

    try:
        if start.yaml:
            check_model_file(Path(start.yaml), f"model YAML {Path(start.yaml).name}")
        if start.yaml and start.weights:
            return YOLO(start.yaml).load(str(start.weights))
        if start.weights:
            yolo = YOLO(str(start.weights))
            check_loaded_model(yolo, f"start weights {start.description}")
            return yolo
        if start.yaml:
            return YOLO(start.yaml)
    except ModelFileError as exc:
        raise TrainingError(str(exc)) from exc
    raise TrainingError("no start weights or model YAML")


def _first_model(dest: Path) -> StartWeights:
    """A default full retrain of a line without an incumbent: random init from FIRST_MODEL_WEIGHTS."""
    yaml_path = model_yaml(FIRST_MODEL_WEIGHTS, "strategy.baseWeights", dest / "base-yaml", None)
    return StartWeights(description=f"{FIRST_MODEL_WEIGHTS} (no incumbent yet)", yaml=str(yaml_path))
