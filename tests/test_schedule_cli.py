"""`kretrain schedule check` against SeaweedFS, and the GitOps schedule example (kustomize, model, CRD schema)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from kretrain.api import RetrainSchedule
from kretrain.cli import main
from kretrain.crd import build_schedule_crd

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "gitops-schedule"


def manifest(tmp_path: Path, spec: dict[str, Any]) -> Path:
    path = tmp_path / "schedule.yaml"
    body = {"apiVersion": "kretrain.dev/v1alpha1", "kind": "RetrainSchedule", "metadata": {"name": "s"}, "spec": spec}
    path.write_text(yaml.safe_dump(body))
    return path


def test_check_lists_complete_eras_and_the_next_run(
    s3_env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = s3_env.new_bucket("check")
    client = s3_env.client()
    for key in ("e1/_READY", "e1/images/a.jpg", "e2/_READY", "e3/images/a.jpg", "bad name/x", "classes.yaml"):
        client.put_object(Bucket=bucket, Key=f"set/{key}", Body=b"x")
    spec = {
        "template": {"model": "m", "dataset": {"uri": f"s3://{bucket}/set"}},
        "trigger": {"newEra": {}, "cron": {"schedule": "0 3 1 * *", "timeZone": "Europe/Berlin"}},
    }
    assert main(["schedule", "check", "-f", str(manifest(tmp_path, spec))]) == 0
    out = capsys.readouterr().out
    assert "complete eras (marker _READY): e1, e2" in out
    assert "incomplete eras: e3" in out and "not era names (ignored): bad name" in out
    assert "next run: s-e2 on e1, e2 (strategy full)" in out
    assert "next cron slot: " in out and "Europe/Berlin" in out


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"template": {"model": "m", "dataset": {"uri": "s3://b/set"}}, "trigger": {}}, "set trigger.newEra"),
        ({"template": {"model": "M", "dataset": {"uri": "s3://b/set"}}, "trigger": {"newEra": {}}}, "template.model"),
    ],
    ids=["no-trigger", "bad-model-name"],
)
def test_check_refuses_invalid_manifests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: dict[str, Any], message: str
) -> None:
    assert main(["schedule", "check", "-f", str(manifest(tmp_path, spec))]) == 1
    err = capsys.readouterr().err
    assert message in err and "schedule.yaml" in err


def test_check_refuses_a_missing_bucket(s3_env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = {"template": {"model": "m", "dataset": {"uri": "s3://no-such-bucket-x1/set"}}, "trigger": {"newEra": {}}}
    assert main(["schedule", "check", "-f", str(manifest(tmp_path, spec))]) == 1
    assert "cannot list s3://no-such-bucket-x1/set" in capsys.readouterr().err


def test_gitops_example_is_a_valid_schedule() -> None:
    doc = yaml.safe_load((EXAMPLE / "retrainschedule.yaml").read_text())
    parsed = RetrainSchedule.from_manifest(doc)
    assert parsed.spec.trigger.new_era is not None and parsed.spec.trigger.cron is not None
    schema = build_schedule_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.Draft4Validator(schema).validate(doc)  # OpenAPI v3 schemas use draft-4 exclusive bounds


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with built-in kustomize) is not installed")
def test_gitops_example_builds_with_only_the_schedule() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(EXAMPLE)], capture_output=True, text=True, timeout=60, check=True)
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(out.stdout) if d)
    assert kinds == ["Namespace", "RetrainSchedule"]


def test_validate_accepts_the_example_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-f", str(EXAMPLE / "retrainschedule.yaml")]) == 0
    assert "ok" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"template": {"model": "m", "dataset": {"uri": "s3://b/set"}}, "trigger": {}}, "set trigger.newEra"),
        (
            {"template": {"model": "m", "dataset": {"uri": "s3://b/set"}}, "trigger": {"newEra": {"pollSecs": 5}}},
            "spec.trigger.newEra.pollSecs: unknown field [crd]",
        ),
        (
            {"template": {"model": "m", "dataset": {"uri": "s3://b/set", "eras": ["e1"]}}, "trigger": {"newEra": {}}},
            "spec.template.dataset.eras: unknown field [crd]",
        ),
    ],
    ids=["no-trigger", "unknown-trigger-field", "eras-in-template"],
)
def test_validate_names_schedule_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: dict[str, Any], problem: str
) -> None:
    assert main(["validate", "-f", str(manifest(tmp_path, spec))]) == 1
    assert problem in capsys.readouterr().out
