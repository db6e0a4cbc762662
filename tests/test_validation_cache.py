"""The validation cache on real SeaweedFS: identical outcomes, only changed objects inspected, stale or hostile files ignored."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from kretrain.api import RetrainJobSpec
from kretrain.store import ObjectStore, join_uri
from kretrain.trainer.data import inspection, vcache
from kretrain.trainer.data.prepare import prepare, prepare_pulled
from kretrain.trainer.data.pull import pull_dataset
from kretrain.trainer.data.vcache import CACHE_DIR_NAME, ValidationCache, validator_version
from kretrain.trainer.synthetic import DEFAULT_CLASSES, Defects, demo_eras, generate_dataset

ERAS = ["era1", "era2"]


def _store(s3) -> ObjectStore:  # type: ignore[no-untyped-def]
    return ObjectStore(
        endpoint_url=s3.endpoint, region="us-east-1", access_key=s3.server.access_key, secret_key=s3.server.secret_key
    )


def _spec(uri: str) -> RetrainJobSpec:
    return RetrainJobSpec.model_validate(
        {"model": "m", "dataset": {"uri": uri, "eras": ERAS, "maxBadFraction": 0.5}, "strategy": {"type": "full"}}
    )


@pytest.fixture()
def dataset(s3, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    """Two small eras, the second with corrupt images, bad labels, an orphan label and a copy of an era1 image."""
    root = tmp_path / "src"
    era1, era2 = demo_eras(images=16, seed=3)
    era2.defects = Defects(corrupt_images=2, bad_label_lines=1, out_of_range_ids=1, bad_boxes=2, orphan_labels=1)
    generate_dataset(root, [era1, era2], DEFAULT_CLASSES, imgsz=32)
    shutil.copyfile(root / "era1/images/era1_000003.png", root / "era2/images/zz_copy.png")
    shutil.copyfile(root / "era1/labels/era1_000003.txt", root / "era2/labels/zz_copy.txt")
    uri = f"s3://{s3.new_bucket('vc')}/shapes"
    _store(s3).upload_dir(root, uri)
    return uri


def _outcome(prepared) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Everything that must not depend on the cache: statistics, every list, every finding, counts."""
    report = json.loads(prepared.report_path.read_text())
    lists = {p.name: p.read_bytes() for p in sorted(prepared.report_path.parent.glob("*.txt"))}
    keep = ("findings", "counts", "excluded", "newClasses", "badItems", "items", "summary", "trainingSet")
    doc = {k: report[k] for k in keep}
    for k in ("dataYaml", "testYaml"):
        doc["trainingSet"].pop(k)  # type: ignore[attr-defined]
    return {"stats": prepared.stats_path.read_bytes(), "lists": lists, "report": doc}


def _run(spec: RetrainJobSpec, s3, tmp_path: Path, name: str) -> tuple[dict[str, object], dict[str, int]]:  # type: ignore[no-untyped-def]
    prepared = prepare(spec, _store(s3), tmp_path / name, tmp_path / "cache", chart=False)
    report = json.loads(prepared.report_path.read_text())
    return _outcome(prepared), report["validationCache"]


