"""Benchmark the data pipeline: N tiny synthetic images in a local SeaweedFS, then `prepare()` phase by phase.

Usage: .venv/bin/python -P bench/data_prepare.py [--images 20000] [--imgsz 32] [--eras 2]
Prints a table (pull, validate, split, statistics, chart, training set; images/s; peak RSS) and writes
bench/results/data_prepare.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kretrain.api import RetrainJobSpec
from kretrain.s3server import LocalS3Server
from kretrain.store import ObjectStore
from kretrain.trainer.synthetic import DEFAULT_CLASSES, EraConfig, demo_eras, generate_era, write_classes

RESULTS = Path(__file__).resolve().parent / "results" / "data_prepare.json"


def _eras(images: int, n_eras: int) -> list[EraConfig]:
    base = demo_eras(images=images // n_eras)
    eras = []
    for i in range(n_eras):
        e = base[min(i, 1)]
        eras.append(
            EraConfig(
                f"era{i + 1}", images // n_eras, e.classes, e.background, e.brightness, e.scale, i, e.texture, e.objects
            )
        )
    return eras


def _generate(args: tuple[Path, EraConfig, int]) -> None:
    root, era, imgsz = args
    generate_era(root, era, imgsz, DEFAULT_CLASSES)


def _prepare_child(spec_json: str, env: dict[str, str], workdir: str, cache: str, queue: Any) -> None:
    """Run prepare() in a fresh process so its peak RSS is its own."""
    os.environ.update(env)
    from kretrain.trainer.data import prepare

    spec = RetrainJobSpec.model_validate_json(spec_json)
    t0 = time.perf_counter()
    prepared = prepare(spec, ObjectStore(), Path(workdir), Path(cache))
    total = time.perf_counter() - t0
    report = json.loads(prepared.report_path.read_text())

    # Validation + statistics alone on the cached copy, with CPU time (this process and its workers),
    # which a busy shared machine distorts far less than wall time.
    from kretrain.trainer.data.pull import cache_root, scan_local
    from kretrain.trainer.data.stats import compute_stats
    from kretrain.trainer.data.validation import validate_eras

    ds = spec.dataset
    pulled = scan_local(cache_root(Path(cache), ds.uri), list(ds.eras))

    def cpu() -> float:
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    c0, w0 = cpu(), time.perf_counter()
    result = validate_eras(
        pulled.era_files, report["classes"], ds.latest_eras, ds.split.seed, ds.split.val, ds.split.test
    )
    compute_stats({e: result.kept(e) for e in result.records}, report["classes"])
    alone = {"wallSeconds": time.perf_counter() - w0, "cpuSeconds": cpu() - c0}
    queue.put(
        {
            "validateStatsAlone": alone,
            "total": total,
            "timings": report["timings"],
            "pull": report["pull"],
            "images": sum(sum(c[k] for k in ("train", "val", "test", "excluded")) for c in report["counts"].values()),
            "rssSelfMiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rssWorkersMiB": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        }
    )


def _run_prepare(spec: RetrainJobSpec, env: dict[str, str], workdir: Path, cache: Path) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(
        target=_prepare_child, args=(spec.model_dump_json(by_alias=True), env, str(workdir), str(cache), queue)
    )
    proc.start()
    result: dict[str, Any] = queue.get()
    proc.join()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--imgsz", type=int, default=32)
    parser.add_argument("--eras", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="keep the temporary directory here")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-data-", dir=args.keep))
    src = tmp / "src"
    eras = _eras(args.images, args.eras)
    t0 = time.perf_counter()
    write_classes(src, DEFAULT_CLASSES)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_generate, [(src, e, args.imgsz) for e in eras])
    gen_s = time.perf_counter() - t0
    n_images = sum(e.images for e in eras)

    with LocalS3Server(tmp / "weed") as server:
        env = server.env()
        os.environ.update(env)
        store = ObjectStore()
        store.client.create_bucket(Bucket="bench")
        uri = "s3://bench/shapes"
        t0 = time.perf_counter()
        objects = store.upload_dir(src, uri)
        upload_s = time.perf_counter() - t0
        spec = RetrainJobSpec.model_validate(
            {"model": "bench", "dataset": {"uri": uri, "eras": [e.name for e in eras]}, "strategy": {"type": "full"}}
        )
        cold = _run_prepare(spec, env, tmp / "work1", tmp / "cache")
        warm = _run_prepare(spec, env, tmp / "work2", tmp / "cache")

    t = cold["timings"]
    n = cold["images"]
    vs = t["validateSeconds"] + t["statsSeconds"]
    rows = [
        ("generate (2 procs)", gen_s, n_images),
        ("upload to SeaweedFS", upload_s, objects),
        ("pull, cold cache", t["pullSeconds"], sum(p["downloaded"] for p in cold["pull"].values())),
        ("pull, warm cache", warm["timings"]["pullSeconds"], sum(p["skipped"] for p in warm["pull"].values())),
        ("validate: inspect", t["inspectSeconds"], n),
        ("split", t["splitSeconds"], n),
        ("validate: dup/class checks", t["checksSeconds"], n),
        ("validate total (incl. split)", t["validateSeconds"], n),
        ("statistics + drift", t["statsSeconds"], n),
        ("validate + statistics", vs, n),
        ("chart (PNG)", t.get("chartSeconds", 0.0), n),
        ("training set + YAMLs", t["trainsetSeconds"], n),
        ("prepare() total, cold", cold["total"], n),
        ("prepare() total, warm", warm["total"], n),
    ]
    print(
        f"\ndata pipeline benchmark: {n_images} images {args.imgsz}x{args.imgsz}, {args.eras} eras, {os.cpu_count()} CPUs"
    )
    print(f"{'phase':<30} {'seconds':>9} {'items':>8} {'items/s':>10}")
    for name, sec, items in rows:
        rate = items / sec if sec > 0 else float("inf")
        print(f"{name:<30} {sec:>9.2f} {items:>8} {rate:>10.0f}")
    print(
        f"peak RSS prepare(): main {cold['rssSelfMiB']:.0f} MiB, largest validation worker {cold['rssWorkersMiB']:.0f} MiB"
    )
    alone = cold["validateStatsAlone"]
    cpu_rate = n / alone["cpuSeconds"]
    print(
        f"validate+statistics alone (warm cache): {alone['wallSeconds']:.2f} s wall = {n / alone['wallSeconds']:.0f} images/s; "
        f"{alone['cpuSeconds']:.2f} CPU-s = {1000 * alone['cpuSeconds'] / n:.3f} CPU-ms/image "
        f"(= {2 * cpu_rate:.0f} images/s on 2 idle cores)"
    )
    load = os.getloadavg()
    print(
        f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} (wall times suffer when it exceeds the cores)"
    )
    target = vs > 0 and n / vs >= 2000
    print(
        f"target validation+statistics >= 2000 images/s (wall, in prepare): {'met' if target else 'NOT met'} ({n / vs:.0f} images/s)"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "images": n_images,
                "imgsz": args.imgsz,
                "eras": args.eras,
                "cpus": os.cpu_count(),
                "python": sys.version.split()[0],
                "machine": platform.machine(),
                "rows": [{"phase": r[0], "seconds": round(r[1], 3), "items": r[2]} for r in rows],
                "validateStatsImagesPerSecond": round(n / vs, 1),
                "validateStatsCpuMsPerImage": round(1000 * alone["cpuSeconds"] / n, 4),
                "loadAverage": load,
                "targetMet": target,
                "peakRssMiB": {"prepare": round(cold["rssSelfMiB"], 1), "worker": round(cold["rssWorkersMiB"], 1)},
                "cold": cold,
                "warm": warm,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")
    if args.keep is None:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
