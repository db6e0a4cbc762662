"""`kretrain demo`: local S3, two synthetic eras, a first model, a rejected incremental run, a promoted full retrain."""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import boto3

from kretrain.api import Evaluation, RetrainJobSpec
from kretrain.registry import Registry
from kretrain.s3server import LocalS3Server
from kretrain.store import ObjectStore
from kretrain.tables import render_table
from kretrain.trainer.local import LocalOutcome, LocalRunError, run_spec
from kretrain.trainer.synthetic import DEFAULT_CLASSES, demo_eras, generate_dataset, upload_dataset

DATASET_URI = "s3://datasets/shapes"
REGISTRY_URI = "s3://models/registry"
MODEL = "shapes-detector"
SPLIT = {"val": 0.2, "test": 0.2, "seed": 0}


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is: images per era and epochs per step."""

    images: int = 240
    imgsz: int = 64
    first_epochs: int = 25
    incremental_epochs: int = 12
    full_epochs: int = 25


QUICK = DemoSize(images=160, imgsz=64, first_epochs=15, incremental_epochs=8, full_epochs=12)


def demo_spec(step: str, size: DemoSize) -> RetrainJobSpec:
    """The RetrainJob spec of one demo step (what a user would put in a manifest)."""
    common: dict[str, Any] = {
        "model": MODEL,
        "resources": {"gpus": 0, "cpu": "2", "memory": "4Gi"},
        "storage": {"registry": REGISTRY_URI},
        "promotion": {"metric": "mAP50-95", "maxEraRegression": 0.05, "minImprovement": {"absolute": 0.0}},
    }
    train: dict[str, Any] = {
        "imgsz": size.imgsz,
        "batch": 16,
        "hyperparameters": {"workers": 0, "seed": 0, "deterministic": True},
    }
    if step == "first":
        dataset: dict[str, Any] = {"uri": DATASET_URI, "eras": ["era1"], "split": SPLIT}
        strategy: dict[str, Any] = {"type": "full", "baseWeights": "yolov8n.yaml", "epochs": size.first_epochs, **train}
    elif step == "incremental":
        dataset = {"uri": DATASET_URI, "eras": ["era1", "era2"], "newEras": 1, "split": SPLIT}
        strategy = {
            "type": "incremental",
            "replay": {"enabled": False},
            "baseWeights": "incumbent",
            **train,
            "epochs": size.incremental_epochs,
            "patience": 0,
        }
    elif step == "full":
        dataset = {"uri": DATASET_URI, "eras": ["era1", "era2"], "newEras": 1, "split": SPLIT}
        strategy = {"type": "full", "baseWeights": "incumbent", "epochs": size.full_epochs, **train}
    else:
        raise ValueError(f"unknown demo step {step!r}")
    return RetrainJobSpec.model_validate({**common, "dataset": dataset, "strategy": strategy})


def _chart(outcomes: list[tuple[str, LocalOutcome]], path: Path) -> None:
    """Bar chart of mAP50-95 per era (and pooled) of every version, all on the same mixed-era test set.

    The first model was evaluated on era1 alone when it was trained; the later runs evaluated it again as
    their incumbent on both eras' test splits, so its bars come from there.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = outcomes[-1][1].report
    bars: list[tuple[str, Evaluation]] = []
    if last.incumbent_evaluation is not None:
        bars.append((f"{outcomes[0][0]} (promoted, then incumbent)", last.incumbent_evaluation))
    for label, o in outcomes[1:]:
        verdict = "promoted" if o.decision.promoted else "rejected"
        bars.append((f"{label} ({verdict})", o.report.candidate_evaluation))
    eras = [*last.candidate_evaluation.eras, "pooled"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(1, len(bars))
    for i, (label, ev) in enumerate(bars):
        values = [ev.eras[e].map50_95 if e in ev.eras else 0.0 for e in eras[:-1]] + [ev.pooled.map50_95]
        drawn = ax.bar([x + i * width for x in range(len(eras))], values, width, label=label)
        ax.bar_label(drawn, fmt="%.2f", fontsize=8)
    ax.set_xticks([x + width * (len(bars) - 1) / 2 for x in range(len(eras))], eras)
    ax.set_ylabel("mAP50-95 on the era's test split")
    ax.set_title("kretrain demo: every version on the same mixed-era test set")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(workdir: Path, size: DemoSize = DemoSize(), out: TextIO = sys.stdout) -> int:
    """Run the whole demo in `workdir`; returns 0 when it showed a rejection and a promotion."""
    started = time.monotonic()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    out.write(f"kretrain demo — everything below is real training on this machine's CPU; output in {workdir}\n\n")
    with LocalS3Server(workdir / "s3") as server:
        env = {**os.environ, **server.env(), "KRETRAIN_REGISTRY": REGISTRY_URI}
        s3 = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
                          aws_secret_access_key=server.secret_key, region_name="us-east-1")  # fmt: skip
        for bucket in ("datasets", "models"):
            s3.create_bucket(Bucket=bucket)
        store = ObjectStore(server.endpoint, "us-east-1", server.access_key, server.secret_key)

        out.write(f"1. Local S3 (SeaweedFS) at {server.endpoint}; generating two eras of synthetic shapes\n")
        local = workdir / "dataset"
        generate_dataset(local, demo_eras(images=size.images), DEFAULT_CLASSES, imgsz=size.imgsz)
        uploaded = upload_dataset(local, store, DATASET_URI)
        out.write(
            f"   era1: dark background, large objects, classes {DEFAULT_CLASSES[:-1]}\n"
            f"   era2: bright textured background, small objects, adds class '{DEFAULT_CLASSES[-1]}'\n"
            f"   {uploaded} objects uploaded to {DATASET_URI}\n\n"
        )
        steps = [
            ("first", "2. First model of the line: full training on era1 (no incumbent yet)"),
            ("incremental", "3. New data arrives (era2): naive incremental retrain from the incumbent on era2 only"),
            ("full", "4. Full retrain on era1 + era2, starting from the incumbent's weights"),
        ]
        outcomes: list[tuple[str, LocalOutcome]] = []
        for step, title in steps:
            out.write(title + "\n")
            try:
                outcome = run_spec(demo_spec(step, size), workdir=workdir / "runs", run_id=f"demo-{step}",
                                   actor="kretrain-demo", out=out, env=env)  # fmt: skip
            except LocalRunError as exc:
                out.write(f"demo step '{step}' failed: {exc}\n")
                return 1
            outcomes.append((step, outcome))
            out.write("\n")
            if step == "first" and not outcome.decision.promoted:
                out.write("The first model was not promoted (see the reasons above); the demo cannot go on.\n")
                return 1

        registry = Registry(store, REGISTRY_URI)
        history = registry.history(MODEL)
        out.write("5. Registry history of the line (every promotion, never overwritten):\n")
        rows = [[h.seq, h.action, h.version, h.previous, h.at] for h in history]
        out.write(render_table(["seq", "action", "version", "previous", "at"], rows) + "\n")
        incumbent = registry.incumbent(MODEL)
        out.write(f"   incumbent now: {incumbent.version if incumbent else 'none'}\n\n")

    chart = workdir / "per-era-metrics.png"
    _chart(outcomes, chart)
    out.write(f"Per-era chart: {chart}\nReports: {workdir / 'runs'}/*/report.json\n")
    rejected = outcomes[1][1].decision
    forgot = not rejected.passed and any("era1" in r and "forget" in r.lower() for r in rejected.reasons)
    promoted = outcomes[0][1].decision.promoted and outcomes[2][1].decision.promoted
    out.write(f"Demo finished in {time.monotonic() - started:.0f}s: ")
    out.write(
        "the incremental candidate was rejected for forgetting era1 and the full retrain was promoted.\n"
        if forgot and promoted
        else "UNEXPECTED outcome, see the decisions above.\n"
    )
    return 0 if forgot and promoted else 1
