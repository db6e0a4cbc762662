"""The default S3 transport: obstore (Rust `object_store` bindings) with credentials resolved by botocore."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import obstore
from obstore import exceptions as obx
from obstore.store import S3Store

from kretrain.storage.errors import (
    AccessDenied,
    ObjectNotFound,
    PreconditionFailed,
    StoreError,
    StoreUnavailable,
    UnsafeKeyError,
    error_for_status,
)
from kretrain.storage.transport import ObjectInfo, Sink, Transport, backoff, strip_etag

# Every exception obstore raises for a failed request (a missing object is the builtin FileNotFoundError).
OBSTORE_ERRORS: tuple[type[Exception], ...] = (obx.BaseError, FileNotFoundError)
_STATUS = re.compile(r"status code: (\d{3})")
_CODE = re.compile(r"<Code>([^<]{1,64})</Code>")
_CHUNK = 1024 * 1024
# How obstore refuses a GET answer without Content-Length.
_NO_LENGTH = "Content-Length Header missing"


def proxied(endpoint_url: str) -> str | None:
    """The proxy the environment (HTTP(S)_PROXY without a NO_PROXY match) sends requests to the endpoint through."""
    parts = urlsplit(endpoint_url)
    proxies = urllib.request.getproxies()
    if parts.scheme not in proxies or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxies[parts.scheme]


def map_error(exc: Exception, what: str, *, conditional: bool = False) -> StoreError:
    """The StoreError for an obstore failure on `what` (a URI); `conditional`: a 409/412 is a lost condition."""
    text = str(exc)
    first = text.split("\n", 1)[0][:400]
    status_match, code_match = _STATUS.search(text), _CODE.search(text)
    status = int(status_match[1]) if status_match else 0
    code = code_match[1] if code_match else ""
    if isinstance(exc, obx.AlreadyExistsError | obx.PreconditionError) or (conditional and status in (409, 412)):
        return PreconditionFailed(f"conditional write of {what} lost: HTTP {status} {code}".rstrip())
    if isinstance(exc, obx.NotFoundError | FileNotFoundError) and code != "NoSuchBucket":
        return ObjectNotFound(f"no such object: {what}")
    if isinstance(exc, obx.PermissionDeniedError | obx.UnauthenticatedError):
        return AccessDenied(f"S3 denied access to {what}: HTTP {status} {code}".rstrip())
    if isinstance(exc, obx.InvalidPathError):
        return UnsafeKeyError(f"S3 answered for {what} with an object key that is not a valid path: {first}")
    if status:
        return error_for_status(status, code, f"HTTP {status} {code}".rstrip(), what)
    if "certificate" in text.lower():
        return StoreUnavailable(
            f"S3 endpoint for {what} presented a certificate that is not trusted; set AWS_CA_BUNDLE to the PEM "
            f"file of the CA that signed it ({first})"
        )
    return StoreUnavailable(f"S3 request for {what} failed after every attempt: {first}")


class _Credentials:
    """obstore credential provider over botocore credentials (refreshed by botocore when they expire)."""

    def __init__(self, credentials: Any) -> None:
        self.credentials = credentials

    def __call__(self) -> dict[str, Any]:
        frozen = self.credentials.get_frozen_credentials()
        return {
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "token": frozen.token,
            "expires_at": datetime.now(UTC) + timedelta(minutes=5) if frozen.token else None,
        }


class ObstoreTransport:
    """S3 over obstore: one `S3Store` per bucket, sharing the connection pool settings and retries.

    Retries are obstore's (exponential backoff with jitter on 429/5xx and connection errors,
    `max_attempts` tries in all); a body cut short is fetched again here, `max_attempts` times. HTTPS
    endpoints are verified against `ca_bundle` (a PEM file, added to the system roots) and an
    environment proxy (HTTP(S)_PROXY, NO_PROXY) is honoured.
    """

    name = "obstore"

    def __init__(
        self,
        endpoint_url: str | None,
        region: str,
        credentials: Any,
        *,
        max_attempts: int = 8,
        max_connections: int = 20,
        ca_bundle: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        fallback: Callable[[], Transport] | None = None,
    ) -> None:
        self._fallback_factory = fallback
        self.max_attempts = max(1, max_attempts)
        self._config: dict[str, Any] = {"region": region}
        client: dict[str, Any] = {
            "connect_timeout": timedelta(seconds=connect_timeout),
            "read_timeout": timedelta(seconds=read_timeout),
            "timeout": timedelta(hours=2),  # a whole request, body included (large model files)
            "pool_max_idle_per_host": str(max(1, max_connections)),
        }
        if endpoint_url:
            self._config |= {"endpoint": endpoint_url.rstrip("/"), "virtual_hosted_style_request": False}
            client["allow_http"] = endpoint_url.startswith("http://")
            proxy = proxied(endpoint_url)
            if proxy:
                client["proxy_url"] = proxy
        if ca_bundle:
            client["root_certificate"] = Path(ca_bundle).read_text()
        self._client = client
        self._retry = {
            "max_retries": self.max_attempts - 1,
            "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=20), "base": 2},
            "retry_timeout": timedelta(minutes=5),
        }
        self._provider = _Credentials(credentials) if credentials is not None else None
        if self._provider is None:
            self._config["skip_signature"] = True
        self._stores: dict[str, S3Store] = {}
        self._lock = threading.Lock()

    def _fallback(self) -> Transport:
        """The boto3 transport for what obstore does not do (raw listings, plain deletes, keys it cannot address,
        bodies without Content-Length)."""
        if self._fallback_factory is None:
            raise StoreError("this obstore transport has no boto3 fallback for listings and unaddressable keys")
        return self._fallback_factory()

    def _store(self, bucket: str) -> S3Store:
        with self._lock:
            store = self._stores.get(bucket)
            if store is None:
                store = self._stores[bucket] = S3Store(
                    bucket,
                    config=self._config,  # type: ignore[arg-type]
                    client_options=self._client,  # type: ignore[arg-type]
                    retry_config=self._retry,  # type: ignore[arg-type]
                    credential_provider=self._provider,  # type: ignore[arg-type]
                )
            return store

    def list(self, bucket: str, prefix: str, *, delimiter: bool = False) -> tuple[list[ObjectInfo], list[str]]:
        # Through boto3: object_store turns listed keys into its Paths, so a folder marker `a/` comes back as
        # `a` (then a GET of it fails) and one key it cannot parse (`..`, `//`, a control character) fails the
        # whole listing with a parse error instead of naming the key.
        return self._fallback().list(bucket, prefix, delimiter=delimiter)

    def get(self, bucket: str, key: str, sink: Sink) -> str:
        what = f"s3://{bucket}/{key}"
        store = self._store(bucket)
        for attempt in range(1, self.max_attempts + 1):
            try:
                result = obstore.get(store, key)
            except ValueError:  # a key object_store cannot address (a control character, `..`, `//`)
                return self._fallback().get(bucket, key, sink)
            except OBSTORE_ERRORS as exc:
                if _NO_LENGTH in str(exc):  # obstore reads no body without Content-Length (a chunked answer)
                    return self._fallback().get(bucket, key, sink)
                raise map_error(exc, what) from exc
            meta = result.meta
            sink.check_announced(int(meta["size"]))
            sink.reset()
            try:
                if int(meta["size"]) <= _CHUNK:  # a small object in one piece: no stream to drive
                    sink.write(memoryview(result.bytes()))  # type: ignore[arg-type]
                else:
                    stream = result.stream(min_chunk_size=_CHUNK)
                    while True:
                        try:
                            chunk = next(stream)
                        except StopIteration:
                            break
                        sink.write(chunk)  # a local error (full disk, size cap) is raised as it is, not retried
            except OBSTORE_ERRORS as exc:
                if attempt == self.max_attempts:
                    raise map_error(exc, what) from exc
            else:
                if sink.count == int(meta["size"]):
                    return strip_etag(meta["e_tag"])
                if attempt == self.max_attempts:
                    raise StoreUnavailable(f"S3 GET {what}: body cut short ({sink.count} of {meta['size']} bytes)")
            time.sleep(backoff(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            meta = obstore.head(self._store(bucket), key)
        except ValueError:
            return self._fallback().head(bucket, key)
        except OBSTORE_ERRORS as exc:
            error = map_error(exc, f"s3://{bucket}/{key}")
            if isinstance(error, ObjectNotFound):
                return None
            raise error from exc
        return ObjectInfo(key, int(meta["size"]), strip_etag(meta["e_tag"]))

    def put(self, bucket: str, key: str, data: bytes, *, if_none_match: bool = False, if_match: str = "") -> str:
        mode: Any = "create" if if_none_match else {"e_tag": f'"{if_match}"'} if if_match else "overwrite"
        conditional = if_none_match or bool(if_match)
        try:
            result = obstore.put(self._store(bucket), key, data, mode=mode, use_multipart=False)
        except ValueError:
            return self._fallback().put(bucket, key, data, if_none_match=if_none_match, if_match=if_match)
        except OBSTORE_ERRORS as exc:
            error = map_error(exc, f"s3://{bucket}/{key}", conditional=conditional)
            if if_match and isinstance(error, ObjectNotFound):
                error = PreconditionFailed(f"conditional write of s3://{bucket}/{key} lost: the object is gone")
            raise error from exc
        return strip_etag(result["e_tag"])

    def put_file(self, bucket: str, key: str, path: Path) -> str:
        try:
            result = obstore.put(self._store(bucket), key, Path(path), chunk_size=16 * 1024 * 1024)
        except ValueError:
            return self._fallback().put_file(bucket, key, path)
        except OBSTORE_ERRORS as exc:
            raise map_error(exc, f"s3://{bucket}/{key}") from exc
        return strip_etag(result["e_tag"])

    def delete(self, bucket: str, key: str) -> None:
        # Through boto3: obstore sends one delete as a multi-object `POST ?delete` (it needs Content-MD5, which
        # some S3-compatible servers do not take), boto3 as a plain DELETE.
        self._fallback().delete(bucket, key)

    def close(self) -> None:
        with self._lock:
            self._stores.clear()
