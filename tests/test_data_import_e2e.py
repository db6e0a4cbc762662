"""End to end: a COCO export imported as two eras, then `kretrain data prepare` validates and splits it cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from _import_fixtures import image

from kretrain.cli import main


def coco_export(root: Path, n: int, seed: int) -> tuple[Path, dict[str, int]]:
    """A COCO file of `n` images of mixed sizes with category ids 2 and 7, one crowd box and one background."""
    rng = np.random.default_rng(seed)
    images, annotations, boxes = [], [], {"bicycle": 0, "truck": 0}
    for i in range(n):
        w, h = (32, 32) if i % 2 else (48, 40)
        name = f"img_{seed}_{i:03d}.png"
        image(root / "images" / name, w, h, seed=seed * 1000 + i)
        images.append({"id": i, "file_name": name, "width": w, "height": h})
        if i == 0:
            continue  # a background image
        for _ in range(int(rng.integers(1, 3))):
            cat = int(rng.choice([2, 7]))
            bw, bh = float(rng.uniform(4, w / 2)), float(rng.uniform(4, h / 2))
            x, y = float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh))
            annotations.append(
                {"id": len(annotations) + 1, "image_id": i, "category_id": cat, "bbox": [x, y, bw, bh], "iscrowd": 0}
            )
            boxes["bicycle" if cat == 2 else "truck"] += 1
    annotations.append({"id": 999, "image_id": 1, "category_id": 2, "bbox": [0, 0, 8, 8], "iscrowd": 1})
    categories = [{"id": 2, "name": "bicycle"}, {"id": 7, "name": "truck"}]
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path, boxes


def test_imported_coco_eras_prepare_with_no_errors_or_warnings(
    s3_env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    uri = f"s3://{s3_env.new_bucket('e2e')}/line"
    expected: dict[str, dict[str, int]] = {}
    for era, seed in (("2024-01", 1), ("2024-02", 2)):
        src, boxes = coco_export(tmp_path / era, 30, seed)
        assert main(["data", "import", "--format", "coco", str(src), "--era", era, "--to", uri]) == 0
        expected[era] = boxes
    capsys.readouterr()
    spec = {"model": "m", "dataset": {"uri": uri, "eras": list(expected), "maxBadFraction": 0.0}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    args = ["data", "prepare", "--spec", str(tmp_path / "spec.yaml"), "--workdir", str(tmp_path / "w")]
    assert main([*args, "--cache-dir", str(tmp_path / "c")]) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "w" / "data" / "data_report.json").read_text())
    assert report["status"] == "ok" and report["classes"] == ["bicycle", "truck"]
    assert [f for f in report["findings"] if f["severity"] != "info"] == []
    assert report["badItems"] == 0
    for c in report["counts"].values():
        assert c["train"] + c["val"] + c["test"] == 30 and c["train"] > 0 and c["val"] > 0 and c["test"] > 0
        assert c["background"] == 1
    # the boxes the pipeline reads back are the boxes the source had, per class and era
    stats = json.loads((tmp_path / "w" / "data" / "data_stats.json").read_text())
    assert {era: stats["eras"][era]["all"]["classHistogram"] for era in expected} == {
        era: [b["bicycle"], b["truck"]] for era, b in expected.items()
    }


def _label_counts(labels: Path, classes: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(classes, 0)
    for path in labels.glob("*.txt"):
        for line in path.read_text().splitlines():
            counts[classes[int(line.split()[0])]] += 1
    return counts


@pytest.mark.slow
def test_ultralytics_round_trip_imports_two_eras_that_train_with_the_source_label_counts(
    s3_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    from kretrain.trainer.local import run_manifest
    from kretrain.trainer.synthetic import DEFAULT_CLASSES, demo_eras, generate_dataset

    # an Ultralytics dataset: <root>/<part>/images + labels, names as a dict; imported part by part
    root = tmp_path / "ultra"
    parts = demo_eras(images=24, seed=3, names=("part1", "part2"))
    generate_dataset(root, parts, DEFAULT_CLASSES, imgsz=32)
    bucket, registry = s3_env.new_bucket("rt"), s3_env.new_bucket("reg")
    uri = f"s3://{bucket}/line"
    line = list(reversed(DEFAULT_CLASSES))  # the line orders its classes differently: ids are remapped
    s3_env.client().put_object(Bucket=bucket, Key="line/classes.yaml", Body=yaml.safe_dump({"names": line}).encode())
    source: dict[str, dict[str, int]] = {}
    for era, part in (("era-a", "part1"), ("era-b", "part2")):
        doc = {"path": str(root), "train": f"{part}/images", "names": dict(enumerate(DEFAULT_CLASSES))}
        (tmp_path / f"{part}.yaml").write_text(yaml.safe_dump(doc))
        args = ["data", "import", "--format", "ultralytics", str(tmp_path / f"{part}.yaml"), "--era", era]
        assert main([*args, "--to", uri]) == 0, capsys.readouterr().err
        source[era] = _label_counts(root / part / "labels", DEFAULT_CLASSES)
    monkeypatch.setenv("KRETRAIN_REGISTRY", f"s3://{registry}/models")
    manifest = tmp_path / "job.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {"apiVersion": "kretrain.dev/v1alpha1", "kind": "RetrainJob", "metadata": {"name": "rt"},
             "spec": {"model": "imported", "dataset": {"uri": uri, "eras": ["era-a", "era-b"], "split": {"val": 0.25, "test": 0.25}},
                      "strategy": {"epochs": 1, "imgsz": 32, "batch": 8, "patience": 0,
                                   "hyperparameters": {"workers": 0}},
                      "resources": {"gpus": 0}, "promotion": {"mode": "dryRun"}}}
        )
    )  # fmt: skip
    with (tmp_path / "out.txt").open("w") as stream:
        [outcome] = run_manifest(manifest, workdir=tmp_path / "runs", out=stream)
    assert outcome.report.training.epochs_completed == 1
    [stats_path] = list(outcome.workdir.rglob("data_stats.json"))
    stats = json.loads(stats_path.read_text())
    assert stats["classes"] == line
    trained = {era: dict(zip(line, stats["eras"][era]["all"]["classHistogram"], strict=True)) for era in source}
    assert trained == source
