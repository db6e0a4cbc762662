"""Benchmark run n of a continual line: all older eras warm in the dataset cache vs a run on the new era alone.

Usage: .venv/bin/python bench/data_stage.py [--eras 10] [--images 2000] [--imgsz 32] [--repeat 3] [--quick]
Each measured run is `prepare()` in a fresh process against a local SeaweedFS; the data stage is
pull + validate (incl. split) + statistics, from the run's data report. Runs:
- `new era alone`: a dataset of only the newest era, empty cache (what run n should cost);
- `run n, warm cache`: every era, the cache holding eras 1..n-1 from run n-1 (pulled and validated);
- `run n, no validation cache`: the same warm pull, every image decoded again (a persistent cache only);
- `run n, emptyDir` (skip with --no-baseline): every era pulled and decoded from scratch (before #17).
Prints the table and writes bench/results/data_stage.json (or --out). Goal: warm / alone <= 1.3.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kretrain.api import RetrainJobSpec
from kretrain.s3server import LocalS3Server
from kretrain.store import ObjectStore
from kretrain.trainer.synthetic import DEFAULT_CLASSES, EraConfig, demo_eras, generate_era, write_classes

RESULTS = Path(__file__).resolve().parent / "results" / "data_stage.json"
GOAL = 1.3
"""Largest acceptable ratio of run n (warm cache) to the new era alone."""
STAGE = ("pullSeconds", "validateSeconds", "statsSeconds")
"""The report timings that make up the data stage."""


def _eras(n: int, images: int) -> list[EraConfig]:
    a, b = demo_eras(images=images)
    return [
        EraConfig(f"era{i + 1:02d}", images, c.classes, c.background, c.brightness, c.scale, i, c.texture, c.objects)
        for i, c in ((i, (a, b)[i % 2]) for i in range(n))
    ]


def _generate(args: tuple[Path, EraConfig, int]) -> None:
    generate_era(args[0], args[1], args[2], DEFAULT_CLASSES)


def _child(spec_json: str, env: dict[str, str], workdir: str, cache: str, use_vcache: bool, queue: Any) -> None:
    """One run's data stage in a fresh process (own imports, no warm state but the cache folder)."""
    os.environ.update(env)
    from kretrain.trainer.data.pull import pull_dataset
    from kretrain.trainer.data.vcache import CACHE_DIR_NAME

    if use_vcache:
        from kretrain.trainer.data import prepare

        spec = RetrainJobSpec.model_validate_json(spec_json)
        t0 = time.perf_counter()
        prepared = prepare(spec, ObjectStore(), Path(workdir), Path(cache), chart=False)
    else:
        from kretrain.trainer.data import prepare_pulled

        spec = RetrainJobSpec.model_validate_json(spec_json)
        t0 = time.perf_counter()
        shutil.rmtree(Path(cache) / CACHE_DIR_NAME, ignore_errors=True)
        pulled = pull_dataset(spec.dataset, ObjectStore(), Path(cache))
        prepared = prepare_pulled(spec, pulled, Path(workdir), chart=False)
    total = time.perf_counter() - t0
    report = json.loads(prepared.report_path.read_text())
    timings = report["timings"]
    queue.put(
        {
            "stageSeconds": sum(timings[k] for k in STAGE),
            "prepareSeconds": total,
            "timings": timings,
            "images": report["items"],
            "downloaded": sum(p["downloaded"] for p in report["pull"].values()),
            "validationCache": report.get("validationCache"),
        }
    )


def _run(spec: RetrainJobSpec, env: dict[str, str], workdir: Path, cache: Path, use_vcache: bool = True) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    args = (spec.model_dump_json(by_alias=True), env, str(workdir), str(cache), use_vcache, queue)
    proc = ctx.Process(target=_child, args=args)
    proc.start()
    result: dict[str, Any] = queue.get()
    proc.join()
    return result


def _clone(src: Path, dst: Path) -> Path:
    """A copy of a cache folder with hard links (a sync never writes into a file it skips)."""
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def _spec(uri: str, eras: list[str]) -> RetrainJobSpec:
    return RetrainJobSpec.model_validate(
        {"model": "bench", "dataset": {"uri": uri, "eras": eras}, "strategy": {"type": "full"}}
    )


