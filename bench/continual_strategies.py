"""The continual benchmark's strategies, their RetrainJob specs, and the budgets derived from the full retrain."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from continual_data import CLASSES, Size

from kretrain.api import RetrainJobSpec

MODEL = "continual-bench"
DATASET_URI = "s3://datasets/continual"
REGISTRY_URI = "s3://models/registry"
FIRST_RUN = "bench-era1"
SCRATCH = "yolov8n.yaml"
"""Random-init start weights (an Ultralytics built-in YAML: never downloaded)."""
REFERENCE = "full"
"""The strategy every ratio is taken against: the converged full retrain, warm-started like the chain."""


@dataclass(frozen=True)
class Budget:
    """A training budget derived from the converged full retrain at the same step.

    `epochs`: `share` x the full retrain's mean stopping epoch (over its seeds). `image_epochs`: as many
    epochs as make this strategy's image-epochs equal `share` x the full retrain's stopping epoch x the
    full retrain's training images (replay at the compute of full-at-50%).
    """

    kind: Literal["epochs", "image_epochs"]
    """What is matched."""
    share: float
    """Share of the converged full retrain's epochs."""


@dataclass(frozen=True)
class Strategy:
    """One retraining strategy of the benchmark: a name and the `strategy` fields it sets."""

    name: str
    """Short name used in tables, JSON and charts."""
    label: str
    """What it is, in words."""
    fields: dict[str, Any]
    """RetrainJob `spec.strategy` fields (camelCase), without baseWeights/epochs/patience/imgsz/batch."""
    incremental: bool = True
    """Whether it is an incremental strategy."""
    replay: float | None = None
    """Replay fraction of older eras (None: no replay; full strategies train on everything)."""
    scratch: bool = False
    """Start every step from a random init instead of the chain's previous model."""
    budget: Budget | None = None
    """None: converged (epoch cap + early stopping); else a fixed budget derived from `full`."""


def strategies(low_lr: float = 0.002, freeze: int = 10) -> list[Strategy]:
    """Every strategy, the converged ones first; unset knobs take the API defaults (a minimal manifest)."""
    inc = "incremental"
    return [
        Strategy("full", "full retrain, warm start, converged", {"type": "full"}, incremental=False),
        Strategy(
            "full-scratch",
            "full retrain from random init, converged (reference)",
            {"type": "full"},
            incremental=False,
            scratch=True,
        ),
        Strategy("naive", "incremental, new era only, converged", {"type": inc, "replay": {"enabled": False}}),
        Strategy(
            "replay10", "incremental + 10% replay, converged", {"type": inc, "replay": {"fraction": 0.1}}, replay=0.1
        ),
        Strategy(
            "replay30", "incremental + 30% replay, converged", {"type": inc, "replay": {"fraction": 0.3}}, replay=0.3
        ),
        Strategy(
            "replay10-lowlr-freeze",
            f"incremental + 10% replay, SGD lr0 {low_lr:g}, freeze {freeze}, converged",
            {"type": inc, "replay": {"fraction": 0.1}, "optimizer": "SGD", "lr0": low_lr, "freeze": freeze},
            replay=0.1,
        ),
        Strategy(
            "full-half",
            "full retrain, warm start, 1/2 of full's epochs",
            {"type": "full"},
            incremental=False,
            budget=Budget("epochs", 0.5),
        ),
        Strategy(
            "full-quarter",
            "full retrain, warm start, 1/4 of full's epochs",
            {"type": "full"},
            incremental=False,
            budget=Budget("epochs", 0.25),
        ),
        Strategy(
            "replay30-matched",
            "incremental + 30% replay at full-half's image-epochs",
            {"type": inc, "replay": {"fraction": 0.3}},
            replay=0.3,
            budget=Budget("image_epochs", 0.5),
        ),
        Strategy(
            "replay50-matched",
            "incremental + 50% replay at full-half's image-epochs",
            {"type": inc, "replay": {"fraction": 0.5}},
            replay=0.5,
            budget=Budget("image_epochs", 0.5),
        ),
    ]


