"""Benchmark: `kretrain data import` of a COCO export vs a plain parallel upload of the same files (store.upload_dir)."""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from kretrain.s3server import LocalS3Server
from kretrain.store import ObjectStore
from kretrain.trainer.data_import.coco import plan_coco
from kretrain.trainer.data_import.source import open_source
from kretrain.trainer.data_import.writer import import_dataset


def make_coco(root: Path, n: int, side: int) -> Path:
    """`n` noise JPEGs with two boxes each, and their COCO JSON."""
    rng = np.random.default_rng(0)
    images, anns = [], []
    (root / "images").mkdir(parents=True)
    for i in range(n):
        name = f"{i:06d}.jpg"
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(root / "images" / name, quality=90)
        images.append({"id": i, "file_name": name, "width": side, "height": side})
        for k in range(2):
            anns.append({"id": 2 * i + k, "image_id": i, "category_id": 1 + k, "bbox": [4, 4, side / 3, side / 4]})
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--side", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        src = make_coco(Path(tmp) / "coco", args.images, args.side)
        mib = sum(p.stat().st_size for p in (src.parent / "images").iterdir()) / 2**20
        with LocalS3Server(Path(tmp) / "s3") as server:
            os.environ.update(server.env())
            store = ObjectStore(endpoint_url=server.endpoint)
            store.client.create_bucket(Bucket="bench")
            rows: dict[str, list[float]] = {"import": [], "rerun": [], "upload_dir": []}
            for r in range(args.repeats):
                t0 = time.perf_counter()
                tree, name = open_source(str(src), store)
                plan = plan_coco([(tree, name, None)], None, str(src))
                result = import_dataset(plan, store, f"s3://bench/line{r}", "e1")
                rows["import"].append(time.perf_counter() - t0)
                assert result.status == "created" and result.images == args.images
                t0 = time.perf_counter()
                plan = plan_coco([(tree, name, None)], None, str(src))
                assert import_dataset(plan, store, f"s3://bench/line{r}", "e1").status == "unchanged"
                rows["rerun"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                store.upload_dir(src.parent / "images", f"s3://bench/raw{r}/e1/images")
                rows["upload_dir"].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in rows.items()}
    doc = {
        "images": args.images,
        "imageMiB": round(mib, 2),
        "cpus": len(os.sched_getaffinity(0)),
        "seconds": {k: [round(x, 3) for x in v] for k, v in rows.items()},
        "median": {k: round(v, 3) for k, v in med.items()},
        "importImagesPerSecond": round(args.images / med["import"], 1),
        "importVsUploadDir": round(med["import"] / med["upload_dir"], 2),
        "maxRssMiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(doc, indent=2))
    if args.out:
        args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
