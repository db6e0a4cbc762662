"""RetrainSchedule models and CRD: committed CRD equals the generated one, stamping fills eras, hostile specs refused."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from kretrain.api import DatasetSpec, RetrainScheduleSpec, TemplateDatasetSpec
from kretrain.api.schedule import stamp
from kretrain.crd import build_schedule_crd, render_crd

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = [ROOT / "crds" / "retrainschedule.yaml", ROOT / "charts" / "kretrain" / "crds" / "retrainschedule.yaml"]


def spec(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "template": {"model": "m", "dataset": {"uri": "s3://data/set"}},
        "trigger": {"newEra": {}},
    }
    for key, value in over.items():
        base[key] = value
    return base


@pytest.mark.parametrize("path", COMMITTED, ids=["crds", "chart"])
def test_committed_schedule_crd_matches_generated(path: Path) -> None:
    assert path.read_text() == render_crd(schedule=True), f"{path} drifted from the models: run `make crd`"


@pytest.mark.parametrize("version", ["1.28.0", "1.33.0"])
def test_schedule_crd_validates_against_kubernetes(version: str) -> None:
    kubernetes_validate.validate(build_schedule_crd(), version, strict=True)


def test_schedule_crd_identity_columns_and_structure() -> None:
    crd = build_schedule_crd()
    names = crd["spec"]["names"]
    assert (crd["metadata"]["name"], names["kind"], names["shortNames"]) == (
        "retrainschedules.kretrain.dev",
        "RetrainSchedule",
        ["rts"],
    )
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert {"Model", "Suspend", "Latest Era", "Last Run", "Decision", "Next", "Age"} <= {
        c["name"] for c in version["additionalPrinterColumns"]
    }
    text = yaml.safe_dump(crd)
    for forbidden in ("$ref", "anyOf", "oneOf", "'null'", "title:"):
        assert forbidden not in text, forbidden
    template = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["template"]
    assert "eras" not in template["properties"]["dataset"]["properties"]
    assert "window" in template["properties"]["dataset"]["properties"]
    assert "x-kubernetes-validations" not in template  # a schedule's spec may change (like a CronJob's)


def test_cli_writes_the_schedule_crd(tmp_path: Path) -> None:
    out = tmp_path / "crd.yaml"
    subprocess.run([str(ROOT / ".venv" / "bin" / "kretrain"), "crd", "--schedule", "-o", str(out)], check=True)
    assert out.read_text() == render_crd(schedule=True)


def test_template_dataset_mirrors_dataset_spec() -> None:
    """The template's dataset has every DatasetSpec field except `eras`, plus `window`, with the same docs
    (`uri` says more: the schedule polls it)."""
    want = set(DatasetSpec.model_fields) - {"eras"} | {"window"}
    assert set(TemplateDatasetSpec.model_fields) == want
    for name in set(DatasetSpec.model_fields) - {"eras", "uri"}:
        assert TemplateDatasetSpec.model_fields[name].description == DatasetSpec.model_fields[name].description, name


@pytest.mark.parametrize(
    ("window", "eras", "want"),
    [
        (None, ["e1"], ["e1"]),
        (None, ["e1", "e2", "e3"], ["e1", "e2", "e3"]),
        (2, ["e1", "e2", "e3"], ["e2", "e3"]),
        (5, ["e1", "e2"], ["e1", "e2"]),
    ],
    ids=["one", "all", "window", "window-larger"],
)
def test_stamp_fills_eras(window: int | None, eras: list[str], want: list[str]) -> None:
    dataset = {"uri": "s3://data/set", **({"window": window} if window else {})}
    parsed = RetrainScheduleSpec.model_validate(spec(template={"model": "m", "dataset": dataset}))
    job = stamp(parsed.template, eras)
    assert job.dataset.eras == want and job.model == "m" and job.dataset.uri == "s3://data/set"


def test_stamp_of_an_invalid_run_raises() -> None:
    """Incremental needs an older era: with a single era the stamped spec is refused (the schedule reports it)."""
    parsed = RetrainScheduleSpec.model_validate(
        spec(template={"model": "m", "dataset": {"uri": "s3://data/set"}, "strategy": {"type": "incremental"}})
    )
    stamp(parsed.template, ["e1", "e2"])
    with pytest.raises(ValidationError, match="incremental strategy needs at least one older era"):
        stamp(parsed.template, ["e1"])


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"trigger": {}}, "set trigger.newEra, trigger.cron or both"),
        ({"template": {"model": "m", "dataset": {"uri": "s3://data/set", "eras": ["e1"]}}}, "eras"),
        ({"trigger": {"newEra": {"marker": "../x"}}}, "marker"),
        ({"trigger": {"newEra": {"marker": "a/b"}}}, "marker"),
        ({"trigger": {"newEra": {"pollSeconds": 0}}}, "pollSeconds"),
        ({"trigger": {"cron": {"schedule": "* * *"}}}, "schedule"),
        ({"trigger": {"cron": {"schedule": "0 0 1 * *", "timeZone": "../../etc/passwd"}}}, "timeZone"),
        ({"concurrencyPolicy": "Sometimes"}, "concurrencyPolicy"),
        ({"successfulRunsHistoryLimit": -1}, "successfulRunsHistoryLimit"),
        ({"unknown": 1}, "unknown"),
        (
            {
                "template": {
                    "model": "m",
                    "dataset": {"uri": "s3://data/set", "window": 1},
                    "strategy": {"type": "incremental"},
                }
            },
            "window",
        ),
    ],
    ids=[
        "no-trigger",
        "eras-in-template",
        "marker-traversal",
        "marker-slash",
        "poll-zero",
        "cron-fields",
        "tz-path",
        "policy",
        "negative-limit",
        "unknown-field",
        "incremental-window-1",
    ],
)
def test_hostile_schedule_specs_are_refused(over: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        RetrainScheduleSpec.model_validate(spec(**over))


def test_defaults() -> None:
    parsed = RetrainScheduleSpec.model_validate(spec())
    assert parsed.concurrency_policy == "Forbid" and parsed.suspend is False
    assert (parsed.successful_runs_history_limit, parsed.failed_runs_history_limit) == (3, 1)
    assert parsed.trigger.new_era is not None and parsed.trigger.new_era.marker == "_READY"
    assert parsed.trigger.new_era.complete_when == "marker"
