"""Mixed-era evaluation: one Ultralytics validation pass per model over every era's test split, per-era metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kretrain.api import Evaluation, Metrics, PromotionSpec
from kretrain.api.intervals import PairedBootstrap

STAT_KEYS = ("tp", "conf", "pred_cls", "target_cls", "target_img")


@dataclass
class PerImageStats:
    """Per-image detection statistics of one validation pass (Ultralytics' own matching), in dataset order."""

    files: list[str] = field(default_factory=list)
    """Absolute image path of each entry."""
    stats: dict[str, list[np.ndarray]] = field(default_factory=lambda: {k: [] for k in STAT_KEYS})
    """Ultralytics' per-image stats (tp, conf, pred_cls, target_cls, target_img)."""
    names: dict[int, str] = field(default_factory=dict)
    """Class names of the evaluated model (id -> name)."""

    def predictions_above(self, conf: float) -> int:
        """Number of predicted boxes with confidence >= conf."""
        return int(sum(int((c >= conf).sum()) for c in self.stats["conf"]))

    def images_with_predictions(self, conf: float) -> int:
        """Number of images with at least one box at confidence >= conf."""
        return int(sum(1 for c in self.stats["conf"] if (c >= conf).any()))


class StatsCollector:
    """`on_val_start` / `on_val_batch_end` callbacks that copy each image's stats before Ultralytics clears them.

    The k-th stats entry belongs to `dataset.im_files[sampler_index[k]]` (the order Ultralytics itself relies on
    for custom JSON output).
    """

    def __init__(self) -> None:
        self.result = PerImageStats()
        self._order: list[int] = []
        self._files: list[str] = []

    def on_val_start(self, validator: Any) -> None:
        """Remember the dataset order."""
        self.result = PerImageStats()
        self._order = list(validator.dataloader.sampler)
        self._files = [str(Path(f).resolve()) for f in validator.dataloader.dataset.im_files]

    def on_val_batch_end(self, validator: Any) -> None:
        """Copy the entries this batch added."""
        stats = validator.metrics.stats
        done = len(self.result.files)
        new = len(stats["tp"]) - done
        for k in STAT_KEYS:
            self.result.stats[k].extend(stats[k][done : done + new])
        for j in range(done, done + new):
            self.result.files.append(self._files[self._order[j]])


def metrics_from_stats(stats: dict[str, list[np.ndarray]], names: dict[int, str]) -> Metrics:
    """Ultralytics' own metric computation (`ap_per_class` + `Metric.mean_results`) on a group of images."""
    from ultralytics.utils.metrics import Metric, ap_per_class

    images = len(stats["tp"])
    if images == 0:
        return Metrics(**{"mAP50-95": 0.0, "mAP50": 0.0}, precision=0.0, recall=0.0, images=0, instances=0)
    cat = {k: np.concatenate(v, 0) if v else np.zeros(0) for k, v in stats.items()}
    instances = len(cat["target_cls"])
    if instances == 0:
        return Metrics(**{"mAP50-95": 0.0, "mAP50": 0.0}, precision=0.0, recall=0.0, images=images, instances=0)
    results = ap_per_class(cat["tp"], cat["conf"], cat["pred_cls"], cat["target_cls"], names=names)[2:]
    box = Metric()
    box.nc = len(names)
    box.update(results)
    mp, mr, map50, map50_95 = (float(x) for x in box.mean_results())
    per_class = {names[int(c)]: float(box.all_ap[i].mean()) for i, c in enumerate(box.ap_class_index)}
    ids, counts = np.unique(cat["target_cls"].astype(int), return_counts=True)
    class_instances = {names.get(int(c), str(int(c))): int(n) for c, n in zip(ids, counts, strict=True)}
    return Metrics(
        **{"mAP50-95": map50_95, "mAP50": map50},
        precision=mp,
        recall=mr,
        images=images,
        instances=instances,
        per_class=per_class,
        class_instances=class_instances,
    )


def group_metrics(
    result: PerImageStats, groups: dict[str, str], names: dict[int, str]
) -> tuple[Metrics, dict[str, Metrics]]:
    """Pooled metrics and metrics per group (`groups`: absolute image path -> era)."""
    pooled = metrics_from_stats(result.stats, names)
    by_group: dict[str, dict[str, list[np.ndarray]]] = {}
    resolved = {str(Path(p).resolve()): g for p, g in groups.items()}
    missing = [f for f in result.files if f not in resolved]
    if missing:
        raise ValueError(f"{len(missing)} evaluated images have no era (first: {missing[0]})")
    for i, f in enumerate(result.files):
        g = by_group.setdefault(resolved[f], {k: [] for k in STAT_KEYS})
        for k in STAT_KEYS:
            g[k].append(result.stats[k][i])
    eras = {g: metrics_from_stats(s, names) for g, s in sorted(by_group.items())}
    return pooled, eras


def validate_once(
    weights: Path | str,
    data_yaml: Path,
    imgsz: int,
    batch: int = 16,
    device: Any = None,
    project: Path | None = None,
    workers: int | None = None,
) -> tuple[PerImageStats, dict[int, str], Any]:
    """One Ultralytics `val()` pass collecting per-image stats; returns (stats, class names, Ultralytics metrics).

    `weights` must be verified already: the run's own best.pt, or the incumbent from
    `Registry.fetch_weights` (its sha256 matched the registry record); Ultralytics unpickles it with its
    restricted loader (`modelfiles.restrict_ultralytics`).
    """
    from kretrain.trainer.modelfiles import restrict_ultralytics

    restrict_ultralytics()
    from ultralytics import YOLO

    model = YOLO(str(weights))
    collector = StatsCollector()
    model.add_callback("on_val_start", collector.on_val_start)
    model.add_callback("on_val_batch_end", collector.on_val_batch_end)
    kwargs: dict[str, Any] = {
        "data": str(Path(data_yaml).resolve()),
        "imgsz": imgsz,
        "batch": batch,
        "plots": False,
        "verbose": False,
        "split": "val",
    }
    if device is not None:
        kwargs["device"] = device
    if project is not None:
        kwargs.update(project=str(Path(project).resolve()), name="val", exist_ok=True)
    if workers is not None:
        kwargs["workers"] = workers
    metrics = model.val(**kwargs)
    names = {int(k): str(v) for k, v in model.names.items()}
    return collector.result, names, metrics


def evaluate(
    weights: Path | str,
    test_yaml: Path,
    test_eras: dict[str, str],
    imgsz: int,
    batch: int = 16,
    device: Any = None,
    project: Path | None = None,
    version: str | None = None,
    workers: int | None = None,
) -> tuple[Evaluation, PerImageStats]:
    """Evaluate one model on the union of every era's test split in one pass: pooled and per-era metrics.

    Per-era numbers are computed with Ultralytics' own `ap_per_class` on that era's images, so they equal a
    separate `val()` on that era alone (when letterbox shapes agree: square images, or `rect` batches that
    come out the same).
    """
    result, names, _ = validate_once(weights, test_yaml, imgsz, batch, device, project, workers)
    result.names = names
    pooled, eras = group_metrics(result, test_eras, names)
    return Evaluation(model_version=version, pooled=pooled, eras=eras), result


def paired_intervals(
    promotion: PromotionSpec,
    candidate: PerImageStats,
    incumbent: PerImageStats,
    test_eras: dict[str, str],
    incumbent_version: str | None,
) -> PairedBootstrap:
    """The paired bootstrap of candidate vs incumbent the spec asks for (`promotion.resamples`, `confidence`,
    `bootstrapSeed`, on `promotion.metric`), computed here in the pod: only its numbers go into the report."""
    from kretrain.bootstrap import paired_bootstrap

    groups = {str(Path(p).resolve()): e for p, e in test_eras.items()}
    return paired_bootstrap(
        candidate, incumbent, groups, candidate.names,
        metric=promotion.metric, confidence=promotion.confidence, resamples=promotion.resamples,
        seed=promotion.bootstrap_seed, incumbent_version=incumbent_version,
    )  # fmt: skip
