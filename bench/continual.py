"""Continual-training benchmark v2: converged runs, warm-started full retrains, budgeted replay, three seeds.

Every training step is one real RetrainJob run exactly as the pod runs it (`kretrain.trainer.local.run_spec`:
a `kretrain train` subprocess against a local SeaweedFS S3 and registry), decided by the real promotion
policy (`kretrain.policy.decide_report`, the default gate: paired-bootstrap intervals, dry run).

Scheme: a first model is trained on era 1 (random init, to convergence) and promoted: it is the incumbent for
the whole benchmark, every candidate is gated against it. Each strategy and training seed then retrains
through the later eras, chaining its own steps (`baseWeights` = the previous step's version, or a random
init for `full-scratch`). Converged strategies train under a generous epoch cap with early stopping on the
step's validation set (every era's val split); budgeted ones run epochs derived from the converged full
retrain at the same step (half or a quarter of its mean stopping epoch; replay at full-half's image-epochs).

    .venv/bin/python bench/continual.py --parallel 2   # full mode (CPU, imgsz 64; see docs/strategies.md)
    .venv/bin/python bench/continual.py --quick    # CI-sized: a few real runs; numbers mean nothing
    .venv/bin/python bench/continual.py --gpu      # imgsz 640, 2000 images per era, on one CUDA GPU
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling helpers, also under `python -P`

from continual_data import CLASSES, ERA_DESCRIPTIONS, ERAS, FULL, GPU, QUICK, Size, era_configs
from continual_report import charts, markdown, tables
from continual_runner import METRIC, Bench, StepResult, per_era
from continual_strategies import (
    DATASET_URI,
    FIRST_RUN,
    REFERENCE,
    REGISTRY_URI,
    Strategy,
    first_spec,
    select,
    step_epochs,
    step_spec,
    strategies,
)
from continual_summary import compare, seed_result, strategy_summary

from kretrain.api import PromotionSpec

STEP_ROWS = ["era-1 model", "after era2", "after era3"]
"""Row labels of the accuracy matrix."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags; size flags override the mode's defaults."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CI sizes: a few real runs, numbers mean nothing")
    mode.add_argument("--gpu", action="store_true", help="imgsz 640, 2000 images per era, CUDA (an H200-class GPU)")
    p.add_argument("--images", type=int, help="images per era")
    p.add_argument("--imgsz", type=int, help="image size (generation, training, evaluation); a multiple of 32")
    p.add_argument("--epochs", type=int, help="epoch cap of the converged retraining steps")
    p.add_argument("--first-epochs", type=int, help="epoch cap of the era-1 model")
    p.add_argument("--patience", type=int, help="early-stopping patience of the converged runs")
    p.add_argument("--batch", type=int, help="batch size")
    p.add_argument("--seeds", type=int, help="training seeds per strategy")
    p.add_argument("--eras", type=int, choices=[2, 3], help="eras used (2: one retraining step)")
    p.add_argument("--gpus", type=int, default=1, help="GPUs per run in --gpu mode")
    p.add_argument("--workers", type=int, help="data-loader workers")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data")
    p.add_argument("--low-lr", type=float, default=0.002, help="lr0 of the low-lr + freeze strategy")
    p.add_argument("--freeze", type=int, default=10, help="layers frozen by the low-lr + freeze strategy")
    p.add_argument("--strategies", help="comma-separated subset (budgeted strategies need 'full')")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results", help="results folder")
    p.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one, removed at the end)")
    p.add_argument("--parallel", type=int, default=1, help="chains (strategy x seed) trained side by side")
    p.add_argument("--verbose", action="store_true", help="stream every run's progress and decision")
    return p.parse_args(argv)


