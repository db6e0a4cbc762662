"""Continual-training benchmark: full retrain vs naive incremental vs replay through three eras, real training.

Every training step is one real RetrainJob run exactly as the pod runs it (`kretrain.trainer.local.run_spec`:
a `kretrain train` subprocess against a local SeaweedFS S3 and registry, then the promotion policy).

Scheme: a first model is trained on era 1 (full, random init) and promoted: it is the incumbent for the
whole benchmark. Each strategy then retrains through era 2 and era 3, chaining its own steps explicitly
(`baseWeights` = the previous step's registry version; version ids are run ids). Every retraining step
runs with `promotion.mode: dryRun` and otherwise default thresholds, so the incumbent pointer never
moves and every candidate of every strategy is evaluated and gated against the same era-1 model on the
same test images. The accuracy matrix's first row (the era-1 model on every era) comes from the
incumbent evaluation of the last step's report.

    .venv/bin/python bench/continual.py            # full mode (CPU, imgsz 64, about 20-30 min on 2 cores)
    .venv/bin/python bench/continual.py --quick    # tiny sizes, about a minute; numbers mean nothing
    .venv/bin/python bench/continual.py --device cuda --imgsz 320 --images 2000 --epochs 40 --first-epochs 60
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
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling helpers, also under `python -P`

from continual_analysis import (
    GOAL_COMPUTE_RATIO,
    GOAL_METRIC_RATIO,
    GoalResult,
    accuracy_matrix,
    best_goal,
    forgetting,
    goal_results,
    mean_forgetting,
)
from continual_data import CLASSES, ERA_DESCRIPTIONS, ERAS, FULL, QUICK, Size, era_configs

from kretrain.api import Evaluation, PromotionSpec, RetrainJobSpec, RunReport
from kretrain.api.spec import MetricName

MODEL = "continual-bench"
DATASET_URI = "s3://datasets/continual"
REGISTRY_URI = "s3://models/registry"
METRIC: MetricName = "mAP50-95"
FIRST_RUN = "bench-era1"
STEP_ROWS = ["era-1 model", "after era2", "after era3"]
"""Row labels of the accuracy matrix."""


@dataclass(frozen=True)
class Strategy:
    """One retraining strategy of the benchmark: a name and the `strategy` fields it sets."""

    name: str
    """Short name used in tables, JSON and charts."""
    label: str
    """What it is, in words."""
    fields: dict[str, Any]
    """RetrainJob `spec.strategy` fields (camelCase), without baseWeights/epochs/imgsz/batch."""
    incremental: bool = True
    """Whether it is an incremental strategy (compared against the full retrain for the goal)."""
    replay: bool = True
    """Whether it replays older eras."""


def strategies(low_lr: float = 0.002, freeze: int = 10) -> list[Strategy]:
    """The five strategies; unset knobs take the API defaults (what a user gets from a minimal manifest)."""
    return [
        Strategy("full", "full retrain on all eras", {"type": "full"}, incremental=False, replay=False),
        Strategy(
            "naive",
            "incremental, new era only (no replay)",
            {"type": "incremental", "replay": {"enabled": False}},
            replay=False,
        ),
        Strategy("replay10", "incremental + 10% replay", {"type": "incremental", "replay": {"fraction": 0.1}}),
        Strategy("replay30", "incremental + 30% replay", {"type": "incremental", "replay": {"fraction": 0.3}}),
        Strategy(
            "replay10-lowlr-freeze",
            f"incremental + 10% replay, SGD lr0 {low_lr:g}, freeze {freeze}",
            {"type": "incremental", "replay": {"fraction": 0.1}, "optimizer": "SGD", "lr0": low_lr, "freeze": freeze},
        ),
    ]


@dataclass
class StepResult:
    """One retraining step of one strategy."""

    run_id: str
    eras: list[str]
    base_weights: str
    train_images: int
    epochs_completed: int
    image_epochs: int
    wall_seconds: float
    """The run's own wall seconds (report.compute)."""
    train_seconds: float
    """Seconds of training alone (report.compute)."""
    process_seconds: float
    """Seconds around the whole local run (subprocess start, data pull, training, evaluation, decision)."""
    candidate: dict[str, float]
    """Candidate metric per era."""
    pooled: float
    """Candidate pooled metric over this step's eras."""
    pooled_map50: float
    incumbent: dict[str, float]
    """The era-1 model's metric per era on the same images."""
    incumbent_pooled: float | None
    passed: bool
    """Promotion gate verdict (default thresholds, dry run)."""
    summary: str
    reasons: list[str]
    checks: dict[str, bool] = field(default_factory=dict)


