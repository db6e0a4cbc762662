"""The promotion gate binds the run: a report cannot choose what is promoted or skip an evaluation (real SeaweedFS)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from emulator import sim
from kretrain.api import ModelRef, RetrainJobSpec, RunReport
from kretrain.limits import MAX_RECORD_BYTES
from kretrain.promotion import conclude
from kretrain.registry import Lineage, Registry
from kretrain.store import ObjectStore, join_uri

MODEL = "m"
RUN = "ns-run-1234abcd"
ERAS = ["e1", "e2", "e3"]
INCUMBENT = {"e1": 0.50, "e2": 0.50, "e3": 0.40}
BETTER = {"e1": 0.60, "e2": 0.60, "e3": 0.60}
SPEC = RetrainJobSpec.model_validate(
    {
        "model": MODEL,
        "dataset": {"uri": "s3://data/set", "eras": ERAS},
        "promotion": {"minImprovement": {"absolute": 0.01}, "maxEraRegression": 0.02},
    }
)


@pytest.fixture(scope="module")
def bucket(s3: Any) -> str:
    return str(s3.new_bucket("gate"))


@pytest.fixture
def registry(s3: Any, bucket: str) -> Registry:
    store = ObjectStore(endpoint_url=s3.endpoint, access_key=s3.server.access_key, secret_key=s3.server.secret_key)
    return Registry(store, f"s3://{bucket}/{uuid.uuid4().hex[:8]}")


def old_version(registry: Registry, tmp: Path) -> ModelRef:
    """v5: registered earlier, never promoted (the version a forged report would like to promote)."""
    rep = sim.report("v5", MODEL, {}, {"e1": 0.9, "e2": 0.9, "e3": 0.9}, None, None)
    return registry.register(MODEL, "v5", sim.weights_file(tmp, "v5"), rep, {}, Lineage(parent=None))


def line_with_incumbent(registry: Registry, tmp: Path) -> RunReport:
    """Incumbent v2, an old version v5, and run RUN registered with an honest report (better on every era)."""
    sim.seed_incumbent(registry, MODEL, "v2", INCUMBENT, tmp)
    old_version(registry, tmp)
    return sim.train(registry, MODEL, RUN, BETTER, INCUMBENT, tmp)


def first_of_line(registry: Registry, tmp: Path) -> RunReport:
    """No incumbent yet: run RUN is the line's first model."""
    return sim.train(registry, MODEL, RUN, BETTER, None, tmp)


Forge = Callable[[RunReport, Registry, Path], RunReport]


def upd(report: RunReport, **fields: Any) -> RunReport:
    return report.model_copy(update=fields)


def without_era(evaluation: Any, era: str) -> Any:
    return evaluation.model_copy(update={"eras": {e: m for e, m in evaluation.eras.items() if e != era}})


def old_ref(registry: Registry) -> ModelRef:
    info = registry.version_info(MODEL, "v5")
    return ModelRef(version="v5", uri=info.uri, sha256=info.sha256)


def names_v5(report: RunReport, registry: Registry, tmp: Path) -> RunReport:
    """The issue's bypass: the run's own report, but its candidate is the old version v5."""
    return upd(report, candidate=old_ref(registry))


def v5_as_run(report: RunReport, registry: Registry, tmp: Path) -> RunReport:
    """The report claims to be v5's own run (runId and candidate both v5)."""
    return upd(report, run_id="v5", candidate=old_ref(registry))


def other_sha(report: RunReport, registry: Registry, tmp: Path) -> RunReport:
    assert report.candidate is not None
    return upd(report, candidate=report.candidate.model_copy(update={"sha256": "f" * 64}))


def evaluated_against_v1(report: RunReport, registry: Registry, tmp: Path) -> RunReport:
    assert report.incumbent_evaluation is not None
    return upd(report, incumbent_evaluation=report.incumbent_evaluation.model_copy(update={"model_version": "v1"}))