def test_cached_run_equals_uncached_and_inspects_nothing(dataset: str, s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec = _spec(dataset)
    cold, cold_cache = _run(spec, s3, tmp_path, "w1")
    warm, warm_cache = _run(spec, s3, tmp_path, "w2")
    pulled = pull_dataset(spec.dataset, _store(s3), tmp_path / "cache")
    uncached = _outcome(prepare_pulled(spec, pulled, tmp_path / "w3", chart=False))
    images = 16 + 16 + 1
    assert (cold_cache["hits"], cold_cache["misses"]) == (0, images)
    assert (warm_cache["hits"], warm_cache["misses"], warm_cache["ignoredFiles"]) == (images, 0, 0)
    assert warm == cold == uncached
    codes = {f["code"] for f in warm["report"]["findings"]}  # type: ignore[index]
    assert {"undecodable_image", "malformed_label", "class_out_of_range", "duplicate_across_eras"} <= codes


def _replace_image(s3, uri: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "cache" / uri.removeprefix("s3://") / "era1/images/era1_000001.png"
    _store(s3).put_bytes(join_uri(uri, "era2/images/era2_000010.png"), good.read_bytes())


def _replace_label(s3, uri: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _store(s3).put_bytes(join_uri(uri, "era2/labels/era2_000011.txt"), b"9 0.5 0.5 0.1 0.1\n")


def _delete_label(s3, uri: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _store(s3).delete(join_uri(uri, "era2/labels/era2_000012.txt"))


@pytest.mark.parametrize(
    ("change", "misses"),
    [(_replace_image, 1), (_replace_label, 1), (_delete_label, 1)],
    ids=["image-replaced", "label-replaced", "label-deleted"],
)
def test_a_changed_object_is_inspected_again(  # type: ignore[no-untyped-def]
    dataset: str, s3, tmp_path: Path, change: Callable[..., None], misses: int
) -> None:
    spec = _spec(dataset)
    _run(spec, s3, tmp_path, "w1")
    change(s3, dataset, tmp_path)
    after, stats = _run(spec, s3, tmp_path, "w2")
    assert (stats["misses"], stats["hits"]) == (misses, 16 + 16 + 1 - misses)
    fresh = _outcome(prepare_pulled(spec, pull_dataset(spec.dataset, _store(s3), tmp_path / "cache"), tmp_path / "w3"))
    assert after == fresh


def _bump_revision(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(vcache, "RULES_REVISION", vcache.RULES_REVISION + 1)


def _change_min_side(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(inspection, "MIN_IMAGE_SIDE", inspection.MIN_IMAGE_SIDE + 1)


def _change_tolerance(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(inspection, "BOX_TOLERANCE", 2e-3)


def _change_pillow(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(vcache.PIL, "__version__", "0.0.1")


@pytest.mark.parametrize(
    "change",
    [_bump_revision, _change_min_side, _change_tolerance, _change_pillow],
    ids=["rules-revision", "inspection-constant", "box-tolerance", "pillow-version"],
)
def test_validator_version_follows_the_rules(change: Callable[[pytest.MonkeyPatch], None]) -> None:
    before = validator_version()
    with pytest.MonkeyPatch.context() as mp:
        validator_version.cache_clear()
        change(mp)
        changed = validator_version()
        validator_version.cache_clear()
    assert changed != before and validator_version() == before


def test_new_rules_invalidate_every_era(dataset: str, s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    spec = _spec(dataset)
    cold, _ = _run(spec, s3, tmp_path, "w1")
    monkeypatch.setattr(vcache, "RULES_REVISION", vcache.RULES_REVISION + 1)
    validator_version.cache_clear()
    try:
        again, stats = _run(spec, s3, tmp_path, "w2")
    finally:
        monkeypatch.undo()
        validator_version.cache_clear()
    assert (stats["hits"], stats["misses"], stats["ignoredFiles"]) == (0, 33, 2)
    assert again == cold


def _entry_doc(cache: ValidationCache, **override: object) -> dict[str, object]:
    """A valid one-image cache file (columns as in EraValidationCache), with fields replaced."""
    doc: dict[str, object] = {
        "version": cache.version,
        "classes": 4,
        "keys": ["images/a.png"],
        "imageEtags": ["e"],
        "imageSizes": [1],
        "labelEtags": ["l"],
        "labelSizes": [2],
        "sha": ["0" * 32],
        "width": [32],
        "height": [32],
        "brightness": [1.5],
        "boxCounts": [1],
        "boxClasses": [3],
        "boxCoords": [0.5, 0.25, 0.125, 0.1],
        "problems": {},
    }
    doc.update(override)
    return doc


def _json(c: ValidationCache, **override: object) -> bytes:
    return json.dumps(_entry_doc(c, **override)).encode()


BOXES = 1001
HOSTILE: list[tuple[str, Callable[[ValidationCache], bytes]]] = [
    ("garbage", lambda c: b"\x00\xffnot json"),
    ("truncated", lambda c: _json(c)[:-7]),
    ("a list", lambda c: b"[1, 2, 3]"),
    ("extra field", lambda c: _json(c, path="/etc/passwd")),
    ("stale version", lambda c: _json(c, version="old")),
    ("other class count", lambda c: _json(c, classes=5)),
    ("negative size", lambda c: _json(c, imageSizes=[-1])),
    ("long sha", lambda c: _json(c, sha=["0" * 33])),
    ("key too long", lambda c: _json(c, keys=["k" * 5000])),
    (
        "too many boxes",
        lambda c: _json(c, boxCounts=[BOXES], boxClasses=[0] * BOXES, boxCoords=[0.5] * 4 * BOXES),
    ),
    ("negative class", lambda c: _json(c, boxClasses=[-1])),
    ("odd problem code", lambda c: _json(c, problems={"0": [["x; rm -rf", "m"]]})),
    ("huge message", lambda c: _json(c, problems={"0": [["a", "m" * 3000]]})),
    ("many problems", lambda c: _json(c, problems={"0": [["a", "m"]] * 100})),
    ("problem index out of range", lambda c: _json(c, problems={"7": [["a", "m"]]})),
    ("columns differ in length", lambda c: _json(c, width=[32, 32])),
    ("box columns disagree", lambda c: _json(c, boxCounts=[2])),
    ("coordinates missing", lambda c: _json(c, boxCoords=[0.5])),
    (
        "a key twice",
        lambda c: json.dumps({k: v * 2 if isinstance(v, list) else v for k, v in _entry_doc(c).items()}).encode(),
    ),
    ("over the size cap", lambda c: b" " * (vcache.MAX_CACHE_FILE_BYTES + 1)),
]


@pytest.mark.parametrize(("name", "make"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_corrupt_or_stale_cache_file_is_ignored(
    name: str, make: Callable[[ValidationCache], bytes], tmp_path: Path
) -> None:
    cache = ValidationCache(tmp_path, "s3://b/d", 4)
    cache.path("era1").parent.mkdir(parents=True, exist_ok=True)
    cache.path("era1").write_bytes(make(cache))
    entries = cache.load("era1")
    assert len(entries) == 0 and entries.get("images/a.png", ("e", 1, "l", 2)) is None
    assert cache.stats["ignoredFiles"] == 1


def test_a_well_formed_file_answers_only_the_same_objects(tmp_path: Path) -> None:
    cache = ValidationCache(tmp_path, "s3://b/d", 4)
    cache.path("era1").parent.mkdir(parents=True, exist_ok=True)
    cache.path("era1").write_bytes(_json(cache, problems={"0": [["zero_area_box", "line 2: ..."]]}))
    entries = cache.load("era1")
    expected = ("0" * 32, 32, 32, 1.5, [(3, 0.5, 0.25, 0.125, 0.1)], [("zero_area_box", "line 2: ...")])
    assert entries.get("images/a.png", ("e", 1, "l", 2)) == expected
    for other in [("e", 1, None, None), ("e2", 1, "l", 2), ("e", 2, "l", 2), ("e", 1, "l2", 2), ("e", 1, "l", 3)]:
        assert entries.get("images/a.png", other) is None
    assert entries.get("images/b.png", ("e", 1, "l", 2)) is None


def test_cache_files_are_named_by_digest(tmp_path: Path) -> None:
    cache = ValidationCache(tmp_path, "s3://b/d", 4)
    assert cache.path("../../etc").parent == tmp_path and cache.path("../../etc").name.endswith(".json")
    assert len({cache.path(e) for e in ("era1", "era2", "../era1")}) == 3
    assert ValidationCache(tmp_path, "s3://b/other", 4).path("era1") != cache.path("era1")


def test_garbage_in_the_cache_folder_only_costs_a_re_inspection(dataset: str, s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec = _spec(dataset)
    cold, _ = _run(spec, s3, tmp_path, "w1")
    for f in (tmp_path / "cache" / CACHE_DIR_NAME).glob("*.json"):
        f.write_bytes(b"{garbage")
    again, stats = _run(spec, s3, tmp_path, "w2")
    assert (stats["hits"], stats["ignoredFiles"]) == (0, 2) and again == cold
    third, stats = _run(spec, s3, tmp_path, "w3")
    assert stats["hits"] == 33 and third == cold


@pytest.mark.parametrize(
    ("problems", "cached"),
    [
        ([], True),
        ([("undecodable_image", "image does not decode: not a recognised image format")], True),
        ([("undecodable_image", f"{inspection.READ_ERROR} [Errno 5] Input/output error")], False),
        ([("malformed_label", f"{inspection.LABEL_READ_ERROR} [Errno 13] Permission denied")], False),
        ([("malformed_label", "m")] * (vcache.MAX_PROBLEMS + 1), False),
        ([("Not A Code", "m")], False),
    ],
    ids=["clean", "undecodable", "image-read-error", "label-read-error", "too-many-problems", "odd-code"],
)
def test_what_is_cached(tmp_path: Path, problems: list[tuple[str, str]], cached: bool) -> None:
    cache = ValidationCache(tmp_path, "s3://b/d", 4)
    ident = ("e", 1, None, None)
    result = ("", 0, 0, math.nan, [], problems) if problems else ("0" * 32, 32, 32, 9.0, [(0, 0.5, 0.5, 0.1, 0.1)], [])
    cache.save("era1", [("images/a.png", ident, result)])
    got = cache.load("era1").get("images/a.png", ident)
    assert (got is not None) == cached
    if got is not None:
        assert got[1:3] == result[1:3] and got[4:] == result[4:] and got[0] == result[0]
