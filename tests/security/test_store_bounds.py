"""Size caps on S3 reads: an object over `max_bytes` is refused without being read into memory, on both paths."""

from __future__ import annotations

import json
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.s3proxy import FaultProxy
from kretrain.limits import MAX_RECORD_BYTES
from kretrain.registry import Registry
from kretrain.store import ObjectStore, ObjectTooLarge, StoreError

PATHS = [True, False]
PATH_IDS = ["fast-path", "boto3"]
BIG = 8 * 1024 * 1024  # an object much larger than any cap below
CAP = 64 * 1024


@pytest.fixture(scope="module")
def _bucket(s3) -> str:  # type: ignore[no-untyped-def]
    return s3.new_bucket("bounds")


@pytest.fixture
def prefix(_bucket: str) -> str:
    return f"s3://{_bucket}/{uuid.uuid4().hex[:10]}"


@pytest.fixture
def proxy(s3) -> Iterator[FaultProxy]:  # type: ignore[no-untyped-def]
    with FaultProxy(s3.endpoint, inflate_factor=256) as p:
        yield p


def _store(s3, fast: bool, endpoint: str | None = None) -> ObjectStore:  # type: ignore[no-untyped-def]
    return ObjectStore(
        endpoint_url=endpoint or s3.endpoint,
        access_key=s3.server.access_key,
        secret_key=s3.server.secret_key,
        region="us-east-1",
        fast_path=fast,
        max_attempts=2,
    )


def _peak(fn: Callable[[], Any]) -> tuple[BaseException | None, int]:
    """Run fn; the exception it raised (or None) and the peak of Python allocations meanwhile."""
    tracemalloc.start()
    try:
        fn()
        error: BaseException | None = None
    except BaseException as exc:  # returned to the test, which asserts on it
        error = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return error, peak


READS: dict[str, Callable[[ObjectStore, str, int], Any]] = {
    "get_bytes": lambda st, uri, cap: st.get_bytes(uri, max_bytes=cap),
    "get_json": lambda st, uri, cap: st.get_json(uri, max_bytes=cap),
    "get_json_with_etag": lambda st, uri, cap: st.get_json_with_etag(uri, max_bytes=cap),
}


