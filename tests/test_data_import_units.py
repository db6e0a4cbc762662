"""Pure parts of `kretrain data import`: box geometry, class mapping by name, name checks, split manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from kretrain.trainer.data_import.classmap import ClassMapError, map_classes
from kretrain.trainer.data_import.errors import ImportInputError
from kretrain.trainer.data_import.geometry import BoxError, coco_to_yolo, polygon_to_yolo, voc_to_yolo, yolo_to_yolo
from kretrain.trainer.data_import.names import name_problem
from kretrain.trainer.data_import.splits import EraSplits, read_era_splits, split_with_override, splits_document
from kretrain.trainer.data_import.ultralytics import era_key_for, label_rel_for
from kretrain.trainer.data_import.voc import parse_xml


def _close(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(abs(x - y) < 1e-9 for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("bbox", "size", "expected"),
    [
        ((4, 3, 10, 6), (40, 30), (0.225, 0.2, 0.25, 0.2)),
        ((0, 0, 64, 48), (64, 48), (0.5, 0.5, 1.0, 1.0)),
        ((20, 10, 20, 20), (40, 30), (0.75, 20 / 30, 0.5, 20 / 30)),
        # sticks out by 0.5 px on the right and bottom: clipped to the image
        ((45, 40, 5.5, 10.5), (50, 50), (0.95, 0.9, 0.1, 0.2)),
        ((-0.5, 0, 10, 10), (20, 20), (4.75 / 20, 0.25, 9.5 / 20, 0.5)),
    ],
    ids=["small", "whole-image", "non-square-image", "clip-overshoot", "clip-negative"],
)
def test_coco_to_yolo(bbox: tuple, size: tuple[int, int], expected: tuple[float, ...]) -> None:
    assert _close(coco_to_yolo(bbox, *size), expected)


@pytest.mark.parametrize(
    ("bbox", "size", "message"),
    [
        ((30, 0, 20, 10), (40, 30), "extends outside"),
        ((0, -5, 10, 10), (40, 30), "extends outside"),
        ((0, 0, 0, 10), (40, 30), "zero or negative"),
        ((0, 0, 10, -1), (40, 30), "zero or negative"),
        ((float("nan"), 0, 10, 10), (40, 30), "finite"),
        ((0, 0, float("inf"), 10), (40, 30), "finite"),
    ],
    ids=["right-of-image", "above-image", "zero-width", "negative-height", "nan", "inf"],
)
def test_coco_to_yolo_refuses(bbox: tuple, size: tuple[int, int], message: str) -> None:
    with pytest.raises(BoxError, match=message):
        coco_to_yolo(bbox, *size)


@pytest.mark.parametrize(
    ("box", "size", "expected"),
    [
        # Ultralytics: cx = (xmin + xmax) / 2 - 1, w = xmax - xmin
        ((11, 21, 31, 41), (100, 50), (0.2, 0.6, 0.2, 0.4)),
        ((1, 1, 101, 51), (100, 50), (0.5, 0.5, 1.0, 1.0)),
    ],
    ids=["inner", "whole-image"],
)
def test_voc_to_yolo(box: tuple, size: tuple[int, int], expected: tuple[float, ...]) -> None:
    assert _close(voc_to_yolo(*box, *size), expected)


@pytest.mark.parametrize(
    ("box", "message"),
    [((10, 10, 10, 20), "zero or negative"), ((50, 10, 140, 20), "outside"), ((30, 10, 20, 20), "zero or negative")],
    ids=["zero-width", "outside", "swapped"],
)
def test_voc_to_yolo_refuses(box: tuple, message: str) -> None:
    with pytest.raises(BoxError, match=message):
        voc_to_yolo(*box, 100, 50)


@pytest.mark.parametrize(
    ("box", "expected"),
    [((0.5, 0.5, 0.2, 0.2), (0.5, 0.5, 0.2, 0.2)), ((0.9, 0.5, 0.2008, 0.2), (0.8998, 0.5, 0.2004, 0.2))],
    ids=["inside", "clipped-rounding"],
)
def test_yolo_to_yolo(box: tuple, expected: tuple[float, ...]) -> None:
    assert yolo_to_yolo(*box) == pytest.approx(expected, abs=1e-4)
    assert max(b[0] + b[2] / 2 for b in [yolo_to_yolo(*box)]) <= 1.0


def test_polygon_to_yolo_is_its_bounding_box() -> None:
    assert _close(polygon_to_yolo([0.1, 0.2, 0.5, 0.2, 0.3, 0.6]), (0.3, 0.4, 0.4, 0.4))
    with pytest.raises(BoxError, match="even number"):
        polygon_to_yolo([0.1, 0.2, 0.3])


@pytest.mark.parametrize(
    ("line", "source", "used", "allow", "ids", "classes", "added"),
    [
        (None, {0: "a", 1: "b"}, {0}, False, {0: 0, 1: 1}, ["a", "b"], []),
        (None, {90: "z", 1: "x", 3: "y"}, {1}, False, {1: 0, 3: 1, 90: 2}, ["x", "y", "z"], []),
        (["car", "person"], {1: "person", 3: "car"}, {1, 3}, False, {1: 1, 3: 0}, ["car", "person"], []),
        (["car", "person"], {0: "car", 1: "bus"}, {0, 1}, True, {0: 0, 1: 2}, ["car", "person", "bus"], ["bus"]),
        (["car"], {0: "car", 1: "bus"}, {0}, False, {0: 0}, ["car"], []),
    ],
    ids=["first-import", "coco-non-contiguous-compacted", "reordered", "new-appended", "unused-unknown-ignored"],
)
def test_map_classes(
    line: list[str] | None,
    source: dict[int, str],
    used: set[int],
    allow: bool,
    ids: dict[int, int],
    classes: list[str],
    added: list[str],
) -> None:
    m = map_classes(line, source, used, allow_new=allow)
    assert (m.ids, m.classes, m.added) == (ids, classes, added)


@pytest.mark.parametrize(
    ("line", "source", "allow", "message"),
    [
        (["car"], {0: "Car"}, True, "only in case or whitespace, likely typos: 'Car'"),
        (["traffic light"], {0: "traffic  light"}, True, "likely typos"),
        (["car"], {0: "bus"}, False, "--allow-new-classes"),
        (None, {0: "car", 1: "car"}, False, "is repeated"),
        (None, {0: "car", 1: "CAR"}, False, "differs from 'car' only in case"),
        (None, {0: " car"}, False, "leading/trailing whitespace"),
        (None, {0: ""}, False, "has no name"),
    ],
    ids=["case-typo", "whitespace-typo", "new-without-flag", "repeated", "source-case-clash", "padded", "empty"],
)
def test_map_classes_refuses(line: list[str] | None, source: dict[int, str], allow: bool, message: str) -> None:
    with pytest.raises(ClassMapError, match=message):
        map_classes(line, source, set(source), allow_new=allow)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("a/b.jpg", None),
        ("ünïcode café.jpg", None),
        ("../x.jpg", "path traversal"),
        ("a/../../x.jpg", "path traversal"),
        ("/etc/passwd", "absolute"),
        ("a\\b.jpg", "backslash"),
        ("C:x.jpg", "drive letter"),
        ("a\nb.jpg", "U+000A"),
        ("a\x00b.jpg", "U+0000"),
        ("evil\u202egpj.exe", "U+202E"),
        ("a\u2028b.jpg", "U+2028"),
        ("private\ue000use.jpg", None),
        ("a//b.jpg", "empty"),
        ("", "empty"),
        ("x" * 2000, "longer than"),
    ],
    ids=[
        "plain",
        "unicode",
        "dotdot",
        "nested-dotdot",
        "absolute",
        "backslash",
        "drive",
        "newline",
        "nul",
        "bidi-override",
        "line-separator",
        "private-use-allowed-as-by-the-store",
        "empty-segment",
        "empty",
        "overlong",
    ],
)
def test_name_problem(name: str, problem: str | None) -> None:
    got = name_problem(name)
    assert (got is None) if problem is None else (got is not None and problem in got)


def test_ultralytics_label_and_key_paths() -> None:
    assert label_rel_for("images/train/a.jpg") == "labels/train/a.txt"
    assert label_rel_for("train/images/a.png") == "train/labels/a.txt"
    assert label_rel_for("images/x/images/a.png") == "images/x/labels/a.txt"
    assert label_rel_for("flat/a.png") == "flat/a.txt"
    assert era_key_for("images/train/a.jpg") == "images/train/a.jpg"
    assert era_key_for("train/images/a.jpg") == "images/train/a.jpg"
    assert era_key_for("flat/a.png") == "images/flat/a.png"


def test_splits_manifest_round_trip_and_fallback() -> None:
    data = splits_document({"images/b.png": "test", "images/a.png": "val", "images/c.png": "train"})
    doc = read_era_splits(data, "e/splits.yaml")
    assert doc == EraSplits(train=["images/c.png"], val=["images/a.png"], test=["images/b.png"])
    override = doc.assignment()
    assert split_with_override(override, 0, "e", "images/b.png", 0.15, 0.15) == "test"
    from kretrain.trainer.data.split import split_of

    assert split_with_override(override, 0, "e", "images/new.png", 0.15, 0.15) == split_of(
        0, "e", "images/new.png", 0.15, 0.15
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("test: [images/a.png]\nval: [images/a.png]\n", "both val and test"),
        ("test: [../x.png]\n", "path traversal"),
        ("test: [labels/a.txt]\n", "not under images/"),
        ("tset: [images/a.png]\n", "tset"),
        ("version: 2\n", "version"),
        ("test: [", "not valid YAML"),
    ],
    ids=["in-two-splits", "traversal", "not-an-image-key", "unknown-field", "future-version", "bad-yaml"],
)
def test_splits_manifest_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_era_splits(text.encode(), "e/splits.yaml")


@pytest.mark.parametrize(
    "xml",
    [
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xx"><!ENTITY y "&x;&x;">]><annotation>&y;</annotation>',
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><annotation>&x;</annotation>',
        b"<annotation><object></annotation>",
    ],
    ids=["entity-expansion", "external-entity", "malformed"],
)
def test_parse_xml_refuses(xml: bytes) -> None:
    with pytest.raises(ImportInputError, match=r"a\.xml: not valid XML"):
        parse_xml(xml, "a.xml")


def test_era_split_override_for_the_pipeline(tmp_path: Path) -> None:
    from kretrain.trainer.data_import.splits import era_split_override

    assert era_split_override("e", {"images/a.png": tmp_path / "a.png"}) is None
    manifest = tmp_path / "splits.yaml"
    manifest.write_bytes(splits_document({"images/a.png": "test"}))
    assert era_split_override("e", {"splits.yaml": manifest}) == {"images/a.png": "test"}
    manifest.write_text("test: [images/a.png, images/a.png]\nval: [images/a.png]\n")
    with pytest.raises(ValueError, match=r"e/splits.yaml: invalid split manifest"):
        era_split_override("e", {"splits.yaml": manifest})


def test_bounded_map_holds_at_most_a_window_and_stops_on_the_first_error() -> None:
    import time

    from kretrain.trainer.data_import.parallel import bounded_map

    pulled = 0

    def items(n: int):  # type: ignore[no-untyped-def]
        nonlocal pulled
        for i in range(n):
            pulled += 1
            yield i

    def slow(i: int) -> int:
        time.sleep(0.001)
        return i

    done, peak = 0, 0
    for _ in bounded_map(slow, items(60), 3):
        done += 1
        peak = max(peak, pulled - done)
    assert done == 60 and peak <= 6

    def fails_at_5(i: int) -> int:
        if i == 5:
            raise ValueError("boom at 5")
        return slow(i)

    pulled = 0
    with pytest.raises(ValueError, match="boom at 5"):
        list(bounded_map(fails_at_5, items(1000), 2))
    assert pulled < 20  # nothing new started after the error


@pytest.mark.parametrize(
    ("limit", "message"), [(10, "more than the limit of 10"), (10**6, None)], ids=["over-limit", "within-limit"]
)
def test_source_read_is_bounded(tmp_path: Path, limit: int, message: str | None) -> None:
    from kretrain.trainer.data_import.source import Source

    (tmp_path / "big.json").write_bytes(b"x" * 100)
    source = Source(str(tmp_path))
    if message is None:
        assert len(source.read("big.json", limit, "file")) == 100
    else:
        with pytest.raises(ImportInputError, match=rf"big\.json: file is 100 bytes, {message}"):
            source.read("big.json", limit, "file")


def test_local_listing_skips_symlinks_and_unsafe_names(tmp_path: Path) -> None:
    from kretrain.trainer.data_import.source import Source

    outside = tmp_path / "secret.txt"
    outside.write_text("s")
    root = tmp_path / "src"
    (root / "images").mkdir(parents=True)
    (root / "images" / "ok.png").write_bytes(b"p")
    (root / "images" / "link.png").symlink_to(outside)
    (root / "images" / "bad\nname.png").write_bytes(b"p")
    source = Source(str(root))
    assert source.files("images") == {"images/ok.png": 1}
    assert source.size("images/link.png") is None
    with pytest.raises(ImportInputError, match="path traversal"):
        source.read("../secret.txt", 100)


def test_unlisted_lookup_through_a_symlinked_folder_is_refused(tmp_path: Path) -> None:
    from kretrain.trainer.data_import.source import Source

    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.png").write_bytes(b"p")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "images").symlink_to(tmp_path / "outside")
    source = Source(str(tmp_path / "src"))
    assert source.size("images/x.png") is None
    with pytest.raises(ImportInputError, match="not found"):
        source.read("images/x.png", 100)
