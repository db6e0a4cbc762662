"""Assemble the run's RunReport and the short termination-message summary for the operator."""

from __future__ import annotations

import json
from typing import Any

from kretrain.api import (
    CheckResult,
    Compute,
    DataSummary,
    Evaluation,
    ModelRef,
    RetrainJobSpec,
    RunReport,
    TrainingSummary,
)
from kretrain.api.intervals import PairedBootstrap
from kretrain.registry import now_rfc3339

TERMINATION_LIMIT = 4096
"""Kubernetes truncates termination messages at 4096 bytes; the summary stays below it."""


def build_report(
    *,
    run_id: str,
    spec: RetrainJobSpec,
    data: DataSummary,
    training: TrainingSummary,
    compute: Compute,
    checks: list[CheckResult],
    candidate_evaluation: Evaluation,
    incumbent_evaluation: Evaluation | None,
    incumbent: ModelRef | None,
    intervals: PairedBootstrap | None = None,
) -> RunReport:
    """The RunReport of a finished run (the candidate ref is filled in once registered)."""
    return RunReport(
        run_id=run_id,
        model=spec.model,
        spec=spec.dump(),
        data=data,
        training=training,
        compute=compute,
        checks=checks,
        candidate_evaluation=candidate_evaluation,
        incumbent_evaluation=incumbent_evaluation,
        incumbent=incumbent,
        intervals=intervals,
        created_at=now_rfc3339(),
    )


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def termination_summary(report: RunReport, metric: str = "mAP50-95", limit: int = TERMINATION_LIMIT) -> str:
    """A JSON summary of the run for the termination message, always under `limit` bytes.

    Per-era numbers are dropped (largest first) when there are too many eras to fit.
    """
    cand = report.candidate_evaluation
    inc = report.incumbent_evaluation
    summary: dict[str, Any] = {
        "status": "Succeeded",
        "runId": report.run_id,
        "model": report.model,
        "candidate": report.candidate.version if report.candidate else None,
        "sha256": report.candidate.sha256 if report.candidate else None,
        "incumbent": report.incumbent.version if report.incumbent else None,
        "metric": metric,
        "pooled": {"candidate": _r(cand.pooled.get(metric)), "incumbent": _r(inc.pooled.get(metric)) if inc else None},  # type: ignore[arg-type]
        "checks": {c.name: c.passed for c in report.checks},
        "epochs": report.training.epochs_completed,
        "report": "runs/" + report.run_id + "/report.json",
        "eras": {
            era: {
                "candidate": _r(m.get(metric)),  # type: ignore[arg-type]
                "incumbent": _r(inc.eras[era].get(metric)) if inc and era in inc.eras else None,  # type: ignore[arg-type]
            }
            for era, m in cand.eras.items()
        },
    }
    text = json.dumps(summary, separators=(",", ":"))
    while len(text.encode()) >= limit and summary["eras"]:
        summary["eras"].pop(next(reversed(summary["eras"])))
        summary["erasTruncated"] = True
        text = json.dumps(summary, separators=(",", ":"))
    return text


def failure_summary(run_id: str, reason: str, limit: int = TERMINATION_LIMIT) -> str:
    """A one-paragraph failure reason for the termination message, under `limit` bytes."""
    reason = " ".join(reason.split())
    text = json.dumps({"status": "Failed", "runId": run_id, "reason": reason}, separators=(",", ":"))
    while len(text.encode()) >= limit:
        reason = reason[: max(len(reason) - 256, 0)] + "..."
        text = json.dumps({"status": "Failed", "runId": run_id, "reason": reason}, separators=(",", ":"))
    return text
