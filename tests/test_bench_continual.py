"""The continual benchmark: pure analysis (table-driven) and a real --quick run checked for consistency."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

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


strategies_mod = sys.modules["continual_strategies"]
summary = sys.modules["continual_summary"]
data = sys.modules["continual_data"]


@pytest.mark.parametrize(
    ("pooled", "compute", "passes", "best", "met"),
    [
        # replay30 meets both bounds (96% of the metric, 40% of the compute)
        ({"full": 0.5, "r10": 0.40, "r30": 0.48}, {"full": 1000, "r10": 300, "r30": 400}, None, "r30", True),
        # both meet the goal: the cheaper one is the answer
        ({"full": 0.5, "r10": 0.48, "r30": 0.49}, {"full": 1000, "r10": 300, "r30": 400}, None, "r10", True),
        # the best metric is too expensive; the cheap one is best among those within the compute bound
        ({"full": 0.5, "r10": 0.40, "r30": 0.49}, {"full": 1000, "r10": 300, "r30": 600}, None, "r10", False),
        # nothing within the compute bound: the highest metric ratio is reported
        ({"full": 0.5, "r10": 0.40, "r30": 0.45}, {"full": 1000, "r10": 700, "r30": 800}, None, "r30", False),
        # exactly at both bounds counts as met
        ({"full": 0.5, "r10": 0.475, "r30": 0.1}, {"full": 1000, "r10": 500, "r30": 100}, None, "r10", True),
        # meeting both bounds but rejected by the gate on a seed does not count
        ({"full": 0.5, "r10": 0.49, "r30": 0.40}, {"full": 1000, "r10": 300, "r30": 400},
         {"r10": False, "r30": True}, "r30", False),
    ],
)  # fmt: skip
def test_goal(pooled: dict, compute: dict, passes: dict | None, best: str, met: bool) -> None:
    results = analysis.goal_results(pooled, compute, "full", ["r10", "r30"], passes)
    chosen = analysis.best_goal(results)
    assert chosen is not None and chosen.strategy == best and chosen.met is met


@pytest.mark.parametrize(
    ("values", "mean", "spread"),
    [([0.5], 0.5, 0.0), ([0.4, 0.6], 0.5, 0.1414213562), ([1.0, 2.0, 3.0], 2.0, 1.0), ([0.3, 0.3, 0.3], 0.3, 0.0)],
)
def test_mean_spread_is_sample_std(values: list[float], mean: float, spread: float) -> None:
    assert analysis.mean_spread(values) == (pytest.approx(mean), pytest.approx(spread))


@pytest.mark.parametrize(
    ("points", "front"),
    [
        ({"a": (1, 0.5), "b": (2, 0.6), "c": (3, 0.55)}, ["a", "b"]),  # c costs more than b and scores less
        ({"a": (1, 0.5), "b": (1, 0.5)}, ["a", "b"]),  # equal points do not dominate each other
        ({"a": (1, 0.5), "b": (1, 0.4), "c": (0.5, 0.1)}, ["c", "a"]),  # same cost, lower value: dominated
        ({"a": (5, 0.9)}, ["a"]),
    ],
)
def test_pareto_front_is_non_dominated(points: dict, front: list[str]) -> None:
    assert analysis.pareto_front(points) == front
    for name in points:
        assert (analysis.dominator(name, points) is None) is (name in front)


def test_pareto_dominator_is_the_best_dominating_point() -> None:
    points = {"a": (1, 0.5), "b": (2, 0.7), "c": (3, 0.4)}
    assert analysis.dominator("c", points) == "b"


def test_step_epochs_derive_budgets_from_the_converged_full_retrain() -> None:
    by = {s.name: s for s in strategies_mod.strategies()}
    size = data.FULL
    era_train = {"era1": 84, "era2": 80, "era3": 86}
    stops = [30, 33, 36]  # mean 33
    assert strategies_mod.step_epochs(by["full"], size, [], 0, era_train, "era3") == (size.epochs, size.patience)
    assert strategies_mod.step_epochs(by["full-half"], size, stops, 250, era_train, "era3") == (16, 0)  # 16.5
    assert strategies_mod.step_epochs(by["full-quarter"], size, stops, 250, era_train, "era3") == (8, 0)
    # replay 30%: 86 + round(0.3*84) + round(0.3*80) = 86 + 25 + 24 = 135 images; target 0.5*33*250 = 4125
    assert strategies_mod.train_images(by["replay30-matched"], era_train, "era3") == 135
    assert strategies_mod.step_epochs(by["replay30-matched"], size, stops, 250, era_train, "era3") == (31, 0)
    assert strategies_mod.train_images(by["replay50-matched"], era_train, "era3") == 86 + 42 + 40
    assert strategies_mod.train_images(by["naive"], era_train, "era3") == 86
    assert strategies_mod.train_images(by["full"], era_train, "era3") == 250
    with pytest.raises(ValueError, match="stopping epochs"):
        strategies_mod.step_epochs(by["full-half"], size, [], 250, era_train, "era3")


def test_select_needs_full_for_budgeted_strategies() -> None:
    every = strategies_mod.strategies()
    assert [s.name for s in strategies_mod.select(every, "naive, full")] == ["full", "naive"]
    with pytest.raises(SystemExit, match="unknown"):
        strategies_mod.select(every, "full,nope")
    with pytest.raises(SystemExit, match="add it"):
        strategies_mod.select(every, "full-half")
    names = [s.name for s in every]
    assert len(names) == len(set(names)) == 10


def test_specs_chain_seed_scratch_and_default_gate_in_dry_run() -> None:
    size = data.QUICK
    by = {s.name: s for s in strategies_mod.strategies(low_lr=0.003, freeze=5)}
    spec = strategies_mod.step_spec(by["replay10-lowlr-freeze"], ERAS, "bench-x-era2", size, 0, 7, 2, seed=2)
    assert spec.strategy.base_weights == "bench-x-era2"
    assert spec.strategy.lr0 == 0.003 and spec.strategy.freeze == 5
    assert spec.strategy.epochs == 7 and spec.strategy.patience == 2
    assert spec.strategy.hyperparameters["seed"] == 2
    assert (spec.dataset.split.val, spec.dataset.split.test) == (size.val, size.test)
    assert spec.strategy.effective_replay is not None and spec.strategy.effective_replay.fraction == 0.1
    assert spec.promotion.mode == "dryRun" and spec.promotion.uncertainty == "bootstrap"
    default = continual.PromotionSpec()
    assert spec.promotion.model_dump(exclude={"mode"}) == default.model_dump(exclude={"mode"})
    scratch = strategies_mod.step_spec(by["full-scratch"], ERAS, "bench-x-era2", size, 0, 7, 2, seed=0)
    assert scratch.strategy.base_weights == "yolov8n.yaml" and scratch.strategy.type == "full"
    naive = strategies_mod.step_spec(by["naive"], ERAS[:2], "bench-era1", size, 0, 3, 1, seed=0)
    assert naive.strategy.effective_replay is None and naive.dataset.latest_eras == ["era2"]
    first = strategies_mod.first_spec(size, 0)
    assert first.dataset.eras == ["era1"] and first.promotion.mode == "auto"
    assert first.strategy.patience == size.patience and first.strategy.epochs == size.first_epochs


def _step(era: str, seed: int, cand: dict[str, float], passed: bool, image_epochs: int, stop: int = 10) -> dict:
    return {
        "run_id": f"r-{seed}-{era}", "seed": seed, "eras": ERAS[: ERAS.index(era) + 1], "candidate": cand,
        "pooled": sum(cand.values()) / len(cand), "image_epochs": image_epochs, "wall_seconds": 2.0,
        "process_seconds": 3.0, "passed": passed, "epochs_completed": stop, "best_epoch": stop - 2,
        "epochs_planned": 100,
    }  # fmt: skip


ROW0 = {"era1": 0.6, "era2": 0.1, "era3": 0.0}


def _strategy(name: str, chains: list[list[dict]]) -> dict:
    seeds = [summary.seed_result(c, ROW0, ERAS) for c in chains]
    return summary.strategy_summary({"name": name, "label": name}, seeds, ERAS)


def test_summaries_ratios_front_goal_and_advice() -> None:
    full = _strategy(
        "full",
        [
            [_step("era2", s, {"era1": 0.6, "era2": 0.6}, True, 400, 20 + s),
             _step("era3", s, {"era1": 0.6 + d, "era2": 0.6, "era3": 0.6}, True, 600, 30 + s)]
            for s, d in ((0, 0.0), (1, 0.03), (2, -0.03))
        ],
    )  # fmt: skip
    naive = _strategy(
        "naive",
        [
            [_step("era2", s, {"era1": 0.3, "era2": 0.7}, False, 100),
             _step("era3", s, {"era1": 0.1, "era2": 0.2, "era3": 0.8}, False, 100)]
            for s in range(3)
        ],
    )  # fmt: skip
    half = _strategy(
        "full-half",
        [
            [_step("era2", s, {"era1": 0.6, "era2": 0.6}, True, 200),
             _step("era3", s, {"era1": 0.6, "era2": 0.58, "era3": 0.6}, True, 300)]
            for s in range(3)
        ],
    )  # fmt: skip
    out = summary.compare([full, naive, half], "full")
    assert full["stops"] == {"era2": [20, 21, 22], "era3": [30, 31, 32]}
    assert full["passes"] == 3 and naive["passes"] == 0 and full["seeds_run"] == 3
    assert full["image_epochs"]["mean"] == 1000 and full["image_epochs"]["spread"] == 0
    assert full["matrix"][2][0]["mean"] == pytest.approx(0.6) and full["matrix"][1][2] is None
    assert full["matrix"][2][0]["spread"] == pytest.approx(0.03)
    assert naive["forgetting"]["era1"]["mean"] == pytest.approx(0.5)  # best 0.6 (era-1 model) - 0.1
    assert naive["forgetting"]["era3"] is None
    assert half["compute_ratio"] == pytest.approx(0.5) and naive["compute_ratio"] == pytest.approx(0.2)
    assert half["metric_ratio"] == pytest.approx(half["pooled"]["mean"] / full["pooled"]["mean"])
    assert out["pareto_front"] == ["naive", "full-half", "full"]
    goal = out["goal"]
    assert goal["best"] == "full-half" and goal["met"] and goal["metric_shortfall"] == 0
    assert "rejected it on 3/3 seeds" in naive["advice"] and "forgets (era1 0.500" in naive["advice"]
    assert "by default" in half["advice"] and "99% of full's pooled metric at 50%" in half["advice"]
    assert full["advice"].startswith("The reference")


def test_dominated_strategy_advice_names_the_better_one() -> None:
    a = _strategy("full", [[_step("era2", 0, {"era1": 0.6, "era2": 0.6}, True, 400)]])
    b = _strategy("slow", [[_step("era2", 0, {"era1": 0.5, "era2": 0.5}, True, 500)]])
    out = summary.compare([a, b], "full")
    assert out["pareto_front"] == ["full"] and b["dominated_by"] == "full"
    assert b["advice"].startswith("Prefer `full`") and "500 image-epochs" in b["advice"]
    assert b["compute_ratio"] == pytest.approx(1.25)


def test_a_rejected_strategy_is_never_recommended_instead() -> None:
    a = _strategy("full", [[_step("era2", 0, {"era1": 0.6, "era2": 0.6}, True, 400)]])
    bad = _strategy("cheap-bad", [[_step("era2", 0, {"era1": 0.7, "era2": 0.7}, False, 100)]])
    out = summary.compare([a, bad], "full")
    assert out["pareto_front"] == ["cheap-bad"] and not a["pareto"]  # the front is over every point
    assert a["dominated_by"] is None and a["advice"].startswith("The reference")
    assert bad["advice"].startswith("Avoid as a default: the default gate rejected it on 1/1 seeds")


INCONCLUSIVE = "Era 'era1' inconclusive: 39 test images, mAP50-95 delta -0.0183, 95% CI [-0.0660, +0.0335]: too few"
REGRESSED = "Era 'era2' regressed: 39 test images, mAP50-95 delta -0.17, 95% CI [-0.23, -0.11]: the whole interval"
NO_GAIN = "Improvement too small: pooled mAP50-95 delta -0.05, 95% CI [-0.07, -0.03]; the lower bound must reach +0"
SHOWN = "Era 'era2': 38 test images, mAP50-95 delta +0.49, 95% CI [+0.44, +0.56]: no drop (non-inferior)."


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([(False, [INCONCLUSIVE, SHOWN])], ["too few test images to show era1 did not drop by more than maxEraRegression"]),
        ([(False, [NO_GAIN, REGRESSED]), (False, [REGRESSED])], ["forgetting shown on era2", "no gain over the incumbent shown"]),
        ([(True, [INCONCLUSIVE]), (False, ["Required check 'finiteLoss' failed (value nan)."])], ["a required check failed"]),
        ([(True, [NO_GAIN])], []),  # a passed step's reasons are not why anything was rejected
    ],
    ids=["inconclusive", "forgetting-and-no-gain", "check", "passed"],
)  # fmt: skip
def test_rejections_name_why_the_gate_refused(steps: list[tuple[bool, list[str]]], expected: list[str]) -> None:
    s = {"seeds": [{"steps": [{"passed": ok, "reasons": reasons}]} for ok, reasons in steps]}
    assert summary.rejections(s) == expected


QUICK_STRATEGIES = ["full", "full-quarter"]


@pytest.mark.slow
def test_quick_run_output_is_consistent(tmp_path: Path) -> None:
    """A real --quick run (trainer subprocesses against SeaweedFS, the real gate) writes consistent output.

    Two strategies keep the test inside its time budget: the converged full retrain and the warm start at a
    quarter of its epochs (whose budget is derived from the first one's stopping epochs).
    """
    out = tmp_path / "results"
    cmd = [sys.executable, "-P", str(BENCH / "continual.py"), "--quick", "--out", str(out),
           "--workdir", str(tmp_path / "work"), "--strategies", ",".join(QUICK_STRATEGIES)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the benchmark stops its S3 server on SIGTERM
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    doc = json.loads((out / "continual-quick.json").read_text())
    assert (out / "continual-quick-compute.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "continual-quick-matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (out / "continual-quick-compute.svg").read_bytes()[:1000]
    size = data.QUICK
    eras = ERAS[: size.eras]
    assert doc["eras"] == eras and doc["mode"] == "quick" and doc["reference"] == "full"
    assert [s["name"] for s in doc["strategies"]] == QUICK_STRATEGIES
    assert doc["runs"] == 1 + len(QUICK_STRATEGIES) * size.seeds * (len(eras) - 1)
    by = {s["name"]: s for s in doc["strategies"]}
    full, quarter = by["full"], by["full-quarter"]
    for s in doc["strategies"]:
        assert s["seeds_run"] == size.seeds == len(s["seeds"])
        assert s["passes"] == sum(1 for r in s["seeds"] if all(st["passed"] for st in r["steps"]))
        for r in s["seeds"]:
            m = r["matrix"]
            assert len(m) == len(eras) and all(len(row) == len(eras) for row in m)
            assert m[0][0] == pytest.approx(doc["first_model"]["eras"]["era1"])  # same model, same test images
            assert all(v is not None and 0.0 <= v <= 1.0 for v in m[-1])
            assert r["pooled"] == r["steps"][-1]["pooled"] and 0.0 <= r["pooled"] <= 1.0
            assert r["image_epochs"] == sum(st["image_epochs"] for st in r["steps"]) > 0
            for st in r["steps"]:
                assert st["image_epochs"] == st["train_images"] * st["epochs_completed"]
                assert 1 <= st["epochs_completed"] <= st["epochs_planned"]
                assert st["bootstrap"] and st["pooled_interval"] is not None  # the default gate's intervals
                lo, hi = st["pooled_interval"]["low"], st["pooled_interval"]["high"]
                assert lo <= hi and st["pooled_interval"]["delta"] == pytest.approx(
                    st["pooled"] - st["incumbent_pooled"]
                )
                assert st["summary"] and st["reasons"]
            assert r["forgetting"]["era1"] == pytest.approx(m[0][0] - m[-1][0])
        pooled = [r["pooled"] for r in s["seeds"]]
        assert s["pooled"]["mean"] == pytest.approx(sum(pooled) / len(pooled))
        assert s["pooled"]["values"] == pooled
        ie = [r["image_epochs"] for r in s["seeds"]]
        assert s["image_epochs"]["mean"] == pytest.approx(sum(ie) / len(ie))
        assert s["compute_ratio"] == pytest.approx(s["image_epochs"]["mean"] / full["image_epochs"]["mean"])
        if full["pooled"]["mean"] > 0:
            assert s["metric_ratio"] == pytest.approx(s["pooled"]["mean"] / full["pooled"]["mean"])
        else:
            assert s["metric_ratio"] is None
        assert s["stops"] == {eras[-1]: [r["steps"][-1]["epochs_completed"] for r in s["seeds"]]}
        assert s["advice"] and s["name"] in stdout and s["advice"] in stdout
    # converged: the mode's cap and patience; quarter: a quarter of full's mean stopping epoch, no early stop
    for st in (r["steps"][0] for r in full["seeds"]):
        assert st["epochs_planned"] == size.epochs and st["patience"] == size.patience
    stops = [r["steps"][0]["epochs_completed"] for r in full["seeds"]]
    for st in (r["steps"][0] for r in quarter["seeds"]):
        assert st["epochs_planned"] == max(1, round(0.25 * sum(stops) / len(stops))) and st["patience"] == 0
        assert st["epochs_completed"] == st["epochs_planned"]
        assert st["base_weights"] == "bench-era1" and st["train_images"] == full["seeds"][0]["steps"][0]["train_images"]
    # the Pareto front: exactly the non-dominated (mean image-epochs, mean pooled) points
    points = {s["name"]: (s["image_epochs"]["mean"], s["pooled"]["mean"]) for s in doc["strategies"]}
    for s in doc["strategies"]:
        dominated = any(analysis.dominates(q, points[s["name"]]) for n, q in points.items() if n != s["name"])
        assert s["pareto"] is (not dominated) and (s["name"] in doc["pareto_front"]) is s["pareto"]
    chart = json.loads((out / "continual-quick-compute.json").read_text())
    assert [p["strategy"] for p in chart["points"]] == QUICK_STRATEGIES and chart["pareto_front"] == doc["pareto_front"]
    assert doc["goal"] is not None and doc["goal"]["best"] == "full-quarter"
    assert "When to use each strategy" in stdout and "Accuracy matrix, full-quarter" in stdout
    assert (out / "continual-quick.md").read_text().startswith("| strategy |")


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ({"type": "full"}, {"e1": 50, "e2": 40, "e3": 30}),
        ({"type": "incremental", "replay": {"enabled": False}}, {"e1": 0, "e2": 0, "e3": 30}),
        ({"type": "incremental", "replay": {"fraction": 0.1}}, {"e1": 5, "e2": 4, "e3": 30}),
        ({"type": "incremental"}, {"e1": 25, "e2": 20, "e3": 30}),  # the default replay fraction, 0.5
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


def test_estimate_projects_every_run_from_the_partial_fit() -> None:
    estimate = _load("continual_estimate")
    assert estimate.fit([(0.0, 10.0), (100.0, 30.0)]) == (pytest.approx(10.0), pytest.approx(0.2))
    assert estimate.fit([(5.0, 10.0), (5.0, 20.0)]) == (pytest.approx(15.0), 0.0)
    # cpu = 10 + 0.01 x image-epochs, wall = 20 + 0.02 x image-epochs, exactly on both runs
    first = {"image_epochs": 1000, "cpu_seconds": 20.0, "process_seconds": 40.0, "epochs_completed": 40}
    step = {"eras": ["era1", "era2"], "era_train": {"era1": 60, "era2": 40}, "train_images": 100,
            "epochs_completed": 20, "image_epochs": 2000, "cpu_seconds": 30.0, "process_seconds": 60.0}  # fmt: skip
    size = data.Size(**{**data.FULL.__dict__, "seeds": 3})
    every = strategies_mod.strategies()
    out = estimate.estimate(size, every, [step], first)
    assert out["runs"] == 1 + 3 * len(every)
    rows = {r["strategy"]: r for r in out["strategies"]}
    assert rows["full"]["image_epochs_per_seed"] == 2000 and rows["full"]["cpu"] == 3 * 30
    assert rows["full-scratch"]["image_epochs_per_seed"] == 100 * 40  # the era-1 model's stopping epoch
    assert rows["naive"]["image_epochs_per_seed"] == 40 * 20
    assert rows["full-half"]["image_epochs_per_seed"] == 100 * 10
    assert rows["replay30-matched"]["image_epochs_per_seed"] == (40 + 18) * round(1000 / 58)
    assert out["cpu_seconds"] == round(20 + sum(r["cpu"] for r in rows.values()))
    assert out["quiet_wall_seconds"] == [round(out["cpu_seconds"] / 2), out["cpu_seconds"]]