def evaluated_against_v2(report: RunReport, registry: Registry, tmp: Path) -> RunReport:
    return upd(report, incumbent_evaluation=sim.evaluation(INCUMBENT, "v2"))


def record(data: bytes) -> Forge:
    """Overwrite the run's version.json (the trainer has the credentials to write it) and keep the report."""

    def forge(report: RunReport, registry: Registry, tmp: Path) -> RunReport:
        registry.store.put_bytes(join_uri(registry.version_uri(MODEL, RUN), "version.json"), data)
        return report

    return forge


# (id, line setup, forgery, expected reason, expected incumbent afterwards, state the operator gives it)
CASES: list[tuple[str, Callable[[Registry, Path], RunReport], Forge, str, str | None, str]] = [
    ("honest-report-is-promoted", line_with_incumbent, lambda r, g, t: r, "Promoted", RUN, "Promoted"),
    ("report-names-an-old-version", line_with_incumbent, names_v5, "ReportMismatch", "v2", "Failed"),
    ("report-names-another-run-id", line_with_incumbent, lambda r, g, t: upd(r, run_id="other-run"),
     "ReportMismatch", "v2", "Failed"),
    ("report-is-an-old-versions-own-report", line_with_incumbent, v5_as_run, "ReportMismatch", "v2", "Failed"),
    ("candidate-sha256-differs-from-the-record", line_with_incumbent, other_sha, "ReportMismatch", "v2", "Failed"),
    ("report-without-a-candidate", line_with_incumbent, lambda r, g, t: upd(r, candidate=None),
     "ReportMismatch", "v2", "Failed"),
    ("version-record-is-a-list", line_with_incumbent, record(b"[1, 2]"), "ReportMismatch", "v2", "Failed"),
    ("version-record-sha256-not-hex", line_with_incumbent, record(b'{"sha256": "../x", "uri": "s3://a/b"}'),
     "ReportMismatch", "v2", "Failed"),
    ("version-record-oversized", line_with_incumbent, record(b" " * (MAX_RECORD_BYTES + 1024) + b"{}"),
     "ReportMismatch", "v2", "Failed"),
    ("report-of-another-model", line_with_incumbent, lambda r, g, t: upd(r, model="other-model"),
     "ReportMismatch", "v2", "Failed"),
    ("no-incumbent-evaluation-while-an-incumbent-exists", line_with_incumbent,
     lambda r, g, t: upd(r, incumbent_evaluation=None, incumbent=None), "MissingEvaluation", "v2", "Rejected"),
    ("no-incumbent-evaluation-but-the-incumbent-named", line_with_incumbent,
     lambda r, g, t: upd(r, incumbent_evaluation=None), "MissingEvaluation", "v2", "Rejected"),
    ("candidate-evaluation-misses-an-era", line_with_incumbent,
     lambda r, g, t: upd(r, candidate_evaluation=without_era(r.candidate_evaluation, "e2")),
     "MissingEvaluation", "v2", "Rejected"),
    ("incumbent-evaluation-misses-an-era", line_with_incumbent,
     lambda r, g, t: upd(r, incumbent_evaluation=without_era(r.incumbent_evaluation, "e1")),
     "MissingEvaluation", "v2", "Rejected"),
    ("evaluated-against-a-different-incumbent", line_with_incumbent, evaluated_against_v1,
     "IncumbentChanged", "v2", "Rejected"),
    ("first-model-evaluated-against-an-incumbent-that-is-not-there", first_of_line, evaluated_against_v2,
     "IncumbentChanged", None, "Rejected"),
    ("first-model-missing-an-era", first_of_line,
     lambda r, g, t: upd(r, candidate_evaluation=without_era(r.candidate_evaluation, "e3")),
     "MissingEvaluation", None, "Rejected"),
]  # fmt: skip


