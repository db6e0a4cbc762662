"""Ultralytics train arguments from the spec (pure) and their check against Ultralytics' own lists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kretrain.api import RetrainJobSpec
from kretrain.api.ultralytics_args import ULTRALYTICS_TRAIN_ARGS
from kretrain.trainer.train_errors import TrainingError


def device_for(gpus: int) -> int | list[int] | str:
    """Ultralytics `device` for the pod's GPU count: 'cpu', 0, or [0..n-1] (DDP over all of them)."""
    if gpus < 0:
        raise ValueError(f"resources.gpus must be >= 0, got {gpus}")
    if gpus == 0:
        return "cpu"
    if gpus == 1:
        return 0
    return list(range(gpus))


def build_train_args(
    spec: RetrainJobSpec, data_yaml: Path, project: Path, name: str = "train", seed: int = 0
) -> dict[str, Any]:
    """The Ultralytics train arguments for a spec: dedicated fields first, then `hyperparameters`.

    Pure: no Ultralytics import. Paths are absolute (Ultralytics puts relative run dirs elsewhere).
    """
    s = spec.strategy
    args: dict[str, Any] = {
        "data": str(Path(data_yaml).resolve()),
        "project": str(Path(project).resolve()),
        "name": name,
        "exist_ok": True,
        "epochs": s.epochs,
        "patience": s.patience,
        "imgsz": s.imgsz,
        "batch": s.batch,
        "optimizer": s.effective_optimizer,
        "device": device_for(spec.resources.gpus),
        "seed": seed,
        "plots": False,
        "save": True,
        "val": True,
        "verbose": False,
    }
    if s.lr0 is not None:
        args["lr0"] = s.lr0
    if s.freeze is not None:
        args["freeze"] = s.freeze
    if s.weight_decay is not None:
        args["weight_decay"] = s.weight_decay
    if s.dropout is not None:
        args["dropout"] = s.dropout
    for key, value in s.augmentation.model_dump(by_alias=False).items():
        if value is not None:
            args[key] = value
    args.update(s.hyperparameters)
    return args


def check_train_args(args: dict[str, Any]) -> None:
    """Check every argument with Ultralytics' own key list and value checks (`check_cfg`).

    Raises TrainingError naming the argument. Imports Ultralytics (call `offline.configure()` first).
    """
    from ultralytics.cfg import check_cfg
    from ultralytics.utils import DEFAULT_CFG_DICT

    unknown = sorted(k for k in args if k not in DEFAULT_CFG_DICT)
    if unknown:
        raise TrainingError(f"strategy.hyperparameters: not Ultralytics arguments: {', '.join(unknown)}")
    not_train = sorted(k for k in args if k not in ULTRALYTICS_TRAIN_ARGS)
    if not_train:
        raise TrainingError(f"strategy.hyperparameters: not Ultralytics train arguments: {', '.join(not_train)}")
    try:
        check_cfg(dict(args), hard=True)
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"strategy.hyperparameters: {exc}") from exc
