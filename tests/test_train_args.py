"""Train-argument building (table-driven, no Ultralytics training) and Ultralytics' own argument checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kretrain.api import RetrainJobSpec
from kretrain.trainer.train import TrainingError, build_train_args, check_train_args, device_for


def spec(**strategy: Any) -> RetrainJobSpec:
    gpus = strategy.pop("gpus", 1)
    eras = ["a", "b"]
    return RetrainJobSpec.model_validate(
        {"model": "m", "dataset": {"uri": "s3://bucket/data", "eras": eras}, "strategy": strategy,
         "resources": {"gpus": gpus}}
    )  # fmt: skip


@pytest.mark.parametrize(("gpus", "device"), [(0, "cpu"), (1, 0), (2, [0, 1]), (4, [0, 1, 2, 3]), (8, list(range(8)))])
def test_device_for_gpu_count(gpus: int, device: Any) -> None:
    assert device_for(gpus) == device
    assert build_train_args(spec(gpus=gpus), Path("/d.yaml"), Path("/p"))["device"] == device


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ({}, {"optimizer": "auto", "epochs": 50, "patience": 30, "imgsz": 640, "batch": 16}),
        ({"type": "incremental"}, {"optimizer": "SGD"}),
        ({"lr0": 0.002}, {"optimizer": "SGD", "lr0": 0.002}),
        ({"type": "incremental", "lr0": 0.001, "optimizer": "AdamW", "freeze": 10, "patience": 3},
         {"optimizer": "AdamW", "lr0": 0.001, "freeze": 10, "patience": 3}),
        ({"augmentation": {"mosaic": 0.0, "mixup": 0.1, "closeMosaic": 2}}, {"mosaic": 0.0, "mixup": 0.1, "close_mosaic": 2}),
        ({"weightDecay": 0.001, "dropout": 0.1}, {"weight_decay": 0.001, "dropout": 0.1}),
        ({"hyperparameters": {"cos_lr": True, "workers": 2}}, {"cos_lr": True, "workers": 2}),
    ],
)  # fmt: skip
def test_build_train_args(strategy: dict[str, Any], expected: dict[str, Any]) -> None:
    args = build_train_args(spec(**strategy), Path("/data/d.yaml"), Path("/work/runs"), name="train")
    for k, v in expected.items():
        assert args[k] == v, k
    assert args["data"] == "/data/d.yaml" and args["project"] == "/work/runs" and args["exist_ok"] is True
    assert args["plots"] is False and args["save"] is True
    if "lr0" not in expected:
        assert "lr0" not in args
    if "freeze" not in expected:
        assert "freeze" not in args


def test_relative_paths_become_absolute() -> None:
    args = build_train_args(spec(), Path("d.yaml"), Path("runs"))
    assert Path(args["data"]).is_absolute() and Path(args["project"]).is_absolute()


def test_ultralytics_accepts_built_args() -> None:
    check_train_args(
        build_train_args(spec(lr0=0.01, freeze=3, hyperparameters={"cos_lr": True}), Path("/d"), Path("/p"))
    )


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"nbs": "many"}, "nbs"),
        ({"warmup_epochs": "x"}, "warmup_epochs"),
        ({"label_smoothing_bogus": 1}, "label_smoothing_bogus"),
        ({"conf": 0.3}, "not Ultralytics train arguments: conf"),  # a predict argument
    ],
)
def test_ultralytics_rejects_bad_values(bad: dict[str, Any], match: str) -> None:
    args = build_train_args(spec(), Path("/d"), Path("/p"))
    args.update(bad)
    with pytest.raises(TrainingError, match=match):
        check_train_args(args)