def size_from(args: argparse.Namespace) -> Size:
    """The mode's size with the flags' overrides."""
    base = QUICK if args.quick else GPU if args.gpu else FULL
    over = {
        "images": args.images, "imgsz": args.imgsz, "epochs": args.epochs, "first_epochs": args.first_epochs,
        "patience": args.patience, "batch": args.batch, "seeds": args.seeds, "eras": args.eras,
        "workers": args.workers,
    }  # fmt: skip
    size = replace(base, **{k: v for k, v in over.items() if v is not None})
    if size.imgsz % 32:
        raise SystemExit(f"--imgsz must be a multiple of 32, got {size.imgsz}")
    return size


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0 when it completed (the gate's verdicts are reported, not enforced)."""
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the local S3 server and the scratch folder are cleaned up.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    size = size_from(args)
    chosen = select(strategies(args.low_lr, args.freeze), args.strategies)
    mode = "quick" if args.quick else "gpu" if args.gpu else "full"
    stem = "continual" if mode == "full" else f"continual-{mode}"
    args.out.mkdir(parents=True, exist_ok=True)
    temp = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="kretrain-continual-")) if args.workdir is None else args.workdir
    if not temp and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        doc = run(args, mode, size, chosen, workdir)
    finally:
        if temp:
            shutil.rmtree(workdir, ignore_errors=True)
    json_path = args.out / f"{stem}.json"
    json_path.write_text(json.dumps(doc, indent=2))
    (args.out / f"{stem}.md").write_text(markdown(doc) + "\n")
    paths = charts(doc, args.out, stem)
    print()
    print(tables(doc))
    print(f"\nJSON: {json_path}\nCharts: {', '.join(str(p) for p in paths)}")
    print(f"Total {doc['duration_seconds']:.0f}s for {doc['runs']} runs")
    return 0


def _line(name: str, step: StepResult) -> str:
    return (
        f"[{name} seed {step.seed} +{step.eras[-1]}] {step.process_seconds:.0f}s ({step.cpu_seconds:.0f} CPU s), "
        f"epochs {step.epochs_completed}"
        f"/{step.epochs_planned} (best {step.best_epoch}), {step.image_epochs} image-epochs, pooled {step.pooled:.3f}; "
        f"gate {'passed' if step.passed else 'rejected'}{' (bootstrap)' if step.bootstrap else ''}"
    )