def per_era(ev: Evaluation | None) -> dict[str, float]:
    """The benchmark metric per era of an evaluation."""
    return {} if ev is None else {era: m.get(METRIC) for era, m in ev.eras.items()}


def first_spec(size: Size, gpus: int, workers: int) -> RetrainJobSpec:
    """The era-1 model: full training from a random init, promoted with no checks required (the baseline)."""
    return RetrainJobSpec.model_validate(
        {
            **_common(gpus),
            "dataset": {"uri": DATASET_URI, "eras": ["era1"], "classes": CLASSES},
            "strategy": {"type": "full", "baseWeights": "yolov8n.yaml", **_train(size, size.first_epochs, workers)},
            "promotion": {"requiredChecks": []},
        }
    )


def step_spec(strategy: Strategy, eras: list[str], base: str, size: Size, gpus: int, workers: int) -> RetrainJobSpec:
    """One retraining step: the strategy's fields, explicit start weights, default gate in dry-run mode."""
    return RetrainJobSpec.model_validate(
        {
            **_common(gpus),
            "dataset": {"uri": DATASET_URI, "eras": eras, "newEras": 1, "classes": CLASSES},
            "strategy": {**strategy.fields, "baseWeights": base, **_train(size, size.epochs, workers)},
            "promotion": {"mode": "dryRun"},
        }
    )


def _common(gpus: int) -> dict[str, Any]:
    return {"model": MODEL, "resources": {"gpus": gpus}, "storage": {"registry": REGISTRY_URI}}


def _train(size: Size, epochs: int, workers: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "epochs": epochs,
        "imgsz": size.imgsz,
        "batch": size.batch,
        "hyperparameters": {"workers": workers, "seed": 0, "deterministic": True},
    }
    if size.patience is not None:
        out["patience"] = size.patience
    return out


class Bench:
    """Runs the steps against one local S3 server and registry."""

    def __init__(self, workdir: Path, env: dict[str, str], verbose: bool) -> None:
        self.workdir = workdir
        self.env = env
        self.verbose = verbose
        (workdir / "logs").mkdir(parents=True, exist_ok=True)

    def run(self, spec: RetrainJobSpec, run_id: str) -> tuple[RunReport, Any, float]:
        """One real local run; returns the report, the decision and the seconds it took."""
        from kretrain.trainer.local import run_spec

        t0 = time.monotonic()
        log_path = self.workdir / "logs" / f"{run_id}.log"
        with log_path.open("w") as log:
            out = sys.stdout if self.verbose else log
            outcome = run_spec(spec, workdir=self.workdir / "runs", run_id=run_id, actor="bench", out=out, env=self.env)
        return outcome.report, outcome.decision, time.monotonic() - t0

    def step(self, spec: RetrainJobSpec, run_id: str) -> StepResult:
        """Run one retraining step and keep what the benchmark needs from its report."""
        report, decision, seconds = self.run(spec, run_id)
        cand, inc = report.candidate_evaluation, report.incumbent_evaluation
        return StepResult(
            run_id=run_id,
            eras=list(spec.dataset.eras),
            base_weights=spec.strategy.effective_base_weights,
            train_images=report.data.train_images,
            epochs_completed=report.training.epochs_completed,
            image_epochs=report.compute.image_epochs,
            wall_seconds=report.compute.wall_seconds,
            train_seconds=report.compute.train_seconds,
            process_seconds=seconds,
            candidate=per_era(cand),
            pooled=cand.pooled.get(METRIC),
            pooled_map50=cand.pooled.map50,
            incumbent=per_era(inc),
            incumbent_pooled=inc.pooled.get(METRIC) if inc else None,
            passed=decision.passed,
            summary=decision.summary,
            reasons=list(decision.reasons),
            checks={c.name: c.passed for c in report.checks},
        )


