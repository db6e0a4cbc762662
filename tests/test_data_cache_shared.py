"""A dataset cache shared by runs: the per-dataset lock, two concurrent runs into one folder, stale label caches."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
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


def _one_run(uri: str, env: dict[str, str], workdir: str, cache: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    prepared = prepare(_spec(uri), _store(env), Path(workdir), Path(cache), chart=False)
    report = json.loads(prepared.report_path.read_text())
    lists = {p.name: p.read_text() for p in sorted(prepared.report_path.parent.glob("*.txt"))}
    out.put({"vc": report["validationCache"], "pull": report["pull"], "lists": lists})


def test_two_concurrent_runs_into_one_cache_take_turns(dataset: str, s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    cache = tmp_path / "shared-cache"
    procs = [
        ctx.Process(target=_one_run, args=(dataset, s3.env(), str(tmp_path / f"w{i}"), str(cache), out))
        for i in range(2)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    first, second = sorted(results, key=lambda r: r["vc"]["hits"])
    # the lock serialised them: the second run found the first one's pull and validation complete
    assert (first["vc"]["hits"], first["vc"]["misses"]) == (0, 2 * IMAGES)
    assert (second["vc"]["hits"], second["vc"]["misses"]) == (2 * IMAGES, 0)
    assert all(p["downloaded"] == 0 for p in second["pull"].values())
    assert first["lists"] == second["lists"] and first["lists"]["train.txt"]
    root = cache_root(cache, dataset)
    for era in ERAS:
        manifest = json.loads((root / era / MANIFEST_NAME).read_text())
        entries = manifest.get("objects", manifest)
        assert len(entries) == 2 * IMAGES
        assert all((root / era / k).stat().st_size == v["size"] for k, v in entries.items())
    assert not [p for p in cache.rglob(f"*{PART_SUFFIX}")] and not [p for p in cache.rglob("*.tmp")]


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
    ctx = multiprocessing.get_context("fork")
    ready, stop = ctx.Event(), ctx.Event()

    def hold() -> None:
        with dataset_lock(tmp_path, "s3://b/line"):
            ready.set()
            stop.wait(30)

    proc = ctx.Process(target=hold)
    proc.start()
    assert ready.wait(30)
    with pytest.raises(CacheLockTimeout), dataset_lock(tmp_path, "s3://b/line", timeout=0.3):
        pass
    proc.kill()
    proc.join(10)
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
