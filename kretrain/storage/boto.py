"""The boto3 transport: kept for `transport="boto3"` and as the reference the obstore transport is tested against."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
    SSLError,
)

from kretrain.storage.errors import ObjectNotFound, PreconditionFailed, StoreError, StoreUnavailable, error_for_status
from kretrain.storage.transport import ObjectInfo, Sink, backoff, strip_etag

# Every exception boto3 raises for a failed request.
BOTO_ERRORS = (ClientError, BotoCoreError, S3UploadFailedError)
# Failures while reading a response body (after botocore's own retries of the request).
_STREAM_ERRORS = (IncompleteReadError, ResponseStreamingError, ReadTimeoutError, ConnectionClosedError)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def map_error(exc: Exception, what: str, *, conditional: bool = False) -> StoreError:
    """The StoreError for a boto3 failure on `what` (a URI): the same classes the obstore transport raises."""
    if isinstance(exc, SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return StoreUnavailable(
            f"S3 endpoint for {what} presented a certificate that is not trusted; set AWS_CA_BUNDLE to the PEM "
            f"file of the CA that signed it ({exc})"
        )
    if not isinstance(exc, ClientError):
        return StoreUnavailable(f"S3 request for {what} failed after every attempt: {type(exc).__name__}: {exc}")
    status, code = _status(exc), _code(exc)
    if conditional and (status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict")):
        return PreconditionFailed(f"conditional write of {what} lost: HTTP {status} {code}")
    if code in ("NoSuchKey", "NotFound"):
        status = 404
    message = str(exc.response.get("Error", {}).get("Message", "") or "")
    return error_for_status(status, code, f"HTTP {status} {code} {message}".rstrip(), what)


class Boto3Transport:
    """S3 over a shared, thread-safe boto3 client (botocore's retries, `max_attempts` tries)."""

    name = "boto3"

    def __init__(self, client: Any, *, max_attempts: int = 8) -> None:
        self.client = client
        self.max_attempts = max(1, max_attempts)

    def list(self, bucket: str, prefix: str, *, delimiter: bool = False) -> tuple[list[ObjectInfo], list[str]]:
        paginator = self.client.get_paginator("list_objects_v2")
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "PaginationConfig": {"PageSize": 1000}}
        if delimiter:
            kwargs["Delimiter"] = "/"
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        try:
            for page in paginator.paginate(**kwargs):
                for o in page.get("Contents", []):
                    objects.append(ObjectInfo(o["Key"], int(o.get("Size", 0)), strip_etag(o.get("ETag"))))
                prefixes.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
        except BOTO_ERRORS as exc:
            raise map_error(exc, f"s3://{bucket}/{prefix} (list)") from exc
        return objects, prefixes

    def get(self, bucket: str, key: str, sink: Sink) -> str:
        what = f"s3://{bucket}/{key}"
        for attempt in range(1, self.max_attempts + 1):
            try:
                obj = self.client.get_object(Bucket=bucket, Key=key)
            except BOTO_ERRORS as exc:
                raise map_error(exc, what) from exc
            length = obj.get("ContentLength")
            try:
                sink.check_announced(length if isinstance(length, int) else None)
                sink.reset()
                for chunk in obj["Body"].iter_chunks(1024 * 1024):
                    sink.write(chunk)
                return strip_etag(obj.get("ETag"))
            except _STREAM_ERRORS as exc:
                # botocore retries the request, not the read of its body.
                if attempt == self.max_attempts:
                    raise map_error(exc, what) from exc
            except BaseException:
                obj["Body"].close()  # the rest of a body that ran past the cap (or a full disk) is not read
                raise
            time.sleep(backoff(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            resp = self.client.head_object(Bucket=bucket, Key=key)
        except BOTO_ERRORS as exc:
            if isinstance(exc, ClientError) and _code(exc) != "NoSuchBucket" and _status(exc) == 404:
                return None
            raise map_error(exc, f"s3://{bucket}/{key}") from exc
        return ObjectInfo(key, int(resp["ContentLength"]), strip_etag(resp["ETag"]))

    def put(self, bucket: str, key: str, data: bytes, *, if_none_match: bool = False, if_match: str = "") -> str:
        conditions: dict[str, str] = {}
        if if_none_match:
            conditions["IfNoneMatch"] = "*"
        if if_match:
            conditions["IfMatch"] = f'"{if_match}"'
        what = f"s3://{bucket}/{key}"
        try:
            resp = self.client.put_object(Bucket=bucket, Key=key, Body=data, **conditions)
        except BOTO_ERRORS as exc:
            error = map_error(exc, what, conditional=bool(conditions))
            if if_match and isinstance(error, ObjectNotFound):
                error = PreconditionFailed(f"conditional write of {what} lost: the object is gone")
            raise error from exc
        return strip_etag(resp.get("ETag"))

    def put_file(self, bucket: str, key: str, path: Path) -> str:
        try:
            self.client.upload_file(str(path), bucket, key)
        except BOTO_ERRORS as exc:
            raise map_error(exc, f"s3://{bucket}/{key}") from exc
        info = self.head(bucket, key)
        return info.etag if info else ""

    def delete(self, bucket: str, key: str) -> None:
        try:
            self.client.delete_object(Bucket=bucket, Key=key)
        except BOTO_ERRORS as exc:
            raise map_error(exc, f"s3://{bucket}/{key}") from exc

    def close(self) -> None:
        self.client.close()