def select(chosen: Sequence[Strategy], names: str | None) -> list[Strategy]:
    """The subset named by `--strategies` (comma-separated), in the benchmark's order; SystemExit on an
    unknown name or a budgeted strategy without the full retrain it derives its budget from."""
    if not names:
        return list(chosen)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = sorted(set(wanted) - {s.name for s in chosen})
    if unknown:
        raise SystemExit(f"--strategies: unknown {unknown}; known: {[s.name for s in chosen]}")
    out = [s for s in chosen if s.name in wanted]
    if any(s.budget for s in out) and REFERENCE not in wanted:
        raise SystemExit(f"--strategies: budgeted strategies derive their epochs from '{REFERENCE}'; add it")
    return out


def step_epochs(
    strategy: Strategy,
    size: Size,
    full_stops: Sequence[int],
    full_train_images: int,
    era_train: Mapping[str, int],
    new_era: str,
) -> tuple[int, int]:
    """(epochs, patience) of one step. Converged: the cap and the mode's patience. Budgeted: the derived
    epochs with early stopping off (patience 0), so the budget is spent exactly.

    `full_stops`: the full retrain's stopping epoch at this step, one per seed; `full_train_images`: its
    training images there; `era_train`: every era's train-split size at this step (for the replay count).
    """
    if strategy.budget is None:
        return size.epochs, size.patience
    if not full_stops:
        raise ValueError(f"{strategy.name}: the full retrain's stopping epochs are needed first")
    full_epochs = sum(full_stops) / len(full_stops)
    if strategy.budget.kind == "epochs":
        return max(1, round(strategy.budget.share * full_epochs)), 0
    images = train_images(strategy, era_train, new_era)
    target = strategy.budget.share * full_epochs * full_train_images
    return max(1, round(target / images)), 0


def train_images(strategy: Strategy, era_train: Mapping[str, int], new_era: str) -> int:
    """Training images the data pipeline selects for `strategy` (kretrain's own replay count per older era)."""
    from kretrain.trainer.data.trainset import replay_count

    if not strategy.incremental:
        return sum(era_train.values())
    old = [n for era, n in era_train.items() if era != new_era]
    fraction = strategy.replay
    return era_train.get(new_era, 0) + (sum(replay_count(n, fraction) for n in old) if fraction else 0)


def first_spec(size: Size, gpus: int) -> RetrainJobSpec:
    """The era-1 model: full training from a random init to convergence, promoted with no checks required."""
    return RetrainJobSpec.model_validate(
        {
            **_common(gpus),
            "dataset": {"uri": DATASET_URI, "eras": ["era1"], "classes": CLASSES, "split": _split(size)},
            "strategy": {
                "type": "full",
                "baseWeights": SCRATCH,
                **_train(size, size.first_epochs, size.patience, seed=0),
            },
            "promotion": {"requiredChecks": []},
        }
    )


def step_spec(
    strategy: Strategy, eras: list[str], base: str, size: Size, gpus: int, epochs: int, patience: int, seed: int
) -> RetrainJobSpec:
    """One retraining step: the strategy's fields, explicit start weights, the default gate in dry-run mode."""
    return RetrainJobSpec.model_validate(
        {
            **_common(gpus),
            "dataset": {"uri": DATASET_URI, "eras": eras, "newEras": 1, "classes": CLASSES, "split": _split(size)},
            "strategy": {
                **strategy.fields,
                "baseWeights": SCRATCH if strategy.scratch else base,
                **_train(size, epochs, patience, seed),
            },
            "promotion": {"mode": "dryRun"},
        }
    )


def _split(size: Size) -> dict[str, float]:
    return {"val": size.val, "test": size.test}


def _common(gpus: int) -> dict[str, Any]:
    return {"model": MODEL, "resources": {"gpus": gpus}, "storage": {"registry": REGISTRY_URI}}


def _train(size: Size, epochs: int, patience: int, seed: int) -> dict[str, Any]:
    return {
        "epochs": epochs,
        "patience": patience,
        "imgsz": size.imgsz,
        "batch": size.batch,
        "hyperparameters": {"workers": size.workers, "seed": seed, "deterministic": True},
    }
