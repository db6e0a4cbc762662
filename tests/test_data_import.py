"""`kretrain data import` against a real SeaweedFS: keys, labels box by box, classes.yaml, _READY, re-runs, refusals."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
import yaml
from _import_fixtures import (
    COCO_LABELS,
    ULTRALYTICS_LABELS,
    VOC_LABELS,
    coco_dataset,
    image,
    ultralytics_dataset,
    voc_dataset,
)

from kretrain.cli import main


@pytest.fixture(scope="module")
def _import_bucket(s3) -> str:  # type: ignore[no-untyped-def]
    # One bucket for the module (each bucket is a SeaweedFS collection; the session's server has a limited number).
    return s3.new_bucket("imp")


@pytest.fixture
def bucket(_import_bucket: str) -> str:
    """`<bucket>/<fresh prefix>`: where one test's objects go (used as `s3://{bucket}/...`)."""
    return f"{_import_bucket}/{uuid.uuid4().hex[:10]}"


def objects(s3, bucket: str, prefix: str = "") -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    """Every object under `s3://{bucket}/{prefix}`: key relative to it -> content."""
    name, _, base = bucket.partition("/")
    full = f"{base}/{prefix}"
    client = s3.client()
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name, Prefix=full):
        for obj in page.get("Contents", []):
            out[obj["Key"][len(full) :]] = client.get_object(Bucket=name, Key=obj["Key"])["Body"].read()
    return out


def etags(s3, bucket: str) -> dict[str, tuple[str, object]]:  # type: ignore[no-untyped-def]
    """Key -> (ETag, LastModified) of every object under `s3://{bucket}/`."""
    name, _, base = bucket.partition("/")
    listing = s3.client().list_objects_v2(Bucket=name, Prefix=f"{base}/")["Contents"]
    return {o["Key"]: (o["ETag"], o["LastModified"]) for o in listing}


def put(s3, bucket: str, key: str, body: bytes) -> None:  # type: ignore[no-untyped-def]
    name, _, base = bucket.partition("/")
    s3.client().put_object(Bucket=name, Key=f"{base}/{key}", Body=body)


