"""Build the training, validation and test image lists and Ultralytics data YAMLs without copying images."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kretrain.api import StrategySpec
from kretrain.trainer.data.split import hash_unit
from kretrain.trainer.data.validation import ImageRecord, unsafe_key_reason


@dataclass
class TrainingSet:
    """The files the trainer and the evaluator read."""

    data_yaml: Path
    train_list: Path
    val_list: Path
    test_lists: dict[str, Path]
    test_list: Path
    test_yaml: Path
    test_eras: dict[str, str]
    train_by_era: dict[str, int] = field(default_factory=dict)
    val_by_era: dict[str, int] = field(default_factory=dict)
    test_by_era: dict[str, int] = field(default_factory=dict)

    @property
    def train_images(self) -> int:
        """Images in the training list."""
        return sum(self.train_by_era.values())


def replay_count(n: int, fraction: float) -> int:
    """How many of an older era's n training images are replayed: round(fraction * n), at least 1 if n > 0."""
    if n <= 0:
        return 0
    return min(n, max(1, round(fraction * n)))


def replay_sample(records: Sequence[ImageRecord], fraction: float, seed: int, era: str) -> list[ImageRecord]:
    """A seeded sample of `replay_count` images of one era: the lowest hash(seed, era, key) ranks.

    Ranking by a per-image hash (not a shuffled list) keeps the sample stable: adding images to the
    era only swaps in the new images that rank lower, and the same seed always gives the same sample.
    """
    k = replay_count(len(records), fraction)
    ranked = sorted(records, key=lambda r: hash_unit("replay", seed, era, r.key))
    return sorted(ranked[:k], key=lambda r: r.key)


def select_train(
    train: dict[str, list[ImageRecord]], strategy: StrategySpec, new_eras: Sequence[str]
) -> dict[str, list[ImageRecord]]:
    """The training images per era for the strategy.

    `full`: every era's train split. `incremental`: the new eras' train split plus, from each older
    era, `replay.fraction` of its own train split (era-balanced: every older era contributes the
    same share, sampled per era, so none is left out by chance); with `replay.enabled: false`, the
    new eras only (naive incremental).
    """
    replay = strategy.effective_replay
    out: dict[str, list[ImageRecord]] = {}
    for era, recs in train.items():
        if strategy.type == "full" or era in new_eras:
            out[era] = list(recs)
        elif replay is None:
            out[era] = []  # naive incremental: no older images
        else:
            out[era] = replay_sample(recs, replay.fraction, replay.seed, era)
    return out


def _write_list(path: Path, records: Sequence[ImageRecord]) -> Path:
    """One absolute path a line; ValueError for a path Ultralytics' `splitlines()` would split or mangle
    (validation excludes such keys; this is the last line of defense, e.g. for the cache folder itself)."""
    lines = []
    for r in records:
        p = os.path.abspath(r.path)
        why = unsafe_key_reason(p)
        if why is not None:
            raise ValueError(f"image path {p!a} {why}: it cannot go into the image list {path}")
        lines.append(f"{p}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines))
    return path


def ultralytics_cache_path(image_path: str) -> Path:
    """Where Ultralytics keeps its label cache for a list whose first image is this one.

    It maps the image to its label (the last `/images/` becomes `/labels/`) and stores
    `<label folder>.cache` (`Path.with_suffix`) beside that folder, i.e. in the era's cache folder.
    """
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return Path(sb.join(image_path.rsplit(sa, 1))).parent.with_suffix(".cache")


def remove_label_caches(records: Sequence[ImageRecord]) -> list[Path]:
    """Delete every label cache Ultralytics could read for lists of these images; returns those removed.

    A cache written by an earlier run in a shared dataset cache would be unpickled
    (`np.load(allow_pickle=True)`) before its hash is checked, so none is left for the next run to load.
    """
    folders = {os.path.abspath(d) for d in {os.path.dirname(r.path) for r in records}}
    removed = []
    for cache in sorted({ultralytics_cache_path(os.path.join(f, "x")) for f in folders}):
        try:
            cache.unlink()
        except (FileNotFoundError, IsADirectoryError):
            continue
        removed.append(cache)
    return removed


def _write_yaml(path: Path, doc: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def build_training_set(
    kept: dict[str, list[ImageRecord]],
    classes: list[str],
    strategy: StrategySpec,
    new_eras: Sequence[str],
    out_dir: Path,
) -> TrainingSet:
    """Write train/val/test lists (absolute paths into the cache), `data.yaml` and `test.yaml` into out_dir.

    `data.yaml` trains on the strategy's selection and validates on every era's val split;
    `test.yaml` has the union of every era's test split as `val` (and `train`, which Ultralytics
    requires but evaluation never reads); `test_eras` maps each test image's absolute path to its era.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_label_caches([r for recs in kept.values() for r in recs])
    by_split = {s: {e: [r for r in recs if r.split == s] for e, recs in kept.items()} for s in ("train", "val", "test")}
    train = select_train(by_split["train"], strategy, new_eras)
    train_list = _write_list(out_dir / "train.txt", [r for recs in train.values() for r in recs])
    val_list = _write_list(out_dir / "val.txt", [r for recs in by_split["val"].values() for r in recs])
    test_lists = {e: _write_list(out_dir / f"test-{e}.txt", recs) for e, recs in by_split["test"].items()}
    all_test = [r for recs in by_split["test"].values() for r in recs]
    test_list = _write_list(out_dir / "test.txt", all_test)
    names = dict(enumerate(classes))
    data_yaml = _write_yaml(
        out_dir / "data.yaml",
        {"path": str(out_dir), "train": str(train_list), "val": str(val_list), "nc": len(classes), "names": names},
    )
    test_yaml = _write_yaml(
        out_dir / "test.yaml",
        {"path": str(out_dir), "train": str(test_list), "val": str(test_list), "nc": len(classes), "names": names},
    )
    return TrainingSet(
        data_yaml=data_yaml,
        train_list=train_list,
        val_list=val_list,
        test_lists=test_lists,
        test_list=test_list,
        test_yaml=test_yaml,
        test_eras={os.path.abspath(r.path): r.era for r in all_test},
        train_by_era={e: len(v) for e, v in train.items()},
        val_by_era={e: len(v) for e, v in by_split["val"].items()},
        test_by_era={e: len(v) for e, v in by_split["test"].items()},
    )
