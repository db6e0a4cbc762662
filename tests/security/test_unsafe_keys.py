"""Hostile object keys: control, format and line-separator characters are refused, locally and through a real sync."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from kretrain.api import DatasetSpec
from kretrain.registry import Registry, RegistryError
from kretrain.store import MANIFEST_NAME, ObjectStore, UnsafeKeyError, safe_local_path, safe_local_paths
from kretrain.trainer.data.pull import pull_dataset

# (key, text the error must name)
HOSTILE = [
    ("images/a\nb.jpg", "U+000A"),
    ("images/a\rb.jpg", "U+000D"),
    ("images/a\r\n../../x.jpg", "U+000D"),
    ("images/a\u2028b.jpg", "U+2028 LINE SEPARATOR"),
    ("images/a\u2029b.jpg", "U+2029 PARAGRAPH SEPARATOR"),
    ("images/a\x85b.jpg", "U+0085"),
    ("images/a\tb.jpg", "U+0009"),
    ("images/a\x0bb.jpg", "U+000B"),
    ("images/a\x0cb.jpg", "U+000C"),
    ("images/a\x1cb.jpg", "U+001C"),
    ("images/a\x7fb.jpg", "U+007F"),
    ("images/a\x00b.jpg", "U+0000"),
    ("images/a\u200eb.jpg", "U+200E LEFT-TO-RIGHT MARK"),
    ("images/gpj.\u202eexe", "U+202E RIGHT-TO-LEFT OVERRIDE"),
    ("images/\ufeffa.jpg", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
    ("images/a\u200bb.jpg", "U+200B ZERO WIDTH SPACE"),
    ("images/a\u2066b.jpg", "U+2066 LEFT-TO-RIGHT ISOLATE"),
    ("images/a\ud800b.jpg", "U+D800"),
    # The checks that were there before still hold.
    ("../outside.jpg", "'..' segment"),
    ("/etc/passwd", "is absolute"),
    ("images\\..\\x.jpg", "backslash"),
    ("C:/x.jpg", "drive letter"),
    ("images//x.jpg", "empty path segment"),
    ("", "is empty"),
]
HOSTILE_IDS = [repr(k)[1:-1][:40] or "empty" for k, _ in HOSTILE]

# Unusual but harmless: they stay allowed.
ALLOWED = [
    "images/a b.jpg",
    "images/a\u00a0b.jpg",
    "images/\u6f22\u5b57.jpg",
    "images/caf\u00e9.jpg",
    "images/\ue000.jpg",
]


@pytest.mark.parametrize(("key", "named"), HOSTILE, ids=HOSTILE_IDS)
def test_hostile_key_is_refused(tmp_path: Path, key: str, named: str) -> None:
    for check in (lambda: safe_local_path(tmp_path, key), lambda: safe_local_paths(tmp_path, ["ok.jpg", key])):
        with pytest.raises(UnsafeKeyError) as info:
            check()
        assert named in str(info.value)
        assert repr(key) in str(info.value)  # the key is named as a repr: no raw newline in the message


@pytest.mark.parametrize("key", ALLOWED, ids=["space", "nbsp", "cjk", "accent", "private-use"])
def test_unusual_but_safe_keys_pass(tmp_path: Path, key: str) -> None:
    assert safe_local_path(tmp_path, key) == tmp_path.resolve() / key
    assert safe_local_paths(tmp_path, [key])[key] == tmp_path.resolve() / key


@pytest.fixture(scope="module")
def bucket(s3) -> str:  # type: ignore[no-untyped-def]
    return s3.new_bucket("keys")


def _store(s3, fast: bool) -> ObjectStore:  # type: ignore[no-untyped-def]
    return ObjectStore(
        endpoint_url=s3.endpoint,
        access_key=s3.server.access_key,
        secret_key=s3.server.secret_key,
        region="us-east-1",
        fast_path=fast,
    )


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "boto3"])
@pytest.mark.parametrize(
    "key",
    ["images/a.jpg\n/tmp/outside.jpg", "images/a\u2028b.jpg", "labels/x\x85y.txt"],
    ids=["newline-escape", "U+2028", "U+0085"],
)
def test_sync_refuses_a_hostile_key(s3, bucket: str, tmp_path: Path, fast: bool, key: str) -> None:  # type: ignore[no-untyped-def]
    """SeaweedFS stores and lists such keys; the sync stops on them with the key named, writing nothing outside."""
    store = _store(s3, fast)
    uri = f"s3://{bucket}/{uuid.uuid4().hex[:8]}/era-1"
    store.put_bytes(f"{uri}/images/ok.jpg", b"fine")
    store.put_bytes(f"{uri}/{key}", b"hostile")
    assert key in [o.key for o in store.list(uri)]  # the server really holds it
    cache = tmp_path / "cache"
    with pytest.raises(UnsafeKeyError) as info:
        store.sync_down(uri, cache)
    assert repr(key) in str(info.value) and uri in str(info.value)
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert all(p.startswith("cache/") for p in written), written
    assert not any((tmp_path / p).read_text(errors="replace") == "hostile" for p in written)
    assert key not in (cache / MANIFEST_NAME).read_text()


def test_data_pull_fails_on_a_hostile_key(s3, bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The trainer's pull (kretrain/trainer/data/pull.py) fails the run rather than training on a partial era."""
    store = _store(s3, True)
    uri = f"s3://{bucket}/{uuid.uuid4().hex[:8]}"
    store.put_bytes(f"{uri}/era-1/images/ok.jpg", b"fine")
    store.put_bytes(f"{uri}/era-1/images/evil\u2028.jpg", b"hostile")
    with pytest.raises(UnsafeKeyError, match="U\\+2028"):
        pull_dataset(DatasetSpec(uri=uri, eras=["era-1"]), store, tmp_path / "cache")


@pytest.mark.parametrize(
    "name", ["v1\n", "v1\nx", "v1\u2028", "../v1", "v1/x"], ids=["trailing-nl", "nl", "U+2028", "dotdot", "slash"]
)
def test_registry_refuses_hostile_names(s3, bucket: str, name: str) -> None:  # type: ignore[no-untyped-def]
    """Version and model names become keys; `$` in the old pattern let a trailing newline through."""
    registry = Registry(_store(s3, True), f"s3://{bucket}/reg")
    with pytest.raises(RegistryError, match="invalid version"):
        registry.version_uri("m", name)
    with pytest.raises(RegistryError, match="invalid model name"):
        registry.run_uri(name, "r1")


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "boto3"])
def test_folder_markers_are_not_files(s3, bucket: str, tmp_path: Path, fast: bool) -> None:  # type: ignore[no-untyped-def]
    """The AWS console's "Create folder" writes `images/dir/` (zero bytes, key ending in `/`): the listing leaves it
    out, so a sync neither fails on an 'empty path segment' nor writes a file for it."""
    store = _store(s3, fast)
    prefix = f"{uuid.uuid4().hex[:8]}/era-1"
    store.put_bytes(f"s3://{bucket}/{prefix}/images/ok.jpg", b"fine")
    s3.client().put_object(Bucket=bucket, Key=f"{prefix}/images/dir/", Body=b"")  # the raw key, slash kept
    assert f"{prefix}/images/dir/" in [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"]]
    result = store.sync_down(f"s3://{bucket}/{prefix}", tmp_path / "cache")
    assert sorted(result.files) == ["images/ok.jpg"]
    assert sorted(p.name for p in (tmp_path / "cache" / "images").iterdir()) == ["ok.jpg"]