def measure(tmp: Path, n_eras: int, images: int, imgsz: int, repeat: int, baseline: bool) -> dict[str, Any]:
    """Generate, upload, then time each scenario `repeat` times; returns the JSON document."""
    src = tmp / "src"
    eras = _eras(n_eras, images)
    names = [e.name for e in eras]
    write_classes(src, DEFAULT_CLASSES)
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_generate, [(src, e, imgsz) for e in eras])
    gen_s = time.perf_counter() - t0
    runs: dict[str, list[dict]] = {"alone": [], "warm": [], "noValidationCache": [], "emptyDir": []}
    with LocalS3Server(tmp / "weed") as server:
        env = server.env()
        os.environ.update(env)
        store = ObjectStore()
        store.client.create_bucket(Bucket="bench")
        uri = "s3://bench/line"
        t0 = time.perf_counter()
        objects = store.upload_dir(src, uri)
        upload_s = time.perf_counter() - t0
        previous = tmp / "cache-n-1"
        run_prev = _run(_spec(uri, names[:-1]), env, tmp / "work-prev", previous)  # run n-1 fills the cache
        for i in range(repeat):
            runs["alone"].append(_run(_spec(uri, names[-1:]), env, tmp / f"w-alone-{i}", tmp / f"c-alone-{i}"))
            cache = _clone(previous, tmp / f"c-warm-{i}")
            runs["warm"].append(_run(_spec(uri, names), env, tmp / f"w-warm-{i}", cache))
            shutil.rmtree(cache)
            if baseline:
                cache = _clone(previous, tmp / f"c-nov-{i}")
                runs["noValidationCache"].append(_run(_spec(uri, names), env, tmp / f"w-nov-{i}", cache, False))
                shutil.rmtree(cache)
                runs["emptyDir"].append(_run(_spec(uri, names), env, tmp / f"w-empty-{i}", tmp / f"c-empty-{i}", False))
                shutil.rmtree(tmp / f"c-empty-{i}")
            shutil.rmtree(tmp / f"c-alone-{i}")
    alone = statistics.median(r["stageSeconds"] for r in runs["alone"])
    ratios = [w["stageSeconds"] / a["stageSeconds"] for w, a in zip(runs["warm"], runs["alone"], strict=True)]
    ratio = statistics.median(ratios)
    return {
        "eras": n_eras,
        "imagesPerEra": images,
        "imgsz": imgsz,
        "objects": objects,
        "repeat": repeat,
        "cpus": len(os.sched_getaffinity(0)),
        "generateSeconds": round(gen_s, 3),
        "uploadSeconds": round(upload_s, 3),
        "previousRun": run_prev,
        "medianStageSeconds": {
            k: round(statistics.median(r["stageSeconds"] for r in v), 3) for k, v in runs.items() if v
        },
        "medianAloneSeconds": round(alone, 3),
        "ratioWarmToAlone": round(ratio, 3),
        "ratios": [round(r, 3) for r in ratios],
        "goal": GOAL,
        "goalMet": ratio <= GOAL,
        "loadAverage": os.getloadavg(),
        "runs": runs,
    }


def table(doc: dict[str, Any]) -> str:
    """The printed table: median seconds per phase and scenario, and the ratio to the new era alone."""
    labels = {
        "alone": "new era alone",
        "warm": "run n, warm cache",
        "noValidationCache": "run n, no validation cache",
        "emptyDir": "run n, emptyDir",
    }
    lines = [
        f"data stage: {doc['eras']} eras x {doc['imagesPerEra']} images {doc['imgsz']}x{doc['imgsz']}, "
        f"{doc['cpus']} CPUs, median of {doc['repeat']}",
        f"{'scenario':<28} {'pull':>7} {'validate':>9} {'stats':>7} {'stage':>7} {'x alone':>8} {'decoded':>8}",
    ]
    alone = doc["medianAloneSeconds"]
    for key, label in labels.items():
        runs = doc["runs"][key]
        if not runs:
            continue
        med = {k: statistics.median(r["timings"][k] for r in runs) for k in STAGE}
        stage = doc["medianStageSeconds"][key]
        vc = runs[0]["validationCache"]
        decoded = vc["misses"] if vc else runs[0]["images"]
        lines.append(
            f"{label:<28} {med['pullSeconds']:>7.2f} {med['validateSeconds']:>9.2f} {med['statsSeconds']:>7.2f} "
            f"{stage:>7.2f} {stage / alone:>8.2f} {decoded:>8}"
        )
    verdict = "met" if doc["goalMet"] else "NOT met"
    lines.append(
        f"goal warm/alone <= {doc['goal']}: {verdict} (median ratio {doc['ratioWarmToAlone']}, {doc['ratios']})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eras", type=int, default=10)
    parser.add_argument("--images", type=int, default=2000, help="images per era")
    parser.add_argument("--imgsz", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-baseline", action="store_true", help="skip the two runs without validation cache")
    parser.add_argument("--quick", action="store_true", help="3 eras x 20 images, once (for the test)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.eras, args.images, args.repeat = 3, 20, 1
    tmp = Path(tempfile.mkdtemp(prefix="bench-stage-"))
    try:
        doc = measure(tmp, args.eras, args.images, args.imgsz, args.repeat, not args.no_baseline)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(table(doc))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
