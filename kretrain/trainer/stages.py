"""The trained stage of a run, kept in the registry before evaluation: a pod killed after training resumes there.

Without it a rerun finds a last.pt of the final epoch, which Ultralytics cannot resume ("a finished run"), and the
run fails on every retry. After training, rank 0 uploads best.pt, results.csv and a TrainedStage record to
`runs/<run-id>/trained/`; a rerun that finds a valid record (and best.pt with the sha256 it names) skips training and
goes on to the checks and the evaluation. Trust: `runs/<run-id>/` is written only by this run's trainer (as for
last.pt and its `.sha256` record), so the record's sha256 is the pin (kretrain.verified).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from kretrain.api.base import ApiModel

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


def save_trained(store: Any, run_uri: str, outcome: Any, base_weights: str) -> None:
    """Upload best.pt, then the record naming its sha256 (the record last: no record, no stage)."""
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
    store.put_bytes(_uri(run_uri, "trained.json"), json.dumps(record.dump()).encode())


def load_trained(store: Any, run_uri: str, dest: Path) -> tuple[TrainedStage, Path, Path] | None:
    """(record, best.pt, results.csv) downloaded to `dest` when a previous attempt finished training; else None
    (no record, or a record or best.pt that does not verify: the run trains again, as it would have)."""
    from kretrain.store import ObjectTooLarge
    from kretrain.trainer.modelfiles import MAX_WEIGHTS_BYTES
    from kretrain.verified import VerificationError, fetch_verified

    uri = _uri(run_uri, "trained.json")
    if not store.exists(uri):
        return None
    try:
        record = TrainedStage.model_validate_json(store.get_bytes(uri, max_bytes=MAX_RECORD_BYTES))
        dest.mkdir(parents=True, exist_ok=True)
        best = fetch_verified(
            store, _uri(run_uri, "best.pt"), dest / "best.pt", sha256=record.best_sha256, max_bytes=MAX_WEIGHTS_BYTES
        )
    except (FileNotFoundError, ObjectTooLarge, ValidationError, VerificationError) as exc:
        print(
            json.dumps({"event": "trained-stage-ignored", "uri": uri, "reason": f"{type(exc).__name__}: {exc}"}),
            file=sys.stderr,
        )
        return None
    results = dest / "results.csv"
    results.write_text(record.results_csv)
    return record, best, results
