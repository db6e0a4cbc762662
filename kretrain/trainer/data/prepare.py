"""The data pipeline of a run: pull, validate, split, statistics, training set, data report."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kretrain.api import DataSummary, RetrainJobSpec
from kretrain.trainer.data.cachelock import dataset_lock
from kretrain.trainer.data.pull import PulledDataset, pull_dataset
from kretrain.trainer.data.stats import DRIFT_THRESHOLD, compute_stats
from kretrain.trainer.data.trainset import build_training_set
from kretrain.trainer.data.validation import (
    DataValidationError,
    Finding,
    ValidationResult,
    read_class_names,
    validate_eras,
)
from kretrain.trainer.data.vcache import CACHE_DIR_NAME, ValidationCache

if TYPE_CHECKING:
    from kretrain.store import ObjectStore

log = logging.getLogger(__name__)
REPORT_NAME = "data_report.json"
STATS_NAME = "data_stats.json"
CHART_NAME = "data_stats.png"


@dataclass
class PreparedData:
    """What the trainer and the evaluator need from the data pipeline."""

    data_yaml: Path
    """Ultralytics data YAML: absolute paths, train/val image list files, names."""
    classes: list[str]
    train_list: Path
    val_list: Path
    test_lists: dict[str, Path]
    """era -> image list file of its test split."""
    test_yaml: Path
    """Data YAML whose `val` is the union of every era's test split."""
    test_eras: dict[str, str]
    """Absolute image path -> era, for per-era metrics in one val pass."""
    report_path: Path
    """data_report.json."""
    summary: DataSummary
    stats_path: Path | None = None
    """data_stats.json (statistics and drift)."""
    chart_path: Path | None = None
    """data_stats.png."""


def resolve_classes(pulled: PulledDataset, spec_classes: list[str] | None, uri: str) -> tuple[list[str], list[Finding]]:
    """The class list: `classes.yaml`, which must equal `dataset.classes` when that is set."""
    source = f"{uri.rstrip('/')}/classes.yaml"
    if pulled.classes_error is not None:
        raise DataValidationError(pulled.classes_error)
    if pulled.classes_yaml is None:
        if spec_classes:
            msg = f"{source} not found; using dataset.classes from the spec"
            return list(spec_classes), [Finding("warning", "classes_yaml_missing", "", "classes.yaml", msg)]
        raise DataValidationError(f"{source} not found and dataset.classes is not set: the class list is unknown")
    try:
        names = read_class_names(pulled.classes_yaml, source)
    except ValueError as exc:
        raise DataValidationError(str(exc)) from exc
    if spec_classes is not None and list(spec_classes) != names:
        raise DataValidationError(f"dataset.classes {list(spec_classes)} differs from {source} {names}")
    return names, []


def _era_counts(result: ValidationResult) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for era, recs in result.records.items():
        kept = [r for r in recs if not r.excluded]
        splits = Counter(r.split for r in kept)
        out[era] = {
            "train": splits["train"],
            "val": splits["val"],
            "test": splits["test"],
            "excluded": len(recs) - len(kept),
            "background": sum(1 for r in kept if r.background),
            "orphanLabels": result.orphan_labels.get(era, 0),
        }
    return out


