"""Model cards: written into the version folder when a run is decided, typed, rendered with report text escaped;
and the line's metric history with each version's interval and decision (real SeaweedFS)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from _gate_fixtures import images, model_stats

from emulator import sim
from kretrain import registry_cli
from kretrain.api import Evaluation, RetrainJobSpec
from kretrain.bootstrap import paired_bootstrap
from kretrain.limits import MAX_REPORT_BYTES
from kretrain.modelcard import CARD_JSON, CARD_MD, read_card
from kretrain.promotion import conclude
from kretrain.registry import Lineage, Registry
from kretrain.store import ObjectStore, join_uri
from kretrain.trainer.evaluate import group_metrics

MODEL = "card-detector"
HOSTILE = {0: "circle", 1: "sq|uare\n# not a heading", 2: "<img src=x>"}


@pytest.fixture
def decided(s3_env, tmp_path: Path) -> tuple[Registry, str]:  # type: ignore[no-untyped-def]
    """A line with incumbent v1 and run-2 decided by conclude() on a report with bootstrap intervals."""
    registry = Registry(ObjectStore(), f"s3://{s3_env.new_bucket('cards')}/reg")
    sim.seed_incumbent(registry, MODEL, "v1", {"era1": 0.5, "era2": 0.5}, tmp_path)
    test = images({"era1": 40, "era2": 40})
    cand = model_stats(test, {("era1", -1): 0.95, ("era2", -1): 0.95}, seed=1)
    inc = model_stats(test, {("era1", -1): 0.5, ("era2", -1): 0.5}, seed=2)
    eras = {p: e for p, e, _ in test}

    def ev(stats: object, version: str | None) -> Evaluation:
        pooled, per_era = group_metrics(stats, eras, HOSTILE)  # type: ignore[arg-type]
        return Evaluation(model_version=version, pooled=pooled, eras=per_era)

    intervals = paired_bootstrap(
        cand, inc, eras, HOSTILE, metric="mAP50-95", confidence=0.95, resamples=100, seed=0, incumbent_version="v1"
    )
    inc_ref = registry.incumbent(MODEL)
    report = sim.report("run-2", MODEL, {"model": MODEL}, {"era1": 0.9, "era2": 0.9}, None, inc_ref)
    report = report.model_copy(
        update={"candidate_evaluation": ev(cand, None), "incumbent_evaluation": ev(inc, "v1"), "intervals": intervals}
    )
    ref = registry.register(MODEL, "run-2", sim.weights_file(tmp_path, "run-2"), report, {}, Lineage(parent="v1"))
    registry.write_run_report(MODEL, "run-2", report.model_copy(update={"candidate": ref}))
    spec = RetrainJobSpec.model_validate(
        {"model": MODEL, "dataset": {"uri": "s3://data/set", "eras": ["era1", "era2"]}, "promotion": {"resamples": 100}}
    )
    outcome = conclude(registry, report.model_copy(update={"candidate": ref}), spec, actor="tests", run_id="run-2")
    assert outcome.reason == "Promoted", outcome.decision.reasons
    return registry, "run-2"


def test_card_is_written_into_the_version_folder_typed_and_escaped(decided: tuple[Registry, str]) -> None:
    registry, version = decided
    card = read_card(registry, MODEL, version)
    assert card is not None and card.decision.promoted and card.reason == "Promoted" and card.compared_with == "v1"
    assert any("Improvement shown" in r for r in card.decision.reasons)
    rows = {r.era: r for r in card.rows}
    assert set(rows) == {"era1", "era2", "pooled"} and card.confidence == 0.95
    assert all(r.low is not None and r.low > 0 for r in rows.values())  # a clear gain everywhere
    assert {c.name for c in card.classes} == set(HOSTILE.values()) and all(c.low is not None for c in card.classes)
    md = registry.store.get_bytes(join_uri(registry.version_uri(MODEL, version), CARD_MD)).decode()
    assert md.startswith("# Model card: card-detector run-2") and "**Decision:** promoted (Promoted)" in md
    assert "sq\\|uare # not a heading" in md and "&lt;img src=x>" in md  # one table cell, no HTML
    assert "\n# not a heading" not in md and "<img" not in md


@pytest.mark.parametrize(
    ("content", "why"),
    [(b"{not json", "malformed"), (b'{"model": "x"}', "missing fields"), (b" " * (MAX_REPORT_BYTES + 1), "oversized")],
    ids=["malformed", "incomplete", "oversized"],
)
def test_an_unusable_card_reads_as_none(decided: tuple[Registry, str], content: bytes, why: str) -> None:
    registry, version = decided
    registry.store.put_bytes(join_uri(registry.version_uri(MODEL, version), CARD_JSON), content)
    assert read_card(registry, MODEL, version) is None, why


def test_history_shows_each_versions_metric_interval_and_decision(
    decided: tuple[Registry, str], capsys: pytest.CaptureFixture[str]
) -> None:
    registry, version = decided
    parser = argparse.ArgumentParser(prog="kretrain")
    registry_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["models", "history", MODEL, "--registry", registry.uri])
    assert args.func(args) == 0
    out = capsys.readouterr().out.split("metric history (mAP50-95")[1]
    row = next(line for line in out.splitlines() if " run-2 " in line)
    card = read_card(registry, MODEL, version)
    assert card is not None
    pooled = next(r for r in card.rows if r.era == "pooled")
    assert f"[{pooled.low:+.3f}, {pooled.high:+.3f}]" in row and row.lstrip().startswith("*")
    assert row.rstrip().endswith("Promoted")
    v1 = next(line for line in out.splitlines() if line.replace("*", " ").split()[:1] == ["v1"])  # not run-2 vs v1
    assert v1.rstrip().endswith("-")  # the seeded first version was never decided by the gate: no card


def test_a_hostile_report_still_gets_a_bounded_card(s3_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Era and class names beyond the card's limits, a per-class AP out of range and a negative count: the run is
    decided and its card written, cut and clipped (a card never makes conclude fail)."""
    registry = Registry(ObjectStore(), f"s3://{s3_env.new_bucket('hostile-cards')}/reg")
    era = "e" * 300
    report = sim.report("run-1", MODEL, {"model": MODEL}, {era: 0.9}, None, None)
    m = report.candidate_evaluation.eras[era].model_copy(
        update={"per_class": {"c" * 999: 5.0, "nan": float("nan")}, "class_instances": {"c" * 999: -3}}
    )
    report.candidate_evaluation.eras[era] = m
    ref = registry.register(MODEL, "run-1", sim.weights_file(tmp_path, "run-1"), report, {}, Lineage(parent=None))
    spec = RetrainJobSpec.model_validate({"model": MODEL, "dataset": {"uri": "s3://data/set", "eras": ["a"]}})
    conclusion = conclude(registry, report.model_copy(update={"candidate": ref}), spec, actor="tests", run_id="run-1")
    card = read_card(registry, MODEL, "run-1")
    assert card is not None and card.reason == conclusion.reason and card.decision == conclusion.decision
    assert len(card.rows[0].era) == 128 and {(len(c.name), c.ap, c.instances) for c in card.classes} == {
        (256, 1.0, 0),
        (3, 0.0, 0),
    }