def strategy_result(
    strategy: Strategy, steps: list[StepResult], first: Evaluation | None, eras: list[str]
) -> dict[str, Any]:
    """Matrix, forgetting, pooled metric and compute of one strategy's chain of steps.

    Row 0 is the era-1 model on every era (the last step's incumbent evaluation); without one, only
    era 1 from the era-1 model's own report.
    """
    last = steps[-1]
    row0 = last.incumbent or per_era(first)
    rows = [row0, *(s.candidate for s in steps)]
    matrix = accuracy_matrix(rows, eras)
    learned = {era: i for i, era in enumerate(eras)}
    forgot = forgetting(matrix, eras, learned)
    return {
        "name": strategy.name,
        "label": strategy.label,
        "incremental": strategy.incremental,
        "replay": strategy.replay,
        "strategy": strategy.fields,
        "steps": [asdict(s) for s in steps],
        "matrix_rows": STEP_ROWS[: len(rows)],
        "matrix": matrix,
        "forgetting": forgot,
        "mean_forgetting": mean_forgetting(forgot),
        "final": last.candidate,
        "pooled": last.pooled,
        "pooled_map50": last.pooled_map50,
        "compute": {
            "image_epochs": sum(s.image_epochs for s in steps),
            "wall_seconds": round(sum(s.wall_seconds for s in steps), 2),
            "train_seconds": round(sum(s.train_seconds for s in steps), 2),
            "process_seconds": round(sum(s.process_seconds for s in steps), 2),
        },
        "gate": [{"step": s.eras[-1], "passed": s.passed, "summary": s.summary} for s in steps],
    }


