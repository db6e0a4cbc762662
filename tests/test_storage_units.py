"""kretrain.storage without a server: the location type, error mapping of both transports, the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from obstore import exceptions as obx

from kretrain.storage import (
    AccessDenied,
    ObjectNotFound,
    PreconditionFailed,
    S3Location,
    StoreError,
    StoreUnavailable,
    obs,
    read_manifest,
)
from kretrain.storage import boto as boto_transport
from kretrain.storage.manifest import MANIFEST_NAME, write_manifest
from kretrain.storage.transport import ObjectInfo


@pytest.mark.parametrize(
    ("uri", "bucket", "key", "prefix"),
    [("s3://b/p/q", "b", "p/q", "p/q/"), ("s3://bucket/", "bucket", "", ""), ("s3://bk//a/b/", "bk", "a/b", "a/b/")],
    ids=["nested", "bucket-only", "extra-slashes"],
)
def test_location_is_parsed_once(uri: str, bucket: str, key: str, prefix: str) -> None:
    loc = S3Location.parse(uri)
    assert (loc.bucket, loc.key, loc.prefix) == (bucket, key, prefix)
    assert S3Location.parse(loc.uri) == loc
    assert loc.join("x/", "/y.json").uri == f"s3://{bucket}/{prefix}x/y.json"


def test_location_without_key_names_the_uri() -> None:
    with pytest.raises(ValueError, match=r"'s3://b'"):
        S3Location.parse("s3://b").object_key()


def _client_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


def _obstore_error(cls: type[Exception], status: int, code: str) -> Exception:
    return cls(
        f"Error performing GET http://h/b/k - Server returned non-2xx status code: {status} X: <Code>{code}</Code>"
    )


# (status, code, conditional) -> the error class both transports must raise
CASES = [
    (404, "NoSuchKey", False, ObjectNotFound),
    (404, "NoSuchBucket", False, StoreError),
    (403, "AccessDenied", False, AccessDenied),
    (403, "SignatureDoesNotMatch", False, AccessDenied),
    (503, "SlowDown", False, StoreUnavailable),
    (500, "InternalError", False, StoreUnavailable),
    (412, "PreconditionFailed", True, PreconditionFailed),
    (409, "ConditionalRequestConflict", True, PreconditionFailed),
    (400, "InvalidArgument", False, StoreError),
]
OBSTORE_CLASS = {404: FileNotFoundError, 403: obx.PermissionDeniedError, 412: obx.PreconditionError}


@pytest.mark.parametrize(("status", "code", "conditional", "expected"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_both_transports_map_to_the_same_closed_hierarchy(
    status: int, code: str, conditional: bool, expected: type[StoreError]
) -> None:
    from_boto = boto_transport.map_error(_client_error(status, code), "s3://b/k", conditional=conditional)
    cls = OBSTORE_CLASS.get(status, obx.GenericError)
    from_obstore = obs.map_error(_obstore_error(cls, status, code), "s3://b/k", conditional=conditional)
    for error in (from_boto, from_obstore):
        assert type(error) is expected, (error, expected)
        assert "s3://b/k" in str(error)


def test_a_connection_failure_is_unavailable_on_obstore() -> None:
    error = obs.map_error(obx.GenericError("Generic S3 error: HTTP error: error sending request"), "s3://b/k")
    assert isinstance(error, StoreUnavailable) and "s3://b/k" in str(error)


@pytest.mark.parametrize(
    "content",
    [
        "",
        "not json",
        json.dumps({"version": 2, "objects": {}}),
        json.dumps({"version": 1, "objects": {"k": {"etag": 1}}}),
    ],
    ids=["empty", "garbage", "future-version", "bad-entry"],
)
def test_a_corrupt_manifest_reads_as_empty(tmp_path: Path, content: str) -> None:
    (tmp_path / MANIFEST_NAME).write_text(content)
    assert read_manifest(tmp_path) == {}


def test_manifest_round_trip(tmp_path: Path) -> None:
    objects = {"a/b.jpg": ObjectInfo("a/b.jpg", 3, "e1"), "c": ObjectInfo("c", 0, "e2")}
    write_manifest(tmp_path, objects)
    assert read_manifest(tmp_path) == objects
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["objects"]["c"] == {"etag": "e2", "size": 0}