def test_a_run_awaiting_approval_keeps_its_first_card(s3_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Concluded on every poll while it waits, the run's card is written once (its first decision time kept); a
    new decision (approved) writes it again."""
    registry = Registry(ObjectStore(), f"s3://{s3_env.new_bucket('cards')}/reg")
    sim.seed_incumbent(registry, MODEL, "v1", {"era1": 0.5, "era2": 0.5}, tmp_path)
    inc_ref = registry.incumbent(MODEL)
    report = sim.report("run-3", MODEL, {"model": MODEL}, {"era1": 0.7, "era2": 0.7}, {"era1": 0.5, "era2": 0.5},
                        inc_ref)  # fmt: skip
    ref = registry.register(MODEL, "run-3", sim.weights_file(tmp_path, "run-3"), report, {}, Lineage(parent="v1"))
    report = report.model_copy(update={"candidate": ref})
    spec = RetrainJobSpec.model_validate(
        {
            "model": MODEL,
            "dataset": {"uri": "s3://data/set", "eras": ["era1", "era2"]},
            "promotion": {"approval": "Manual", "uncertainty": "pointEstimate"},
        }
    )
    card_uri = join_uri(registry.version_uri(MODEL, "run-3"), CARD_JSON)
    stamps = []
    for t in ("2026-12-02T00:00:00Z", "2026-12-02T00:01:00Z"):
        out = conclude(registry, report, spec, actor="tests", run_id="run-3", now=t)
        assert out.reason == "AwaitingApproval", out.decision.reasons
        card = read_card(registry, MODEL, "run-3")
        assert card is not None
        stamps.append((card.decision.decided_at, registry.store.head(card_uri).etag))
    assert stamps[0] == stamps[1] and stamps[0][0] == "2026-12-02T00:00:00Z"  # not written again
    out = conclude(registry, report, spec, actor="tests", run_id="run-3", now="2026-12-02T00:02:00Z",
                   annotations={"kretrain.dev/approve": "run-3"})  # fmt: skip
    assert out.reason == "Promoted", out.decision.reasons
    card = read_card(registry, MODEL, "run-3")
    assert card is not None and card.reason == "Promoted" and card.decision.decided_at == "2026-12-02T00:02:00Z"