def gate_checks(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Whether the default gate rejected every naive candidate and accepted every full-retrain candidate."""
    out: dict[str, Any] = {}
    if "naive" in results:
        steps = results["naive"]["steps"]
        out["rejects_naive"] = {
            "ok": all(not s["passed"] for s in steps),
            "per_step": {s["eras"][-1]: s["summary"] for s in steps},
            "forgetting_reasons": [r for s in steps for r in s["reasons"] if "forgetting" in r],
        }
    if "full" in results:
        steps = results["full"]["steps"]
        out["accepts_full"] = {
            "ok": all(s["passed"] for s in steps),
            "per_step": {s["eras"][-1]: s["summary"] for s in steps},
        }
    return out


def goal_check(results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The goal: best incremental-with-replay setting vs the full retrain (metric ratio, compute ratio)."""
    replayed = [n for n, r in results.items() if r["incremental"] and r["replay"]]
    if "full" not in results or not replayed:
        return None
    pooled = {n: r["pooled"] for n, r in results.items()}
    compute = {n: r["compute"]["image_epochs"] for n, r in results.items()}
    per = goal_results(pooled, compute, "full", replayed)
    best: GoalResult | None = best_goal(per)
    assert best is not None
    return {
        "metric_ratio_required": GOAL_METRIC_RATIO,
        "compute_ratio_allowed": GOAL_COMPUTE_RATIO,
        "per_strategy": [{**asdict(g), "met": g.met} for g in per],
        "best": best.strategy,
        "met": best.met,
        "metric_shortfall": (
            None if best.metric_ratio is None else round(max(0.0, GOAL_METRIC_RATIO - best.metric_ratio), 4)
        ),
        "compute_excess": (
            None if best.compute_ratio is None else round(max(0.0, best.compute_ratio - GOAL_COMPUTE_RATIO), 4)
        ),
    }


# ------------------------------------------------------------------------------------------------
# Output: tables and charts
# ------------------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def tables(doc: dict[str, Any]) -> str:
    """The summary table, one accuracy matrix per strategy, and the checks, as text."""
    from kretrain.tables import render_table

    eras: list[str] = doc["eras"]
    results: dict[str, dict[str, Any]] = {r["name"]: r for r in doc["strategies"]}
    full = results.get("full")
    lines = [f"Final models after era3 ({METRIC} on each era's test split; pooled = all eras' test splits together)"]
    rows = []
    for r in results.values():
        ie = r["compute"]["image_epochs"]
        rows.append(
            [
                r["name"],
                _num(r["pooled"]),
                _pct(r["pooled"] / full["pooled"]) if full and full["pooled"] > 0 else "-",
                *(_num(r["final"].get(e)) for e in eras),
                *(_num(r["forgetting"].get(e)) for e in eras[:-1]),
                ie,
                _pct(ie / full["compute"]["image_epochs"]) if full and full["compute"]["image_epochs"] else "-",
                f"{r['compute']['wall_seconds']:.0f}",
                " / ".join("pass" if g["passed"] else "REJECT" for g in r["gate"]),
            ]
        )
    headers = [
        "strategy", "pooled", "vs full", *eras, *(f"forget {e}" for e in eras[:-1]),
        "image-epochs", "vs full", "wall s", "gate era2 / era3",
    ]  # fmt: skip
    lines += [render_table(headers, rows), ""]
    for r in results.values():
        lines.append(f"Accuracy matrix, {r['name']} ({r['label']}); rows: model after each step, columns: test era")
        mrows = [[label, *(_num(v) for v in row)] for label, row in zip(r["matrix_rows"], r["matrix"], strict=True)]
        lines += [render_table(["model", *eras], mrows), ""]
    checks = doc["checks"]
    if "rejects_naive" in checks:
        c = checks["rejects_naive"]
        lines.append(f"Default gate rejects naive incremental at every step: {'YES' if c['ok'] else 'NO'}")
        lines += [f"  {era}: {s}" for era, s in c["per_step"].items()]
    if "accepts_full" in checks:
        c = checks["accepts_full"]
        lines.append(f"Default gate accepts the full retrain at every step: {'YES' if c['ok'] else 'NO'}")
        lines += [f"  {era}: {s}" for era, s in c["per_step"].items()]
    goal = doc.get("goal")
    if goal:
        lines.append(
            f"Goal (>= {_pct(goal['metric_ratio_required'])} of full's pooled {METRIC} with <= "
            f"{_pct(goal['compute_ratio_allowed'])} of its image-epochs): {'MET' if goal['met'] else 'NOT MET'}"
        )
        for g in goal["per_strategy"]:
            mark = " <- best" if g["strategy"] == goal["best"] else ""
            lines.append(
                f"  {g['strategy']}: {_pct(g['metric_ratio'])} of the metric, {_pct(g['compute_ratio'])} of the "
                f"image-epochs{' (meets both)' if g['met'] else ''}{mark}"
            )
    return "\n".join(lines)


def markdown(doc: dict[str, Any]) -> str:
    """The summary table and the accuracy matrices as Markdown (for docs/strategies.md)."""
    eras: list[str] = doc["eras"]
    results: dict[str, dict[str, Any]] = {r["name"]: r for r in doc["strategies"]}
    full = results.get("full")

    def row(cells: list[Any]) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"

    headers = [
        "strategy", f"pooled {METRIC}", "vs full", *eras, *(f"forgetting {e}" for e in eras[:-1]),
        "image-epochs", "vs full", "wall s", "gate (era2, era3)",
    ]  # fmt: skip
    lines = [row(headers), row(["---"] * len(headers))]
    for r in results.values():
        ie = r["compute"]["image_epochs"]
        lines.append(
            row(
                [
                    f"`{r['name']}`",
                    _num(r["pooled"]),
                    _pct(r["pooled"] / full["pooled"]) if full and full["pooled"] > 0 else "-",
                    *(_num(r["final"].get(e)) for e in eras),
                    *(_num(r["forgetting"].get(e)) for e in eras[:-1]),
                    ie,
                    _pct(ie / full["compute"]["image_epochs"]) if full and full["compute"]["image_epochs"] else "-",
                    f"{r['compute']['wall_seconds']:.0f}",
                    ", ".join("pass" if g["passed"] else "reject" for g in r["gate"]),
                ]
            )
        )
    lines.append("")
    for r in results.values():
        lines += [f"`{r['name']}` ({r['label']}):", "", row(["model", *eras]), row(["---"] * (len(eras) + 1))]
        lines += [
            row([label, *(_num(v) for v in vals)]) for label, vals in zip(r["matrix_rows"], r["matrix"], strict=True)
        ]
        lines.append("")
    return "\n".join(lines)


def charts(doc: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    """Accuracy-matrix heatmaps per strategy, and pooled metric vs image-epochs; returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    eras: list[str] = doc["eras"]
    results: list[dict[str, Any]] = doc["strategies"]
    paths = []

    n = len(results)
    fig, axes = plt.subplots(1, n, figsize=(2.8 * n + 1.8, 3.6), squeeze=False, layout="constrained")
    for k, (ax, r) in enumerate(zip(axes[0], results, strict=True)):
        m = np.array([[np.nan if v is None else v for v in row] for row in r["matrix"]], dtype=float)
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                text = "n/a" if np.isnan(m[i, j]) else f"{m[i, j]:.2f}"
                colour = "grey" if np.isnan(m[i, j]) else "black" if m[i, j] > 0.6 else "white"
                ax.text(j, i, text, ha="center", va="center", fontsize=9, color=colour)
        ax.set_xticks(range(len(eras)), eras)
        ax.set_yticks(range(len(r["matrix_rows"])), r["matrix_rows"] if k == 0 else [], fontsize=8)
        ax.set_title(f"{r['name']}\npooled {r['pooled']:.3f}", fontsize=9)
        ax.set_xlabel("test era", fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label=METRIC)
    fig.suptitle("Accuracy matrix: model after each step (rows) on each era's test split (columns)", fontsize=10)
    path = out_dir / f"{stem}-matrix.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    paths.append(path)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    full = next((r for r in results if r["name"] == "full"), None)
    for r in results:
        x, y = r["compute"]["image_epochs"], r["pooled"]
        ax.scatter([x], [y], s=60)
        ax.annotate(r["name"], (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    if full is not None:
        ax.axhline(GOAL_METRIC_RATIO * full["pooled"], ls="--", lw=1, color="grey")
        ax.axvline(GOAL_COMPUTE_RATIO * full["compute"]["image_epochs"], ls=":", lw=1, color="grey")
        ax.text(0.01, 0.02, "goal: above dashed, left of dotted", transform=ax.transAxes, fontsize=8, color="grey")
    ax.set_xlabel("image-epochs spent retraining through era2 and era3")
    ax.set_ylabel(f"final pooled {METRIC} (all eras)")
    ax.set_title("Pooled mixed-era metric vs compute")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    path = out_dir / f"{stem}-compute.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags; size flags override the mode's defaults."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes for CI (seconds per step, numbers mean nothing)")
    p.add_argument("--images", type=int, help="images per era")
    p.add_argument("--imgsz", type=int, help="image size (generation, training, evaluation); a multiple of 32")
    p.add_argument("--epochs", type=int, help="epochs of every retraining step")
    p.add_argument("--first-epochs", type=int, help="epochs of the era-1 model")
    p.add_argument("--batch", type=int, help="batch size")
    p.add_argument("--patience", type=int, help="early-stopping patience of the retraining steps (0: off)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="train on the CPU or on GPUs")
    p.add_argument("--gpus", type=int, default=1, help="GPUs with --device cuda")
    p.add_argument("--workers", type=int, help="data-loader workers (default 0 on CPU, 4 on GPU)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    p.add_argument("--low-lr", type=float, default=0.002, help="lr0 of the low-lr + freeze strategy")
    p.add_argument("--freeze", type=int, default=10, help="layers frozen by the low-lr + freeze strategy")
    p.add_argument("--strategies", help="comma-separated subset of: full,naive,replay10,replay30,replay10-lowlr-freeze")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results", help="results folder")
    p.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one, removed at the end)")
    p.add_argument(
        "--parallel", type=int, default=1, help="strategies trained side by side (each chain stays sequential)"
    )
    p.add_argument("--verbose", action="store_true", help="stream every run's progress and decision")
    return p.parse_args(argv)


def size_from(args: argparse.Namespace) -> Size:
    """The mode's size with the flags' overrides."""
    base = QUICK if args.quick else FULL
    over = {
        k: v
        for k, v in {
            "images": args.images,
            "imgsz": args.imgsz,
            "epochs": args.epochs,
            "first_epochs": args.first_epochs,
            "batch": args.batch,
            "patience": args.patience,
        }.items()
        if v is not None
    }
    return replace(base, **over)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0 when it completed (the checks are reported, not enforced)."""
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the local S3 server and the scratch folder are cleaned up.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    size = size_from(args)
    if size.imgsz % 32:
        raise SystemExit(f"--imgsz must be a multiple of 32, got {size.imgsz}")
    gpus = args.gpus if args.device == "cuda" else 0
    workers = args.workers if args.workers is not None else (4 if gpus else 0)
    chosen = strategies(args.low_lr, args.freeze)
    if args.strategies:
        names = [s.strip() for s in args.strategies.split(",") if s.strip()]
        unknown = sorted(set(names) - {s.name for s in chosen})
        if unknown:
            raise SystemExit(f"--strategies: unknown {unknown}; known: {[s.name for s in chosen]}")
        chosen = [s for s in chosen if s.name in names]
    stem = "continual-quick" if args.quick else "continual"
    args.out.mkdir(parents=True, exist_ok=True)
    temp = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="kretrain-continual-")) if args.workdir is None else args.workdir
    if not temp and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        doc = run(args, size, gpus, workers, chosen, workdir)
    finally:
        if temp:
            shutil.rmtree(workdir, ignore_errors=True)
    json_path = args.out / f"{stem}.json"
    json_path.write_text(json.dumps(doc, indent=2))
    (args.out / f"{stem}.md").write_text(markdown(doc) + "\n")
    pngs = charts(doc, args.out, stem)
    print()
    print(tables(doc))
    print(f"\nJSON: {json_path}\nCharts: {', '.join(str(p) for p in pngs)}")
    print(f"Total {doc['duration_seconds']:.0f}s")
    return 0