def put_classes(s3, bucket: str, names: list[str]) -> None:  # type: ignore[no-untyped-def]
    put(s3, bucket, "line/classes.yaml", yaml.safe_dump({"names": names}).encode())


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["data", "import", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_coco_import_box_by_box(s3_env, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    put_classes(s3_env, bucket, ["car", "person", "toothbrush"])
    src = coco_dataset(tmp_path / "coco")
    code, out, err = run(capsys, "--format", "coco", str(src), "--era", "e1", "--to", f"s3://{bucket}/line")
    assert code == 0, err
    got = objects(s3_env, bucket, "line/e1/")
    assert sorted(got) == sorted(
        ["images/a.png", "images/b.jpg", "images/c.png", "images/d.png", *COCO_LABELS, "_READY"]
    )
    assert {k: v.decode() for k, v in got.items() if k.startswith("labels/")} == COCO_LABELS
    assert got["images/b.jpg"] == (tmp_path / "coco" / "images" / "b.jpg").read_bytes()
    marker = json.loads(got["_READY"])
    assert (marker["format"], marker["images"], marker["boxes"]) == ("coco", 4, 4)
    # the line's class list is unchanged (every source class already in it, in another order)
    assert yaml.safe_load(objects(s3_env, bucket, "line/classes.yaml")[""]) == {
        "names": ["car", "person", "toothbrush"]
    }
    assert "skipped: crowd" in out and "4 images (1 background), 4 boxes" in out
    person = next(line for line in out.splitlines() if line.startswith("person"))
    assert person.split() == ["person", "1", "1"]  # one box kept, one crowd box skipped


def test_voc_import_first_of_a_line_with_kept_split(
    s3_env, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    src = voc_dataset(tmp_path / "voc")
    (src / "JPEGImages" / "stray.jpg").write_bytes((src / "JPEGImages" / "x1.jpg").read_bytes())
    code, out, err = run(
        capsys, "--format", "voc", str(src), "--era", "v1", "--to", f"s3://{bucket}/line", "--keep-splits"
    )
    assert code == 0, err
    got = objects(s3_env, bucket, "line/")
    assert yaml.safe_load(got["classes.yaml"]) == {"names": ["cat", "dog"]}
    era = {k.removeprefix("v1/"): v for k, v in got.items() if k.startswith("v1/")}
    assert sorted(era) == sorted(
        ["images/x1.jpg", "images/x2.jpg", "images/x3.jpg", *VOC_LABELS, "splits.yaml", "_READY"]
    )
    assert {k: v.decode() for k, v in era.items() if k.startswith("labels/")} == VOC_LABELS
    assert yaml.safe_load(era["splits.yaml"]) == {
        "version": 1,
        "train": ["images/x1.jpg"],
        "val": ["images/x2.jpg"],
        "test": ["images/x3.jpg"],
    }
    assert "skipped: difficult" in out and "kept split: train 1, val 1, test 1" in out
    assert "1 files in JPEGImages/ have no annotation XML" in out


def test_ultralytics_import_dict_names_and_lists(
    s3_env, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    put_classes(s3_env, bucket, ["dog", "cat"])
    src = ultralytics_dataset(tmp_path)
    code, _, err = run(
        capsys, "--format", "ultralytics", str(src), "--era", "u1", "--to", f"s3://{bucket}/line", "--keep-splits"
    )
    assert code == 0, err
    era = objects(s3_env, bucket, "line/u1/")
    images = ["images/train/t1.png", "images/train/t2.png", "images/val/v1.png", "images/test/s1.png"]
    assert sorted(era) == sorted([*images, *ULTRALYTICS_LABELS, "splits.yaml", "_READY"])
    assert {k: v.decode() for k, v in era.items() if k.startswith("labels/")} == ULTRALYTICS_LABELS
    splits = yaml.safe_load(era["splits.yaml"])
    assert (splits["train"], splits["val"], splits["test"]) == (images[:2], [images[2]], [images[3]])


def test_rerun_is_idempotent_and_different_content_needs_replace(
    s3_env, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    src = coco_dataset(tmp_path / "coco")
    args = ["--format", "coco", str(src), "--era", "e1", "--to", f"s3://{bucket}/line"]
    assert run(capsys, *args)[0] == 0
    before = etags(s3_env, bucket)
    code, out, _ = run(capsys, *args)
    assert code == 0 and "(unchanged)" in out and "0 objects written" in out
    after = etags(s3_env, bucket)
    assert after == before

    # change one box and drop the unannotated image: refused without --replace, nothing touched
    doc = json.loads(src.read_text())
    doc["annotations"][0]["bbox"] = [5, 3, 10, 6]
    doc["images"] = [i for i in doc["images"] if i["file_name"] != "c.png"]
    src.write_text(json.dumps(doc))
    code, _, err = run(capsys, *args)
    assert code == 1 and "already holds different content (2 objects differ" in err and "--replace" in err
    assert etags(s3_env, bucket) == before

    code, out, err = run(capsys, *args, "--replace")
    assert code == 0 and "(replaced)" in out and "1 deleted" in out, err
    era = objects(s3_env, bucket, "line/e1/")
    assert "images/c.png" not in era and "_READY" in era
    assert era["labels/a.txt"].decode().splitlines()[0] == "0 0.250000 0.200000 0.250000 0.200000"  # person is 0
    assert json.loads(era["_READY"])["images"] == 3


def test_failure_mid_import_leaves_no_ready_and_nothing_written(
    s3_env, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    src = coco_dataset(tmp_path / "coco")
    doc = json.loads(src.read_text())
    # many good images first, so the import is already writing when it reaches the undecodable one
    for i in range(40):
        image(tmp_path / "coco" / "images" / f"z{i:02d}.png", 20, 20, seed=1000 + i)
        doc["images"].append({"id": 100 + i, "file_name": f"z{i:02d}.png"})
    (tmp_path / "coco" / "images" / "z30.png").write_bytes(b"not an image at all")
    src.write_text(json.dumps(doc))
    args = ["--format", "coco", str(src), "--era", "e1", "--to", f"s3://{bucket}/line", "--workers", "2"]
    code, _, err = run(capsys, *args)
    assert code == 1 and "z30.png: not a readable image" in err
    assert objects(s3_env, bucket) == {}  # no _READY, no half era, no classes.yaml
    # fixed, the re-run completes
    image(tmp_path / "coco" / "images" / "z30.png", 20, 20, seed=1030)
    assert run(capsys, *args)[0] == 0
    assert "_READY" in objects(s3_env, bucket, "line/e1/")


def test_interrupted_import_is_resumed_without_replace(
    s3_env, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    put_classes(s3_env, bucket, ["car", "person", "toothbrush"])
    src = coco_dataset(tmp_path / "coco")
    # what a killed import leaves: some objects, one of them stale, and no _READY
    put(s3_env, bucket, "line/e1/images/a.png", (tmp_path / "coco/images/a.png").read_bytes())
    put(s3_env, bucket, "line/e1/labels/a.txt", b"0 0.5 0.5 0.1 0.1\n")
    code, out, err = run(capsys, "--format", "coco", str(src), "--era", "e1", "--to", f"s3://{bucket}/line")
    assert code == 0 and "(resumed)" in out, err
    era = objects(s3_env, bucket, "line/e1/")
    assert era["labels/a.txt"].decode() == COCO_LABELS["labels/a.txt"] and "_READY" in era


def test_import_from_s3_source_with_splits_per_file(
    s3_env, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    put_classes(s3_env, bucket, ["car", "person", "toothbrush"])
    src = coco_dataset(tmp_path / "coco")
    doc = json.loads(src.read_text())
    test_doc = {**doc, "images": [i for i in doc["images"] if i["id"] == 4], "annotations": [doc["annotations"][-1]]}
    train_doc = {**doc, "images": [i for i in doc["images"] if i["id"] != 4], "annotations": doc["annotations"][:-1]}
    (tmp_path / "coco" / "train.json").write_text(json.dumps(train_doc))
    (tmp_path / "coco" / "test.json").write_text(json.dumps(test_doc))
    src.unlink()
    for path in (tmp_path / "coco").rglob("*"):
        if path.is_file():
            put(s3_env, bucket, f"src/{path.relative_to(tmp_path / 'coco')}", path.read_bytes())
    code, _, err = run(
        capsys,
        "--format",
        "coco",
        f"train=s3://{bucket}/src/train.json",
        f"test=s3://{bucket}/src/test.json",
        "--era",
        "e1",
        "--to",
        f"s3://{bucket}/line",
        "--keep-splits",
    )
    assert code == 0, err
    era = objects(s3_env, bucket, "line/e1/")
    assert {k: v.decode() for k, v in era.items() if k.startswith("labels/")} == COCO_LABELS
    splits = yaml.safe_load(era["splits.yaml"])
    assert splits["test"] == ["images/d.png"] and splits["val"] == [] and len(splits["train"]) == 3


def test_new_class_appended_only_when_allowed(
    s3_env, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    put_classes(s3_env, bucket, ["car", "person"])
    src = coco_dataset(tmp_path / "coco")
    args = ["--format", "coco", str(src), "--era", "e1", "--to", f"s3://{bucket}/line"]
    code, _, err = run(capsys, *args)
    assert code == 1 and "'toothbrush'" in err and "--allow-new-classes" in err
    assert sorted(objects(s3_env, bucket)) == ["line/classes.yaml"]
    code, out, err = run(capsys, *args, "--allow-new-classes")
    assert code == 0 and "new classes appended to classes.yaml: toothbrush" in out, err
    assert yaml.safe_load(objects(s3_env, bucket, "line/classes.yaml")[""])["names"] == ["car", "person", "toothbrush"]
    assert objects(s3_env, bucket, "line/e1/labels/b.txt")[""].startswith(b"2 ")


def _coco_edit(root: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    src = coco_dataset(root)
    doc = json.loads(src.read_text())
    edit(doc)
    src.write_text(json.dumps(doc))
    return src


def _set(doc: dict, path: tuple, value: object) -> None:
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


COCO_REFUSALS = [
    ("missing-image", lambda d: _set(d, ("images", 0, "file_name"), "gone.png"), "image id 1: 'gone.png' not found"),
    ("box-outside", lambda d: _set(d, ("annotations", 1, "bbox"), [30, 10, 20, 20]), "annotation id 11 on a.png"),
    (
        "unknown-category",
        lambda d: _set(d, ("annotations", 0, "category_id"), 7),
        "annotation id 10: unknown category id 7",
    ),
    ("unknown-image-id", lambda d: _set(d, ("annotations", 0, "image_id"), 99), "image_id 99 is not in images"),
    ("traversal", lambda d: _set(d, ("images", 0, "file_name"), "../../etc/passwd"), "path traversal"),
    ("control-char", lambda d: _set(d, ("images", 0, "file_name"), "a\r.png"), "U+000D"),
    ("bbox-not-4", lambda d: _set(d, ("annotations", 0, "bbox"), [1, 2, 3]), "annotations.0.bbox"),
    ("no-categories", lambda d: _set(d, ("categories",), []), "categories"),
    (
        "wrong-size",
        lambda d: _set(d, ("images", 0, "width"), 41),
        "a.png is 40x30 pixels but the annotation says 41x30",
    ),
    ("image-twice", lambda d: d["images"].append({**d["images"][0], "id": 77}), "a.png is listed twice"),
    (
        "typo-class",
        lambda d: _set(d, ("categories", 1, "name"), "Car"),
        "likely typos: 'Car' (id 3) vs the line's 'car'",
    ),
]


@pytest.mark.parametrize(("edit", "message"), [c[1:] for c in COCO_REFUSALS], ids=[c[0] for c in COCO_REFUSALS])
def test_coco_refusals_name_the_file_and_write_nothing(
    s3_env, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit, message: str
) -> None:  # type: ignore[no-untyped-def]
    put_classes(s3_env, bucket, ["car", "person", "toothbrush"])
    src = _coco_edit(tmp_path / "coco", edit)
    code, _, err = run(capsys, "--format", "coco", str(src), "--era", "e1", "--to", f"s3://{bucket}/line")
    assert code == 1
    assert message in err and ("annotations.json" in err or "a.png" in err)
    assert sorted(objects(s3_env, bucket)) == ["line/classes.yaml"]


def _bad_json(root: Path) -> Path:
    src = coco_dataset(root)
    src.write_text(src.read_text()[:-5])
    return src


def _voc_with(root: Path, xml: str) -> Path:
    src = voc_dataset(root)
    (src / "Annotations" / "x2.xml").write_text(xml)
    return src


def _yolo_label(root: Path, text: str) -> Path:
    src = ultralytics_dataset(root)
    (root / "ds" / "labels" / "train" / "t1.txt").write_text(text)
    return src


OTHER_REFUSALS = [
    ("coco-malformed-json", "coco", _bad_json, "annotations.json: not valid JSON"),
    (
        "voc-entity-bomb",
        "voc",
        lambda r: _voc_with(r, '<!DOCTYPE a [<!ENTITY x "xx"><!ENTITY y "&x;&x;">]><annotation>&y;</annotation>'),
        "x2.xml: not valid XML",
    ),
    ("voc-malformed-xml", "voc", lambda r: _voc_with(r, "<annotation><object>"), "x2.xml: not valid XML"),
    (
        "voc-box-outside",
        "voc",
        lambda r: _voc_with(
            r,
            "<annotation><filename>x2.jpg</filename><object><name>cat</name><bndbox><xmin>1</xmin>"
            "<ymin>1</ymin><xmax>90</xmax><ymax>20</ymax></bndbox></object></annotation>",
        ),
        "x2.xml: JPEGImages/x2.jpg object 1 (cat): box",
    ),
    (
        "voc-not-a-number",
        "voc",
        lambda r: _voc_with(
            r, "<annotation><object><name>cat</name><bndbox><xmin>a</xmin></bndbox></object></annotation>"
        ),
        "<bndbox/xmin> is not a finite number",
    ),
    ("yolo-bad-line", "ultralytics", lambda r: _yolo_label(r, "0 0.5 0.5\n"), "t1.txt line 1: expected"),
    (
        "voc-inf-size",
        "voc",
        lambda r: _voc_with(r, "<annotation><size><width>1e999</width><height>1</height></size></annotation>"),
        "<size/width> is not a finite number",
    ),
    ("yolo-nan", "ultralytics", lambda r: _yolo_label(r, "nan 0.5 0.5 0.1 0.1\n"), "t1.txt line 1: not a finite"),
    ("yolo-inf", "ultralytics", lambda r: _yolo_label(r, "0 1e400 0.5 0.1 0.1\n"), "t1.txt line 1: not a finite"),
    ("yolo-unknown-id", "ultralytics", lambda r: _yolo_label(r, "5 0.5 0.5 0.1 0.1\n"), "t1.txt line 1: class id '5'"),
    ("yolo-box-outside", "ultralytics", lambda r: _yolo_label(r, "0 0.95 0.5 0.2 0.2\n"), "t1.txt line 1: box"),
]


@pytest.mark.parametrize(
    ("fmt", "build", "message"), [c[1:] for c in OTHER_REFUSALS], ids=[c[0] for c in OTHER_REFUSALS]
)
def test_voc_and_ultralytics_refusals(
    s3_env, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str, build, message: str
) -> None:  # type: ignore[no-untyped-def]
    src = build(tmp_path)
    code, _, err = run(capsys, "--format", fmt, str(src), "--era", "e1", "--to", f"s3://{bucket}/line")
    assert code == 1 and message in err, err
    assert objects(s3_env, bucket) == {}


def test_bad_era_name_and_local_target_refused(
    s3_env, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    src = coco_dataset(tmp_path / "coco")
    code, _, err = run(capsys, "--format", "coco", str(src), "--era", "../x", "--to", f"s3://{bucket}/line")
    assert code == 1 and "era name '../x'" in err
    code, _, err = run(capsys, "--format", "coco", str(src), "--era", "e1", "--to", str(tmp_path / "out"))
    assert code == 2 and "--to must be an s3://" in err
    code, _, err = run(capsys, "--format", "coco", str(src), "--era", "e1", "--to", "s3://no-such-bucket-d19/line")
    assert code == 1 and err.startswith("import failed:") and "Traceback" not in err
    shutil.rmtree(tmp_path / "coco")
    code, _, err = run(capsys, "--format", "coco", str(src), "--era", "e1", "--to", f"s3://{bucket}/line")
    assert code == 1 and "annotations.json: not found" in err


@pytest.mark.parametrize("fmt", ["ultralytics", "voc"])
def test_import_from_s3_source(
    s3_env, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:  # type: ignore[no-untyped-def]
    if fmt == "ultralytics":
        put_classes(s3_env, bucket, ["dog", "cat"])
        ultralytics_dataset(tmp_path / "src")
        source, expected = f"s3://{bucket}/src/data.yaml", ULTRALYTICS_LABELS
    else:
        voc_dataset(tmp_path / "src")
        source, expected = f"s3://{bucket}/src", VOC_LABELS
    for path in (tmp_path / "src").rglob("*"):
        if path.is_file():
            put(s3_env, bucket, f"src/{path.relative_to(tmp_path / 'src')}", path.read_bytes())
    code, _, err = run(capsys, "--format", fmt, source, "--era", "e1", "--to", f"s3://{bucket}/line")
    assert code == 0, err
    era = objects(s3_env, bucket, "line/e1/")
    assert {k: v.decode() for k, v in era.items() if k.startswith("labels/")} == expected and "_READY" in era


def test_coco_images_dir_subfolders_and_every_problem_listed(
    s3_env, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    src = coco_dataset(tmp_path / "coco")
    pics = tmp_path / "pics"
    shutil.move(tmp_path / "coco" / "images", pics / "sub")
    doc = json.loads(src.read_text())
    for img in doc["images"]:
        img["file_name"] = f"sub/{img['file_name']}"
    (tmp_path / "ann").mkdir()
    ann = tmp_path / "ann" / "export.json"
    ann.write_text(json.dumps(doc))
    args = ["--format", "coco", str(ann), "--era", "e1", "--to", f"s3://{bucket}/line"]
    code, _, err = run(capsys, *args)
    assert code == 1 and "'sub/a.png' not found (looked for" in err and "ann/images/sub/a.png" in err
    assert "4 problems in" in err  # every missing image is listed, not only the first
    code, _, err = run(capsys, *args, "--images", str(pics))
    assert code == 0, err
    assert sorted(k for k in objects(s3_env, bucket, "line/e1/") if k.startswith("images/")) == [
        "images/sub/a.png",
        "images/sub/b.jpg",
        "images/sub/c.png",
        "images/sub/d.png",
    ]


def _ultra_yaml(root: Path, **changes: object) -> Path:
    src = ultralytics_dataset(root)
    doc = yaml.safe_load(src.read_text())
    doc.update(changes)
    src.write_text(yaml.safe_dump(doc))
    return src


def _voc_size(root: Path) -> Path:
    src = voc_dataset(root)
    xml = (src / "Annotations" / "x3.xml").read_text().replace("<width>40</width>", "<width>41</width>")
    (src / "Annotations" / "x3.xml").write_text(xml)
    return src


def _voc_missing_image(root: Path) -> Path:
    src = voc_dataset(root)
    (src / "JPEGImages" / "x3.jpg").unlink()
    return src


MORE_REFUSALS = [
    ("yolo-in-two-splits", "ultralytics", lambda r: _ultra_yaml(r, val=["val.txt", "images/train"]), "listed in both"),
    ("yolo-nc-mismatch", "ultralytics", lambda r: _ultra_yaml(r, nc=3), "nc is 3 but `names` has 2"),
    ("yolo-no-names", "ultralytics", lambda r: _ultra_yaml(r, names="cat"), "expected `names:`"),
    ("yolo-path-traversal", "ultralytics", lambda r: _ultra_yaml(r, path="../.."), "path traversal"),
    ("yolo-entry-traversal", "ultralytics", lambda r: _ultra_yaml(r, test="../../etc"), "path traversal"),
    ("voc-size-mismatch", "voc", _voc_size, "x3.jpg is 40x40 pixels but the annotation says 41x40"),
    ("voc-missing-image", "voc", _voc_missing_image, "x3.xml: image 'x3.jpg' not found"),
]


@pytest.mark.parametrize(("fmt", "build", "message"), [c[1:] for c in MORE_REFUSALS], ids=[c[0] for c in MORE_REFUSALS])
def test_more_refusals(
    s3_env, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str, build, message: str
) -> None:  # type: ignore[no-untyped-def]
    src = build(tmp_path)
    code, _, err = run(capsys, "--format", fmt, str(src), "--era", "e1", "--to", f"s3://{bucket}/line")
    assert code == 1 and message in err, err
    assert objects(s3_env, bucket) == {}


def test_an_era_whose_name_prefixes_another_leaves_that_one_alone(
    s3_env, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    put(s3_env, bucket, "line/e10/images/keep.png", b"other era")
    src = coco_dataset(tmp_path / "coco")
    args = ["--format", "coco", str(src), "--era", "e1", "--to", f"s3://{bucket}/line"]
    code, out, err = run(capsys, *args)
    assert code == 0 and "(created)" in out, err
    assert run(capsys, *args, "--replace")[1].count("(unchanged)") == 1
    assert objects(s3_env, bucket, "line/e10/") == {"images/keep.png": b"other era"}


def test_store_failure_mid_import_takes_back_what_was_written(s3_env, bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import threading
    import time

    from botocore.exceptions import ClientError

    from harness.s3proxy import FaultProxy
    from kretrain.store import ObjectStore, StoreError
    from kretrain.trainer.data_import.coco import plan_coco
    from kretrain.trainer.data_import.source import open_source
    from kretrain.trainer.data_import.writer import import_dataset

    src = coco_dataset(tmp_path / "coco")
    doc = json.loads(src.read_text())
    for i in range(40):
        image(tmp_path / "coco" / "images" / f"z{i:02d}.png", 20, 20, seed=2000 + i)
        doc["images"].append({"id": 100 + i, "file_name": f"z{i:02d}.png"})
    src.write_text(json.dumps(doc))
    with FaultProxy(s3_env.endpoint) as proxy:
        store = ObjectStore(
            endpoint_url=proxy.endpoint,
            access_key=s3_env.server.access_key,
            secret_key=s3_env.server.secret_key,
            max_workers=2,
            max_attempts=1,
        )

        def arm() -> None:  # from the 10th PUT on, the server answers 500 to every PUT
            while proxy.requests["PUT"] < 10:
                time.sleep(0.002)
            proxy.fail_next(*["500"] * 1000, method="PUT")

        armer = threading.Thread(target=arm, daemon=True)
        armer.start()
        tree, name = open_source(str(src), None)
        with pytest.raises((ClientError, StoreError), match="InternalError"):
            import_dataset(
                plan_coco([(tree, name, None)], None, str(src)), store, f"s3://{bucket}/line", "e1", workers=2
            )
        armer.join(5)
        assert proxy.requests["PUT"] >= 10 and proxy.requests["DELETE"] >= 9  # it had written, then took it back
    assert objects(s3_env, bucket) == {}  # no _READY, no half era, no classes.yaml


def test_a_failed_replace_leaves_the_era_marked_importing_until_a_rerun_finishes_it(
    s3_env, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    import threading
    import time

    from botocore.exceptions import ClientError

    from harness.s3proxy import FaultProxy
    from kretrain.store import ObjectStore, StoreError
    from kretrain.trainer.data_import.coco import plan_coco
    from kretrain.trainer.data_import.source import open_source
    from kretrain.trainer.data_import.writer import import_dataset

    src = coco_dataset(tmp_path / "coco")
    doc = json.loads(src.read_text())
    for i in range(30):
        doc["images"].append({"id": 100 + i, "file_name": f"z{i:02d}.png"})
        image(tmp_path / "coco" / "images" / f"z{i:02d}.png", 20, 20, seed=3000 + i)
    src.write_text(json.dumps(doc))
    args = ["--format", "coco", str(src), "--era", "e1", "--to", f"s3://{bucket}/line"]
    assert run(capsys, *args)[0] == 0
    for i in range(30):  # new content for every z image: a replacement with 30 changed objects
        image(tmp_path / "coco" / "images" / f"z{i:02d}.png", 20, 20, seed=4000 + i)
    with FaultProxy(s3_env.endpoint) as proxy:
        store = ObjectStore(
            endpoint_url=proxy.endpoint,
            access_key=s3_env.server.access_key,
            secret_key=s3_env.server.secret_key,
            max_workers=2,
            max_attempts=1,
        )

        def arm() -> None:  # _IMPORTING and one image get through, then every PUT fails
            while proxy.requests["PUT"] < 2:
                time.sleep(0.001)
            proxy.fail_next(*["500"] * 1000, method="PUT")

        armer = threading.Thread(target=arm, daemon=True)
        armer.start()
        tree, name = open_source(str(src), None)
        plan = plan_coco([(tree, name, None)], None, str(src))
        with pytest.raises((ClientError, StoreError), match="InternalError"):
            import_dataset(plan, store, f"s3://{bucket}/line", "e1", replace=True, workers=2)
        armer.join(5)
    era = objects(s3_env, bucket, "line/e1/")
    assert "_IMPORTING" in era and "_READY" not in era  # the half-replaced era says so
    code, out, err = run(capsys, *args)  # no --replace needed: the era is not complete
    assert code == 0 and "(resumed)" in out, err
    era = objects(s3_env, bucket, "line/e1/")
    assert "_READY" in era and "_IMPORTING" not in era
    assert era["images/z29.png"] == (tmp_path / "coco" / "images" / "z29.png").read_bytes()


def test_check_era_settled_sees_imports_and_replacements(
    s3_env, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    from harness.s3proxy import FaultProxy
    from kretrain.store import ObjectStore
    from kretrain.trainer.data_import.markers import EraBeingWritten, check_era_settled

    src = coco_dataset(tmp_path / "coco")
    assert run(capsys, "--format", "coco", str(src), "--era", "e1", "--to", f"s3://{bucket}/line")[0] == 0
    era_uri = f"s3://{bucket}/line/e1"
    with FaultProxy(s3_env.endpoint) as proxy:
        store = ObjectStore(
            endpoint_url=proxy.endpoint, access_key=s3_env.server.access_key, secret_key=s3_env.server.secret_key
        )
        listed = {o.key: o.etag for o in store.list(era_uri)}
        check_era_settled(store, era_uri, listed)  # settled: nothing changed since the listing
        before = sum(proxy.requests.values())
        check_era_settled(store, f"s3://{bucket}/line/legacy", {"images/a.png": "x"})
        assert sum(proxy.requests.values()) == before  # an era without markers costs no request
        with pytest.raises(EraBeingWritten, match="_IMPORTING exists"):
            check_era_settled(store, era_uri, {**listed, "_IMPORTING": "x"})
        put(s3_env, bucket, "line/e1/_READY", b'{"other": "import"}')
        with pytest.raises(EraBeingWritten, match="was replaced while it was read"):
            check_era_settled(store, era_uri, listed)
