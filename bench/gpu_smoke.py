"""GPU smoke: the data stage, a yolo11n-sized training at imgsz 640 and kretrain's evaluation on one GPU.

Usage (on a machine with an NVIDIA GPU; bench/gpu_smoke.sh checks for one first):
    .venv/bin/python bench/gpu_smoke.py [--images 400] [--epochs 3] [--imgsz 640] [--batch 16] [--out bench/results]

1. Starts a local SeaweedFS, generates two synthetic eras at `--imgsz`, uploads them.
2. Times kretrain's data stage (`prepare`: pull, validate, split, statistics).
3. Trains `yolo11n.yaml` from scratch on GPU 0 for `--epochs` with Ultralytics (kretrain's own train arguments),
   timing every epoch and reading the peak GPU memory torch allocated.
4. Runs kretrain's evaluation (`evaluate`: one pass, pooled and per-era metrics) on the trained weights.
Prints a table and writes JSON to <out>/gpu_smoke.json. Never part of CI (CI has no GPU).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from kretrain.api import RetrainJobSpec
from kretrain.s3server import LocalS3Server
from kretrain.store import ObjectStore
from kretrain.trainer import offline
from kretrain.trainer.synthetic import EraConfig, generate_dataset, upload_dataset

CLASSES = ["circle", "square", "triangle"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=400, help="images per era")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("gpu_smoke: torch sees no CUDA device (run it where a GPU is lent)")
    root = Path(tempfile.mkdtemp(prefix="kretrain-gpu-smoke-"))
    offline.configure(root / "yolo-config")
    from ultralytics import YOLO

    from kretrain.trainer.data import prepare
    from kretrain.trainer.evaluate import evaluate
    from kretrain.trainer.train import build_train_args

    eras = [
        EraConfig(name="era1", images=a.images, classes=CLASSES, background=(30, 30, 40), scale=(0.1, 0.3),
                  objects=(1, 4), seed=0),
        EraConfig(name="era2", images=a.images, classes=CLASSES, background=(200, 200, 190), scale=(0.08, 0.25),
                  objects=(1, 4), seed=1, texture=0.3),
    ]  # fmt: skip
    result: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "images_per_era": a.images, "imgsz": a.imgsz}
    with LocalS3Server(root / "s3") as server:
        store = ObjectStore(
            endpoint_url=server.endpoint, access_key=server.access_key, secret_key=server.secret_key, region="us-east-1"
        )
        store.client.create_bucket(Bucket="smoke")
        t0 = time.perf_counter()
        generate_dataset(root / "dataset", eras, CLASSES, imgsz=a.imgsz)
        upload_dataset(root / "dataset", store, "s3://smoke/data")
        result["generate_upload_seconds"] = time.perf_counter() - t0
        spec = RetrainJobSpec.model_validate({
            "model": "gpu-smoke",
            "dataset": {"uri": "s3://smoke/data", "eras": ["era1", "era2"]},
            "strategy": {"type": "full", "baseWeights": "yolo11n.yaml", "epochs": a.epochs, "patience": 0,
                         "imgsz": a.imgsz, "batch": a.batch, "hyperparameters": {"seed": 0}},
            "resources": {"gpus": 1},
            "storage": {"endpoint": server.endpoint, "registry": "s3://smoke/registry"},
        })  # fmt: skip
        t0 = time.perf_counter()
        data = prepare(spec, store, root / "scratch", root / "cache")
        result["data_stage_seconds"] = time.perf_counter() - t0
    args = build_train_args(spec, data.data_yaml, root / "ultralytics")
    args.update(device=0, exist_ok=True)
    epoch_seconds: list[float] = []
    started = [time.perf_counter()]

    def _epoch_end(_: Any) -> None:
        now = time.perf_counter()
        epoch_seconds.append(now - started[0])
        started[0] = now

    torch.cuda.reset_peak_memory_stats(0)
    model = YOLO("yolo11n.yaml")
    model.add_callback("on_train_epoch_start", lambda _: started.__setitem__(0, time.perf_counter()))
    model.add_callback("on_train_epoch_end", _epoch_end)
    model.train(**args)
    result["epoch_seconds"] = epoch_seconds
    result["peak_gpu_memory_mib"] = torch.cuda.max_memory_allocated(0) / 2**20
    best = Path(model.trainer.best)
    t0 = time.perf_counter()
    evaluation, _ = evaluate(best, data.test_yaml, data.test_eras, a.imgsz, min(a.batch, 64), 0, root / "eval")
    result["evaluation_seconds"] = time.perf_counter() - t0
    result["pooled"] = evaluation.pooled.dump()
    rows = [
        ("GPU", result["gpu"]),
        ("data stage (pull + validate + split + stats)", f"{result['data_stage_seconds']:.1f} s"),
        ("epoch time (each, training only)", ", ".join(f"{s:.1f}" for s in epoch_seconds) + " s"),
        ("peak GPU memory (torch allocated)", f"{result['peak_gpu_memory_mib']:.0f} MiB"),
        ("kretrain evaluation (one pass, 2 eras)", f"{result['evaluation_seconds']:.1f} s"),
        ("pooled mAP50-95 after the smoke epochs", f"{evaluation.pooled.get('mAP50-95'):.3f}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "gpu_smoke.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {a.out / 'gpu_smoke.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
