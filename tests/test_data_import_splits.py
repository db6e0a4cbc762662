"""The data pipeline keeps the split `kretrain data import --keep-splits` recorded, and hashes keys it does not list."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from _import_fixtures import image

from kretrain.api import RetrainJobSpec
from kretrain.cli import main
from kretrain.store import ObjectStore
from kretrain.trainer.data import DataValidationError, prepare
from kretrain.trainer.data.split import split_of


def _store(s3) -> ObjectStore:  # type: ignore[no-untyped-def]
    return ObjectStore(
        endpoint_url=s3.endpoint, region="us-east-1", access_key=s3.server.access_key, secret_key=s3.server.secret_key
    )


def _keys(list_file: Path) -> set[str]:
    return {line.split("/u1/", 1)[1] for line in list_file.read_text().splitlines() if line}


def test_prepare_honours_the_kept_split_and_hashes_unlisted_keys(s3_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "ds"
    split_of_image = {}
    for n, (split, count) in enumerate((("train", 12), ("val", 4), ("test", 4))):
        for i in range(count):
            image(root / "images" / split / f"{split}{i}.png", 32, 32, seed=100 * n + i)
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{split}{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
            split_of_image[f"images/{split}/{split}{i}.png"] = split
    doc = {"path": str(root), "train": "images/train", "val": "images/val", "test": "images/test", "names": ["a"]}
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(doc))
    uri = f"s3://{s3_env.new_bucket('ks')}/line"
    assert main(["data", "import", "--format", "ultralytics", str(tmp_path / "data.yaml"), "--era", "u1",
                 "--to", uri, "--keep-splits"]) == 0  # fmt: skip
    # an image added to the era later, not in splits.yaml: its split comes from the key hash
    store = _store(s3_env)
    extra = image(tmp_path / "late.png", 32, 32, seed=4242)
    store.put_bytes(f"{uri}/u1/images/late/late.png", extra.read_bytes())
    spec = RetrainJobSpec.model_validate({"model": "m", "dataset": {"uri": uri, "eras": ["u1"]}})
    prepared = prepare(spec, store, tmp_path / "w", tmp_path / "c", chart=False)
    got = {
        "train": _keys(prepared.train_list),
        "val": _keys(prepared.val_list),
        "test": _keys(prepared.test_lists["u1"]),
    }
    late = split_of(0, "u1", "images/late/late.png", 0.15, 0.15)
    expected = {s: {k for k, v in split_of_image.items() if v == s} for s in ("train", "val", "test")}
    expected[late].add("images/late/late.png")
    assert got == expected
    assert not [f for f in prepared.summary.warnings if "splits.yaml" in f or "_READY" in f]

    store.put_bytes(f"{uri}/u1/splits.yaml", b"test: [images/x.png]\nval: [images/x.png]\n")
    with pytest.raises(DataValidationError, match=r"u1/splits.yaml: invalid split manifest"):
        prepare(spec, store, tmp_path / "w", tmp_path / "c", chart=False)


def test_prepare_refuses_an_era_an_import_is_still_writing(s3_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "ds"
    for i in range(10):
        image(root / "images" / f"a{i}.png", 32, 32, seed=500 + i)
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "images", "names": ["a"]}))
    uri = f"s3://{s3_env.new_bucket('ks')}/line"
    assert (
        main(["data", "import", "--format", "ultralytics", str(tmp_path / "data.yaml"), "--era", "u1", "--to", uri])
        == 0
    )
    store = _store(s3_env)
    store.put_bytes(f"{uri}/u1/_IMPORTING", b"{}")  # what a --replace that failed part-way leaves
    spec = RetrainJobSpec.model_validate({"model": "m", "dataset": {"uri": uri, "eras": ["u1"]}})
    with pytest.raises(DataValidationError, match=r"u1/_IMPORTING exists: an import is writing this era"):
        prepare(spec, store, tmp_path / "w", tmp_path / "c", chart=False)
