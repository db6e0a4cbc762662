"""Runs the continual benchmark's steps: each one a real local RetrainJob run, re-decided by the real policy."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kretrain.api import Evaluation, RetrainJobSpec, RunReport
from kretrain.api.spec import MetricName

METRIC: MetricName = "mAP50-95"


@dataclass
class StepResult:
    """One retraining step of one strategy and seed."""

    run_id: str
    seed: int
    eras: list[str]
    base_weights: str
    train_images: int
    era_train: dict[str, int]
    """Train-split images of every era at this step (before replay sampling)."""
    epochs_planned: int
    """The epoch cap (converged strategies) or the derived budget (budgeted ones)."""
    patience: int
    """Early-stopping patience of the run (0: off)."""
    epochs_completed: int
    """Where training stopped (early stopping or the cap)."""
    best_epoch: int | None
    """Epoch of the best validation fitness (the weights kept)."""
    image_epochs: int
    wall_seconds: float
    """The run's own wall seconds (report.compute)."""
    train_seconds: float
    """Seconds of training alone (report.compute)."""
    process_seconds: float
    """Seconds around the whole local run (subprocess start, data pull, training, evaluation, decision)."""
    cpu_seconds: float
    """CPU seconds (user + system) of the run's trainer subprocess: unlike wall seconds, about the same on a
    loaded machine (with --parallel > 1 the concurrent runs' CPU mixes: then only their sum is meaningful)."""
    candidate: dict[str, float]
    """Candidate metric per era."""
    pooled: float
    """Candidate pooled metric over this step's eras."""
    incumbent: dict[str, float]
    """The era-1 model's metric per era on the same images."""
    incumbent_pooled: float | None
    passed: bool
    """Promotion gate verdict (the real policy, default thresholds, dry run)."""
    summary: str
    reasons: list[str]
    bootstrap: bool
    """Whether the gate decided on the paired bootstrap's intervals (the report carried them)."""
    pooled_interval: dict[str, float] | None
    """Paired-bootstrap delta of the pooled metric vs the era-1 model: delta, low, high."""
    checks: dict[str, bool] = field(default_factory=dict)


def per_era(ev: Evaluation | None) -> dict[str, float]:
    """The benchmark metric per era of an evaluation."""
    return {} if ev is None else {era: m.get(METRIC) for era, m in ev.eras.items()}


class Bench:
    """Runs the steps against one local S3 server and registry."""

    def __init__(self, workdir: Path, env: dict[str, str], verbose: bool) -> None:
        self.workdir = workdir
        self.env = env
        self.verbose = verbose
        self.cpu = 0.0
        (workdir / "logs").mkdir(parents=True, exist_ok=True)

    def run(self, spec: RetrainJobSpec, run_id: str) -> tuple[RunReport, Any, float]:
        """One real local run; returns the report, the decision and the seconds it took (`self.cpu` holds the
        CPU seconds of the finished trainer subprocesses since the previous run)."""
        from kretrain.trainer.local import run_spec

        t0 = time.monotonic()
        before = os.times()
        log_path = self.workdir / "logs" / f"{run_id}.log"
        with log_path.open("w") as log:
            out = sys.stdout if self.verbose else log
            outcome = run_spec(spec, workdir=self.workdir / "runs", run_id=run_id, actor="bench", out=out, env=self.env)
        after = os.times()
        self.cpu = round(after.children_user + after.children_system - before.children_user - before.children_system, 2)
        return outcome.report, outcome.decision, time.monotonic() - t0

    def step(self, spec: RetrainJobSpec, run_id: str, seed: int) -> StepResult:
        """Run one retraining step and keep what the benchmark needs from its report.

        The verdict is `kretrain.policy.decide_report` on the report under the step's spec (the operator's
        own call, paired-bootstrap intervals included); it must agree with the local run's decision.
        """
        from kretrain.policy import decide_report

        report, decision, seconds = self.run(spec, run_id)
        verdict = decide_report(report, spec)
        if verdict.passed != decision.passed:
            raise RuntimeError(f"{run_id}: the policy says passed={verdict.passed}, the run said {decision.passed}")
        cand, inc, ci = report.candidate_evaluation, report.incumbent_evaluation, report.intervals
        return StepResult(
            run_id=run_id,
            seed=seed,
            eras=list(spec.dataset.eras),
            base_weights=spec.strategy.effective_base_weights,
            train_images=report.data.train_images,
            era_train={era: counts.get("train", 0) for era, counts in report.data.eras.items()},
            epochs_planned=spec.strategy.epochs,
            patience=spec.strategy.patience,
            epochs_completed=report.training.epochs_completed,
            best_epoch=report.training.best_epoch,
            image_epochs=report.compute.image_epochs,
            wall_seconds=report.compute.wall_seconds,
            train_seconds=report.compute.train_seconds,
            process_seconds=round(seconds, 2),
            cpu_seconds=self.cpu,
            candidate=per_era(cand),
            pooled=cand.pooled.get(METRIC),
            incumbent=per_era(inc),
            incumbent_pooled=inc.pooled.get(METRIC) if inc else None,
            passed=verdict.passed,
            summary=verdict.summary,
            reasons=list(verdict.reasons),
            bootstrap=ci is not None and spec.promotion.uncertainty == "bootstrap",
            pooled_interval=(
                None if ci is None else {"delta": ci.pooled.delta, "low": ci.pooled.low, "high": ci.pooled.high}
            ),
            checks={c.name: c.passed for c in report.checks},
        )