@pytest.mark.parametrize("fast", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("read", list(READS), ids=list(READS))
def test_announced_size_over_cap_is_refused_unread(s3, prefix: str, fast: bool, read: str) -> None:  # type: ignore[no-untyped-def]
    store = _store(s3, fast)
    uri = f"{prefix}/big.json"
    store.put_bytes(uri, b"[" + b"0," * (BIG // 2) + b"0]")
    error, peak = _peak(lambda: READS[read](store, uri, CAP))
    assert isinstance(error, ObjectTooLarge), error
    assert error.uri == uri and error.limit == CAP and error.size > BIG
    assert uri in str(error) and str(CAP) in str(error) and str(error.size) in str(error)
    assert peak < 2 * 1024 * 1024, f"{peak} bytes allocated while refusing an {BIG}-byte object"


@pytest.mark.parametrize("fast", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize(
    ("size", "cap", "refused"),
    [(100, 100, False), (101, 100, True), (0, 0, False), (1, 0, True)],
    ids=["at-cap", "one-over", "empty-zero-cap", "one-byte-zero-cap"],
)
def test_cap_boundary(s3, prefix: str, fast: bool, size: int, cap: int, refused: bool) -> None:  # type: ignore[no-untyped-def]
    store = _store(s3, fast)
    uri = f"{prefix}/obj"
    store.put_bytes(uri, b"x" * size)
    if refused:
        with pytest.raises(ObjectTooLarge, match="over the limit"):
            store.get_bytes(uri, max_bytes=cap)
    else:
        assert store.get_bytes(uri, max_bytes=cap) == b"x" * size


@pytest.mark.parametrize("fast", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("fault", ["chunked", "inflate"], ids=["no-content-length", "lying-server"])
def test_body_running_past_cap_is_cut_off(s3, proxy: FaultProxy, prefix: str, fast: bool, fault: str) -> None:  # type: ignore[no-untyped-def]
    """No Content-Length (or a server sending 256x the object): reading stops once the cap is passed."""
    direct = _store(s3, fast)
    uri = f"{prefix}/record.json"
    payload = json.dumps({"pad": "p" * 60_000}).encode()  # ~60 KB; inflated: ~15 MB
    direct.put_bytes(uri, payload)
    store = _store(s3, fast, proxy.endpoint)
    cap = 200_000 if fault == "inflate" else 30_000
    # obstore reads no body without Content-Length: the store asks again through boto3, which meets the same lie.
    proxy.fail_next(*[fault] * (2 if fast else 1), method="GET")
    error, peak = _peak(lambda: store.get_json(uri, max_bytes=cap))
    assert isinstance(error, ObjectTooLarge), error
    assert error.size > cap and "sent more than" in str(error)
    assert peak < 4 * 1024 * 1024
    # The same honest answer under the cap still reads (chunked bodies are fine).
    proxy.fail_next("chunked", method="GET")
    assert store.get_json(uri, max_bytes=len(payload)) == json.loads(payload)


@pytest.mark.parametrize("fast", PATHS, ids=PATH_IDS)
def test_download_over_cap_leaves_nothing(s3, prefix: str, tmp_path: Path, fast: bool) -> None:  # type: ignore[no-untyped-def]
    store = _store(s3, fast)
    uri = f"{prefix}/weights.bin"
    store.put_bytes(uri, b"w" * 5000)
    dest = tmp_path / "weights.bin"
    dest.write_bytes(b"old")
    with pytest.raises(ObjectTooLarge, match="5000 bytes"):
        store.download_file(uri, dest, max_bytes=4999)
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]


@pytest.mark.parametrize("bad", [-1, True, "10", 1.5], ids=["negative", "bool", "str", "float"])
def test_bad_cap_is_a_value_error(s3, prefix: str, bad: object) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="max_bytes"):
        _store(s3, True).get_bytes(f"{prefix}/x", max_bytes=bad)  # type: ignore[arg-type]


def test_no_cap_reads_everything(s3, prefix: str) -> None:  # type: ignore[no-untyped-def]
    store = _store(s3, True)
    store.put_bytes(f"{prefix}/big", b"y" * (2 * 1024 * 1024))
    assert len(store.get_bytes(f"{prefix}/big")) == 2 * 1024 * 1024


RECORDS: dict[str, tuple[str, Callable[[Registry], Any]]] = {
    "version.json": ("m/versions/v1/version.json", lambda r: r.version_info("m", "v1")),
    "incumbent.json": ("m/incumbent.json", lambda r: r.incumbent("m")),
    "history-entry": ("m/history/00000001.json", lambda r: r.history("m")),
    "version-report": ("m/versions/v1/report.json", lambda r: r.read_report("m", "v1")),
}


@pytest.mark.parametrize("record", list(RECORDS), ids=list(RECORDS))
def test_registry_records_are_capped(s3, prefix: str, record: str) -> None:  # type: ignore[no-untyped-def]
    """A huge record planted in the registry is refused by size, not parsed."""
    store = _store(s3, True)
    key, read = RECORDS[record]
    size = MAX_RECORD_BYTES + 1 if record != "version-report" else 17 * 1024 * 1024
    if record == "version-report":  # a record of the old layout (no reportUri): versions/v1/report.json
        record = {"model": "m", "version": "v1", "sha256": "0" * 64, "size": 1, "registeredAt": "now"}
        record["uri"] = f"{prefix}/m/versions/v1/weights.pt"
        store.put_bytes(f"{prefix}/m/versions/v1/version.json", json.dumps(record).encode())
    store.put_bytes(f"{prefix}/{key}", b" " * size)
    with pytest.raises(ObjectTooLarge, match=key.replace(".", r"\.")) as info:
        read(Registry(store, prefix))
    assert isinstance(info.value, StoreError)
