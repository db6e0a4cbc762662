"""The trained-stage record (runs/<run-id>/trained/) is untrusted input to a rerun: bounded, validated, pinned; a bad
one is ignored (the run trains again) and never fails the run or loads unverified weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kretrain.store import ObjectStore
from kretrain.trainer import stages


def _store(s3: Any) -> ObjectStore:
    return ObjectStore(endpoint_url=s3.endpoint, access_key=s3.server.access_key, secret_key=s3.server.secret_key)


GOOD: dict[str, Any] = {
    "bestSha256": "a" * 64,
    "baseWeights": "yolov8n.yaml",
    "epochsCompleted": 2,
    "trainSeconds": 1.5,
    "resultsCsv": "epoch,x\n1,0\n2,0\n",
}

HOSTILE = [
    ("not-json", b"{", None),
    ("unknown-field", json.dumps({**GOOD, "path": "/etc/passwd"}).encode(), None),
    ("bad-sha", json.dumps({**GOOD, "bestSha256": "../best.pt"}).encode(), None),
    ("nan-metric", json.dumps({**GOOD, "finalMetrics": {"mAP50": float("nan")}}).encode(), None),
    ("negative-epochs", json.dumps({**GOOD, "epochsCompleted": -1}).encode(), None),
    ("oversized", b" " * (stages.MAX_RECORD_BYTES + 1), None),
    ("weights-do-not-match", json.dumps(GOOD).encode(), b"other bytes"),
]


@pytest.mark.parametrize(("record", "weights"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_a_bad_trained_stage_is_ignored(s3: Any, tmp_path: Path, record: bytes, weights: bytes | None) -> None:
    store = _store(s3)
    run_uri = f"s3://{s3.new_bucket('stage')}/registry/m/runs/r1"
    store.put_bytes(f"{run_uri}/trained/trained.json", record)
    store.put_bytes(f"{run_uri}/trained/best.pt", weights or b"w")
    assert stages.load_trained(store, run_uri, tmp_path / "trained") is None
    assert not (tmp_path / "trained" / "best.pt").exists()  # nothing unverified where a loader looks


def test_a_good_trained_stage_is_used(s3: Any, tmp_path: Path) -> None:
    import hashlib

    store = _store(s3)
    run_uri = f"s3://{s3.new_bucket('stage')}/registry/m/runs/r1"
    weights = b"weights bytes"
    store.put_bytes(f"{run_uri}/trained/best.pt", weights)
    record = {**GOOD, "bestSha256": hashlib.sha256(weights).hexdigest()}
    store.put_bytes(f"{run_uri}/trained/trained.json", json.dumps(record).encode())
    loaded = stages.load_trained(store, run_uri, tmp_path / "trained")
    assert loaded is not None
    got, best, results = loaded
    assert best.read_bytes() == weights and results.read_text() == GOOD["resultsCsv"] and got.epochs_completed == 2