def run(args: argparse.Namespace, mode: str, size: Size, chosen: list[Strategy], workdir: Path) -> dict[str, Any]:
    """Start S3, generate and upload the eras, train the era-1 model, then every strategy x seed chain."""
    import boto3

    from kretrain.s3server import LocalS3Server
    from kretrain.store import ObjectStore
    from kretrain.trainer.offline import configure
    from kretrain.trainer.synthetic import generate_dataset, upload_dataset

    started = time.monotonic()
    load_start = os.getloadavg()
    configure(workdir / "yolo-config")
    eras = list(ERAS[: size.eras])
    gpus = args.gpus if size.device == "cuda" else 0
    seeds = list(range(size.seeds))
    print(
        f"continual benchmark v2 ({mode}): {size.images} images/era at imgsz {size.imgsz}, eras {', '.join(eras)}; "
        f"era-1 model cap {size.first_epochs} epochs, converged steps cap {size.epochs}, patience {size.patience}; "
        f"{len(chosen)} strategies x {len(seeds)} seeds = {len(chosen) * len(seeds) * (len(eras) - 1) + 1} runs; "
        f"{'cuda x' + str(gpus) if gpus else 'cpu'}; workdir {workdir}",
        flush=True,
    )
    with LocalS3Server(workdir / "s3") as server:
        os.environ.update(server.env())  # this process plays the operator: it reads reports and decides
        env = {**os.environ, "KRETRAIN_REGISTRY": REGISTRY_URI}
        if args.parallel > 1 and not gpus:  # side-by-side CPU trainers share the cores instead of oversubscribing
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.parallel)))
        s3 = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
                          aws_secret_access_key=server.secret_key, region_name="us-east-1")  # fmt: skip
        for bucket in ("datasets", "models"):
            s3.create_bucket(Bucket=bucket)
        store = ObjectStore(server.endpoint, "us-east-1", server.access_key, server.secret_key)
        local = workdir / "dataset"
        generate_dataset(local, era_configs(size.images, args.data_seed)[: size.eras], CLASSES, imgsz=size.imgsz)
        upload_dataset(local, store, DATASET_URI)
        bench = Bench(workdir, env, args.verbose)

        report, decision, seconds = bench.run(first_spec(size, gpus), FIRST_RUN)
        first, first_cpu = report.candidate_evaluation, bench.cpu
        print(
            f"[era-1 model] {seconds:.0f}s, epochs {report.training.epochs_completed}/{size.first_epochs} "
            f"(best {report.training.best_epoch}), {METRIC} on era1 {first.eras['era1'].get(METRIC):.3f}, "
            f"{'promoted (incumbent for the whole benchmark)' if decision.promoted else 'NOT promoted'}",
            flush=True,
        )
        if not decision.promoted:
            raise SystemExit(f"the era-1 model was not promoted: {decision.summary}")
        chains: dict[tuple[str, int], list[StepResult]] = {}

        def chain(job: tuple[Strategy, int]) -> None:
            strategy, seed = job
            steps: list[StepResult] = []
            base = FIRST_RUN
            for k in range(2, len(eras) + 1):
                new = eras[k - 1]
                full = [chains[(REFERENCE, s)][k - 2] for s in seeds] if strategy.budget else []
                epochs, patience = step_epochs(
                    strategy, size, [f.epochs_completed for f in full], full[0].train_images if full else 0,
                    full[0].era_train if full else {}, new,
                )  # fmt: skip
                run_id = f"bench-{strategy.name}-s{seed}-{new}"
                spec = step_spec(strategy, eras[:k], base, size, gpus, epochs, patience, seed)
                step = bench.step(spec, run_id, seed)
                steps.append(step)
                base = run_id
                print(_line(strategy.name, step), flush=True)
            chains[(strategy.name, seed)] = steps

        # Chains are sequential inside; different chains are independent (own run ids, dry-run gate, the pointer
        # never moves). Budgeted strategies start once every seed of the full retrain has converged.
        # One at a time in this thread (SIGTERM then stops the running trainer), or side by side in threads.
        for phase in ([s for s in chosen if s.budget is None], [s for s in chosen if s.budget is not None]):
            jobs = [(s, seed) for s in phase for seed in seeds]
            if args.parallel <= 1:
                for job in jobs:
                    chain(job)
                continue
            with ThreadPoolExecutor(max_workers=args.parallel) as pool:
                list(pool.map(chain, jobs))

    row0 = chains[(chosen[0].name, 0)][-1].incumbent or per_era(first)
    summaries = []
    for s in chosen:
        per_seed = [seed_result([asdict(x) for x in chains[(s.name, seed)]], row0, eras) for seed in seeds]
        meta = {"name": s.name, "label": s.label, "strategy": s.fields, "incremental": s.incremental,
                "replay": s.replay, "scratch": s.scratch, "budget": asdict(s.budget) if s.budget else None}  # fmt: skip
        summaries.append(strategy_summary(meta, per_seed, eras))
    compared = compare(summaries, REFERENCE)
    return {
        "benchmark": "continual-v2",
        "mode": mode,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "metric": METRIC,
        "eras": eras,
        "era_descriptions": {e: ERA_DESCRIPTIONS[e] for e in eras},
        "classes": CLASSES,
        "size": asdict(size),
        "device": f"cuda x{gpus}" if gpus else "cpu",
        "parallel": args.parallel,
        "cpu_count": os.cpu_count(),
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
        "reference": REFERENCE,
        "matrix_rows": STEP_ROWS[: len(eras)],
        "default_gate": PromotionSpec().model_dump(by_alias=True),
        "first_model": {
            "run_id": FIRST_RUN,
            "eras": per_era(first),
            "epochs_completed": report.training.epochs_completed,
            "best_epoch": report.training.best_epoch,
            "image_epochs": report.compute.image_epochs,
            "wall_seconds": report.compute.wall_seconds,
            "train_seconds": report.compute.train_seconds,
            "process_seconds": round(seconds, 2),
            "cpu_seconds": first_cpu,
        },
        "strategies": summaries,
        **compared,
        "runs": 1 + sum(len(c) for c in chains.values()),
        "duration_seconds": round(time.monotonic() - started, 1),
    }


if __name__ == "__main__":
    raise SystemExit(main())
