"""The exportParity check: an exported model run in its runtime against the PyTorch model on the same test images."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from kretrain.api import CheckResult, RetrainJobSpec
from kretrain.trainer.checks import FormatParity, export_parity_decision, load_batch
from kretrain.trainer.export import ExportedArtifact, ExportFailed, export_model
from kretrain.trainer.modelfiles import sha256_file

PARITY_IMAGES = 8
"""Test images in the fixed batch the raw outputs are compared on."""

_METRIC_ATTRS = {"mAP50-95": "map", "mAP50": "map50", "precision": "mp", "recall": "mr"}


def _onnx_outputs(path: Path, x: Any) -> Any:
    """First output of an ONNX model on batch `x` (numpy, N x 3 x H x W) with onnxruntime on the CPU."""
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    step = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else len(x)
    return np.concatenate([sess.run(None, {inp.name: x[i : i + step]})[0] for i in range(0, len(x), step)])


def _backend_outputs(path: Path, x: Any) -> Any:
    """First output of any other exported format through Ultralytics' AutoBackend (TensorRT on GPU 0)."""
    import numpy as np
    import torch
    from ultralytics.nn.autobackend import AutoBackend

    backend = AutoBackend(str(path), device=torch.device("cuda:0"))
    outs = []
    for i in range(len(x)):
        y = backend(torch.from_numpy(x[i : i + 1]).to(backend.device))
        y = y[0] if isinstance(y, (list, tuple)) else y
        outs.append(y.float().cpu().numpy())
    return np.concatenate(outs)


def max_relative_diff(reference: Any, other: Any) -> float:
    """max|other - reference| / max(max|reference|, 1); inf for a shape mismatch or a non-finite value."""
    import numpy as np

    if reference.shape != other.shape:
        return math.inf
    scale = max(float(np.abs(reference).max()), 1.0)
    diff = float(np.abs(other.astype(np.float64) - reference.astype(np.float64)).max()) / scale
    return diff if math.isfinite(diff) else math.inf


def pooled_metric(weights: Path, test_yaml: Path, imgsz: int, metric: str, workdir: Path, device: Any) -> float:
    """The pooled metric of one model (.pt or exported) over the test set, square letterbox (rect=False) for all."""
    from ultralytics import YOLO

    kwargs: dict[str, Any] = dict(
        data=str(Path(test_yaml).resolve()), imgsz=imgsz, batch=1, rect=False, plots=False, verbose=False,
        split="val", project=str(workdir.resolve()), name=f"parity-{Path(weights).suffix[1:]}", exist_ok=True,
    )  # fmt: skip
    if device is not None:
        kwargs["device"] = device
    return float(getattr(YOLO(str(weights)).val(**kwargs).box, _METRIC_ATTRS[metric]))


def format_parity(
    artifact: ExportedArtifact, weights: Path, images: list[Path], test_yaml: Path, metric: str, workdir: Path,
    pytorch_metric: float,
) -> FormatParity:  # fmt: skip
    """Outputs and metric of one exported file against the PyTorch weights."""
    import torch
    from ultralytics import YOLO

    imgsz = int(artifact.args["imgsz"])
    x = load_batch(images[:PARITY_IMAGES], imgsz)
    model: Any = YOLO(str(weights)).model
    model = model.float().eval()
    with torch.no_grad():
        ref = model(x)
    ref = (ref[0] if isinstance(ref, (list, tuple)) else ref).numpy()
    run = _onnx_outputs if artifact.format == "onnx" else _backend_outputs
    out = run(artifact.path, x.numpy())
    device = "cpu" if artifact.format == "onnx" else 0
    exported = pooled_metric(artifact.path, test_yaml, imgsz, metric, workdir, device)
    return FormatParity(artifact.format, max_relative_diff(ref, out), pytorch_metric, exported)


def export_and_check(
    spec: RetrainJobSpec, weights: Path, test_yaml: Path, images: list[Path], workdir: Path, gpu: bool
) -> tuple[list[ExportedArtifact], CheckResult]:
    """Export `weights` as spec.export asks and run the exportParity check; artifacts only when it passed.

    Spec errors (ExportError) are raised; a failed export or run is a failed check naming it.
    """
    e, metric = spec.export, spec.promotion.metric
    if not e.formats:
        return [], export_parity_decision([], e.output_tolerance, e.max_metric_drop, metric)
    try:
        artifacts = export_model(weights, spec, workdir / "artifacts", gpu)
    except ExportFailed as exc:
        results = [FormatParity(fmt, error=str(exc)[:2000]) for fmt in e.formats]
        return [], export_parity_decision(results, e.output_tolerance, e.max_metric_drop, metric)
    imgsz = int(artifacts[0].args["imgsz"])
    pt_metric = pooled_metric(weights, test_yaml, imgsz, metric, workdir, "cpu" if not gpu else 0)
    results = [format_parity(a, weights, images, test_yaml, metric, workdir, pt_metric) for a in artifacts]
    for a, r in zip(artifacts, results, strict=True):
        if sha256_file(a.path) != a.sha256:  # the file registered is the file that ran
            results[results.index(r)] = FormatParity(a.format, error=f"{a.path.name} changed while it was checked")
    check = export_parity_decision(results, e.output_tolerance, e.max_metric_drop, metric)
    return (artifacts if check.passed else []), check
