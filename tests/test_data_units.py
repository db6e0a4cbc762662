"""Pure parts of the data pipeline, table-driven: label parsing, splitting, replay, JSD, class lists."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
from PIL import Image

from kretrain.api import StrategySpec
from kretrain.trainer.data import inspection, validation
from kretrain.trainer.data.split import split_of
from kretrain.trainer.data.stats import compute_stats, jensen_shannon
from kretrain.trainer.data.trainset import replay_count, replay_sample, select_train
from kretrain.trainer.data.validation import (
    ImageRecord,
    decode_image,
    inspect_all,
    label_key_for,
    parse_labels,
    read_class_names,
)


@pytest.mark.parametrize(
    ("text", "boxes", "codes"),
    [
        ("0 0.5 0.5 0.2 0.2\n", 1, []),
        ("\n  \n1 0.5 0.5 0.2 0.2\n", 1, []),
        ("", 0, []),
        ("0 0.5 0.5 0.2\n", 0, ["malformed_label"]),
        ("0 0.5 0.5 0.2 0.2 0.1\n", 0, ["malformed_label"]),
        ("a 0.5 0.5 0.2 0.2\n", 0, ["malformed_label"]),
        ("0 0.5 nan 0.2 0.2\n", 0, ["malformed_label"]),
        ("1.5 0.5 0.5 0.2 0.2\n", 0, ["malformed_label"]),
        ("2.0 0.5 0.5 0.2 0.2\n", 1, []),
        ("3 0.5 0.5 0.2 0.2\n", 0, ["class_out_of_range"]),
        ("-1 0.5 0.5 0.2 0.2\n", 0, ["class_out_of_range"]),
        ("0 0.5 0.5 0 0.2\n", 0, ["zero_area_box"]),
        ("0 0.5 0.5 0.2 -0.1\n", 0, ["zero_area_box"]),
        ("0 0.95 0.5 0.2 0.2\n", 0, ["box_out_of_bounds"]),
        ("0 1.2 0.5 0.1 0.1\n", 0, ["box_out_of_bounds"]),
        ("0 0.9000004 0.5 0.2 0.2\n", 1, []),  # rounding at the edge is tolerated
        ("0 0.5 0.5 0.2 0.2\n9 0.5 0.5 0.2 0.2\n", 1, ["class_out_of_range"]),
    ],
)
def test_parse_labels(text: str, boxes: int, codes: list[str]) -> None:
    got_boxes, problems = parse_labels(text, nc=3)
    assert len(got_boxes) == boxes
    assert [c for c, _ in problems] == codes
    for _, message in problems:
        assert message.startswith("line ")


def test_parse_labels_caps_findings_per_file() -> None:
    _, problems = parse_labels("x\n" * 20, nc=3)
    assert len(problems) == validation.MAX_FINDINGS_PER_LABEL_FILE
    assert "16 more" in problems[-1][1]


@pytest.mark.parametrize(
    ("image_key", "label_key"),
    [("images/a.png", "labels/a.txt"), ("images/sub/b.JPG", "labels/sub/b.txt"), ("images/c.d.jpeg", "labels/c.d.txt")],
)
def test_label_key_for(image_key: str, label_key: str) -> None:
    assert label_key_for(image_key) == label_key


@pytest.mark.parametrize(
    "image_key",
    [
        "images/a.png",
        "images/sub/deeper/b.JPG",
        "images/c.d.jpeg",
        "images/.png",
        "images/a.",
        "images/..png",
        "images//a.png",
        "images/./a.png",
        "images/x/./y.png",
        "images/sub.dir/a.png",
        "images/sub.dir/noext",
        "images/a b.png",
        "images/ü.webp",
        "images/a..png",
    ],
)
def test_label_key_fast_path_equals_the_path_form(image_key: str) -> None:
    try:
        expected = validation.label_key_slow(image_key)
    except ValueError:
        with pytest.raises(ValueError):
            label_key_for(image_key)
        return
    assert label_key_for(image_key) == expected


@pytest.mark.parametrize(
    ("doc", "names", "error"),
    [
        ("names: [a, b]\n", ["a", "b"], None),
        ("names: {0: a, 1: b}\n", ["a", "b"], None),
        ("names: {0: a, 2: b}\n", None, "keys must be"),
        ("names: []\n", None, "non-empty list"),
        ("nc: 2\n", None, "expected `names:`"),
        ("names: [a, a]\n", None, "not unique"),
        ("names: [a\n", None, "not valid YAML"),
    ],
)
def test_read_class_names(doc: str, names: list[str] | None, error: str | None) -> None:
    if error:
        with pytest.raises(ValueError, match=error) as exc:
            read_class_names(doc, "s3://b/ds/classes.yaml")
        assert "s3://b/ds/classes.yaml" in str(exc.value)
    else:
        assert read_class_names(doc, "x") == names


def _png(size: tuple[int, int] = (20, 12), colour: int = 100) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (colour, colour, colour)).save(buf, format="PNG")
    return buf.getvalue()


def test_decode_image_reads_size_and_brightness_and_rejects_truncated() -> None:
    w, h, b = decode_image(_png())
    assert (w, h) == (20, 12)
    assert b == pytest.approx(100, abs=1)
    jpg = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 200, 200)).save(jpg, format="JPEG")
    w, h, b = decode_image(jpg.getvalue())
    assert (w, h) == (64, 48) and b == pytest.approx(200, abs=3)
    with pytest.raises(Exception):  # noqa: B017 - PIL raises OSError or SyntaxError depending on where it breaks
        decode_image(jpg.getvalue()[: len(jpg.getvalue()) // 2])
    with pytest.raises(Exception):  # noqa: B017
        decode_image(b"not an image")


def test_pool_and_in_process_inspection_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = []
    for i in range(12):
        img = tmp_path / f"{i}.png"
        img.write_bytes(_png(colour=i * 10) if i != 5 else b"junk")
        lab = tmp_path / f"{i}.txt"
        lab.write_text("0 0.5 0.5 0.2 0.2\n" if i != 7 else "7 0.5 0.5 0.2 0.2\n")
        tasks.append((str(img), str(lab), 3))
    serial = inspect_all(tasks, workers=1)
    monkeypatch.setattr(inspection, "POOL_THRESHOLD", 1)
    pooled = inspect_all(tasks, workers=2)
    assert [r[:3] + r[4:] for r in pooled] == [r[:3] + r[4:] for r in serial]
    assert [r[5][0][0] for r in serial if r[5]] == ["undecodable_image", "class_out_of_range"]


KEYS = [f"images/img_{i:05d}.png" for i in range(4000)]


def test_split_is_deterministic_and_has_the_requested_shares() -> None:
    a = [split_of(0, "era1", k, 0.15, 0.1) for k in KEYS]
    assert a == [split_of(0, "era1", k, 0.15, 0.1) for k in KEYS]
    assert a.count("test") / len(KEYS) == pytest.approx(0.10, abs=0.02)
    assert a.count("val") / len(KEYS) == pytest.approx(0.15, abs=0.02)
    other_seed = [split_of(1, "era1", k, 0.15, 0.1) for k in KEYS]
    other_era = [split_of(0, "era2", k, 0.15, 0.1) for k in KEYS]
    assert sum(x != y for x, y in zip(a, other_seed, strict=True)) > 500
    assert sum(x != y for x, y in zip(a, other_era, strict=True)) > 500


def test_split_of_an_image_ignores_other_images() -> None:
    before = {k: split_of(0, "e", k, 0.2, 0.2) for k in KEYS[:1000]}
    after = {k: split_of(0, "e", k, 0.2, 0.2) for k in KEYS[:1200]}
    assert all(after[k] == s for k, s in before.items())


@pytest.mark.parametrize(("val", "test"), [(0.5, 0.5), (-0.1, 0.1), (0.1, 1.0)])
def test_split_rejects_bad_fractions(val: float, test: float) -> None:
    with pytest.raises(ValueError, match="split fractions"):
        split_of(0, "e", "k", val, test)


@pytest.mark.parametrize(
    ("p", "q", "expected"),
    [
        ([1, 0], [1, 0], 0.0),
        ([1, 0], [0, 1], 1.0),
        ([2, 2], [1, 1], 0.0),
        ([1, 1], [1, 0], 0.311278),
        ([0, 0], [1, 0], None),
    ],
)
def test_jensen_shannon(p: list[float], q: list[float], expected: float | None) -> None:
    got = jensen_shannon(p, q)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("n", "fraction", "k"), [(0, 0.3, 0), (1, 0.1, 1), (10, 0.3, 3), (7, 0.5, 4), (100, 1.0, 100)])
def test_replay_count(n: int, fraction: float, k: int) -> None:
    assert replay_count(n, fraction) == k


def _records(era: str, n: int, split: str = "train") -> list[ImageRecord]:
    return [
        ImageRecord(
            era=era, key=f"images/{i:04d}.png", path=Path(f"/c/{era}/images/{i:04d}.png"), label_path=None, split=split
        )  # type: ignore[arg-type]
        for i in range(n)
    ]


def test_replay_is_seeded_per_era_and_stable_when_an_era_grows() -> None:
    recs = _records("old", 200)
    a = replay_sample(recs, 0.25, seed=0, era="old")
    assert len(a) == 50
    assert a == replay_sample(recs, 0.25, seed=0, era="old")
    assert {r.key for r in a} != {r.key for r in replay_sample(recs, 0.25, seed=1, era="old")}
    grown = replay_sample(_records("old", 240), 0.25, seed=0, era="old")
    assert len({r.key for r in a} & {r.key for r in grown}) >= 40  # mostly the same images


def test_select_train_full_and_incremental_era_balanced() -> None:
    train = {"e1": _records("e1", 300), "e2": _records("e2", 100), "e3": _records("e3", 80)}
    full = select_train(train, StrategySpec(type="full"), new_eras=["e3"])
    assert {e: len(v) for e, v in full.items()} == {"e1": 300, "e2": 100, "e3": 80}
    inc = select_train(train, StrategySpec(type="incremental", replay={"fraction": 0.2}), new_eras=["e3"])
    assert {e: len(v) for e, v in inc.items()} == {"e1": 60, "e2": 20, "e3": 80}
    default = select_train(train, StrategySpec(type="incremental"), new_eras=["e3"])
    assert len(default["e1"]) == round(0.5 * 300)  # the default replay fraction


def test_compute_stats_flags_drift_between_eras_and_train_val() -> None:
    def recs(era: str, side: float, cls: int, split: str, n: int) -> list[ImageRecord]:
        out = _records(era, n, split)
        for r in out:
            r.width = r.height = 64
            r.brightness = 50.0
            r.boxes = [(cls, 0.5, 0.5, side, side)]
        return out

    kept = {
        "a": recs("a", 0.5, 0, "train", 20) + recs("a", 0.5, 0, "val", 5),
        "b": recs("b", 0.1, 1, "train", 20) + recs("b", 0.5, 0, "val", 5),
    }
    stats, warnings = compute_stats(kept, ["x", "y"], threshold=0.1)
    assert stats["eras"]["a"]["train"]["images"] == 20
    assert stats["eras"]["b"]["all"]["classHistogram"] == [5, 20]
    assert stats["eras"]["a"]["all"]["boxArea"]["p50"] == pytest.approx(0.25)
    pair = stats["drift"]["eraPairs"][0]
    assert pair["flagged"] == ["class", "boxSize"]
    assert stats["drift"]["trainVal"]["a"]["flagged"] == []
    assert stats["drift"]["trainVal"]["b"]["flagged"] == ["class", "boxSize"]
    assert any("train/val mismatch in era 'b'" in w for w in warnings)
    assert not any("era 'a'" in w and "train/val" in w for w in warnings)
    assert math.isclose(stats["eras"]["a"]["all"]["brightness"]["mean"], 50.0)
