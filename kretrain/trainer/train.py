"""Training with Ultralytics: one run, or its resume from a mid-run last.pt (re-exports the names of its parts)."""

from __future__ import annotations

import csv
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kretrain.trainer.distributed import train_kwargs
from kretrain.trainer.modelfiles import ModelFileError, check_loaded_model, restrict_ultralytics
from kretrain.trainer.run_hooks import METRIC_NAMES, RunHooks, epoch_metrics
from kretrain.trainer.start_weights import StartWeights, build_model, resolve_start_weights
from kretrain.trainer.train_args import build_train_args, check_train_args, device_for
from kretrain.trainer.train_errors import TrainingError

__all__ = [
    "METRIC_NAMES",
    "RunHooks",
    "StartWeights",
    "TrainOutcome",
    "TrainingError",
    "build_model",
    "build_train_args",
    "check_train_args",
    "checkpoint_info",
    "device_for",
    "epoch_metrics",
    "read_results",
    "resolve_start_weights",
    "restore_results_csv",
    "train",
]

log = logging.getLogger("kretrain.trainer")


@dataclass
class TrainOutcome:
    """What a training run produced."""

    save_dir: Path
    """Ultralytics run folder (weights/, results.csv)."""
    best: Path
    """Candidate weights (best.pt, stripped)."""
    last: Path
    """last.pt."""
    results_csv: Path
    """Per-epoch metrics."""
    epochs_completed: int
    """Epochs run in total (all attempts)."""
    best_epoch: int | None
    """Epoch (1-based) of the best fitness."""
    final_metrics: dict[str, float]
    """Validation metrics of best.pt at the end."""
    resumed_from_epoch: int | None
    """Epochs completed before this attempt (resume), else None."""
    train_seconds: float
    """Wall seconds of this attempt's training."""
    args: dict[str, Any]
    """Arguments used."""


def read_results(path: Path) -> list[dict[str, float]]:
    """results.csv as a list of rows (column names stripped)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = []
        for row in csv.DictReader(f):
            rows.append({k.strip(): float(v) for k, v in row.items() if k is not None and v not in (None, "")})
        return rows


def checkpoint_info(path: Path) -> dict[str, Any]:
    """Epoch (0-based, -1 when finished/stripped), train args and results of a local Ultralytics checkpoint."""
    from kretrain.trainer.modelfiles import load_checkpoint_dict

    try:
        ckpt = load_checkpoint_dict(path)  # sha256 verified by the caller; restricted unpickler on top
    except ModelFileError as exc:
        raise TrainingError(str(exc)) from exc
    return {
        "epoch": int(ckpt.get("epoch", -1)),
        "train_args": dict(ckpt.get("train_args") or {}),
        "train_results": dict(ckpt.get("train_results") or {}),
    }


def restore_results_csv(info: dict[str, Any], csv_path: Path) -> None:
    """Rewrite results.csv from a checkpoint's own copy (rows up to its epoch), so no epoch is lost or repeated."""
    results: dict[str, list[Any]] = info["train_results"]
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    if not results:
        csv_path.unlink(missing_ok=True)
        return
    keys = list(results)
    n = len(results[keys[0]])
    upto = info["epoch"] + 1
    with open(csv_path, "w", encoding="utf-8") as f:
        f.write(",".join(keys) + "\n")
        for i in range(n):
            row = [results[k][i] for k in keys]
            if "epoch" in results and int(results["epoch"][i]) > upto:
                continue
            f.write(",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row) + "\n")


def train(
    args: dict[str, Any],
    start: StartWeights | None,
    hooks: RunHooks | None = None,
    resume_from: Path | None = None,
) -> TrainOutcome:
    """Train (or resume from a mid-run last.pt) with Ultralytics; returns the outcome.

    `args` come from `build_train_args` and have been checked with `check_train_args`.
    """
    restrict_ultralytics()
    from ultralytics import YOLO

    save_dir = Path(args["project"]) / args["name"]
    resumed: int | None = None
    t0 = time.time()
    if resume_from is not None:
        info = checkpoint_info(resume_from)
        if info["epoch"] < 0 or info["epoch"] + 1 >= int(info["train_args"].get("epochs", 0)):
            raise TrainingError(f"checkpoint {resume_from} is a finished run and cannot be resumed")
        resumed = info["epoch"] + 1
        restore_results_csv(info, save_dir / "results.csv")
        local_last = save_dir / "weights" / "last.pt"
        local_last.parent.mkdir(parents=True, exist_ok=True)
        if resume_from.resolve() != local_last.resolve():
            shutil.copyfile(resume_from, local_last)
        yolo = YOLO(str(local_last))
        try:
            check_loaded_model(yolo, f"checkpoint {resume_from}")
        except ModelFileError as exc:
            raise TrainingError(str(exc)) from exc
        if hooks is not None:
            rows = read_results(save_dir / "results.csv")
            hooks.elapsed_before = rows[-1].get("time", 0.0) if rows else 0.0
            hooks.install(yolo)
        overrides = {
            k: args[k] for k in ("data", "device", "workers", "batch", "imgsz", "patience", "plots") if k in args
        }
        yolo.train(resume=str(local_last), save_dir=str(save_dir), **overrides, **train_kwargs())
    else:
        if start is None:
            raise TrainingError("no start weights")
        yolo = build_model(start)
        if hooks is not None:
            hooks.install(yolo)
        yolo.train(**args, **train_kwargs())  # torchrun: world size and ranks from the launcher
    if hooks is not None:
        hooks.flush()
    train_seconds = time.time() - t0
    trainer: Any = yolo.trainer
    save_dir = Path(trainer.save_dir)
    rows = read_results(save_dir / "results.csv")
    best_epoch = None
    if rows:
        fit = [0.1 * r.get("metrics/mAP50(B)", 0.0) + 0.9 * r.get("metrics/mAP50-95(B)", 0.0) for r in rows]
        best_epoch = int(rows[max(range(len(rows)), key=fit.__getitem__)]["epoch"])
    final = {METRIC_NAMES.get(k, k): float(v) for k, v in (trainer.metrics or {}).items() if k in METRIC_NAMES}
    best = Path(trainer.best) if Path(trainer.best).exists() else Path(trainer.last)
    return TrainOutcome(
        save_dir=save_dir,
        best=best,
        last=Path(trainer.last),
        results_csv=save_dir / "results.csv",
        epochs_completed=len(rows),
        best_epoch=best_epoch,
        final_metrics=final,
        resumed_from_epoch=resumed,
        train_seconds=train_seconds,
        args={k: (v if isinstance(v, (str, int, float, bool, list)) or v is None else str(v)) for k, v in args.items()},
    )
