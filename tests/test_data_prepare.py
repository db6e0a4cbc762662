"""The data pipeline against a real SeaweedFS server: every finding, split stability, re-pull, replay, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from kretrain.api import RetrainJobSpec
from kretrain.store import ObjectStore
from kretrain.trainer.data import DataValidationError, PreparedData
from kretrain.trainer.data import prepare as _prepare
from kretrain.trainer.data.pull import era_hash
from kretrain.trainer.data.split import split_of
from kretrain.trainer.data.trainset import replay_count
from kretrain.trainer.synthetic import (
    DEFAULT_CLASSES,
    Defects,
    EraConfig,
    demo_eras,
    generate_dataset,
    generate_era,
    upload_dataset,
)

IMGSZ = 32


def prepare(
    spec: RetrainJobSpec, store: ObjectStore, workdir: Path, cache_dir: Path, chart: bool = False
) -> PreparedData:
    """`prepare` without the PNG chart unless asked (matplotlib costs about a second per call)."""
    return _prepare(spec, store, workdir, cache_dir, chart=chart)


def _store(s3) -> ObjectStore:  # type: ignore[no-untyped-def]
    return ObjectStore(
        endpoint_url=s3.endpoint, region="us-east-1", access_key=s3.server.access_key, secret_key=s3.server.secret_key
    )


def _spec(uri: str, eras: list[str], **dataset: object) -> RetrainJobSpec:
    strategy = dataset.pop("strategy", {"type": "full"})
    return RetrainJobSpec.model_validate(
        {"model": "m", "dataset": {"uri": uri, "eras": eras, **dataset}, "strategy": strategy}
    )


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line]


def _copy_as(src_era: Path, dst_era: Path, stem: str, new_stem: str) -> None:
    (dst_era / "images").mkdir(parents=True, exist_ok=True)
    (dst_era / "labels").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src_era / "images" / f"{stem}.png", dst_era / "images" / f"{new_stem}.png")
    shutil.copyfile(src_era / "labels" / f"{stem}.txt", dst_era / "labels" / f"{new_stem}.txt")


@pytest.fixture(scope="module")
def defects_dataset(s3, tmp_path_factory: pytest.TempPathFactory) -> dict:  # type: ignore[no-untyped-def]
    """era1 clean (no 'cross'); era2 with every generated defect; duplicates across eras/splits/within a split."""
    root = tmp_path_factory.mktemp("defects-src")
    era1, era2 = demo_eras(images=40, seed=5)
    era2.defects = Defects(
        corrupt_images=2, bad_label_lines=2, out_of_range_ids=1, bad_boxes=2, orphan_labels=1, background_images=2
    )
    generate_dataset(root, [era1, era2], DEFAULT_CLASSES, imgsz=IMGSZ)
    # the same content in another era, in another split of the same era, and twice in one split
    _copy_as(root / "era1", root / "era2", "era1_000003", "zz_copy_from_era1")
    original = "era1_000005"
    split = split_of(0, "era1", f"images/{original}.png", 0.15, 0.15)
    other = next(
        f"zz_other_{i}" for i in range(200) if split_of(0, "era1", f"images/zz_other_{i}.png", 0.15, 0.15) != split
    )
    same = next(
        f"zz_same_{i}" for i in range(200) if split_of(0, "era1", f"images/zz_same_{i}.png", 0.15, 0.15) == split
    )
    _copy_as(root / "era1", root / "era1", original, other)
    _copy_as(root / "era1", root / "era1", original, same)
    bucket = s3.new_bucket("data")
    uri = f"s3://{bucket}/shapes"
    upload_dataset(root, _store(s3), uri)
    return {"uri": uri, "other": other, "same": same}


def test_every_finding_is_reported_and_bad_items_excluded(defects_dataset: dict, s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec = _spec(defects_dataset["uri"], ["era1", "era2"], maxBadFraction=0.5)
    prepared = prepare(spec, _store(s3), tmp_path / "work", tmp_path / "cache", chart=True)
    report = json.loads(prepared.report_path.read_text())
    by_code: dict[str, set[str]] = {}
    for f in report["findings"]:
        by_code.setdefault(f["code"], set()).add(f"{f['era']}/{f['key']}" if f["key"] else f["era"])
    assert by_code["undecodable_image"] == {"era2/images/era2_000000.png", "era2/images/era2_000001.png"}
    assert by_code["malformed_label"] == {"era2/images/era2_000002.png", "era2/images/era2_000003.png"}
    assert by_code["class_out_of_range"] == {"era2/images/era2_000004.png"}
    assert by_code["box_out_of_bounds"] == {"era2/images/era2_000005.png"}
    assert by_code["zero_area_box"] == {"era2/images/era2_000006.png"}
    assert by_code["background_image"] == {"era2/images/era2_000007.png", "era2/images/era2_000008.png"}
    assert by_code["label_without_image"] == {"era2/labels/era2_orphan_000000.txt"}
    assert by_code["duplicate_across_eras"] == {"era2/images/zz_copy_from_era1.png"}
    assert by_code["duplicate_across_splits"] == {f"era1/images/{defects_dataset['other']}.png"}
    assert by_code["duplicate_within_split"] == {f"era1/images/{defects_dataset['same']}.png"}
    assert by_code["class_new_in_era"] == {"era2"}
    cross = report["newClasses"]["cross"]
    assert cross["firstEra"] == "era2" and cross["olderEras"] == ["era1"] and cross["boxes"] >= cross["images"] > 0
    assert any("'cross'" in w and "era1" in w for w in prepared.summary.warnings)
    background = [f for f in report["findings"] if f["code"] == "background_image"]
    assert all(f["severity"] == "info" and not f["excluded"] for f in background)

    excluded = set(report["excluded"])
    assert len(excluded) == 2 + 2 + 1 + 2 + 3
    assert prepared.summary.eras["era2"]["excluded"] == 8 and prepared.summary.eras["era1"]["excluded"] == 2
    assert prepared.summary.eras["era2"]["background"] == 2
    assert prepared.summary.errors == 11  # 10 excluded images + 1 orphan label
    assert report["badFraction"] == pytest.approx(11 / (40 + 42 + 1 + 1), abs=1e-6)
    listed = {p for lst in [prepared.train_list, prepared.val_list, *prepared.test_lists.values()] for p in _lines(lst)}
    assert len(listed) == 40 + 42 + 1 - 10
    assert not any(
        p.endswith(tuple(x.split("/", 1)[1] for x in excluded if x.startswith("era2"))) for p in listed if "/era2/" in p
    )
    assert all(Path(p).is_absolute() and Path(p).exists() for p in listed)
    assert prepared.chart_path is not None and prepared.chart_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stats = json.loads(prepared.stats_path.read_text()) if prepared.stats_path else {}
    assert stats["eras"]["era2"]["all"]["classHistogram"][3] == cross["boxes"]


def test_too_many_bad_items_fail_with_a_clear_message(defects_dataset: dict, s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec = _spec(defects_dataset["uri"], ["era1", "era2"], maxBadFraction=0.05)
    with pytest.raises(
        DataValidationError, match=r"11 of 84 items \(13\.1%\) are bad, more than dataset.maxBadFraction 5\.0%"
    ):
        prepare(spec, _store(s3), tmp_path / "work", tmp_path / "cache")
    report = json.loads((tmp_path / "work" / "data" / "data_report.json").read_text())
    assert report["status"] == "failed" and "maxBadFraction" in report["fatal"][0]
    assert len(report["excluded"]) == 10


@pytest.mark.parametrize(
    ("era_classes", "spec_classes", "message"),
    [
        (["circle", "square", "cross", "triangle"], None, "era 'era2': era class list"),
        (None, ["circle", "square", "triangle"], "dataset.classes .* differs from s3://"),
        (None, DEFAULT_CLASSES, None),
    ],
)
def test_class_list_must_match_classes_yaml(  # type: ignore[no-untyped-def]
    s3, tmp_path: Path, era_classes: list[str] | None, spec_classes: list[str] | None, message: str | None
) -> None:
    root = tmp_path / "src"
    generate_dataset(root, demo_eras(images=8), DEFAULT_CLASSES, imgsz=IMGSZ)
    if era_classes:
        (root / "era2" / "classes.yaml").write_text(yaml.safe_dump({"names": era_classes}))
    uri = f"s3://{s3.new_bucket('cls')}/ds"
    upload_dataset(root, _store(s3), uri)
    spec = _spec(uri, ["era1", "era2"], classes=spec_classes, split={"val": 0.3, "test": 0.3})
    if message is None:
        assert prepare(spec, _store(s3), tmp_path / "w", tmp_path / "c").classes == DEFAULT_CLASSES
        return
    with pytest.raises(DataValidationError, match=message):
        prepare(spec, _store(s3), tmp_path / "w", tmp_path / "c")
    report = json.loads((tmp_path / "w" / "data" / "data_report.json").read_text())
    assert report["status"] == "failed" and report["fatal"]


def _splits(prepared) -> dict[str, str]:  # type: ignore[no-untyped-def]
    out = {}
    for split, lst in (("train", prepared.train_list), ("val", prepared.val_list), ("test", prepared.test_lists["e"])):
        out.update({Path(p).name: split for p in _lines(lst)})
    return out


def test_adding_images_moves_no_image_and_repull_downloads_only_new_objects(s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = _store(s3)
    uri = f"s3://{s3.new_bucket('grow')}/ds"
    base = EraConfig("e", 40, ["circle", "square"], (30, 30, 30), 1.0, (0.3, 0.5), 1)
    generate_dataset(tmp_path / "v1", [base], DEFAULT_CLASSES, imgsz=IMGSZ)
    upload_dataset(tmp_path / "v1", store, uri)
    spec = _spec(uri, ["e"])
    first = prepare(spec, store, tmp_path / "w1", tmp_path / "cache")
    pull1 = json.loads(first.report_path.read_text())["pull"]["e"]
    assert pull1 == {"downloaded": 80, "skipped": 0, "bytes": pull1["bytes"], "objects": 80}

    more = EraConfig("e", 8, ["circle", "square"], (30, 30, 30), 1.0, (0.3, 0.5), 1, start=40)  # +20%
    generate_era(tmp_path / "v2", more, IMGSZ, DEFAULT_CLASSES)
    upload_dataset(tmp_path / "v2", store, uri)
    second = prepare(spec, store, tmp_path / "w2", tmp_path / "cache")
    pull2 = json.loads(second.report_path.read_text())["pull"]["e"]
    assert (pull2["downloaded"], pull2["skipped"], pull2["objects"]) == (16, 80, 96)
    assert second.summary.era_hashes["e"] != first.summary.era_hashes["e"]
    listing = store.list(f"{uri}/e")
    assert second.summary.era_hashes["e"] == era_hash([(o.key, o.etag, o.size) for o in listing])

    before, after = _splits(first), _splits(second)
    assert len(before) == 40 and len(after) == 48
    assert {name: after[name] for name in before} == before
    third = prepare(spec, store, tmp_path / "w3", tmp_path / "cache")
    pull3 = json.loads(third.report_path.read_text())["pull"]["e"]
    assert (pull3["downloaded"], pull3["skipped"]) == (0, 96)
    assert third.summary.era_hashes == second.summary.era_hashes


@pytest.fixture(scope="module")
def three_eras(s3, tmp_path_factory: pytest.TempPathFactory) -> str:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("three-src")
    era1, era2 = demo_eras(images=40, seed=2, names=("e1", "e2"))
    era3 = EraConfig("e3", 30, DEFAULT_CLASSES, (120, 120, 120), 1.0, (0.2, 0.4), 9)
    generate_dataset(root, [era1, era2, era3], DEFAULT_CLASSES, imgsz=IMGSZ)
    uri = f"s3://{s3.new_bucket('three')}/ds"
    upload_dataset(root, _store(s3), uri)
    return uri


def test_incremental_replays_a_seeded_era_balanced_share(three_eras: str, s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    strategy = {"type": "incremental", "replay": {"fraction": 0.5, "seed": 3}}
    spec = _spec(three_eras, ["e1", "e2", "e3"], strategy=strategy)
    prepared = prepare(spec, _store(s3), tmp_path / "w", tmp_path / "c")
    report = json.loads(prepared.report_path.read_text())
    counts = prepared.summary.eras
    by_era = report["trainingSet"]["trainByEra"]
    assert by_era == {
        "e1": replay_count(counts["e1"]["train"], 0.5),
        "e2": replay_count(counts["e2"]["train"], 0.5),
        "e3": counts["e3"]["train"],
    }
    train = _lines(prepared.train_list)
    assert len(train) == prepared.summary.train_images == sum(by_era.values())
    assert {e: sum(f"/{e}/images/" in p for p in train) for e in ("e1", "e2", "e3")} == by_era
    assert len(_lines(prepared.val_list)) == sum(c["val"] for c in counts.values())
    again = prepare(spec, _store(s3), tmp_path / "w2", tmp_path / "c")
    assert _lines(again.train_list) == train
    other_seed = _spec(
        three_eras, ["e1", "e2", "e3"], strategy={"type": "incremental", "replay": {"fraction": 0.5, "seed": 4}}
    )
    assert _lines(prepare(other_seed, _store(s3), tmp_path / "w3", tmp_path / "c").train_list) != train

    test_all = _lines(Path(yaml.safe_load(prepared.test_yaml.read_text())["val"]))
    assert sorted(test_all) == sorted(p for lst in prepared.test_lists.values() for p in _lines(lst))
    assert prepared.test_eras == {p: e for e, lst in prepared.test_lists.items() for p in _lines(lst)}
    full = prepare(_spec(three_eras, ["e1", "e2", "e3"]), _store(s3), tmp_path / "wf", tmp_path / "c")
    assert full.summary.train_images == sum(c["train"] for c in counts.values())


def test_cli_synth_to_s3_then_prepare(s3_env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from kretrain.cli import main

    uri = f"s3://{s3_env.new_bucket('cli')}/shapes"
    assert main(["data", "synth", "--out", uri, "--images", "16", "--imgsz", str(IMGSZ), "--orphans", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["objects"] == 1 + 2 * 32 + 1
    manifest = {
        "apiVersion": "kretrain.dev/v1alpha1",
        "kind": "RetrainJob",
        "metadata": {"name": "x"},
        "spec": {"model": "m", "dataset": {"uri": uri, "eras": ["era1", "era2"], "maxBadFraction": 0.1}},
    }
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(yaml.safe_dump(manifest))
    args = [
        "data",
        "prepare",
        "--spec",
        str(spec_file),
        "--workdir",
        str(tmp_path / "w"),
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "era2" in out and "data yaml:" in out and "first labelled in new era 'era2'" in out
    manifest["spec"]["dataset"]["maxBadFraction"] = 0.0
    spec_file.write_text(yaml.safe_dump(manifest))
    assert main(args) == 1
    assert "label_without_image: 1" in capsys.readouterr().err


@pytest.mark.slow
def test_prepared_data_yaml_trains_and_test_yaml_validates(three_eras: str, s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from kretrain.trainer import offline

    offline.configure()
    from ultralytics import YOLO

    prepared = prepare(_spec(three_eras, ["e1", "e2", "e3"]), _store(s3), tmp_path / "w", tmp_path / "c")
    model = YOLO("yolov8n.yaml")
    model.train(
        data=str(prepared.data_yaml),
        epochs=1,
        imgsz=IMGSZ,
        batch=32,
        workers=0,
        plots=False,
        device="cpu",
        project=str(tmp_path / "runs"),
        name="smoke",
        exist_ok=True,
        verbose=False,
        amp=False,
        val=True,
    )
    trainer = model.trainer
    assert len(trainer.train_loader.dataset.im_files) == prepared.summary.train_images
    assert len(trainer.validator.dataloader.dataset.im_files) == len(_lines(prepared.val_list))
    seen: list[int] = []
    model.add_callback("on_val_end", lambda validator: seen.append(validator.seen))
    metrics = model.val(
        data=str(prepared.test_yaml),
        imgsz=IMGSZ,
        batch=32,
        workers=0,
        plots=False,
        device="cpu",
        project=str(tmp_path / "runs"),
        name="test",
        exist_ok=True,
        verbose=False,
    )
    assert "metrics/mAP50-95(B)" in metrics.results_dict
    assert seen == [len(prepared.test_eras)]  # every test image of every era, in one pass
