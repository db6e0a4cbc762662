"""The paired bootstrap's cost beside one evaluation pass, on real Ultralytics per-image statistics.

Usage: .venv/bin/python bench/bootstrap_cost.py [--images 60] [--imgsz 64] [--resamples 1000] [--out bench/results]

1. Generates two synthetic eras of `--images` each (all of them test images).
2. Trains two yolov8n models on those images (`--epochs` and half of it): they find boxes, and Ultralytics'
   val at conf 0.001 also keeps many low-confidence ones.
3. Times `evaluate()` (one val pass with per-image statistics) of each, then `paired_intervals()` at
   `--resamples` (stratified by era, mAP50-95, per-era and per-class intervals), in CPU and wall seconds.
Prints a table and writes JSON to <out>/bootstrap_cost.json. Load from other processes skews wall times.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

from kretrain.api import PromotionSpec
from kretrain.trainer import offline
from kretrain.trainer.synthetic import DEFAULT_CLASSES, demo_eras, generate_dataset


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=60, help="test images per era")
    ap.add_argument("--imgsz", type=int, default=64)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="kretrain-bench-bootstrap-"))
    offline.configure(root / "yolo-config")
    from ultralytics import YOLO

    from kretrain.trainer.evaluate import evaluate, paired_intervals

    eras = demo_eras(images=a.images)
    generate_dataset(root / "data", eras, DEFAULT_CLASSES, imgsz=a.imgsz)
    files = {str(f.resolve()): e.name for e in eras for f in sorted((root / "data" / e.name / "images").iterdir())}
    listing = root / "test.txt"
    listing.write_text("\n".join(files) + "\n")
    data = root / "test.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": str(listing), "val": str(listing), "names": DEFAULT_CLASSES}))  # fmt: skip
    weights = []
    for seed, epochs in ((0, a.epochs), (1, max(1, a.epochs // 2))):
        YOLO("yolov8n.yaml").train(
            data=str(data), epochs=epochs, imgsz=a.imgsz, batch=16, workers=0, seed=seed, plots=False,
            verbose=False, project=str(root / "runs"), name=f"m{seed}", exist_ok=True, val=False,
            optimizer="AdamW", lr0=0.005, warmup_epochs=0.5, mosaic=0.0,
        )  # fmt: skip
        weights.append(root / "runs" / f"m{seed}" / "weights" / "last.pt")
    results = {}
    stats = []
    for i, w in enumerate(weights):
        t, c = time.perf_counter(), time.process_time()
        _, s = evaluate(w, data, files, a.imgsz, 16, None, root / "val", None, 0)
        results[f"evaluate model {i}"] = (time.perf_counter() - t, time.process_time() - c)
        stats.append(s)
    promotion = PromotionSpec(resamples=a.resamples)
    t, c = time.perf_counter(), time.process_time()
    boot = paired_intervals(promotion, stats[0], stats[1], files, "m1")
    results[f"bootstrap x{a.resamples}"] = (time.perf_counter() - t, time.process_time() - c)
    boxes = sum(len(x) for s in stats for x in s.stats["conf"])
    print(f"{len(files)} test images ({a.images} per era), imgsz {a.imgsz}, {boxes} predicted boxes in both passes")
    print(f"{'step':<22} {'wall s':>8} {'cpu s':>8}")
    for k, (wall, cpu) in results.items():
        print(f"{k:<22} {wall:8.2f} {cpu:8.2f}")
    print(f"pooled delta {boot.pooled.delta:+.4f}, 95% CI [{boot.pooled.low:+.4f}, {boot.pooled.high:+.4f}]")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "bootstrap_cost.json").write_text(
        json.dumps({"images": len(files), "imgsz": a.imgsz, "boxes": boxes, "seconds": results}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
