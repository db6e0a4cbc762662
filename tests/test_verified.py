"""kretrain.verified against SeaweedFS: a file reaches its path only with the pinned sha256, one policy for pins."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest

from kretrain.store import ObjectStore, ObjectTooLarge
from kretrain.verified import HashMismatch, Unpinned, fetch_verified, sha256_file

GOOD, EVIL = b"good weights " * 100, b"evil pickle " * 100
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()


@pytest.fixture(scope="module")
def store(s3: Any) -> ObjectStore:
    return ObjectStore(endpoint_url=s3.endpoint, access_key=s3.server.access_key,
                       secret_key=s3.server.secret_key, region="us-east-1")  # fmt: skip


@pytest.fixture(scope="module")
def bucket(s3: Any) -> str:
    return str(s3.new_bucket("verified"))


def put(store: ObjectStore, bucket: str, data: bytes, sidecar: str | None = None) -> str:
    uri = f"s3://{bucket}/{uuid.uuid4().hex[:8]}/weights.pt"
    store.put_bytes(uri, data)
    if sidecar is not None:  # a `.sha256` beside the object: never consulted
        store.put_bytes(uri + ".sha256", f"{sidecar}  weights.pt\n".encode())
    return uri


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_matching_bytes_land_at_dest_and_nothing_else(store: ObjectStore, bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "w" / "weights.pt"
    uri = put(store, bucket, GOOD)
    assert fetch_verified(store, uri, dest, sha256=GOOD_SHA.upper(), max_bytes=None) == dest
    assert dest.read_bytes() == GOOD and leftovers(dest.parent) == ["weights.pt"]
    assert sha256_file(dest) == GOOD_SHA


HOSTILE = [
    ("other-bytes", EVIL, None, 10**6, HashMismatch),
    ("other-bytes-with-a-matching-sidecar", EVIL, hashlib.sha256(EVIL).hexdigest(), 10**6, HashMismatch),
    ("over-the-size-bound", GOOD, None, len(GOOD) - 1, ObjectTooLarge),
]


@pytest.mark.parametrize(
    ("data", "sidecar", "max_bytes", "error"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_refused_download_leaves_nothing_at_dest(
    data: bytes, sidecar: str | None, max_bytes: int, error: type[Exception], store: ObjectStore, bucket: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    dest = tmp_path / "w" / "weights.pt"
    dest.parent.mkdir()
    dest.write_bytes(b"stale file a loader could pick up")
    uri = put(store, bucket, data, sidecar)
    with pytest.raises(error):
        fetch_verified(store, uri, dest, sha256=GOOD_SHA, max_bytes=max_bytes)
    assert leftovers(dest.parent) == []  # neither the old file, nor the unverified bytes


@pytest.mark.parametrize(
    "pin",
    [None, "", "0" * 63, "g" * 64, GOOD_SHA + "0", f"{GOOD_SHA}  weights.pt"],
    ids=["none", "empty", "short", "not-hex", "long", "with-file-name"],
)
def test_without_a_valid_pin_nothing_is_downloaded(
    pin: str | None, store: ObjectStore, bucket: str, tmp_path: Path
) -> None:
    missing = f"s3://{bucket}/never-uploaded/{uuid.uuid4().hex}.pt"  # a download would be ObjectNotFound
    with pytest.raises(Unpinned, match="no valid pinned sha256"):
        fetch_verified(store, missing, tmp_path / "w.pt", sha256=pin, max_bytes=None)
    assert leftovers(tmp_path) == []


def test_reuse_keeps_a_verified_file_and_replaces_a_wrong_one(store: ObjectStore, bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "weights.pt"
    dest.write_bytes(GOOD)
    missing = f"s3://{bucket}/never-uploaded/{uuid.uuid4().hex}.pt"
    assert fetch_verified(store, missing, dest, sha256=GOOD_SHA, max_bytes=None, reuse=True) == dest  # no download
    dest.write_bytes(EVIL)
    uri = put(store, bucket, GOOD)
    assert fetch_verified(store, uri, dest, sha256=GOOD_SHA, max_bytes=None, reuse=True).read_bytes() == GOOD
