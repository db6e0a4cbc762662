"""Serving artifacts: spec.export through Ultralytics' own exporter (ONNX, TensorRT), offline, with checked arguments."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kretrain.api import RetrainJobSpec
from kretrain.api.ultralytics_args import EXPORT_PRECISION_ARGS, ULTRALYTICS_EXPORT_ARGS
from kretrain.trainer.modelfiles import restrict_ultralytics, sha256_file

SUFFIXES = {"onnx": ".onnx", "engine": ".engine"}
"""File suffix Ultralytics gives each supported format."""

# What Ultralytics' exporter raises on a failed export (its try_export re-raises after logging). An export is
# one call into a third-party library over a file we produced; its failure is reported, the run goes on.
EXPORT_FAILURES: tuple[type[BaseException], ...] = (
    AssertionError, RuntimeError, ValueError, TypeError, ImportError, OSError, KeyError, AttributeError,
)  # fmt: skip


class ExportError(ValueError):
    """spec.export cannot be honoured in this pod (bad option, engine without a GPU); names the field."""


class ExportFailed(RuntimeError):
    """Ultralytics' exporter failed on valid options; the exportParity check reports it."""


@dataclass(frozen=True)
class ExportedArtifact:
    """One exported file in the pod, before it is registered."""

    format: str
    """Ultralytics format (`onnx`, `engine`)."""
    path: Path
    """Local file."""
    sha256: str
    """Hex SHA-256 of the file (the one the parity check ran)."""
    size: int
    """Size in bytes."""
    args: dict[str, Any] = field(default_factory=dict)
    """The export arguments used."""


def precision_key(cfg_keys: frozenset[str] | set[str]) -> str:
    """The FP16 switch this Ultralytics knows (`quantize` since 8.4, `half` before)."""
    for key in EXPORT_PRECISION_ARGS:
        if key in cfg_keys:
            return key
    raise ExportError(f"spec.export.half: this Ultralytics knows none of {', '.join(EXPORT_PRECISION_ARGS)}")


def build_export_args(spec: RetrainJobSpec, fmt: str, precision: str = "quantize") -> dict[str, Any]:
    """Ultralytics export arguments for one format of spec.export. Pure: no Ultralytics import.

    ONNX is exported on the CPU (the runtime the parity check uses); TensorRT on GPU 0.
    """
    e = spec.export
    args: dict[str, Any] = {
        "format": fmt,
        "imgsz": e.imgsz or spec.strategy.imgsz,
        "dynamic": e.dynamic,
        "simplify": True,
        "device": 0 if fmt == "engine" else "cpu",
        "batch": 1,
    }
    if e.opset is not None:
        args["opset"] = e.opset
    if e.half:
        args[precision] = 16 if precision == "quantize" else True
    return args


def check_export_spec(spec: RetrainJobSpec, gpu: bool) -> None:
    """Pure checks of spec.export against this pod; ExportError naming the field."""
    e = spec.export
    if "engine" in e.formats and not gpu:
        raise ExportError(
            "spec.export.formats: 'engine' (TensorRT) needs a GPU in the trainer pod, and this pod has none "
            f"(resources.gpus={spec.resources.gpus}, CUDA available: no); export 'onnx' or give the pod a GPU"
        )
    size = e.imgsz or spec.strategy.imgsz
    if size % 32:
        raise ExportError(f"spec.export.imgsz: {size} (from strategy.imgsz) is not a multiple of the stride 32")


def check_export_args(spec: RetrainJobSpec, gpu: bool) -> list[dict[str, Any]]:
    """Every format's arguments, checked with Ultralytics' own `check_cfg` and the installed onnx's opsets.

    Raises ExportError naming the field. Imports Ultralytics (call `offline.configure()` first).
    """
    check_export_spec(spec, gpu)
    if not spec.export.formats:
        return []
    from ultralytics.cfg import check_cfg
    from ultralytics.utils import DEFAULT_CFG_DICT

    keys = frozenset(DEFAULT_CFG_DICT)
    missing = sorted(ULTRALYTICS_EXPORT_ARGS - keys)
    if missing:
        raise ExportError(f"spec.export: this Ultralytics has no export arguments {', '.join(missing)}")
    precision = precision_key(keys)
    try:
        import onnx
    except ImportError:
        raise ExportError(
            "spec.export.formats: the trainer image has no onnx package; no ONNX export possible"
        ) from None
    newest = int(onnx.defs.onnx_opset_version())
    if spec.export.opset is not None and spec.export.opset > newest:
        raise ExportError(
            f"spec.export.opset: {spec.export.opset} is newer than the installed onnx supports ({newest})"
        )
    out = []
    for fmt in spec.export.formats:
        args = build_export_args(spec, fmt, precision)
        try:
            check_cfg(dict(args), hard=True)
        except (TypeError, ValueError) as exc:
            raise ExportError(f"spec.export: {exc}") from exc
        out.append(args)
    return out


def export_model(weights: Path, spec: RetrainJobSpec, dest: Path, gpu: bool) -> list[ExportedArtifact]:
    """Export verified `weights` to every format of spec.export under `dest` (`model.onnx`, `model.engine`).

    ExportError for options this pod cannot honour, ExportFailed when Ultralytics' exporter fails. Ultralytics
    never installs or downloads here: `offline.configure()` sets YOLO_OFFLINE and YOLO_AUTOINSTALL=false.
    """
    all_args = check_export_args(spec, gpu)
    restrict_ultralytics()
    from ultralytics import YOLO

    dest.mkdir(parents=True, exist_ok=True)
    out: list[ExportedArtifact] = []
    for args in all_args:
        fmt = str(args["format"])
        work = dest / fmt
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        src = work / "model.pt"
        shutil.copyfile(weights, src)  # Ultralytics writes the export next to its input
        try:
            produced = Path(str(YOLO(str(src)).export(**args)))
        except EXPORT_FAILURES as exc:
            raise ExportFailed(f"export to {fmt} with {args} failed: {type(exc).__name__}: {exc}") from exc
        expected = src.with_suffix(SUFFIXES[fmt])
        if produced.resolve() != expected.resolve() or not expected.is_file():
            raise ExportFailed(f"export to {fmt} produced {produced}, not the expected {expected.name}")
        final = dest / f"model{SUFFIXES[fmt]}"
        expected.replace(final)
        shutil.rmtree(work, ignore_errors=True)
        out.append(ExportedArtifact(fmt, final, sha256_file(final), final.stat().st_size, dict(args)))
    return out
