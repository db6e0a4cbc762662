"""The trained and evaluated stages of a run, kept in the registry: a pod killed after either resumes there.

Without it a rerun finds a last.pt of the final epoch, which Ultralytics cannot resume ("a finished run"), and the
run fails on every retry. After training, rank 0 uploads best.pt, results.csv and a TrainedStage record to
`runs/<run-id>/trained/`; a rerun that finds a valid record (and best.pt with the sha256 it names) skips training and
goes on to the checks and the evaluation. After the evaluation, rank 0 uploads the checked exports and an
EvaluatedStage record (checks, evaluations, intervals) to `runs/<run-id>/evaluated/`; a rerun of the same weights
against the same incumbent goes straight to registering. Trust: as for last.pt and its `.sha256` record,
`runs/<run-id>/` is written by the line's trainers only (entrypoint._checkpoint), so the records' sha256s are the
pins (kretrain.verified); with the run's stage key (kretrain.trainer.runkey) a record counts only when its MAC
verifies, and an evaluated stage only for this run's weights and incumbent.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from kretrain.api import CheckResult, Evaluation
from kretrain.api.base import ApiModel
from kretrain.api.intervals import PairedBootstrap
from kretrain.trainer.assess import Assessment
from kretrain.trainer.export import ExportedArtifact
from kretrain.trainer.runkey import Unsigned, get_record, put_record

MAX_RECORD_BYTES = 2**20
"""Largest trained.json read."""
MAX_RESULTS_CHARS = 512 * 1024
"""Largest results.csv kept in the record (one line per epoch)."""


class TrainedStage(ApiModel):
    """runs/<run-id>/trained/trained.json: what training produced, for a rerun that skips it."""

    best_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """SHA-256 of trained/best.pt (the candidate weights): the pin it is downloaded against."""
    base_weights: str = Field(max_length=1024)
    """What training started from (the report's training.baseWeights)."""
    epochs_completed: int = Field(ge=0, le=100_000)
    """Epochs in results.csv."""
    best_epoch: int | None = Field(default=None, ge=0)
    """Epoch (1-based) of the best fitness."""
    final_metrics: dict[str, float] = Field(default_factory=dict, max_length=64)
    """Validation metrics of best.pt at the end of training."""
    resumed_from_epoch: int | None = Field(default=None, ge=0)
    """The epoch training resumed from, if it did."""
    train_seconds: float = Field(ge=0, allow_inf_nan=False)
    """Seconds spent training (every attempt that trained)."""
    args: dict[str, Any] = Field(default_factory=dict, max_length=512)
    """The Ultralytics training arguments (the report's training.args)."""
    results_csv: str = Field(max_length=MAX_RESULTS_CHARS)
    """Ultralytics' results.csv, verbatim (one row per epoch)."""

    @field_validator("final_metrics")
    @classmethod
    def _finite(cls, value: dict[str, float]) -> dict[str, float]:
        if not all(math.isfinite(v) for v in value.values()):
            raise ValueError("final metrics must be finite")
        return value


def _uri(run_uri: str, name: str) -> str:
    return f"{run_uri.rstrip('/')}/trained/{name}"


def save_trained(store: Any, run_uri: str, outcome: Any, base_weights: str, key: bytes | None = None) -> str:
    """Upload best.pt, then the record naming its sha256 (the record last: no record, no stage); returns the sha256."""
    from kretrain.verified import sha256_file

    digest = sha256_file(outcome.best)
    store.upload_file(outcome.best, _uri(run_uri, "best.pt"))
    csv = Path(outcome.results_csv).read_text() if Path(outcome.results_csv).exists() else ""
    record = TrainedStage(
        best_sha256=digest,
        base_weights=base_weights[:1024],
        epochs_completed=outcome.epochs_completed,
        best_epoch=outcome.best_epoch,
        final_metrics={k: v for k, v in outcome.final_metrics.items() if math.isfinite(v)},
        resumed_from_epoch=outcome.resumed_from_epoch,
        train_seconds=round(outcome.train_seconds, 3),
        args=outcome.args,
        results_csv=csv[:MAX_RESULTS_CHARS],
    )
    put_record(store, _uri(run_uri, "trained.json"), json.dumps(record.dump()).encode(), key)
    return digest


def load_trained(
    store: Any, run_uri: str, dest: Path, key: bytes | None = None
) -> tuple[TrainedStage, Path, Path] | None:
    """(record, best.pt, results.csv) downloaded to `dest` when a previous attempt finished training; else None
    (no record, or a record or best.pt that does not verify: the run trains again, as it would have)."""
    from kretrain.store import ObjectTooLarge
    from kretrain.trainer.modelfiles import MAX_WEIGHTS_BYTES
    from kretrain.verified import VerificationError, fetch_verified

    uri = _uri(run_uri, "trained.json")
    if not store.exists(uri):
        return None
    try:
        record = TrainedStage.model_validate_json(get_record(store, uri, key, MAX_RECORD_BYTES))
        dest.mkdir(parents=True, exist_ok=True)
        best = fetch_verified(
            store, _uri(run_uri, "best.pt"), dest / "best.pt", sha256=record.best_sha256, max_bytes=MAX_WEIGHTS_BYTES
        )
    except (FileNotFoundError, ObjectTooLarge, Unsigned, ValidationError, VerificationError) as exc:
        print(
            json.dumps({"event": "trained-stage-ignored", "uri": uri, "reason": f"{type(exc).__name__}: {exc}"}),
            file=sys.stderr,
        )
        return None
    results = dest / "results.csv"
    results.write_text(record.results_csv)
    return record, best, results


class StagedArtifact(ApiModel):
    """One checked export kept with the evaluated stage, under `runs/<run-id>/evaluated/model-<format><suffix>`."""

    format: str = Field(pattern=r"^[a-z0-9]{1,32}$")
    """Ultralytics export format (`onnx`, `engine`)."""
    suffix: str = Field(pattern=r"^\.[a-z0-9]{1,16}$")
    """File suffix of the export (`.onnx`)."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """SHA-256 of the file the parity check ran: the pin it is downloaded against."""
    size: int = Field(ge=0, le=16 * 1024**3)
    """Size in bytes (the download's bound)."""
    args: dict[str, Any] = Field(default_factory=dict, max_length=128)
    """The export arguments used."""


class EvaluatedStage(ApiModel):
    """runs/<run-id>/evaluated/evaluated.json: what the evaluation stage produced, for a rerun that skips it."""

    best_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """SHA-256 of the weights evaluated (the trained stage's best.pt): a record for other weights is not used."""
    incumbent_version: str = Field(default="", max_length=253)
    """The incumbent evaluated against ("" for none): a rerun that resolves another incumbent evaluates again."""
    checks: list[CheckResult] = Field(max_length=64)
    """Quality checks, in report order."""
    candidate_evaluation: Evaluation
    """The candidate on every era's test split."""
    incumbent_evaluation: Evaluation | None = None
    """The incumbent on the same images."""
    intervals: PairedBootstrap | None = None
    """Paired-bootstrap intervals of candidate - incumbent."""
    artifacts: list[StagedArtifact] = Field(default_factory=list, max_length=8)
    """Exports that passed the parity check."""


def _evaluated_uri(run_uri: str, name: str) -> str:
    return f"{run_uri.rstrip('/')}/evaluated/{name}"


def save_evaluated(
    store: Any, run_uri: str, best_sha256: str, incumbent_version: str, result: Assessment, key: bytes | None = None
) -> None:
    """Upload the checked exports, then the record (last: no record, no stage)."""
    staged = []
    for art in result.exported:
        item = StagedArtifact(
            format=art.format, suffix=art.path.suffix, sha256=art.sha256, size=art.size, args=dict(art.args)
        )
        store.upload_file(art.path, _evaluated_uri(run_uri, f"model-{item.format}{item.suffix}"))
        staged.append(item)
    record = EvaluatedStage(
        best_sha256=best_sha256,
        incumbent_version=incumbent_version,
        checks=result.checks,
        candidate_evaluation=result.candidate,
        incumbent_evaluation=result.incumbent,
        intervals=result.intervals,
        artifacts=staged,
    )
    put_record(store, _evaluated_uri(run_uri, "evaluated.json"), json.dumps(record.dump()).encode(), key)


def load_evaluated(
    store: Any, run_uri: str, dest: Path, best_sha256: str, incumbent_version: str, key: bytes | None = None
) -> Assessment | None:
    """The assessment of a previous attempt of these weights against this incumbent, exports downloaded to `dest`
    and verified; None when there is none or it does not verify (the run evaluates again, as it would have)."""
    from kretrain.store import ObjectTooLarge
    from kretrain.verified import VerificationError, fetch_verified

    uri = _evaluated_uri(run_uri, "evaluated.json")
    if not store.exists(uri):
        return None
    try:
        record = EvaluatedStage.model_validate_json(get_record(store, uri, key, MAX_RECORD_BYTES))
        if record.best_sha256 != best_sha256 or record.incumbent_version != incumbent_version:
            raise VerificationError(
                f"it is of weights {record.best_sha256[:12]} against incumbent {record.incumbent_version!r}, "
                f"this attempt has {best_sha256[:12]} against {incumbent_version!r}"
            )
        dest.mkdir(parents=True, exist_ok=True)
        exported = []
        for art in record.artifacts:
            name = f"model-{art.format}{art.suffix}"
            path = fetch_verified(
                store, _evaluated_uri(run_uri, name), dest / name, sha256=art.sha256, max_bytes=art.size
            )
            exported.append(ExportedArtifact(art.format, path, art.sha256, art.size, dict(art.args)))
    except (FileNotFoundError, ObjectTooLarge, Unsigned, ValidationError, VerificationError) as exc:
        print(
            json.dumps({"event": "evaluated-stage-ignored", "uri": uri, "reason": f"{type(exc).__name__}: {exc}"}),
            file=sys.stderr,
        )
        return None
    return Assessment(
        record.checks, record.candidate_evaluation, record.incumbent_evaluation, record.intervals, exported
    )
