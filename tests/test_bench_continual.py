"""The continual benchmark: pure analysis (table-driven) and a real --quick run checked for consistency."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


analysis = _load("continual_analysis")
continual = _load("continual")

ERAS = ["era1", "era2", "era3"]
LEARNED = {"era1": 0, "era2": 1, "era3": 2}


@pytest.mark.parametrize(
    ("matrix", "expected"),
    [
        # no forgetting: values only grow
        ([[0.5, 0.1, 0.0], [0.6, 0.5, None], [0.7, 0.6, 0.5]], {"era1": -0.1, "era2": -0.1, "era3": None}),
        # era1 peaks after era2 then drops; era2 drops
        ([[0.5, 0.1, 0.0], [0.6, 0.5, None], [0.2, 0.3, 0.5]], {"era1": 0.4, "era2": 0.2, "era3": None}),
        # the era-1 model's value on era2 (before training on it) does not count as "learned"
        ([[0.5, 0.9, 0.0], [0.4, 0.5, None], [0.4, 0.5, 0.5]], {"era1": 0.1, "era2": 0.0, "era3": None}),
        # an unevaluated earlier cell is skipped; a missing final value gives None
        ([[0.5, None, None], [None, 0.5, None], [0.1, None, 0.5]], {"era1": 0.4, "era2": None, "era3": None}),
    ],
)
def test_forgetting_is_best_earlier_minus_final(matrix: list[list[float | None]], expected: dict) -> None:
    got = analysis.forgetting(matrix, ERAS, LEARNED)
    assert got.keys() == expected.keys()
    for era, value in expected.items():
        assert got[era] == (None if value is None else pytest.approx(value))


def test_accuracy_matrix_and_mean_forgetting() -> None:
    rows = [
        {"era1": 0.5, "era2": 0.1, "era3": 0.0},
        {"era1": 0.4, "era2": 0.6},
        {"era1": 0.3, "era2": 0.5, "era3": 0.7},
    ]
    assert analysis.accuracy_matrix(rows, ERAS) == [[0.5, 0.1, 0.0], [0.4, 0.6, None], [0.3, 0.5, 0.7]]
    assert analysis.mean_forgetting({"era1": 0.2, "era2": 0.1, "era3": None}) == pytest.approx(0.15)
    assert analysis.mean_forgetting({"era3": None}) is None


@pytest.mark.parametrize(
    ("pooled", "compute", "best", "met"),
    [
        # replay30 meets both bounds (96% of the metric, 40% of the compute)
        ({"full": 0.5, "r10": 0.40, "r30": 0.48}, {"full": 1000, "r10": 300, "r30": 400}, "r30", True),
        # the best metric is too expensive; the cheap one is best among those within the compute bound
        ({"full": 0.5, "r10": 0.40, "r30": 0.49}, {"full": 1000, "r10": 300, "r30": 600}, "r10", False),
        # nothing within the compute bound: the highest metric ratio is reported
        ({"full": 0.5, "r10": 0.40, "r30": 0.45}, {"full": 1000, "r10": 700, "r30": 800}, "r30", False),
        # exactly at both bounds counts as met
        ({"full": 0.5, "r10": 0.475, "r30": 0.1}, {"full": 1000, "r10": 500, "r30": 100}, "r10", True),
    ],
)
def test_goal(pooled: dict, compute: dict, best: str, met: bool) -> None:
    results = analysis.goal_results(pooled, compute, "full", ["r10", "r30"])
    chosen = analysis.best_goal(results)
    assert chosen is not None and chosen.strategy == best and chosen.met is met


def _step(era: str, cand: dict[str, float], passed: bool, image_epochs: int = 100) -> Any:
    return continual.StepResult(
        run_id=f"r-{era}", eras=ERAS[: ERAS.index(era) + 1], base_weights="b", train_images=10,
        epochs_completed=10, image_epochs=image_epochs, wall_seconds=2.0, train_seconds=1.0, process_seconds=3.0,
        candidate=cand, pooled=sum(cand.values()) / len(cand), pooled_map50=0.9, incumbent={"era1": 0.6, "era2": 0.1,
        "era3": 0.0}, incumbent_pooled=0.2, passed=passed, summary="s", reasons=["Era 'era1' regressed (forgetting)."],
    )  # fmt: skip


def test_strategy_result_gate_and_goal_checks() -> None:
    strategies = {s.name: s for s in continual.strategies()}
    naive = continual.strategy_result(
        strategies["naive"],
        [
            _step("era2", {"era1": 0.3, "era2": 0.7}, False),
            _step("era3", {"era1": 0.1, "era2": 0.2, "era3": 0.8}, False),
        ],
        None,
        ERAS,
    )
    assert naive["matrix"] == [[0.6, 0.1, 0.0], [0.3, 0.7, None], [0.1, 0.2, 0.8]]
    assert naive["forgetting"]["era1"] == pytest.approx(0.5)
    assert naive["forgetting"]["era2"] == pytest.approx(0.5)
    assert naive["compute"]["image_epochs"] == 200
    full = continual.strategy_result(
        strategies["full"],
        [
            _step("era2", {"era1": 0.6, "era2": 0.6}, True, 400),
            _step("era3", {"era1": 0.6, "era2": 0.6, "era3": 0.6}, True, 600),
        ],
        None,
        ERAS,
    )
    replay = continual.strategy_result(
        strategies["replay30"],
        [
            _step("era2", {"era1": 0.6, "era2": 0.6}, True, 100),
            _step("era3", {"era1": 0.55, "era2": 0.6, "era3": 0.6}, True, 200),
        ],
        None,
        ERAS,
    )
    results = {"full": full, "naive": naive, "replay30": replay}
    checks = continual.gate_checks(results)
    assert checks["rejects_naive"]["ok"] and checks["accepts_full"]["ok"]
    goal = continual.goal_check(results)
    assert goal is not None and goal["best"] == "replay30" and goal["met"]
    assert goal["per_strategy"][0]["compute_ratio"] == pytest.approx(0.3)


def test_specs_chain_and_use_default_gate_in_dry_run() -> None:
    size = continual.QUICK
    strategies = {s.name: s for s in continual.strategies(low_lr=0.003, freeze=5)}
    spec = continual.step_spec(strategies["replay10-lowlr-freeze"], ERAS, "bench-x-era2", size, 0, 0)
    assert spec.strategy.base_weights == "bench-x-era2"
    assert spec.strategy.lr0 == 0.003 and spec.strategy.freeze == 5
    assert spec.strategy.effective_replay is not None and spec.strategy.effective_replay.fraction == 0.1
    assert spec.promotion.mode == "dryRun"
    default = continual.PromotionSpec()
    assert spec.promotion.model_dump(exclude={"mode"}) == default.model_dump(exclude={"mode"})
    naive = continual.step_spec(strategies["naive"], ERAS[:2], "bench-era1", size, 0, 0)
    assert naive.strategy.effective_replay is None and naive.dataset.latest_eras == ["era2"]
    first = continual.first_spec(size, 0, 0)
    assert first.dataset.eras == ["era1"] and first.promotion.mode == "auto"


@pytest.mark.slow
def test_quick_run_output_is_consistent(tmp_path: Path) -> None:
    """A real --quick run (trainer subprocesses against SeaweedFS) writes consistent JSON, tables and charts.

    One strategy keeps the test inside its time budget: three real runs (era-1 model, two steps).
    """
    out = tmp_path / "results"
    cmd = [sys.executable, "-P", str(BENCH / "continual.py"), "--quick", "--out", str(out),
           "--workdir", str(tmp_path / "work"), "--strategies", "naive"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the benchmark stops its S3 server on SIGTERM
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    doc = json.loads((out / "continual-quick.json").read_text())
    for png in ("continual-quick-matrix.png", "continual-quick-compute.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert doc["eras"] == ERAS and doc["mode"] == "quick"
    assert [s["name"] for s in doc["strategies"]] == ["naive"]
    (s,) = doc["strategies"]
    m = s["matrix"]
    assert len(m) == 3 and all(len(row) == 3 for row in m)
    assert all(v is not None and 0.0 <= v <= 1.0 for v in m[0])  # the era-1 model, evaluated on every era
    assert m[0][0] == pytest.approx(doc["first_model"]["eras"]["era1"])  # same model, same test images
    assert m[1][2] is None  # after era2 the model is not evaluated on era3
    assert all(v is not None and 0.0 <= v <= 1.0 for v in (m[1][0], m[1][1], *m[2]))
    for j, era in enumerate(ERAS[:-1]):
        assert s["forgetting"][era] == pytest.approx(max(m[i][j] for i in range(j, 2)) - m[2][j])
    assert s["forgetting"]["era3"] is None
    assert s["final"] == dict(zip(ERAS, m[2], strict=True))
    steps = s["steps"]
    assert [st["eras"] for st in steps] == [ERAS[:2], ERAS]
    assert steps[0]["base_weights"] == "bench-era1" and steps[1]["base_weights"] == steps[0]["run_id"]
    for st in steps:
        assert st["image_epochs"] > 0 and st["wall_seconds"] > 0 and st["train_images"] > 0
        assert st["image_epochs"] == st["train_images"] * st["epochs_completed"]
        assert set(st["incumbent"]) == set(st["eras"])  # gated against the era-1 model on the same eras
        assert st["summary"]
    assert s["compute"]["image_epochs"] == sum(st["image_epochs"] for st in steps) > 0
    assert s["pooled"] == steps[-1]["pooled"]
    assert set(doc["checks"]) == {"rejects_naive"}
    assert doc["goal"] is None  # neither the full retrain nor a replay strategy was run
    assert "Accuracy matrix, naive" in stdout
    assert (out / "continual-quick.md").read_text().startswith("| strategy |")


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ({"type": "full"}, {"e1": 50, "e2": 40, "e3": 30}),
        ({"type": "incremental", "replay": {"enabled": False}}, {"e1": 0, "e2": 0, "e3": 30}),
        ({"type": "incremental", "replay": {"fraction": 0.1}}, {"e1": 5, "e2": 4, "e3": 30}),
        ({"type": "incremental"}, {"e1": 15, "e2": 12, "e3": 30}),  # the default replay fraction, 0.3
    ],
)
def test_training_selection_of_each_benchmarked_strategy(strategy: dict, expected: dict) -> None:
    """The benchmark's strategies differ only by what the data pipeline selects: check that selection."""
    from kretrain.api import StrategySpec
    from kretrain.trainer.data.trainset import select_train
    from kretrain.trainer.data.validation import ImageRecord

    train = {
        era: [
            ImageRecord(era=era, key=f"images/{i}.png", path=Path(f"/x/{era}/{i}.png"), label_path=None)
            for i in range(n)
        ]
        for era, n in (("e1", 50), ("e2", 40), ("e3", 30))
    }
    got = select_train(train, StrategySpec.model_validate(strategy), new_eras=["e3"])
    assert {e: len(v) for e, v in got.items()} == expected
