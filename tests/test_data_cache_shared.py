"""A dataset cache shared by runs: the per-dataset lock, two concurrent runs into one folder, stale label caches."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from kretrain.api import RetrainJobSpec
from kretrain.store import MANIFEST_NAME, PART_SUFFIX, ObjectStore
from kretrain.trainer.data.cachelock import CacheLockTimeout, dataset_lock, lock_path
from kretrain.trainer.data.prepare import prepare
from kretrain.trainer.data.pull import cache_root
from kretrain.trainer.data.trainset import ultralytics_cache_path
from kretrain.trainer.synthetic import DEFAULT_CLASSES, demo_eras, generate_dataset

ERAS = ["era1", "era2"]
IMAGES = 30


@pytest.fixture(scope="module")
def dataset(s3, tmp_path_factory: pytest.TempPathFactory) -> str:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("shared-src")
    generate_dataset(root, demo_eras(images=IMAGES, seed=11), DEFAULT_CLASSES, imgsz=32)
    uri = f"s3://{s3.new_bucket('shared')}/line"
    _store(s3.env()).upload_dir(root, uri)
    return uri


def _store(env: dict[str, str]) -> ObjectStore:
    return ObjectStore(
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region="us-east-1",
        access_key=env["AWS_ACCESS_KEY_ID"],
        secret_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def _spec(uri: str) -> RetrainJobSpec:
    return RetrainJobSpec.model_validate({"model": "m", "dataset": {"uri": uri, "eras": ERAS}})


def test_two_concurrent_runs_into_one_cache_take_turns(dataset: str, s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(_spec(dataset).model_dump_json(by_alias=True))
    cache = tmp_path / "shared-cache"
    kretrain = Path(sys.executable).with_name("kretrain")
    cache_arg = ["--cache-dir", str(cache)]
    procs = [
        subprocess.Popen(
            [
                str(kretrain),
                "data",
                "prepare",
                "--spec",
                str(spec_file),
                "--workdir",
                str(tmp_path / f"w{i}"),
                *cache_arg,
            ],
            env={**os.environ, **s3.env()},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0, out[-2000:]
    reports = [json.loads((tmp_path / f"w{i}" / "data" / "data_report.json").read_text()) for i in range(2)]
    lists = [{p.name: p.read_text() for p in sorted((tmp_path / f"w{i}" / "data").glob("*.txt"))} for i in range(2)]
    first, second = sorted(range(2), key=lambda i: reports[i]["validationCache"]["hits"])
    # the lock serialised them: the second run found the first one's pull and validation complete
    vc1, vc2 = reports[first]["validationCache"], reports[second]["validationCache"]
    assert (vc1["hits"], vc1["misses"], vc2["hits"], vc2["misses"]) == (0, 2 * IMAGES, 2 * IMAGES, 0)
    assert all(p["downloaded"] == 0 for p in reports[second]["pull"].values())
    assert [lst["train.txt"] for lst in lists] == [lists[0]["train.txt"]] * 2 and lists[0]["train.txt"]
    root = cache_root(cache, dataset)
    for era in ERAS:
        manifest = json.loads((root / era / MANIFEST_NAME).read_text())
        entries = manifest.get("objects", manifest)
        assert len(entries) == 2 * IMAGES
        assert all((root / era / k).stat().st_size == v["size"] for k, v in entries.items())
    assert not list(cache.rglob(f"*{PART_SUFFIX}")) and not list(cache.rglob("*.tmp"))


def test_the_lock_excludes_the_same_dataset_only(tmp_path: Path) -> None:
    with dataset_lock(tmp_path, "s3://b/line") as waited:
        assert waited < 1.0
        with pytest.raises(CacheLockTimeout, match="s3://b/line"), dataset_lock(tmp_path, "s3://b/line", timeout=0.3):
            pass
        with dataset_lock(tmp_path, "s3://b/other", timeout=0.3):
            pass
    with dataset_lock(tmp_path, "s3://b/line", timeout=0.3):  # released on exit
        pass
    assert lock_path(tmp_path, "s3://b/../../x").parent == tmp_path / ".kretrain-locks"


def test_a_lock_dies_with_its_process(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from kretrain.trainer.data.cachelock import dataset_lock\n"
            "with dataset_lock(Path(sys.argv[1]), 's3://b/line'):\n    print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(CacheLockTimeout), dataset_lock(tmp_path, "s3://b/line", timeout=0.3):
            pass
    finally:
        holder.kill()
        holder.wait(10)
    with dataset_lock(tmp_path, "s3://b/line", timeout=5) as waited:
        assert waited < 5


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch /tmp/kretrain-pwned-by-label-cache",))


def test_a_label_cache_left_by_an_earlier_run_is_removed(dataset: str, s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "cache"
    prepared = prepare(_spec(dataset), _store(s3.env()), tmp_path / "w1", cache, chart=False)
    first_image = prepared.train_list.read_text().splitlines()[0]
    planted = ultralytics_cache_path(first_image)
    assert planted == cache_root(cache, dataset) / first_image.split("/")[-3] / "labels.cache"
    for era in ERAS:
        (cache_root(cache, dataset) / era / "labels.cache").write_bytes(pickle.dumps(_Payload()))
    prepare(_spec(dataset), _store(s3.env()), tmp_path / "w2", cache, chart=False)
    assert not list(cache.rglob("*.cache"))


@pytest.mark.parametrize(
    "image",
    ["/c/b/line/era1/images/x.png", "/c/b/line/era1/images/sub.dir/x.png", "/c/images/b/era1/images/x.jpg"],
    ids=["flat", "dotted-subfolder", "images-in-cache-path"],
)
def test_label_cache_path_is_the_one_ultralytics_uses(image: str) -> None:
    from ultralytics.data.utils import img2label_paths

    assert ultralytics_cache_path(image) == Path(img2label_paths([image])[0]).parent.with_suffix(".cache")
