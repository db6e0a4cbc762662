"""Data bounds in the trainer: oversized labels, class lists and images, and keys that would inject list lines."""

from __future__ import annotations

import json
import os
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from kretrain.api import RetrainJobSpec
from kretrain.store import ObjectStore
from kretrain.trainer.data.prepare import prepare, prepare_pulled
from kretrain.trainer.data.pull import scan_local
from kretrain.trainer.data.trainset import _write_list
from kretrain.trainer.data.validation import (
    CLASSES_FILE_LIMIT,
    LABEL_FILE_LIMIT,
    MAX_BOXES_PER_LABEL,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    DataValidationError,
    ImageRecord,
    inspect_image,
)

IMAGES = 40
LABEL = b"0 0.5 0.5 0.2 0.2\n"


def png_header(width: int, height: int) -> bytes:
    """A PNG that announces width x height (1-bit grey) with a tiny, truncated pixel stream."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def make_dataset(root: Path) -> Path:
    """One era of IMAGES distinct 32x32 PNGs with one box each, plus classes.yaml."""
    (root / "e1" / "images").mkdir(parents=True)
    (root / "e1" / "labels").mkdir(parents=True)
    (root / "classes.yaml").write_text("names: [thing]\n")
    for i in range(IMAGES):
        Image.new("RGB", (32, 32), (i * 6, 255 - i * 6, (i * 37) % 256)).save(root / "e1" / "images" / f"{i:03d}.png")
        (root / "e1" / "labels" / f"{i:03d}.txt").write_bytes(LABEL)
    return root


def spec(**dataset: Any) -> RetrainJobSpec:
    return RetrainJobSpec.model_validate(
        {
            "model": "shapes",
            "dataset": {"uri": "s3://datasets/shapes", "eras": ["e1"], "maxBadFraction": 0.5, **dataset},
        }
    )


def listed(prepared: Any) -> list[str]:
    """Every line Ultralytics reads from the image lists (it splits them with str.splitlines)."""
    files = [prepared.train_list, prepared.val_list, *prepared.test_lists.values()]
    return [line for f in files for line in Path(f).read_text().strip().splitlines()]


def _image(root: Path, name: str, data: bytes, label: bytes | None = LABEL) -> str:
    (root / "e1" / "images" / name).write_bytes(data)
    if label is not None:
        (root / "e1" / "labels" / (Path(name).stem + ".txt")).write_bytes(label)
    return f"images/{name}"


def big_label(root: Path) -> str:
    Image.new("RGB", (32, 32), (1, 2, 3)).save(root / "e1" / "images" / "big-label.png")
    with open(root / "e1" / "labels" / "big-label.txt", "wb") as f:
        f.write(LABEL * (LABEL_FILE_LIMIT // len(LABEL) + 1))
    return "images/big-label.png"


def many_boxes(root: Path) -> str:
    Image.new("RGB", (32, 32), (3, 2, 1)).save(root / "e1" / "images" / "boxes.png")
    (root / "e1" / "labels" / "boxes.txt").write_bytes(LABEL * (MAX_BOXES_PER_LABEL + 5))
    return "images/boxes.png"


def bomb(root: Path) -> str:
    return _image(root, "bomb.png", png_header(100_000, 100_000))


def over_our_pixel_cap(root: Path) -> str:
    side = int(MAX_IMAGE_PIXELS**0.5) + 100  # below PIL's own bomb limit (89.5 Mpx), above kretrain's
    assert side * side < Image.MAX_IMAGE_PIXELS
    return _image(root, "huge.png", png_header(side, side))


def huge_file(root: Path) -> str:
    path = root / "e1" / "images" / "sparse.png"
    with open(path, "wb") as f:
        f.write(png_header(64, 64))
        f.truncate(MAX_IMAGE_BYTES + 1)  # sparse: costs no disk
    return "images/sparse.png"


BAD_ITEMS: list[tuple[str, Callable[[Path], str], str, str]] = [
    ("label-over-size-cap", big_label, "label_too_large", "over the limit"),
    ("label-absurd-box-count", many_boxes, "too_many_boxes", f"more than {MAX_BOXES_PER_LABEL} boxes"),
    ("decompression-bomb-png", bomb, "image_too_large", "decompression bomb"),
    ("image-over-pixel-cap", over_our_pixel_cap, "image_too_large", "not decoded"),
    ("image-file-over-size-cap", huge_file, "image_too_large", f"over the limit of {MAX_IMAGE_BYTES}"),
]


@pytest.mark.parametrize(("add", "code", "text"), [b[1:] for b in BAD_ITEMS], ids=[b[0] for b in BAD_ITEMS])
def test_oversized_item_is_excluded_with_a_finding_naming_it(
    add: Callable[[Path], str], code: str, text: str, tmp_path: Path
) -> None:
    root = make_dataset(tmp_path / "ds")
    key = add(root)
    prepared = prepare_pulled(spec(), scan_local(root, ["e1"]), tmp_path / "work", workers=1, chart=False)
    report = json.loads(prepared.report_path.read_text())
    hits = [f for f in report["findings"] if f["code"] == code]
    assert [(f["era"], f["key"], f["excluded"]) for f in hits] == [("e1", key, True)], report["findings"]
    assert text in hits[0]["message"]
    assert f"e1/{key}" in report["excluded"] and report["badItems"] == 1
    assert not any(line.endswith(Path(key).name) for line in listed(prepared))
    assert len(listed(prepared)) == IMAGES


def test_oversized_label_is_not_read_into_memory(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    key = big_label(root)
    image, label = root / "e1" / key, root / "e1" / "labels" / "big-label.txt"
    tracemalloc.start()
    try:
        _, _, _, _, boxes, problems = inspect_image((str(image), str(label), 1))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [c for c, _ in problems] == ["label_too_large"] and boxes == []
    assert peak < LABEL_FILE_LIMIT // 4, f"peak {peak} bytes: the label file was read"


CLASSES_CASES = [
    ("dataset-classes-yaml", lambda root: root / "classes.yaml", "classes.yaml is"),
    ("era-classes-yaml", lambda root: root / "e1" / "classes.yaml", "e1/classes.yaml is"),
]


@pytest.mark.parametrize(("where", "named"), [c[1:] for c in CLASSES_CASES], ids=[c[0] for c in CLASSES_CASES])
def test_oversized_classes_yaml_fails_the_run_naming_the_file(
    where: Callable[[Path], Path], named: str, tmp_path: Path
) -> None:
    root = make_dataset(tmp_path / "ds")
    path = where(root)
    path.write_bytes(b"names: [thing]\n" + b"#" * CLASSES_FILE_LIMIT)
    with pytest.raises(DataValidationError) as info:
        prepare_pulled(spec(), scan_local(root, ["e1"]), tmp_path / "work", workers=1, chart=False)
    assert named in str(info.value) and "over the limit" in str(info.value)
    report = json.loads((tmp_path / "work" / "data" / "data_report.json").read_text())
    assert report["status"] == "failed" and any(named in f for f in report["fatal"])


def test_oversized_classes_yaml_on_s3_is_not_downloaded(s3: Any, tmp_path: Path) -> None:
    bucket = s3.new_bucket("bounds")
    store = ObjectStore(endpoint_url=s3.endpoint, access_key=s3.server.access_key,
                        secret_key=s3.server.secret_key, region="us-east-1")  # fmt: skip
    store.put_bytes(f"s3://{bucket}/data/classes.yaml", b"names: [a]\n" + b"#" * CLASSES_FILE_LIMIT)
    store.put_bytes(f"s3://{bucket}/data/e1/labels/x.txt", LABEL)
    s = RetrainJobSpec.model_validate({"model": "shapes", "dataset": {"uri": f"s3://{bucket}/data", "eras": ["e1"]}})
    with pytest.raises(DataValidationError) as info:
        prepare(s, store, tmp_path / "work", tmp_path / "cache", chart=False)
    assert f"s3://{bucket}/data/classes.yaml" in str(info.value) and f"limit of {CLASSES_FILE_LIMIT}" in str(info.value)
    assert not (tmp_path / "cache" / bucket / "data" / "classes.yaml").exists()


SEPARATORS = [
    ("U+2028", "\u2028"),
    ("U+2029", "\u2029"),
    ("U+0085", "\x85"),
    ("LF", "\n"),
    ("CR", "\r"),
    ("U+001C", "\x1c"),
    ("VT", "\x0b"),
]


@pytest.mark.parametrize("sep", [s[1] for s in SEPARATORS], ids=[s[0] for s in SEPARATORS])
def test_local_key_with_a_line_separator_cannot_inject_an_image_path(sep: str, tmp_path: Path) -> None:
    """`images/q<sep>/<abs path of an outside image>` would list that outside image as its own line."""
    outside = tmp_path / "outside" / "o.png"
    outside.parent.mkdir(parents=True)
    Image.new("RGB", (32, 32), (9, 9, 9)).save(outside)
    root = make_dataset(tmp_path / "ds")
    nested = root / "e1" / "images" / f"q{sep}" / str(outside).lstrip("/")
    nested.parent.mkdir(parents=True)
    Image.new("RGB", (32, 32), (8, 8, 8)).save(nested)
    prepared = prepare_pulled(spec(), scan_local(root, ["e1"]), tmp_path / "work", workers=1, chart=False)
    lines = listed(prepared)
    assert len(lines) == IMAGES and str(outside) not in lines
    cache = str(root.resolve()) + os.sep
    assert all(line.startswith(cache) and Path(line).is_file() for line in lines)
    report = json.loads(prepared.report_path.read_text())
    unsafe = [f for f in report["findings"] if f["code"] == "unsafe_key"]
    assert len(unsafe) == 1 and unsafe[0]["excluded"] and f"U+{ord(sep):04X}" in unsafe[0]["message"]
    assert sep not in json.dumps(unsafe[0]["key"], ensure_ascii=False)  # the key is named escaped


@pytest.mark.parametrize("sep", [s[1] for s in SEPARATORS], ids=[s[0] for s in SEPARATORS])
def test_image_list_writer_refuses_a_path_with_a_line_separator(sep: str, tmp_path: Path) -> None:
    rec = ImageRecord(era="e1", key="images/x.png", path=tmp_path / f"a{sep}b.png", label_path=None)
    with pytest.raises(ValueError, match=f"U\\+{ord(sep):04X}"):
        _write_list(tmp_path / "list.txt", [rec])
    assert not (tmp_path / "list.txt").exists()


HUGE_LABELS = [
    ("many-malformed-lines", "x\n" * 100_000, "malformed_label"),
    ("one-huge-token-line", "a" * 1_000_000 + " 0.5 0.5 0.2 0.2\n", "malformed_label"),
    ("huge-class-id-token", "1.5" + "0" * 1_000_000 + " 0.5 0.5 0.2 0.2\n", "malformed_label"),
    ("million-fields-line", "0 " * 500_000 + "\n", "malformed_label"),
]


@pytest.mark.parametrize(("text", "code"), [h[1:] for h in HUGE_LABELS], ids=[h[0] for h in HUGE_LABELS])
def test_label_findings_stay_bounded(text: str, code: str) -> None:
    """However a label file is malformed, its findings are at most MAX_FINDINGS_PER_LABEL_FILE short lines."""
    from kretrain.trainer.data.validation import MAX_FINDINGS_PER_LABEL_FILE, parse_labels

    boxes, problems = parse_labels(text, nc=2)
    assert boxes == [] and 1 <= len(problems) <= MAX_FINDINGS_PER_LABEL_FILE
    assert {c for c, _ in problems} == {code} and all(len(m) < 300 for _, m in problems), problems
