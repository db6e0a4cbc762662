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
    """How big one benchmark run is, and how it trains."""

    images: int
    """Images generated per era (split into train/val/test by key hash, `val` and `test` shares)."""
    imgsz: int
    """Image size for generation, training and evaluation."""
    first_epochs: int
    """Epoch cap of the era-1 model (full training from a random init, early stopping with `patience`)."""
    epochs: int
    """Epoch cap of every converged retraining step: generous, so early stopping (`patience`) ends each run."""
    patience: int
    """Early-stopping patience (epochs without a better validation fitness) of the era-1 model and the
    converged steps; the budgeted strategies run their derived epochs with early stopping off."""
    batch: int = 16
    """Batch size."""
    seeds: int = 3
    """Training seeds per strategy (0..seeds-1); the data split and the replay sample stay fixed."""
    eras: int = 3
    """Eras used, oldest first (2: one retraining step, 3: two)."""
    val: float = 0.15
    """Validation share of each era (early stopping and best.pt are chosen on every era's val split)."""
    test: float = 0.3
    """Test share of each era: large, so the gate's per-era bootstrap intervals can resolve its 0.02 bound
    (the training split is what the compute is spent on; the test split costs two validation passes)."""
    device: str = "cpu"
    """`cpu` or `cuda`."""
    workers: int = 0
    """Data-loader workers."""


QUICK = Size(images=40, imgsz=64, first_epochs=2, epochs=2, patience=1, batch=8, seeds=1, eras=2)
"""Quick mode for CI: a few real runs, seconds of training each; the numbers mean nothing, the structure and
the consistency of the output are what the test checks."""

FULL = Size(images=120, imgsz=64, first_epochs=200, epochs=200, patience=30, eras=2)
"""Full mode, CPU: two eras (one retraining step per chain, 31 runs), cap 200 epochs, patience 30: about 40 minutes
on 2 cores with `--parallel 2` (docs/strategies.md). Ultralytics anneals the learning rate linearly to `lrf` over
`epochs`, so a run that keeps improving ends annealed at the cap; the incremental strategies stop earlier."""

GPU = Size(images=2000, imgsz=640, first_epochs=300, epochs=300, patience=30, batch=64, device="cuda", workers=8)
"""`--gpu` mode for an H200-class device: imgsz 640 and larger eras (not run on this project's machines)."""


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
