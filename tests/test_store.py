"""Object store against a real SeaweedFS server: listing, sync cache/resume, conditional writes, safe paths."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from harness.s3proxy import FaultProxy
from kretrain.storage import S3Location, parallel_map
from kretrain.storage.listing import list_chunks
from kretrain.store import (
    MANIFEST_NAME,
    ObjectStore,
    PreconditionFailed,
    StoreError,
    UnsafeKeyError,
    join_uri,
    parse_s3_uri,
    read_manifest,
    safe_local_path,
    safe_local_paths,
)

TRANSPORTS = ["obstore", "boto3"]


@pytest.fixture
def store(s3_env) -> ObjectStore:  # type: ignore[no-untyped-def]
    return ObjectStore(max_workers=8)


@pytest.fixture
def bucket(s3_env) -> str:  # type: ignore[no-untyped-def]
    return s3_env.new_bucket("store")


# ------------------------------------------------------------------ pure helpers


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://b/p/q", ("b", "p/q")),
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://bucket/a/b/", ("bucket", "a/b")),
    ],
)
def test_parse_s3_uri(uri: str, expected: tuple[str, str]) -> None:
    assert parse_s3_uri(uri) == expected


@pytest.mark.parametrize("uri", ["http://b/p", "b/p", "s3://", "s3:///key", ""])
def test_parse_s3_uri_rejects_and_names_uri(uri: str) -> None:
    with pytest.raises(ValueError, match="S3 URI") as info:
        parse_s3_uri(uri)
    assert repr(uri) in str(info.value)


def test_join_uri() -> None:
    assert join_uri("s3://b/p/", "x/", "/y.json") == "s3://b/p/x/y.json"
    assert join_uri("s3://b", "", "k") == "s3://b/k"


@pytest.mark.parametrize(
    "key",
    ["../x", "a/../../x", "/etc/passwd", "a\\b", "a\x00b", "a//b", "", "a/./b", "C:/x", "..", "a/"],
)
def test_safe_local_path_rejects_and_names_key(tmp_path: Path, key: str) -> None:
    with pytest.raises(UnsafeKeyError) as info:
        safe_local_path(tmp_path, key)
    assert repr(key) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_safe_local_path_accepts_nested_keys(tmp_path: Path) -> None:
    assert safe_local_path(tmp_path, "era1/images/a..b.jpg") == tmp_path.resolve() / "era1/images/a..b.jpg"


def test_safe_local_path_rejects_symlink_escape(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(UnsafeKeyError, match="outside"):
        safe_local_path(root, "link/file")
    with pytest.raises(UnsafeKeyError, match=r"'link/file'.*outside"):
        safe_local_paths(root, ["ok/a", "link/file"])
    assert safe_local_paths(root, ["ok/a", "b"]) == {"ok/a": root.resolve() / "ok/a", "b": root.resolve() / "b"}
    with pytest.raises(UnsafeKeyError, match=r"'a/\.\./\.\./x'"):
        safe_local_paths(root, ["a/../../x"])


# ------------------------------------------------------------------ against SeaweedFS


def test_put_get_list_head(store: ObjectStore, bucket: str) -> None:
    base = f"s3://{bucket}/data"
    etag = store.put_json(join_uri(base, "a.json"), {"x": 1})
    store.put_bytes(join_uri(base, "sub/b.bin"), b"hello")
    store.put_bytes(f"s3://{bucket}/data2/c.bin", b"not under data/")
    assert store.get_json(join_uri(base, "a.json")) == {"x": 1}
    assert store.get_json_with_etag(join_uri(base, "a.json")) == ({"x": 1}, etag)
    assert store.get_json_with_etag(join_uri(base, "missing.json")) is None
    assert [(o.key, o.size) for o in store.list(base)] == [("a.json", len(b'{\n  "x": 1\n}\n')), ("sub/b.bin", 5)]
    info = store.head(join_uri(base, "sub/b.bin"))
    assert info is not None and info.size == 5 and '"' not in info.etag
    assert store.head(join_uri(base, "nope")) is None
    assert not store.exists(join_uri(base, "nope"))
    with pytest.raises(FileNotFoundError, match="nope"):
        store.get_bytes(join_uri(base, "nope"))


@pytest.fixture(scope="module")
def many(s3) -> str:  # type: ignore[no-untyped-def]
    """A prefix with 1,003 objects and one with an odd key: a listing of two pages."""
    seeder = ObjectStore(endpoint_url=s3.endpoint, access_key=s3.server.access_key, secret_key=s3.server.secret_key)
    base = f"s3://{s3.new_bucket('many')}/many"
    parallel_map(range(1003), lambda i: seeder.put_bytes(join_uri(base, f"k{i:05d}"), b"x"), max_workers=16)
    seeder.put_bytes(join_uri(base, "odd key+with spaces&=%.txt"), b"x")
    return base


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_list_paginates(s3, many: str, tmp_path: Path, transport: str) -> None:  # type: ignore[no-untyped-def]
    base = many
    with FaultProxy(s3.endpoint) as proxy:
        store = ObjectStore(
            endpoint_url=proxy.endpoint,
            access_key=s3.server.access_key,
            secret_key=s3.server.secret_key,
            transport=transport,  # type: ignore[arg-type]
        )
        keys = [o.key for o in store.list(base)]
        assert proxy.requests["GET"] == 2  # 1,004 keys: two pages of at most 1,000
        assert keys.pop(-1) == "odd key+with spaces&=%.txt"
        assert store.get_bytes(join_uri(base, "odd key+with spaces&=%.txt")) == b"x"
        out = store.download_file(join_uri(base, "odd key+with spaces&=%.txt"), tmp_path / "odd.txt")
        assert out.read_bytes() == b"x"
    assert keys == [f"k{i:05d}" for i in range(1003)]


@pytest.mark.parametrize(
    "body",
    [b"[" * 70_000, b'{"a":' * 50_000, b"not json", b"\xff\xfe"],
    ids=["deep-list", "deep-object", "text", "bytes"],
)
def test_json_readers_refuse_what_does_not_parse_with_a_store_error(
    store: ObjectStore, bucket: str, body: bytes
) -> None:
    """A hostile record (S3 is untrusted) is a StoreError naming the object, never a RecursionError or a
    UnicodeDecodeError escaping to the caller (before: `[[[[...` raised RecursionError out of get_json)."""
    uri = f"s3://{bucket}/records/bad.json"
    store.put_bytes(uri, body)
    for read in (store.get_json, store.get_json_with_etag):
        with pytest.raises(StoreError, match=r"bad\.json is not valid JSON"):
            read(uri, max_bytes=1 << 20)


def test_put_if_absent(store: ObjectStore, bucket: str) -> None:
    uri = f"s3://{bucket}/once.json"
    store.put_if_absent(uri, b"first")
    with pytest.raises(PreconditionFailed, match=r"once\.json"):
        store.put_if_absent(uri, b"second")
    assert store.get_bytes(uri) == b"first"


def test_compare_and_swap(store: ObjectStore, bucket: str) -> None:
    uri = f"s3://{bucket}/ptr.json"
    with pytest.raises(PreconditionFailed):  # SeaweedFS answers 412 on a missing key
        store.compare_and_swap(uri, b"x", "0" * 32)
    e1 = store.put_bytes(uri, b"v1")
    e2 = store.compare_and_swap(uri, b"v2", e1)
    with pytest.raises(PreconditionFailed):
        store.compare_and_swap(uri, b"v3", e1)  # stale etag
    assert store.get_bytes(uri) == b"v2"
    assert store.compare_and_swap(uri, b"v3", e2)


def test_compare_and_swap_race_has_one_winner(store: ObjectStore, bucket: str) -> None:
    uri = f"s3://{bucket}/race.json"
    etag = store.put_bytes(uri, b"start")
    barrier = threading.Barrier(16)
    wins: list[int] = []
    losses: list[int] = []

    def go(i: int) -> None:
        barrier.wait()
        try:
            store.compare_and_swap(uri, f"w{i}".encode(), etag)
            wins.append(i)
        except PreconditionFailed:
            losses.append(i)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 15
    assert store.get_bytes(uri) == f"w{wins[0]}".encode()


def test_download_file_is_atomic_and_verified(store: ObjectStore, bucket: str, tmp_path: Path) -> None:
    uri = f"s3://{bucket}/f.bin"
    store.put_bytes(uri, b"a" * 5000)
    out = store.download_file(uri, tmp_path / "d" / "f.bin")
    assert out.read_bytes() == b"a" * 5000
    with pytest.raises(FileNotFoundError):
        store.download_file(f"s3://{bucket}/missing", tmp_path / "m.bin")
    assert not (tmp_path / "m.bin").exists()
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["f.bin"]  # no temp files left


def _seed(store: ObjectStore, base: str, n: int, prefix: str = "era1") -> None:
    parallel_map(
        range(n),
        lambda i: store.put_bytes(join_uri(base, f"{prefix}/images/{i:04d}.jpg"), f"img-{prefix}-{i}".encode() * 50),
        max_workers=8,
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sync_down_skips_unchanged_and_fetches_changes(s3_env, bucket: str, tmp_path: Path, transport: str) -> None:  # type: ignore[no-untyped-def]
    store = ObjectStore(max_workers=8, transport=transport)  # type: ignore[arg-type]
    base = f"s3://{bucket}/ds"
    _seed(store, base, 40)
    r1 = store.sync_down(base, tmp_path)
    assert (r1.downloaded, r1.skipped) == (40, 0)
    assert r1.files["era1/images/0007.jpg"].read_bytes() == b"img-era1-7" * 50
    assert r1.bytes == sum(p.stat().st_size for p in r1.files.values())

    r2 = store.sync_down(base, tmp_path)
    assert (r2.downloaded, r2.skipped, r2.bytes) == (0, 40, 0)

    store.put_bytes(join_uri(base, "era1/images/0003.jpg"), b"changed")  # changed content
    store.put_bytes(join_uri(base, "era2/images/new.jpg"), b"new")  # new object
    store.delete(join_uri(base, "era1/images/0039.jpg"))  # deleted remotely
    (tmp_path / "era1/images/0005.jpg").write_bytes(b"truncated")  # damaged locally (size differs)
    r3 = store.sync_down(base, tmp_path)
    assert (r3.downloaded, r3.skipped, r3.deleted) == (3, 37, 1)
    assert (tmp_path / "era1/images/0003.jpg").read_bytes() == b"changed"
    assert (tmp_path / "era1/images/0005.jpg").read_bytes() == b"img-era1-5" * 50
    assert not (tmp_path / "era1/images/0039.jpg").exists()
    assert set(json.loads((tmp_path / MANIFEST_NAME).read_text())["objects"]) == set(r3.files) == set(r3.objects)
    assert r3.objects["era1/images/0003.jpg"].size == len(b"changed")
    assert read_manifest(tmp_path) == r3.objects  # the public manifest API reads what the sync wrote


def test_sync_down_resumes_after_interruption(store: ObjectStore, bucket: str, tmp_path: Path) -> None:
    base = f"s3://{bucket}/ds"
    _seed(store, base, 30)
    real = store.download_file
    calls = {"n": 0}
    lock = threading.Lock()

    def flaky(uri: str, path: Path) -> Path:
        with lock:
            calls["n"] += 1
            n = calls["n"]
        if n == 12:
            raise ConnectionError("simulated network failure mid-sync")
        return real(uri, path)

    store.download_file = flaky  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        store.sync_down(base, tmp_path)
    store.download_file = real  # type: ignore[method-assign]
    saved = json.loads((tmp_path / MANIFEST_NAME).read_text())["objects"]
    assert 1 <= len(saved) < 30  # progress was recorded despite the failure
    r = store.sync_down(base, tmp_path)
    assert r.skipped == len(saved) and r.downloaded == 30 - len(saved)
    assert all(p.read_bytes() == f"img-era1-{int(p.stem)}".encode() * 50 for p in r.files.values())
    assert not list(tmp_path.rglob("*.kretrain-part"))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sync_down_refuses_unsafe_key(s3, store: ObjectStore, bucket: str, tmp_path: Path, transport: str) -> None:  # type: ignore[no-untyped-def]
    base = f"s3://{bucket}/evil"
    store.put_bytes(join_uri(base, "ok.txt"), b"ok")
    # SeaweedFS itself refuses '..' keys and turns '\\' into '/', so the fault proxy adds such a key to the
    # real listing, as a hostile server (or a compromised bucket) would return it.
    with FaultProxy(s3.endpoint, extra_keys=("evil/../../escape.txt",)) as proxy:
        hostile = ObjectStore(
            endpoint_url=proxy.endpoint,
            access_key=s3.server.access_key,
            secret_key=s3.server.secret_key,
            region="us-east-1",
            transport=transport,  # type: ignore[arg-type]
        )
        assert sorted(o.key for o in hostile.list(base)) == ["../../escape.txt", "ok.txt"]  # the proxy's listing
        with pytest.raises(UnsafeKeyError, match=r"\.\./\.\./escape.txt"):
            hostile.sync_down(base, tmp_path / "cache")
    assert not (tmp_path / "cache" / "ok.txt").exists()  # refused before anything was downloaded


def test_upload_dir_round_trip(store: ObjectStore, bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for rel in ("a.txt", "x/y/b.txt", "x/c.txt"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    (src / MANIFEST_NAME).write_text("{}")
    assert store.upload_dir(src, f"s3://{bucket}/up") == 3
    r = store.sync_down(f"s3://{bucket}/up", tmp_path / "dst")
    assert sorted(r.files) == ["a.txt", "x/c.txt", "x/y/b.txt"]
    assert (tmp_path / "dst/x/y/b.txt").read_text() == "x/y/b.txt"


def test_explicit_credentials_are_used(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    good = ObjectStore(endpoint_url=s3.endpoint, access_key=s3.server.access_key, secret_key=s3.server.secret_key)
    good.put_bytes(f"s3://{bucket}/k", b"v")
    bad = ObjectStore(endpoint_url=s3.endpoint, access_key="wrong", secret_key="wrong", max_attempts=1)
    with pytest.raises(Exception, match=r"(?i)access|signature|denied|403"):
        bad.get_bytes(f"s3://{bucket}/k")


# ------------------------------------------------------------------ pipelining


WORKERS = 2


@pytest.mark.parametrize(
    ("fail_source_at", "fail_fn_at"),
    [
        (None, None),  # everything runs; the source is never more than the window ahead of the results
        (60, None),  # the source breaks: nothing more is taken from it; work running finishes, reported
        (None, 30),  # a task fails: queued work is cancelled and the source is closed early
    ],
)
def test_parallel_is_lazy_bounded_and_drains_on_error(fail_source_at: int | None, fail_fn_at: int | None) -> None:
    window = 4 * WORKERS
    produced: list[int] = []
    done: list[int] = []
    gaps: list[int] = []
    closed = threading.Event()

    def source():  # type: ignore[no-untyped-def]
        try:
            for i in range(100):
                if i == fail_source_at:
                    raise RuntimeError("listing failed")
                gaps.append(len(produced) - len(done))
                produced.append(i)
                yield i
        finally:
            closed.set()

    def fn(i: int) -> int:
        if i == fail_fn_at:
            raise ValueError("download failed")
        return i * 2

    if fail_source_at is None and fail_fn_at is None:
        parallel_map(source(), fn, lambda i, r: done.append(r), max_workers=WORKERS)
    else:
        with pytest.raises((RuntimeError, ValueError), match="failed"):
            parallel_map(source(), fn, lambda i, r: done.append(r), max_workers=WORKERS)
    assert closed.is_set()
    assert max(gaps) <= window
    assert set(done) <= {i * 2 for i in produced}
    if fail_source_at is None and fail_fn_at is None:
        assert len(done) == 100
    elif fail_source_at is not None:
        assert len(produced) == fail_source_at and len(done) >= fail_source_at - window
    else:
        assert len(produced) < 100 and fail_fn_at is not None and fail_fn_at * 2 not in done


def test_list_chunks_lists_new_folders_first(s3_env, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("kretrain.storage.listing.LIST_CONCURRENCY", 1)
    store = ObjectStore(max_workers=4)
    base = f"s3://{bucket}/order"
    for key in ("top.txt", "a/1", "b/1", "b/2", "c/1", "d/1"):
        store.put_bytes(join_uri(base, key), b"x")
    chunks = [
        sorted(o.key for o in chunk) for chunk in list_chunks(store.transport, S3Location.parse(base), known={"a", "c"})
    ]
    assert chunks == [["top.txt"], ["b/1", "b/2"], ["d/1"], ["a/1"], ["c/1"]]


def test_sync_down_downloads_new_folders_while_others_are_still_listed(s3_env, bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = ObjectStore(max_workers=4)
    base = f"s3://{bucket}/overlap"
    for i in range(5):
        store.put_bytes(join_uri(base, f"old/{i}.jpg"), b"old" * 10)
    assert store.sync_down(base, tmp_path).downloaded == 5
    for i in range(5):
        store.put_bytes(join_uri(base, f"new/{i}.jpg"), b"new" * 10)

    new_downloaded = threading.Event()
    real_list, real_download = store.transport.list, store.download_file

    def slow_list(bucket: str, pfx: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if pfx.endswith("/old/"):  # the known folder's listing only returns once new/ is arriving
            assert new_downloaded.wait(10), "nothing from new/ was downloaded while old/ was being listed"
        return real_list(bucket, pfx, *args, **kwargs)

    def download(uri: str, path: Path) -> Path:
        out = real_download(uri, path)
        if "/new/" in uri:
            new_downloaded.set()
        return out

    store.transport.list = slow_list  # type: ignore[method-assign]
    store.download_file = download  # type: ignore[method-assign]
    result = store.sync_down(base, tmp_path)
    assert (result.downloaded, result.skipped) == (5, 5)
