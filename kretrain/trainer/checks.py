"""Post-training checks: generalization gap, fusion consistency, finite losses, predicts something, export parity."""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kretrain.api import CheckResult


@dataclass(frozen=True)
class CheckThresholds:
    """Thresholds of the post-training checks (module defaults; documented in the report's details)."""

    max_gap: float = 0.3
    """Largest tolerated mAP50 on a sample of training images minus mAP50 on val."""
    gap_sample: int = 200
    """Training images sampled for the gap check."""
    fusion_tolerance: float = 1e-3
    """Largest tolerated max|fused - unfused| / max(max|unfused|, 1) on a fixed batch of real images."""
    fusion_images: int = 8
    """Real images in the fixed fusion batch."""
    predict_conf: float = 0.25
    """Confidence a prediction needs to count for predictsSomething."""


DEFAULT_THRESHOLDS = CheckThresholds()


# -- finiteLoss ------------------------------------------------------------------------------------


def finite_loss_check(rows: list[dict[str, float]]) -> CheckResult:
    """Every loss column of every epoch in results.csv is finite."""
    bad = [
        f"epoch {int(r.get('epoch', i + 1))} {k}={v}"
        for i, r in enumerate(rows)
        for k, v in r.items()
        if "loss" in k and not math.isfinite(v)
    ]
    n_loss = sum(1 for r in rows for k in r if "loss" in k)
    if not rows or n_loss == 0:
        return CheckResult(name="finiteLoss", passed=False, value=None, threshold=0, detail="no losses recorded")
    return CheckResult(
        name="finiteLoss",
        passed=not bad,
        value=float(len(bad)),
        threshold=0,
        detail=(
            f"{len(bad)} non-finite loss values: {', '.join(bad[:5])}" if bad else f"{n_loss} loss values, all finite"
        ),
    )


# -- predictsSomething -----------------------------------------------------------------------------


def predicts_something_check(
    predictions: int, images: int, conf: float = DEFAULT_THRESHOLDS.predict_conf
) -> CheckResult:
    """The model predicts at least one box at `conf` on the test images."""
    return CheckResult(
        name="predictsSomething",
        passed=predictions > 0,
        value=float(predictions),
        threshold=1,
        detail=f"{predictions} boxes at confidence >= {conf} on {images} test images",
    )


# -- generalizationGap -----------------------------------------------------------------------------


def gap_decision(train_metric: float, val_metric: float, max_gap: float) -> CheckResult:
    """Pure decision: train minus val above `max_gap` fails."""
    gap = train_metric - val_metric
    return CheckResult(
        name="generalizationGap",
        passed=gap <= max_gap,
        value=round(gap, 6),
        threshold=max_gap,
        detail=(
            f"mAP50 {train_metric:.3f} on a sample of training images vs {val_metric:.3f} on val: gap {gap:.3f} "
            f"{'<=' if gap <= max_gap else '>'} {max_gap}"
        ),
    )


def sample_train_yaml(data_yaml: Path, dest: Path, n: int, seed: int = 0) -> Path:
    """A data YAML whose `val` is a deterministic sample of `n` training images (list file next to it)."""
    data = yaml.safe_load(Path(data_yaml).read_text())
    train = data["train"]
    files: list[str] = []
    for entry in train if isinstance(train, list) else [train]:
        p = Path(entry)
        if not p.is_absolute() and data.get("path"):
            p = Path(data["path"]) / p
        if p.is_dir():
            files += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})
        else:
            files += [line.strip() for line in p.read_text().splitlines() if line.strip()]
    files = sorted(set(files))
    random.Random(seed).shuffle(files)
    sample = sorted(files[:n])
    dest.mkdir(parents=True, exist_ok=True)
    listing = dest / "gap_train_sample.txt"
    listing.write_text("\n".join(sample) + "\n")
    out = dict(data)
    out["val"] = str(listing.resolve())
    out.pop("test", None)
    path = dest / "gap_train_sample.yaml"
    path.write_text(yaml.safe_dump(out))
    return path


def generalization_gap_check(
    weights: Path,
    data_yaml: Path,
    val_map50: float,
    workdir: Path,
    imgsz: int,
    batch: int = 16,
    device: Any = None,
    thresholds: CheckThresholds = DEFAULT_THRESHOLDS,
) -> CheckResult:
    """mAP50 on a sample of the training images (no augmentation) minus `val_map50`."""
    from ultralytics import YOLO

    sample = sample_train_yaml(data_yaml, workdir, thresholds.gap_sample)
    kwargs: dict[str, Any] = dict(
        data=str(sample), imgsz=imgsz, batch=batch, plots=False, verbose=False, split="val",
        project=str(workdir.resolve()), name="gap", exist_ok=True,
    )  # fmt: skip
    if device is not None:
        kwargs["device"] = device
    metrics = YOLO(str(weights)).val(**kwargs)
    return gap_decision(float(metrics.box.map50), val_map50, thresholds.max_gap)


# -- fusionConsistency -----------------------------------------------------------------------------


def count_layers(model: Any) -> int:
    """Ultralytics' layer count (`model.info()`): every module in the tree."""
    return len(list(model.modules()))


def expected_fused_layers(model: Any) -> int:
    """Layer count of a freshly built network from the same YAML once fused: the structure fusion should give."""
    from ultralytics.nn.tasks import DetectionModel

    ref = DetectionModel(copy.deepcopy(model.yaml), nc=len(model.names), verbose=False)
    ref.eval()
    ref.fuse(verbose=False)
    return count_layers(ref)


