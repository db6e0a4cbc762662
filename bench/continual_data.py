"""The continual benchmark's synthetic world: three eras of shifting conditions, the third adding a class."""

from __future__ import annotations

from dataclasses import dataclass

from kretrain.trainer.synthetic import EraConfig

CLASSES = ["circle", "square", "triangle", "cross"]
"""Class list of the whole dataset (classes.yaml); `cross` first appears in era 3."""

ERAS = ["era1", "era2", "era3"]
"""Era names, oldest first."""

ERA_DESCRIPTIONS = {
    "era1": "dark plain background, large objects, 1-2 per image, classes circle/square/triangle",
    "era2": "bright striped noisy background, small objects, 2-4 per image, same classes",
    "era3": "dim green textured background, medium objects, 1-3 per image, adds class cross",
}
"""One line per era for the tables and the docs."""


@dataclass(frozen=True)
class Size:
    """How big one benchmark run is."""

    images: int
    """Images generated per era (train/val/test split 70/15/15 by key hash)."""
    imgsz: int
    """Image size for generation, training and evaluation."""
    first_epochs: int
    """Epochs of the era-1 model (full training from a random init)."""
    epochs: int
    """Epochs of every retraining step, the same for every strategy (compute differs by data size)."""
    batch: int = 16
    """Batch size."""
    patience: int | None = None
    """Early-stopping patience of the retraining steps (None: the API default; 0: off)."""


FULL = Size(images=200, imgsz=64, first_epochs=25, epochs=12)
"""Full mode: sized for under 30 minutes on 2 CPU cores."""

QUICK = Size(images=40, imgsz=64, first_epochs=2, epochs=1, batch=8)
"""Quick mode for CI: seconds per step; the numbers mean nothing, the structure is what is tested."""


def era_configs(images: int, seed: int = 0) -> list[EraConfig]:
    """The three eras: each shifts background, lighting, texture and object size; era 3 adds `cross`.

    The shift is strong on purpose: a model that sees only one era's conditions detects the others'
    objects poorly, so training on a new era alone (naive incremental) visibly forgets the old ones.
    """
    old = CLASSES[:-1]
    return [
        EraConfig(
            name="era1",
            images=images,
            classes=old,
            background=(25, 25, 35),
            brightness=0.8,
            scale=(0.35, 0.55),
            seed=seed,
            texture=0.0,
            objects=(1, 2),
        ),
        EraConfig(
            name="era2",
            images=images,
            classes=old,
            background=(205, 200, 185),
            brightness=1.1,
            scale=(0.12, 0.22),
            seed=seed + 1,
            texture=0.8,
            objects=(2, 4),
        ),
        EraConfig(
            name="era3",
            images=images,
            classes=list(CLASSES),
            background=(40, 120, 70),
            brightness=0.65,
            scale=(0.2, 0.32),
            seed=seed + 2,
            texture=0.5,
            objects=(1, 3),
        ),
    ]