def run(
    args: argparse.Namespace, size: Size, gpus: int, workers: int, chosen: list[Strategy], workdir: Path
) -> dict[str, Any]:
    """Start S3, generate and upload the eras, train the era-1 model, then every strategy's chain of steps."""
    import boto3

    from kretrain.s3server import LocalS3Server
    from kretrain.store import ObjectStore
    from kretrain.trainer.offline import configure
    from kretrain.trainer.synthetic import generate_dataset, upload_dataset

    started = time.monotonic()
    configure(workdir / "yolo-config")
    eras = list(ERAS)
    print(
        f"continual benchmark ({'quick' if args.quick else 'full'}): {size.images} images/era at imgsz {size.imgsz}, "
        f"era-1 model {size.first_epochs} epochs, {size.epochs} epochs per retraining step, "
        f"{'cuda x' + str(gpus) if gpus else 'cpu'}; workdir {workdir}",
        flush=True,
    )
    with LocalS3Server(workdir / "s3") as server:
        os.environ.update(server.env())  # this process plays the operator: it reads reports and decides
        env = {**os.environ, "KRETRAIN_REGISTRY": REGISTRY_URI}
        s3 = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
                          aws_secret_access_key=server.secret_key, region_name="us-east-1")  # fmt: skip
        for bucket in ("datasets", "models"):
            s3.create_bucket(Bucket=bucket)
        store = ObjectStore(server.endpoint, "us-east-1", server.access_key, server.secret_key)
        local = workdir / "dataset"
        generate_dataset(local, era_configs(size.images, args.seed), CLASSES, imgsz=size.imgsz)
        upload_dataset(local, store, DATASET_URI)
        bench = Bench(workdir, env, args.verbose)

        report, decision, seconds = bench.run(first_spec(size, gpus, workers), FIRST_RUN)
        first = report.candidate_evaluation
        print(
            f"[era-1 model] {seconds:.0f}s, {METRIC} on era1 {first.eras['era1'].get(METRIC):.3f}, "
            f"{'promoted (incumbent for the whole benchmark)' if decision.promoted else 'NOT promoted'}",
            flush=True,
        )
        if not decision.promoted:
            raise SystemExit(f"the era-1 model was not promoted: {decision.summary}")

        def chain(strategy: Strategy) -> dict[str, Any]:
            steps: list[StepResult] = []
            base = FIRST_RUN
            for k in range(2, len(eras) + 1):
                run_id = f"bench-{strategy.name}-{eras[k - 1]}"
                spec = step_spec(strategy, eras[:k], base, size, gpus, workers)
                step = bench.step(spec, run_id)
                steps.append(step)
                base = run_id
                print(
                    f"[{strategy.name} +{eras[k - 1]}] {step.process_seconds:.0f}s, {step.image_epochs} image-epochs, "
                    f"pooled {step.pooled:.3f}, "
                    + ", ".join(f"{e} {v:.3f}" for e, v in step.candidate.items())
                    + f"; gate {'passed' if step.passed else 'rejected'}",
                    flush=True,
                )
            return strategy_result(strategy, steps, first, eras)

        # Each strategy's chain is sequential; different strategies are independent (own run ids, dry-run
        # gate, the pointer never moves) and may run side by side (wall seconds then include the sharing).
        with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
            done = list(pool.map(chain, chosen))
        results: dict[str, dict[str, Any]] = {r["name"]: r for r in done}

    doc: dict[str, Any] = {
        "benchmark": "continual",
        "mode": "quick" if args.quick else "full",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "metric": METRIC,
        "eras": eras,
        "era_descriptions": ERA_DESCRIPTIONS,
        "classes": CLASSES,
        "size": asdict(size),
        "device": f"cuda x{gpus}" if gpus else "cpu",
        "parallel": args.parallel,
        "cpu_count": os.cpu_count(),
        "scheme": (
            "era-1 model promoted as incumbent; each strategy chains its steps with baseWeights = previous step's "
            "version; every step is gated in dryRun mode with default thresholds against the era-1 model"
        ),
        "default_gate": PromotionSpec().model_dump(by_alias=True),
        "first_model": {
            "run_id": FIRST_RUN,
            "eras": per_era(first),
            "image_epochs": report.compute.image_epochs,
            "wall_seconds": report.compute.wall_seconds,
            "process_seconds": round(seconds, 2),
        },
        "strategies": list(results.values()),
        "checks": gate_checks(results),
        "goal": goal_check(results),
        "duration_seconds": round(time.monotonic() - started, 1),
    }
    return doc


if __name__ == "__main__":
    raise SystemExit(main())