def _write_json(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def prepare_pulled(
    spec: RetrainJobSpec,
    pulled: PulledDataset,
    workdir: Path,
    *,
    drift_threshold: float = DRIFT_THRESHOLD,
    workers: int | None = None,
    chart: bool = True,
    validation_cache: Path | None = None,
) -> PreparedData:
    """Validate, split, describe and assemble a dataset already in the cache (see `prepare`).

    With `validation_cache` (a folder), unchanged images are not inspected again (`vcache`).
    """
    ds = spec.dataset
    out_dir = Path(workdir).resolve() / "data"
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path = out_dir / REPORT_NAME
    timings: dict[str, float] = {"pullSeconds": round(pulled.seconds, 3)}
    report: dict[str, Any] = {
        "dataset": ds.uri,
        "eras": list(ds.eras),
        "newEras": ds.latest_eras,
        "cache": str(pulled.root),
        "pull": pulled.sync,
        "eraHashes": pulled.era_hashes,
        "split": ds.split.dump(),
        "strategy": spec.strategy.type,
        "status": "failed",
    }
    try:
        classes, class_findings = resolve_classes(pulled, ds.classes, ds.uri)
    except DataValidationError as exc:
        report["fatal"] = [str(exc)]
        _write_json(report_path, report)
        raise DataValidationError(f"{exc} (data report: {report_path})") from exc
    report["classes"] = classes

    t0 = time.perf_counter()
    cache = ValidationCache(validation_cache, ds.uri, len(classes)) if validation_cache is not None else None
    result = validate_eras(
        pulled.era_files,
        classes,
        ds.latest_eras,
        ds.split.seed,
        ds.split.val,
        ds.split.test,
        workers=workers,
        cache=cache,
        objects=pulled.era_objects if cache is not None else None,
    )
    timings["validateSeconds"] = round(time.perf_counter() - t0, 3)
    if cache is not None:
        report["validationCache"] = {"version": cache.version, **cache.stats}
    timings.update({f"{k}Seconds": round(v, 3) for k, v in result.timings.items()})
    findings = class_findings + result.findings
    fatal = list(result.fatal)
    if result.bad_fraction > ds.max_bad_fraction:
        codes = Counter(f.code for f in findings if f.severity == "error")
        fatal.append(
            f"{result.bad_items} of {result.items} items ({result.bad_fraction:.1%}) are bad, more than "
            f"dataset.maxBadFraction {ds.max_bad_fraction:.1%} ({', '.join(f'{c}: {n}' for c, n in codes.most_common())})"
        )
    counts = _era_counts(result)
    kept = {era: result.kept(era) for era in result.records}
    for name, split in (("train", "train"), ("validation", "val")):
        if not fatal and not any(r.split == split for recs in kept.values() for r in recs):
            fatal.append(
                f"no {name} images left after the split (eras are too small for split fractions {ds.split.dump()})"
            )
    for era, c in counts.items():
        if c["test"] == 0 and era not in [f.era for f in findings if f.code == "empty_era"]:
            findings.append(
                Finding("warning", "empty_test_split", era, "", "no test images: this era cannot be evaluated")
            )

    report.update(
        {
            "counts": counts,
            "items": result.items,
            "badItems": result.bad_items,
            "badFraction": round(result.bad_fraction, 6),
            "maxBadFraction": ds.max_bad_fraction,
            "findingCounts": dict(Counter(f"{f.severity}:{f.code}" for f in findings)),
            "newClasses": result.new_classes,
            "excluded": sorted({f"{f.era}/{f.key}" for f in findings if f.excluded}),
            "findings": [f.to_dict() for f in findings],
        }
    )
    if fatal:
        report["fatal"] = fatal
        report["timings"] = timings
        _write_json(report_path, report)
        raise DataValidationError("; ".join(fatal) + f" (data report: {report_path})")

    t0 = time.perf_counter()
    stats, drift_warnings = compute_stats(kept, classes, drift_threshold)
    timings["statsSeconds"] = round(time.perf_counter() - t0, 3)
    stats_path = _write_json(out_dir / STATS_NAME, stats)
    chart_path: Path | None = None
    if chart:
        from kretrain.trainer.data.charts import render_chart

        t0 = time.perf_counter()
        chart_path = render_chart(stats, out_dir / CHART_NAME)
        timings["chartSeconds"] = round(time.perf_counter() - t0, 3)

    t0 = time.perf_counter()
    ts = build_training_set(kept, classes, spec.strategy, ds.latest_eras, out_dir)
    timings["trainsetSeconds"] = round(time.perf_counter() - t0, 3)

    warnings = [f.message if not f.era else f"era {f.era!r}: {f.message}" for f in findings if f.severity == "warning"]
    warnings += drift_warnings
    summary = DataSummary(
        eras={e: {k: c[k] for k in ("train", "val", "test", "excluded", "background")} for e, c in counts.items()},
        era_hashes=pulled.era_hashes,
        classes=classes,
        errors=result.bad_items,
        warnings=warnings,
        train_images=ts.train_images,
        finding_counts=report["findingCounts"],
    )
    replay = spec.strategy.effective_replay
    report.update(
        {
            "status": "ok",
            "warnings": warnings,
            "drift": stats["drift"],
            "trainingSet": {
                "strategy": spec.strategy.type,
                "replay": replay.dump() if replay else None,
                "trainByEra": ts.train_by_era,
                "valByEra": ts.val_by_era,
                "testByEra": ts.test_by_era,
                "trainImages": ts.train_images,
                "dataYaml": str(ts.data_yaml),
                "testYaml": str(ts.test_yaml),
            },
            "statsPath": str(stats_path),
            "chartPath": str(chart_path) if chart_path else None,
            "timings": timings,
            "summary": summary.dump(),
        }
    )
    _write_json(report_path, report)
    _write_json(out_dir / "test_eras.json", ts.test_eras)
    return PreparedData(
        data_yaml=ts.data_yaml,
        classes=classes,
        train_list=ts.train_list,
        val_list=ts.val_list,
        test_lists=ts.test_lists,
        test_yaml=ts.test_yaml,
        test_eras=ts.test_eras,
        report_path=report_path,
        summary=summary,
        stats_path=stats_path,
        chart_path=chart_path,
    )


def prepare(
    spec: RetrainJobSpec, store: ObjectStore, workdir: Path, cache_dir: Path, *, chart: bool = True
) -> PreparedData:
    """Pull every era into `cache_dir` (only new or changed objects), validate, split, describe, and build
    the training set for the spec's strategy; outputs go to `<workdir>/data/`.

    Raises DataValidationError (after writing data_report.json) when the class lists disagree, an era
    is empty, nothing is left to train or validate on, or the bad share exceeds dataset.maxBadFraction.
    `chart=False` skips the PNG (about a second of matplotlib).
    Runs sharing `cache_dir` (a shared volume) take turns per dataset (`cachelock.dataset_lock`) for
    the pull and the validation; inspection results are cached in `<cache_dir>/.kretrain-validation/`.
    """
    cache_dir = Path(cache_dir)
    with dataset_lock(cache_dir, spec.dataset.uri) as waited:
        pulled = pull_dataset(spec.dataset, store, cache_dir)
        prepared = prepare_pulled(spec, pulled, workdir, chart=chart, validation_cache=cache_dir / CACHE_DIR_NAME)
    if waited >= 1.0:
        log.info("waited %.1f s for another run's data stage on %s (shared cache)", waited, spec.dataset.uri)
    return prepared
