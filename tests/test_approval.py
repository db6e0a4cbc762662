"""promotion.approval Manual: a passing candidate waits for an annotation naming it; approve, reject, stale or
foreign annotations, and an incumbent that moved meanwhile (kretrain.promotion on a real SeaweedFS registry)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from emulator import sim
from kretrain.api import RetrainJobSpec
from kretrain.promotion import APPROVE_ANNOTATION, REJECT_ANNOTATION, approval, conclude
from kretrain.registry import Registry
from kretrain.store import ObjectStore

MODEL = "approval-detector"


def spec(approval_mode: str = "Manual", **promotion: Any) -> RetrainJobSpec:
    return RetrainJobSpec.model_validate(
        {
            "model": MODEL,
            "dataset": {"uri": "s3://data/set", "eras": ["era1"]},
            "promotion": {"approval": approval_mode, "uncertainty": "pointEstimate", **promotion},
        }
    )


@pytest.mark.parametrize(
    ("mode", "annotations", "expected"),
    [
        ("Automatic", {}, "automatic"),
        ("Automatic", {REJECT_ANNOTATION: "run-2"}, "automatic"),
        ("Manual", {}, "waiting"),
        ("Manual", {APPROVE_ANNOTATION: "run-2"}, "approved"),
        ("Manual", {APPROVE_ANNOTATION: " run-2 "}, "approved"),
        ("Manual", {APPROVE_ANNOTATION: "run-1"}, "waiting"),  # an earlier run's approval approves nothing
        ("Manual", {APPROVE_ANNOTATION: "run-2x"}, "waiting"),
        ("Manual", {"kretrain.dev/approved": "run-2"}, "waiting"),
        ("Manual", {REJECT_ANNOTATION: "run-2"}, "rejected"),
        ("Manual", {APPROVE_ANNOTATION: "run-2", REJECT_ANNOTATION: "run-2"}, "rejected"),  # rejection wins
        ("Manual", {APPROVE_ANNOTATION: "run-2", REJECT_ANNOTATION: "run-1"}, "approved"),
    ],
    ids=[
        "automatic", "automatic-ignores-annotations", "manual-waits", "approved", "approved-padded",
        "stale-approval", "prefix-is-not-the-version", "other-annotation", "rejected", "reject-wins",
        "stale-rejection",
    ],
)  # fmt: skip
def test_approval(mode: str, annotations: dict[str, str], expected: str) -> None:
    assert approval(spec(mode), "run-2", annotations) == expected


@pytest.fixture
def line(s3_env, tmp_path: Path) -> Registry:  # type: ignore[no-untyped-def]
    """Incumbent v1 (0.5 on era1) and a better candidate run-2 (0.9) registered with its report."""
    registry = Registry(ObjectStore(), f"s3://{s3_env.new_bucket('approval')}/reg")
    sim.seed_incumbent(registry, MODEL, "v1", {"era1": 0.5}, tmp_path)
    sim.train(registry, MODEL, "run-2", {"era1": 0.9}, {"era1": 0.5}, tmp_path)
    return registry


@pytest.mark.parametrize(
    ("annotations", "reason", "incumbent"),
    [
        ({}, "AwaitingApproval", "v1"),
        ({APPROVE_ANNOTATION: "v1"}, "AwaitingApproval", "v1"),
        ({APPROVE_ANNOTATION: "run-2"}, "Promoted", "run-2"),
        ({REJECT_ANNOTATION: "run-2"}, "ApprovalRejected", "v1"),
    ],
    ids=["no-annotation", "foreign-version", "approved", "rejected"],
)
def test_a_passing_candidate_waits_for_its_approval(
    line: Registry, annotations: dict[str, str], reason: str, incumbent: str
) -> None:
    report = line.read_run_report(MODEL, "run-2")
    assert report is not None
    waiting = conclude(line, report, spec(), actor="tests", run_id="run-2")  # every poll concludes again
    assert waiting.reason == "AwaitingApproval" and waiting.decision.passed and not waiting.decision.promoted
    assert any(f"{APPROVE_ANNOTATION}=run-2" in r for r in waiting.decision.reasons)
    outcome = conclude(line, report, spec(), actor="tests", run_id="run-2", annotations=annotations)
    assert outcome.reason == reason and outcome.decision.promoted is (reason == "Promoted")
    pointer = line.incumbent_pointer(MODEL)
    assert pointer is not None and pointer.version == incumbent
    again = conclude(line, report, spec(), actor="tests", run_id="run-2", annotations=annotations)
    assert again.reason == reason  # idempotent: no second move, the same verdict


def test_an_incumbent_that_moved_while_waiting_is_not_replaced(line: Registry, tmp_path: Path) -> None:
    report = line.read_run_report(MODEL, "run-2")
    assert report is not None
    assert conclude(line, report, spec(), actor="tests", run_id="run-2").reason == "AwaitingApproval"
    sim.train(line, MODEL, "v3", {"era1": 0.7}, {"era1": 0.5}, tmp_path)
    line.promote(MODEL, "v3", expected="v1", reason="by hand", actor="tests")
    outcome = conclude(line, report, spec(), actor="tests", run_id="run-2", annotations={APPROVE_ANNOTATION: "run-2"})
    assert outcome.reason == "IncumbentChanged" and not outcome.decision.promoted
    assert line.incumbent(MODEL).version == "v3"  # type: ignore[union-attr]


def test_a_failing_candidate_is_rejected_without_waiting(line: Registry) -> None:
    report = line.read_run_report(MODEL, "run-2")
    assert report is not None
    outcome = conclude(line, report, spec(minMetric=0.95), actor="tests", run_id="run-2")
    assert outcome.reason == "GateFailed"
