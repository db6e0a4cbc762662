"""The trained- and evaluated-stage records (runs/<run-id>/trained/, evaluated/) are untrusted input to a rerun: bounded, validated, pinned; a bad
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


def _assessment(tmp_path: Path, onnx: bytes | None) -> Any:
    import hashlib

    from kretrain.api import CheckResult, Evaluation, Metrics
    from kretrain.trainer.assess import Assessment
    from kretrain.trainer.export import ExportedArtifact

    m = Metrics.model_validate({"mAP50-95": 0.4, "mAP50": 0.6, "precision": 0.5, "recall": 0.5, "images": 8})
    exported = []
    if onnx is not None:
        f = tmp_path / "out" / "best.onnx"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(onnx)
        exported.append(ExportedArtifact("onnx", f, hashlib.sha256(onnx).hexdigest(), len(onnx), {"imgsz": 32}))
    return Assessment(
        checks=[CheckResult(name="finiteLoss", passed=True, value=0.0, threshold=1.0, detail="ok")],
        candidate=Evaluation(pooled=m, eras={"e1": m}),
        incumbent=Evaluation(model_version="v1", pooled=m, eras={"e1": m}),
        intervals=None,
        exported=exported,
    )


def test_the_evaluated_stage_round_trips_with_its_exports(s3: Any, tmp_path: Path) -> None:
    store = _store(s3)
    run_uri = f"s3://{s3.new_bucket('stage')}/registry/m/runs/r1"
    stages.save_evaluated(store, run_uri, "a" * 64, "v1", _assessment(tmp_path, b"onnx bytes"))
    got = stages.load_evaluated(store, run_uri, tmp_path / "evaluated", "a" * 64, "v1")
    assert got is not None
    assert [c.name for c in got.checks] == ["finiteLoss"] and got.incumbent is not None
    assert got.candidate.pooled.map50_95 == pytest.approx(0.4)
    [art] = got.exported
    assert art.format == "onnx" and art.path.read_bytes() == b"onnx bytes" and art.args == {"imgsz": 32}


@pytest.mark.parametrize(
    ("sha", "incumbent"),
    [("b" * 64, "v1"), ("a" * 64, "v2"), ("a" * 64, "")],
    ids=["other-weights", "other-inc", "none"],
)
def test_an_evaluated_stage_of_other_weights_or_another_incumbent_is_not_used(
    s3: Any, tmp_path: Path, sha: str, incumbent: str
) -> None:
    store = _store(s3)
    run_uri = f"s3://{s3.new_bucket('stage')}/registry/m/runs/r1"
    stages.save_evaluated(store, run_uri, "a" * 64, "v1", _assessment(tmp_path, None))
    assert stages.load_evaluated(store, run_uri, tmp_path / "evaluated", sha, incumbent) is None


def test_an_evaluated_stage_whose_export_does_not_verify_is_ignored(s3: Any, tmp_path: Path) -> None:
    store = _store(s3)
    run_uri = f"s3://{s3.new_bucket('stage')}/registry/m/runs/r1"
    stages.save_evaluated(store, run_uri, "a" * 64, "v1", _assessment(tmp_path, b"onnx bytes"))
    store.put_bytes(f"{run_uri}/evaluated/model-onnx.onnx", b"tampered!!")  # same size, other bytes
    assert stages.load_evaluated(store, run_uri, tmp_path / "evaluated", "a" * 64, "v1") is None
    assert not (tmp_path / "evaluated" / "model-onnx.onnx").exists()


@pytest.mark.parametrize(
    "record",
    [
        b"[",
        json.dumps({"bestSha256": "a" * 64, "checks": [], "candidateEvaluation": {}, "extra": 1}).encode(),
        b" " * (stages.MAX_RECORD_BYTES + 1),
    ],
    ids=["not-json", "unknown-field", "oversized"],
)
def test_a_bad_evaluated_record_is_ignored(s3: Any, tmp_path: Path, record: bytes) -> None:
    store = _store(s3)
    run_uri = f"s3://{s3.new_bucket('stage')}/registry/m/runs/r1"
    store.put_bytes(f"{run_uri}/evaluated/evaluated.json", record)
    assert stages.load_evaluated(store, run_uri, tmp_path / "evaluated", "a" * 64, "v1") is None
