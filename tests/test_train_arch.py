"""A custom architecture YAML (two extra layers) trained from a trained yolov8n with the base layers frozen."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _trainer_fixtures import TINY_TRAIN_ARGS, tiny_dataset, tiny_model

from kretrain.trainer.checks import fusion_check
from kretrain.trainer.train import StartWeights, train

ARCH = Path(__file__).parent / "data" / "yolov8n-extra2.yaml"


@pytest.mark.slow
def test_extra_layers_with_frozen_base(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    from ultralytics import YOLO

    base = tmp_path_factory.getbasetemp()
    d, best = tiny_dataset(base), tiny_model(base)
    start = StartWeights(description=f"{ARCH} <- {best}", weights=best, yaml=str(ARCH))
    args = {**TINY_TRAIN_ARGS, "epochs": 2, "freeze": 22, "data": str(d["yaml"]["all"]), "project": str(tmp_path),
            "name": "arch", "device": "cpu"}  # fmt: skip
    out = train(args, start)
    assert out.epochs_completed == 2 and out.best.exists()
    trained = YOLO(str(out.best)).model.float()
    src = YOLO(str(best)).model.float()
    assert len(trained.model) == 25 and len(src.model) == 23  # two extra layers before Detect
    # base layers 0-21 transferred and frozen: identical to the start weights
    sd_new, sd_src = trained.state_dict(), src.state_dict()
    frozen = [k for k in sd_src if k.startswith(tuple(f"model.{i}." for i in range(22))) and "num_batches" not in k]
    assert frozen and all(torch.equal(sd_new[k], sd_src[k]) for k in frozen)
    assert any(k.startswith("model.22.") for k in sd_new) and any(k.startswith("model.24.") for k in sd_new)
    fusion = fusion_check(out.best, sorted(Path(p) for p in d["test_eras"])[:4], 64)
    assert fusion.passed, fusion.detail