@pytest.mark.parametrize(("setup", "forge", "reason", "incumbent", "state"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_the_gate_binds_the_run(
    registry: Registry,
    tmp_path: Path,
    setup: Callable[[Registry, Path], RunReport],
    forge: Forge,
    reason: str,
    incumbent: str | None,
    state: str,
) -> None:
    honest = setup(registry, tmp_path)
    report = forge(honest, registry, tmp_path)
    conclusion = conclude(registry, report, SPEC, actor="tests", run_id=RUN)
    assert conclusion.reason == reason, conclusion.decision.reasons
    now = registry.incumbent(MODEL)
    assert (now.version if now else None) == incumbent
    assert conclusion.candidate_version == RUN  # never the version a report names
    if reason != "Promoted":
        assert conclusion.decision.promoted is False and conclusion.decision.reasons
        assert all(h.version != "v5" for h in registry.history(MODEL))
    assert ("Failed" if conclusion.failed else "Promoted" if conclusion.decision.promoted else "Rejected") == state


def test_a_refused_report_says_what_does_not_match(registry: Registry, tmp_path: Path) -> None:
    report = names_v5(line_with_incumbent(registry, tmp_path), registry, tmp_path)
    conclusion = conclude(registry, report, SPEC, actor="tests", run_id=RUN)
    [reason] = conclusion.decision.reasons
    assert "'v5'" in reason and RUN in reason and conclusion.failed
    # The registry's record of the run, not the report, is what the status shows as the candidate.
    assert conclusion.candidate is not None and conclusion.candidate.version == RUN


def test_a_repeated_conclusion_after_promotion_is_idempotent(registry: Registry, tmp_path: Path) -> None:
    report = line_with_incumbent(registry, tmp_path)
    assert conclude(registry, report, SPEC, actor="tests", run_id=RUN).reason == "Promoted"
    again = conclude(registry, report, SPEC, actor="tests", run_id=RUN)  # the operator restarted mid-way
    assert again.reason == "Promoted" and any("already the incumbent" in r for r in again.decision.reasons)
    assert sum(1 for h in registry.history(MODEL) if h.version == RUN) == 1


def pointer_to_run(registry: Registry, previous: str | None) -> None:
    """The trainer's credentials can write incumbent.json: point it at the run itself (previous as given)."""
    info = registry.version_info(MODEL, RUN)
    forged = {"version": RUN, "uri": info.uri, "sha256": info.sha256, "previous": previous, "seq": 9}
    registry.store.put_json(join_uri(registry.uri, MODEL, "incumbent.json"), forged)


# (id, forgery of the report, previous incumbent the forged pointer names)
FORGED_POINTERS: list[tuple[str, Callable[[RunReport], RunReport], str | None]] = [
    ("pointer-moved-to-the-run-report-without-incumbent-evaluation",
     lambda r: upd(r, incumbent_evaluation=None, incumbent=None), "v2"),
    ("pointer-moved-to-the-run-names-no-previous", lambda r: r, None),
    ("pointer-moved-to-the-run-that-fails-the-gate",
     lambda r: upd(r, candidate_evaluation=sim.evaluation({"e1": 0.1, "e2": 0.1, "e3": 0.1}, RUN)), "v2"),
    ("pointer-moved-to-the-run-previous-is-not-the-evaluated-one", lambda r: r, "v5"),
]  # fmt: skip


@pytest.mark.parametrize(("forge", "previous"), [c[1:] for c in FORGED_POINTERS], ids=[c[0] for c in FORGED_POINTERS])
def test_a_pointer_moved_to_the_run_outside_the_gate_is_not_a_promotion(
    registry: Registry, tmp_path: Path, forge: Callable[[RunReport], RunReport], previous: str | None
) -> None:
    """Before: conclude saw 'already the incumbent' and reported Promoted whatever the report held."""
    report = forge(line_with_incumbent(registry, tmp_path))
    pointer_to_run(registry, previous)
    conclusion = conclude(registry, report, SPEC, actor="tests", run_id=RUN)
    assert conclusion.decision.promoted is False, conclusion.decision.reasons
    assert conclusion.reason in ("IncumbentChanged", "MissingEvaluation")
    assert not any("already the incumbent" in r for r in conclusion.decision.reasons)
