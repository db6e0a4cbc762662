"""`kretrain run -f MANIFEST`: the pod's trainer as a subprocess, then the same promotion code as the operator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kretrain.api import RetrainJobSpec
from kretrain.cli import main
from kretrain.store import ObjectStore
from kretrain.tables import comparison_table
from kretrain.trainer.local import LocalRunError, resolve_local, run_manifest
from kretrain.trainer.synthetic import EraConfig, generate_dataset, upload_dataset

SPEC: dict[str, Any] = {"model": "m", "dataset": {"uri": "s3://data/x", "eras": ["a"]}}


def test_resolve_spec_fills_storage_from_env() -> None:
    spec = RetrainJobSpec.model_validate(SPEC)
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "KRETRAIN_REGISTRY": "s3://reg/models"}
    resolved = resolve_local(spec, env)
    assert (resolved.storage.endpoint, resolved.storage.registry) == ("http://127.0.0.1:9", "s3://reg/models")
    assert resolved.resources.image is None and resolved.storage.credentials_secret is None  # no operator defaults
    with pytest.raises(LocalRunError, match=r"spec\.storage\.registry: unset, and the environment"):
        resolve_local(spec, {})


def test_run_rejects_a_bad_manifest_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {"apiVersion": "kretrain.dev/v1alpha1", "kind": "RetrainJob", "metadata": {"name": "x"},
             "spec": {**SPEC, "strategy": {"epochs": 0}}}
        )
    )  # fmt: skip
    assert main(["run", "-f", str(bad), "--workdir", str(tmp_path / "runs")]) == 1
    assert "spec.strategy.epochs" in capsys.readouterr().err


@pytest.mark.slow
def test_run_trains_evaluates_and_decides(s3_env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket, registry = s3_env.new_bucket("data"), s3_env.new_bucket("reg")
    era = EraConfig(name="era1", images=40, classes=["circle", "square"], scale=(0.3, 0.5), objects=(1, 2))
    generate_dataset(tmp_path / "data", [era], ["circle", "square"])
    upload_dataset(tmp_path / "data", ObjectStore(), f"s3://{bucket}/shapes")
    monkeypatch.setenv("KRETRAIN_REGISTRY", f"s3://{registry}/models")
    manifest = tmp_path / "job.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {"apiVersion": "kretrain.dev/v1alpha1", "kind": "RetrainJob", "metadata": {"name": "local"},
             "spec": {"model": "shapes", "dataset": {"uri": f"s3://{bucket}/shapes", "eras": ["era1"]},
                      "strategy": {"epochs": 2, "imgsz": 64, "batch": 16, "patience": 0,
                                   "hyperparameters": {"workers": 0}},
                      "resources": {"gpus": 0}, "promotion": {"mode": "dryRun"}}}
        )
    )  # fmt: skip
    out = tmp_path / "out.txt"
    with out.open("w") as stream:
        [outcome] = run_manifest(manifest, workdir=tmp_path / "runs", out=stream)
    text = out.read_text()
    assert outcome.report.training.epochs_completed == 2
    assert "era1" in outcome.report.candidate_evaluation.eras
    assert comparison_table(outcome.comparison) in text and "decision:" in text
    assert "epoch 2/2" in text  # the progress bar followed progress.json
    assert "data: 1 era, 40 images used" in text and "findings: " in text  # kretrain.trainer.data_summary
    saved = json.loads((outcome.workdir / "decision.json").read_text())
    assert saved["mode"] == "dryRun" and saved["promoted"] is False and saved["reasons"]
    assert (outcome.workdir / "report.json").exists()
