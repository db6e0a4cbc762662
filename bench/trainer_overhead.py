"""Trainer overhead: `kretrain train` vs plain Ultralytics on the same data/seed/epochs; evaluation vs two val().

Usage: .venv/bin/python bench/trainer_overhead.py [--images 60] [--epochs 10] [--out bench/results]

1. Starts a local SeaweedFS, generates two synthetic eras, uploads them.
2. Runs `kretrain train` (a subprocess, as in a pod) and reads its report: training seconds (the Ultralytics
   fit with kretrain's per-epoch hooks: progress.json, last.pt upload), plus the other phases.
3. Runs plain `YOLO(...).train(**the same args)` in this process on the run's prepared data YAML.
4. Times `evaluate()` of candidate and incumbent (here: the plain model) vs two plain `val()` runs.
Prints a table and writes JSON to <out>/trainer_overhead.json. Machine load from other processes skews numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kretrain.api.pod import PodContract
from kretrain.s3server import LocalS3Server
from kretrain.store import ObjectStore
from kretrain.trainer import offline
from kretrain.trainer.synthetic import EraConfig, generate_dataset, upload_dataset


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=60, help="images per era")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--imgsz", type=int, default=64)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="kretrain-bench-"))
    offline.configure(root / "yolo-config")
    from ultralytics import YOLO

    from kretrain.registry import Registry
    from kretrain.trainer.evaluate import evaluate

    classes = ["circle", "square"]
    eras = [
        EraConfig(name="era1", images=a.images, classes=classes, background=(30, 30, 40), scale=(0.3, 0.5),
                  objects=(1, 2), seed=0),
        EraConfig(name="era2", images=a.images, classes=classes, background=(200, 200, 190), scale=(0.25, 0.4),
                  objects=(1, 2), seed=1, texture=0.3),
    ]  # fmt: skip
    with LocalS3Server(root / "s3") as server:
        env = {**os.environ, **server.env()}
        store = ObjectStore(
            endpoint_url=server.endpoint, access_key=server.access_key, secret_key=server.secret_key, region="us-east-1"
        )
        import boto3

        boto3.client(
            "s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key, region_name="us-east-1",
        ).create_bucket(Bucket="bench-data")  # fmt: skip
        generate_dataset(root / "dataset", eras, classes)
        upload_dataset(root / "dataset", store, "s3://bench-data/data")
        spec = {
            "model": "bench",
            "dataset": {"uri": "s3://bench-data/data", "eras": ["era1", "era2"]},
            "strategy": {
                "type": "full", "baseWeights": "yolov8n.yaml", "epochs": a.epochs, "patience": 0, "imgsz": a.imgsz,
                "batch": 16, "optimizer": "AdamW", "lr0": 0.005, "augmentation": {"mosaic": 0.0},
                "hyperparameters": {"workers": 0, "nbs": 16, "warmup_epochs": 0.5, "seed": 0},
            },
            "resources": {"gpus": 0},
            "storage": {"endpoint": server.endpoint, "registry": "s3://bench-data/registry"},
        }  # fmt: skip
        (root / "spec.json").write_text(json.dumps(spec))
        contract = PodContract(
            run_id="bench-1",
            incumbent_version="",
            workdir=root / "scratch",
            cache_dir=root / "cache",
            termination_log=root / "termination-log",
            endpoint=server.endpoint,
            yolo_config_dir=root / "yolo-config",
        )
        run_env = {**env, **contract.to_env()}
        t0 = time.time()
        kretrain = str(Path(sys.executable).parent / "kretrain")
        with open(root / "kretrain.log", "wb") as log:
            rc = subprocess.run(
                [kretrain, "train", "--spec", str(root / "spec.json")], env=run_env, stdout=log, stderr=log
            ).returncode
        pod_wall = time.time() - t0
        if rc != 0:
            print((root / "kretrain.log").read_text()[-3000:])
            return 1
        report = Registry(store, "s3://bench-data/registry").read_run_report("bench", "bench-1")
        assert report is not None
        args = dict(report.training.args)
        args.update(project=str(root / "plain"), name="train")
        t1 = time.time()
        plain = YOLO("yolov8n.yaml")
        plain.train(**args)
        plain_train = time.time() - t1

        data_dir = root / "scratch" / "data"
        test = data_dir / "test.yaml"
        test_eras: dict[str, str] = json.loads((data_dir / "test_eras.json").read_text())
        data_report = json.loads((data_dir / "data_report.json").read_text())
        cand = root / "scratch" / "ultralytics" / "train" / "weights" / "best.pt"
        assert plain.trainer is not None
        inc = Path(plain.trainer.best)
        kw = dict(imgsz=a.imgsz, batch=16, plots=False, verbose=False, workers=0, project=str(root / "val"))
        t2 = time.time()
        evaluate(cand, test, test_eras, a.imgsz, 16, None, root / "eval", None, 0)
        evaluate(inc, test, test_eras, a.imgsz, 16, None, root / "eval", "plain", 0)
        ours_eval = time.time() - t2
        t3 = time.time()
        YOLO(str(cand)).val(data=str(test), name="a", exist_ok=True, **kw)
        YOLO(str(inc)).val(data=str(test), name="b", exist_ok=True, **kw)
        plain_eval = time.time() - t3
    result = {
        "images_per_era": a.images,
        "epochs": a.epochs,
        "imgsz": a.imgsz,
        "kretrain_train_seconds": report.compute.train_seconds,
        "plain_train_seconds": round(plain_train, 3),
        "train_ratio": round(report.compute.train_seconds / plain_train, 4),
        "kretrain_pod_wall_seconds": round(pod_wall, 3),
        "kretrain_report_wall_seconds": report.compute.wall_seconds,
        "eval_two_models_seconds": round(ours_eval, 3),
        "plain_two_val_seconds": round(plain_eval, 3),
        "eval_ratio": round(ours_eval / plain_eval, 4),
        "data_report_status": data_report.get("status"),
        "candidate_mAP50": report.candidate_evaluation.pooled.map50,
    }
    rows = [
        ("training (pull excluded)", result["kretrain_train_seconds"], result["plain_train_seconds"], result["train_ratio"]),
        ("candidate+incumbent eval", result["eval_two_models_seconds"], result["plain_two_val_seconds"], result["eval_ratio"]),
    ]  # fmt: skip
    print(f"{'phase':28} {'kretrain s':>11} {'plain s':>9} {'ratio':>7}")
    for name, k, p, r in rows:
        print(f"{name:28} {k:11.2f} {p:9.2f} {r:7.3f}")
    print(f"whole pod wall (pull, data checks, train, checks, eval, register): {pod_wall:.1f}s")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "trainer_overhead.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
