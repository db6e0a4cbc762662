"""The evaluation stage of a run: quality checks, mixed-era evaluation of candidate and incumbent, export parity."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kretrain.api import CheckResult, Evaluation, ModelRef, RetrainJobSpec
from kretrain.api.intervals import PairedBootstrap
from kretrain.trainer.export import ExportedArtifact


@dataclass(frozen=True)
class Assessment:
    """What the evaluation stage produced: everything the report needs besides data, training and compute."""

    checks: list[CheckResult]
    """Quality checks in report order (finite loss, generalization gap, fusion, predicts something, export)."""
    candidate: Evaluation
    """The candidate on every era's test split."""
    incumbent: Evaluation | None
    """The incumbent on the same images (None without an incumbent)."""
    intervals: PairedBootstrap | None
    """Paired-bootstrap intervals of candidate - incumbent (promotion.uncertainty=bootstrap with an incumbent)."""
    exported: list[ExportedArtifact]
    """Export artifacts that passed the parity check (empty when it failed or none were asked for)."""


def assess(
    spec: RetrainJobSpec,
    data: Any,
    outcome: Any,
    rows: list[dict[str, Any]],
    registry: Any,
    incumbent: ModelRef | None,
    workdir: Path,
    gpu: bool,
) -> Assessment:
    """Run the checks, the evaluations and the export of `outcome.best` on the prepared `data` (rank 0 only)."""
    from kretrain.trainer import checks as chk
    from kretrain.trainer.evaluate import evaluate, paired_intervals
    from kretrain.trainer.parity import export_and_check
    from kretrain.trainer.train import device_for

    imgsz = spec.strategy.imgsz
    device = device_for(min(spec.resources.gpus, 1))
    val_batch = min(spec.strategy.batch, 64)
    workers = spec.strategy.hyperparameters.get("workers")
    checks = [chk.finite_loss_check(rows)]
    checks.append(
        chk.generalization_gap_check(
            outcome.best, data.data_yaml, outcome.final_metrics.get("mAP50", 0.0), workdir / "checks",
            imgsz, val_batch, device,
        )
    )  # fmt: skip
    test_images = sorted(Path(p) for p in data.test_eras)
    checks.append(chk.fusion_check(outcome.best, test_images, imgsz))

    eval_dir = workdir / "eval"
    cand_eval, cand_stats = evaluate(
        outcome.best, data.test_yaml, data.test_eras, imgsz, val_batch, device, eval_dir, None, workers
    )
    checks.append(
        chk.predicts_something_check(
            cand_stats.predictions_above(chk.DEFAULT_THRESHOLDS.predict_conf), len(cand_stats.files)
        )
    )
    exported, parity = export_and_check(spec, outcome.best, data.test_yaml, test_images, workdir / "export", gpu)
    checks.append(parity)
    inc_eval = None
    intervals = None
    if incumbent is not None:  # its sha256 is the pointer's when it is the incumbent now (entrypoint)
        incumbent_version = incumbent.version
        inc_weights = registry.fetch_weights(
            spec.model, incumbent_version, workdir / "incumbent", pinned=incumbent.sha256
        )
        inc_eval, inc_stats = evaluate(
            inc_weights, data.test_yaml, data.test_eras, imgsz, val_batch, device, eval_dir, incumbent_version, workers
        )
        if spec.promotion.uncertainty == "bootstrap":  # the per-image stats stay here; only intervals are reported
            intervals = paired_intervals(spec.promotion, cand_stats, inc_stats, data.test_eras, incumbent_version)
    return Assessment(checks, cand_eval, inc_eval, intervals, exported)