def load_batch(images: list[Path], imgsz: int) -> Any:
    """A float batch (N,3,imgsz,imgsz) in [0,1] from real images, letterboxed like Ultralytics."""
    import numpy as np
    import torch
    from PIL import Image
    from ultralytics.data.augment import LetterBox

    lb = LetterBox(new_shape=(imgsz, imgsz), auto=False)
    arrs = []
    for p in images:
        im = np.asarray(Image.open(p).convert("RGB"))[:, :, ::-1]  # BGR like cv2
        boxed: Any = lb(image=im)  # an ndarray when called with image= only
        arrs.append(boxed[:, :, ::-1].transpose(2, 0, 1).copy())
    return torch.from_numpy(np.stack(arrs)).float() / 255.0


def _output(model: Any, x: Any) -> Any:
    y = model(x)
    return y[0] if isinstance(y, (list, tuple)) else y


def fusion_decision(before: int, after: int, expected_after: int, max_rel_diff: float, tolerance: float) -> CheckResult:
    """Pure decision: the fused layer count equals the expected one and outputs agree within `tolerance`."""
    count_ok = after == expected_after
    diff_ok = math.isfinite(max_rel_diff) and max_rel_diff <= tolerance
    reasons = []
    if not count_ok:
        reasons.append(f"fused layer count {after} differs from the expected {expected_after}")
    if not diff_ok:
        reasons.append(f"fused vs unfused outputs differ by {max_rel_diff:.3g} (relative) > {tolerance}")
    detail = f"layers {before} -> {after} after fuse() (expected {expected_after}); max relative output difference {max_rel_diff:.3g}"
    if reasons:
        detail += ": " + "; ".join(reasons)
    return CheckResult(
        name="fusionConsistency",
        passed=count_ok and diff_ok,
        value=max_rel_diff if math.isfinite(max_rel_diff) else None,
        threshold=tolerance,
        detail=detail,
    )


def fusion_check(
    model: Any, images: list[Path], imgsz: int, thresholds: CheckThresholds = DEFAULT_THRESHOLDS
) -> CheckResult:
    """Compare an unfused model with a fused copy: layer counts (vs the reference structure) and outputs.

    `model` is an Ultralytics DetectionModel (e.g. `YOLO(path).model`), or a path to weights.
    """
    import torch

    if isinstance(model, (str, Path)):
        from ultralytics import YOLO

        model = YOLO(str(model)).model
    unfused = copy.deepcopy(model).float().eval()
    if unfused.is_fused():
        raise ValueError("fusionConsistency needs an unfused model")
    before = count_layers(unfused)
    expected_after = expected_fused_layers(unfused)
    x = load_batch(images[: thresholds.fusion_images], imgsz)
    with torch.no_grad():
        ref = _output(unfused, x)
        fused = copy.deepcopy(unfused).fuse(verbose=False).eval()
        out = _output(fused, x)
    after = count_layers(fused)
    if ref.shape != out.shape:
        return fusion_decision(before, after, expected_after, math.inf, thresholds.fusion_tolerance)
    scale = max(float(ref.abs().max()), 1.0)
    rel = float((out - ref).abs().max()) / scale
    if not math.isfinite(rel):
        rel = math.inf
    return fusion_decision(before, after, expected_after, rel, thresholds.fusion_tolerance)


# -- exportParity ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FormatParity:
    """What the parity check measured for one exported format."""

    format: str
    """Export format (`onnx`, `engine`)."""
    max_rel_diff: float = math.inf
    """max|exported - PyTorch| / max(max|PyTorch|, 1) on the same letterboxed test images."""
    pytorch_metric: float | None = None
    """Pooled promotion metric of the PyTorch model on the test set (same val arguments as the exported one)."""
    exported_metric: float | None = None
    """Pooled promotion metric of the exported model."""
    error: str | None = None
    """Why the export or its run failed (then nothing else was measured)."""


def export_parity_decision(
    results: list[FormatParity], tolerance: float, max_drop: float, metric: str = "mAP50-95"
) -> CheckResult:
    """Pure decision: every format exported, its outputs within `tolerance` and its metric at most `max_drop` lower."""
    if not results:
        return CheckResult(
            name="exportParity", passed=True, value=None, threshold=tolerance,
            detail="spec.export.formats is empty: nothing was exported, nothing to compare",
        )  # fmt: skip
    parts, failed, worst = [], False, 0.0
    for r in results:
        if r.error is not None:
            failed, worst = True, math.inf
            parts.append(f"{r.format}: {r.error}")
            continue
        diff = r.max_rel_diff if math.isfinite(r.max_rel_diff) else math.inf
        worst = max(worst, diff)
        text = f"{r.format}: max relative output difference {diff:.3g}"
        if diff > tolerance:
            failed = True
            text += f" > {tolerance} (over by {diff - tolerance:.3g})"
        if r.pytorch_metric is None or r.exported_metric is None:
            failed = True
            text += f"; {metric} not measured"
        else:
            drop = r.pytorch_metric - r.exported_metric
            text += f"; {metric} {r.exported_metric:.4f} exported vs {r.pytorch_metric:.4f} PyTorch (drop {drop:.4f}"
            if not math.isfinite(drop) or round(drop, 9) > max_drop:  # rounded: 0.58 - 0.57 is 0.01 here
                failed = True
                text += f" > maxMetricDrop {max_drop}, over by {drop - max_drop:.4f})"
            else:
                text += f" <= {max_drop})"
        parts.append(text)
    return CheckResult(
        name="exportParity",
        passed=not failed,
        value=worst if math.isfinite(worst) else None,
        threshold=tolerance,
        detail=" | ".join(parts),
    )
