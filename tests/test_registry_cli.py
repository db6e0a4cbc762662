"""`kretrain models ...` against a real SeaweedFS registry."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from kretrain import registry_cli
from kretrain.api import Compute, DataSummary, Evaluation, Metrics, RunReport, TrainingSummary
from kretrain.registry import Lineage, Registry
from kretrain.store import ObjectStore

MODEL = "cli-detector"


def _report(version: str, value: float) -> RunReport:
    m = Metrics(map50_95=value, map50=value, precision=0.5, recall=0.5, images=10)
    return RunReport(
        run_id=version,
        model=MODEL,
        spec={},
        data=DataSummary(),
        training=TrainingSummary(strategy="full", base_weights="yolov8n.yaml", epochs_planned=1, epochs_completed=1),
        compute=Compute(),
        candidate_evaluation=Evaluation(pooled=m, eras={"era1": m}),
    )


@pytest.fixture
def reg_uri(s3_env, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    uri = f"s3://{s3_env.new_bucket('cli')}/reg"
    registry = Registry(ObjectStore(), uri)
    for i, v in enumerate(("v1", "v2")):
        w = tmp_path / f"{v}.pt"
        w.write_bytes(v.encode() * 100)
        lineage = Lineage(parent="v1" if v == "v2" else None, eras=["era1"], era_hashes={"era1": "abc"}, strategy="full", compute={})  # fmt: skip
        registry.register(MODEL, v, w, _report(v, 0.3 + 0.1 * i), {}, lineage)
    return uri


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="kretrain")
    registry_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code = args.func(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_promote_list_show_rollback_history(reg_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "promote", MODEL, "v1", "--expected", "none", "--registry", reg_uri, "--actor", "me")  # fmt: skip
    assert code == 0 and "promoted cli-detector v1 (was none)" in out

    code, out, err = run(capsys, "models", "promote", MODEL, "v2", "--expected", "v0", "--registry", reg_uri)
    assert code == registry_cli.EXIT_INCUMBENT_CHANGED and "is v1, not v0" in err

    code, out, _ = run(capsys, "models", "promote", MODEL, "v2", "--registry", reg_uri)  # expected = current
    assert code == 0 and "(was v1)" in out

    code, out, _ = run(capsys, "models", "list", MODEL, "--registry", reg_uri)
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["version", "registered"]
    assert any(line.startswith("*") and " v2 " in line for line in lines)
    assert any(" v1 " in line and not line.startswith("*") for line in lines)

    code, out, _ = run(capsys, "models", "show", MODEL, "--registry", reg_uri)
    assert code == 0 and "version:    v2  (incumbent)" in out and "parent: v1" in out and "0.4000" in out

    code, out, _ = run(capsys, "models", "rollback", MODEL, "v1", "--reason", "bad in prod", "--registry", reg_uri)
    assert code == 0 and "rolled back cli-detector to v1 (was v2)" in out

    code, out, _ = run(capsys, "models", "history", MODEL, "--json", "--registry", reg_uri)
    doc = json.loads(out)
    hist = doc["promotions"]
    assert [(m["version"], m["pooled"], m["incumbent"]) for m in doc["metrics"]] == [
        ("v1", 0.3, True),
        ("v2", 0.4, False),
    ]
    assert [(h["seq"], h["action"], h["version"]) for h in hist] == [(1, "promote", "v1"), (2, "promote", "v2"), (3, "rollback", "v1")]  # fmt: skip
    assert hist[0]["actor"] == "me" and hist[2]["reason"] == "bad in prod"

    code, out, _ = run(capsys, "models", "history", MODEL, "--registry", reg_uri)
    assert "rollback" in out and "bad in prod" in out
    assert "metric history (mAP50-95" in out and "pooled mAP50-95" in out  # versions decided before cards: no CI


def test_errors_are_clear(reg_uri: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run(capsys, "models", "show", MODEL, "nope", "--registry", reg_uri)
    assert code == registry_cli.EXIT_ERROR and "'nope'" in err
    code, _, err = run(capsys, "models", "show", MODEL, "--registry", reg_uri)
    assert code == registry_cli.EXIT_ERROR and "has no incumbent" in err
    code, _, err = run(capsys, "models", "list", MODEL, "--registry", "bucket/prefix")
    assert code == registry_cli.EXIT_ERROR and "not an S3 URI" in err
    monkeypatch.delenv("KRETRAIN_REGISTRY", raising=False)
    code, _, err = run(capsys, "models", "list", MODEL)
    assert code == registry_cli.EXIT_ERROR and "--registry" in err


def test_registered_in_the_kretrain_cli(s3_env, reg_uri: str, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from kretrain.cli import main

    assert main(["models", "list", MODEL, "--json", "--registry", reg_uri, "--endpoint", s3_env.endpoint]) == 0
    assert [v["version"] for v in json.loads(capsys.readouterr().out)] == ["v1", "v2"]
