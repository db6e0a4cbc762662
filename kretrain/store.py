"""S3 object store over boto3: listing, parallel cached sync, conditional writes, safe local paths."""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import os
import re
import stat
import time
import unicodedata
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Container, Generator, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, NamedTuple
from urllib.parse import unquote_plus

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from kretrain.s3fast import RETRY_STATUS, BodyTooLarge, FastS3, Response, S3HTTPError, backoff, proxied

# Name of the small manifest (key -> etag, size) that `sync_down` keeps in the local directory.
MANIFEST_NAME = ".kretrain-sync.json"
# Sub-prefix listings that run at once (listing is server CPU; downloads should not wait behind it).
LIST_CONCURRENCY = 4
# Suffix of in-flight downloads; they are renamed into place only when complete.
PART_SUFFIX = ".kretrain-part"
# Failures while reading a response body (after botocore's own retries of the request).
_STREAM_ERRORS = (IncompleteReadError, ResponseStreamingError, ReadTimeoutError, ConnectionClosedError)
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")


class StoreError(Exception):
    """Base of every error raised by the object store."""


class ObjectNotFound(StoreError, FileNotFoundError):
    """A missing object (HTTP 404 NoSuchKey); also a FileNotFoundError."""


class AccessDenied(StoreError, PermissionError):
    """The store refused the credentials or the permission (HTTP 403: AccessDenied, a bad key or signature)."""


class StoreUnavailable(StoreError):
    """The store could not be reached, or answered throttling / 5xx, on every attempt: worth a later retry."""


class UnsafeKeyError(StoreError, ValueError):
    """An object key that would map to a path outside the local directory."""


class PreconditionFailed(StoreError):
    """A conditional write (If-Match / If-None-Match) lost: HTTP 412, or 409 on concurrent writes."""


class ObjectTooLarge(StoreError):
    """An object over the size cap a reader passed (`max_bytes`); it was not read into memory.

    `size` is the object's announced size (Content-Length) or, when the server announced none or lied,
    the bytes received when reading stopped (then more than `limit`).
    """

    def __init__(self, uri: str, size: int, limit: int, *, announced: bool = True) -> None:
        what = f"is {size} bytes" if announced else f"sent more than {limit} bytes ({size} received before stopping)"
        super().__init__(f"object {uri} {what}, over the limit of {limit} bytes for it; not read")
        self.uri = uri
        self.size = size
        self.limit = limit


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split `s3://bucket/a/b` into `("bucket", "a/b")` (no leading/trailing slash on the key prefix)."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ValueError(f"not an S3 URI (expected s3://bucket/prefix): {uri!r}")
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket or "/" in bucket or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.\-_]{0,254}", bucket):
        raise ValueError(f"S3 URI has no valid bucket name: {uri!r}")
    return bucket, key.strip("/")


def join_uri(base: str, *parts: str) -> str:
    """Join URI/key parts with single slashes: `join_uri("s3://b/p/", "x", "y.json")` -> `s3://b/p/x/y.json`."""
    out = base.rstrip("/")
    for part in parts:
        part = part.strip("/")
        if part:
            out = f"{out}/{part}"
    return out


# Keys that need a closer look: empty, NUL, backslash, a drive prefix, or an empty, "." or ".." segment.
_SUSPECT_KEY = re.compile(r"\A\Z|\x00|\\|\A[A-Za-z]:|(?:\A|/)\.{0,2}(?:/|\Z)")
# Unicode categories no key may contain: controls (Cc: NUL..US, DEL, C1 such as U+0085 NEL, so \n \r \t \v
# \f too), line and paragraph separators (Zl U+2028, Zp U+2029), format characters (Cf: invisible ones
# such as U+200B, U+200E/U+200F, bidi overrides U+202A-U+202E and isolates, U+FEFF) and lone surrogates
# (Cs). Controls and separators split the line-based image lists Ultralytics reads; format characters
# make a key look like another one. Other spaces (Zs), private-use (Co) and unassigned (Cn) characters
# are allowed.
UNSAFE_KEY_CATEGORIES = frozenset({"Cc", "Zl", "Zp", "Cf", "Cs"})


def _unsafe_char(key: str) -> str | None:
    """The first character of `key` in UNSAFE_KEY_CATEGORIES, described (`U+2028 LINE SEPARATOR, category Zl`)."""
    if key.isprintable():  # no Cc, Cf, Cs, Zl, Zp (nor Zs, Co, Cn, which are allowed): the common case, in C
        return None
    for ch in key:
        category = unicodedata.category(ch)
        if category in UNSAFE_KEY_CATEGORIES:
            name = unicodedata.name(ch, "")
            return f"U+{ord(ch):04X}{' ' + name if name else ''} (category {category})"
    return None


def _check_key(root: Path, key: str) -> None:
    """Raise UnsafeKeyError if the key is malformed, holds an unsafe character, or could escape `root` lexically."""
    char = _unsafe_char(key)
    if char is not None:
        raise UnsafeKeyError(
            f"unsafe object key {key!r}: it contains {char}, a control, format or line-separator character; "
            f"refusing to map it under {root}"
        )
    if not _SUSPECT_KEY.search(key):
        return
    problem = None
    if not key:
        problem = "is empty"
    elif "\x00" in key:
        problem = "contains a NUL byte"
    elif "\\" in key:
        problem = "contains a backslash"
    elif key.startswith("/"):
        problem = "is absolute"
    elif re.match(r"^[A-Za-z]:", key):
        problem = "starts with a drive letter"
    else:
        segments = key.split("/")
        if any(s == "" for s in segments):
            problem = "has an empty path segment"
        elif any(s in (".", "..") for s in segments):
            problem = "has a '.' or '..' segment"
    if problem:
        raise UnsafeKeyError(f"unsafe object key {key!r}: it {problem}; refusing to map it under {root}")


def safe_local_paths(root: Path, keys: Iterable[str]) -> dict[str, Path]:
    """`safe_local_path` for many keys: each directory is resolved once (symlink check), not each file."""
    base = Path(root).resolve()
    prefix = f"{base}/" if str(base) != "/" else "/"
    checked: dict[str, bool] = {}
    out: dict[str, Path] = {}
    for key in keys:
        _check_key(root, key)
        parent, _, _ = key.rpartition("/")
        if parent not in checked:
            resolved = base.joinpath(*parent.split("/")).resolve() if parent else base
            checked[parent] = resolved == base or base in resolved.parents
        if not checked[parent]:
            raise UnsafeKeyError(f"unsafe object key {key!r}: its folder resolves outside {base}")
        out[key] = Path(f"{prefix}{key}")
    return out


def safe_local_path(root: Path, key: str) -> Path:
    """The path of `key` under `root`; UnsafeKeyError if the key could escape it or is malformed.

    Rejected: empty keys, absolute keys (leading `/`), backslashes, empty segments (`a//b`), `.` and `..`
    segments, Windows drive prefixes (`C:`), and any character in UNSAFE_KEY_CATEGORIES (controls such as
    NUL, `\n`, `\r`, U+0085; line/paragraph separators U+2028/U+2029; format characters such as U+200E,
    U+202E, U+FEFF; lone surrogates).
    """
    _check_key(root, key)
    base = Path(root).resolve()
    path = base.joinpath(*key.split("/"))
    # Defence in depth: a symlink already in the cache must not lead outside it either.
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        raise UnsafeKeyError(f"unsafe object key {key!r}: it resolves to {resolved}, outside {base}")
    return path


class ObjectInfo(NamedTuple):
    """One object as listed: key (relative to the listed prefix), size in bytes, ETag without quotes."""

    key: str
    size: int
    etag: str


@dataclass
class SyncResult:
    """What `sync_down` did; `files` maps every key (relative to the prefix) to its local path."""

    downloaded: int
    skipped: int
    bytes: int
    files: dict[str, Path] = field(default_factory=dict)
    deleted: int = 0


def _etag(raw: str | None) -> str:
    return (raw or "").strip('"')


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _is_missing(exc: ClientError) -> bool:
    """A missing object (not a missing bucket, which is an error of its own)."""
    return _code(exc) != "NoSuchBucket" and (_status(exc) == 404 or _code(exc) in ("NoSuchKey", "404", "NotFound"))


_DENIED_CODES = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled", "403")


def _store_error(exc: Exception, what: str) -> StoreError:
    """The StoreError for a boto3 failure on `what` (a URI): the same classes the fast path raises."""
    if isinstance(exc, ClientError):
        status, code = _status(exc), _code(exc)
        message = str(exc.response.get("Error", {}).get("Message", "") or "")
        detail = f"HTTP {status} {code} {message}".rstrip()
        if _is_missing(exc):
            return ObjectNotFound(f"no such object: {what}")
        if status == 403 or code in _DENIED_CODES:
            return AccessDenied(f"S3 denied access to {what}: {detail}")
        if status in RETRY_STATUS or status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout"):
            return StoreUnavailable(f"S3 request for {what} failed after every attempt: {detail}")
        return StoreError(f"S3 request for {what} failed: {detail}")
    return StoreUnavailable(f"S3 request for {what} failed after every attempt: {type(exc).__name__}: {exc}")


_BOTO_ERRORS = (ClientError, BotoCoreError, S3UploadFailedError)


def _is_precondition(exc: ClientError) -> bool:
    return _status(exc) in (409, 412) or _code(exc) in (
        "PreconditionFailed",
        "ConditionalRequestConflict",
        "412",
        "409",
    )


_TEMP_TAG = uuid.uuid4().hex[:8]
_temp_counter = itertools.count()


def _temp_name(name: str) -> str:
    """A temp-file name beside `name`: unique per process (and fork) without reading randomness each time."""
    return f".{name}.{_TEMP_TAG}-{os.getpid()}-{next(_temp_counter)}{PART_SUFFIX}"


def _create_new(path: Path) -> io.FileIO:
    """Open a file that must not exist yet (never one planted there, nor a symlink); makes its folder if needed."""
    try:
        return io.FileIO(path, "xb")
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return io.FileIO(path, "xb")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(_temp_name(path.name))
    try:
        with _create_new(tmp) as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


class ObjectStore:
    """An S3 bucket store: one shared, thread-safe boto3 client and a thread pool for bulk transfers.

    Unset constructor arguments fall back to boto3's own resolution (`AWS_ENDPOINT_URL`,
    `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, instance roles). Retries use
    botocore's `standard` mode (exponential backoff with jitter on throttling, 5xx and connection
    errors) with `max_attempts` tries; `retry_mode="adaptive"` adds client-side rate limiting.
    Downloads of objects whose ETag is a plain MD5 (single-part uploads) are verified against it.

    Fast path: with an explicit endpoint (SeaweedFS, MinIO, any path-style S3) that is not reached
    through a proxy, bulk listing and the object GETs of `download_file`/`sync_down` go through
    `kretrain.s3fast.FastS3`: SigV4 signed by botocore, sent over pooled keep-alive `http.client`
    connections, listings parsed with ElementTree. A small object then costs about a third of the
    client CPU of a boto3 `get_object`, and listing about 20x less than botocore's response parser; on
    a small machine that CPU is what limits a pull. Those requests are retried the same way
    (exponential backoff with full jitter on 429/5xx and connection errors, `max_attempts` tries);
    HTTPS endpoints are verified against `AWS_CA_BUNDLE` or the system store. Without an endpoint
    (AWS), or with `fast_path=False`, boto3 is used for everything.
    """

    def __init__(
        self,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        max_workers: int = 16,
        *,
        max_attempts: int = 8,
        retry_mode: str = "standard",
        verify_md5: bool = True,
        fast_path: bool = True,
    ) -> None:
        self.max_workers = max(1, int(max_workers))
        self.verify_md5 = verify_md5
        endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        self.endpoint_url = endpoint
        config = Config(
            retries={"mode": retry_mode, "total_max_attempts": max(1, max_attempts)},  # type: ignore[arg-type]
            max_pool_connections=self.max_workers + 4,
            connect_timeout=10,
            read_timeout=60,
            # Custom endpoints (SeaweedFS, MinIO) on an IP/port need path-style addressing.
            s3={"addressing_style": "path"} if endpoint else {},
            # No CRC on plain PUTs/GETs beyond what the service requires: less client CPU, and
            # S3-compatible servers without flexible-checksum support accept the requests.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session(
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
        )
        self.client = session.client("s3", endpoint_url=endpoint, config=config)
        self.max_attempts = max(1, max_attempts)
        self._fast: FastS3 | None = None
        credentials = session.get_credentials() if fast_path and endpoint else None
        if endpoint and credentials is not None and not proxied(endpoint):
            self._fast = FastS3(
                str(self.client.meta.endpoint_url),
                credentials,
                self.client.meta.region_name or "us-east-1",
                max_connections=self.max_workers + 4,
                max_attempts=self.max_attempts,
                ca_bundle=os.environ.get("AWS_CA_BUNDLE") or None,
            )

    def close(self) -> None:
        """Close pooled connections (of the fast path and of boto3); the store can still be used after."""
        if self._fast is not None:
            self._fast.close()
        self.client.close()

    # ---------------------------------------------------------------- fast path (signed raw requests)

    def _fast_get(
        self, bucket: str, key: str = "", query: dict[str, str] | None = None, into: _HashingFile | None = None
    ) -> Response:
        assert self._fast is not None
        limit = into.limit if into is not None else None
        try:
            return self._fast.get(bucket, key, query, into=into, max_body=limit)
        except S3HTTPError as exc:
            raise StoreUnavailable(str(exc)) from exc
        except BodyTooLarge as exc:
            raise ObjectTooLarge(f"s3://{bucket}/{key}", exc.length, exc.limit) from None

    @staticmethod
    def _raise_for(resp: Response, what: str) -> None:
        body = resp.body
        code = message = ""
        with contextlib.suppress(ET.ParseError):
            root = ET.fromstring(body or b"<x/>")
            code, message = root.findtext("Code") or "", root.findtext("Message") or ""
        if resp.status == 404 and code in ("NoSuchKey", ""):
            raise ObjectNotFound(f"no such object: {what}")
        detail = f"HTTP {resp.status} {code} {message}".rstrip()
        if resp.status == 403 or code in _DENIED_CODES:
            raise AccessDenied(f"S3 denied access to {what}: {detail}")
        if resp.status in RETRY_STATUS or resp.status >= 500:
            raise StoreUnavailable(f"S3 GET {what} failed after every attempt: {detail}")
        raise StoreError(f"S3 GET {what} failed: {detail}")

    def _fast_list(
        self, bucket: str, pfx: str, page_size: int, delimiter: str = ""
    ) -> tuple[list[tuple[str, int, str]], list[str]]:
        """(key, size, etag) of every object under pfx, and the common prefixes when a delimiter is given."""
        out: list[tuple[str, int, str]] = []
        prefixes: list[str] = []
        token: str | None = None
        while True:
            query = {"list-type": "2", "prefix": pfx, "encoding-type": "url", "max-keys": str(page_size)}
            if delimiter:
                query["delimiter"] = delimiter
            if token:
                query["continuation-token"] = token
            resp = self._fast_get(bucket, query=query)
            if resp.status != 200:
                self._raise_for(resp, f"s3://{bucket}/{pfx} (list)")
            root = ET.fromstring(resp.body)
            ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
            # Keys come URL-encoded only if the server says so (some ignore encoding-type).
            encoded = (root.findtext(f"{ns}EncodingType") or "").lower() == "url"
            for c in root.iter(f"{ns}Contents"):
                key = c.findtext(f"{ns}Key") or ""
                if encoded and ("%" in key or "+" in key):
                    key = unquote_plus(key)
                out.append((key, int(c.findtext(f"{ns}Size") or 0), _etag(c.findtext(f"{ns}ETag"))))
            for cp in root.iter(f"{ns}CommonPrefixes"):
                prefix = cp.findtext(f"{ns}Prefix") or ""
                prefixes.append(unquote_plus(prefix) if encoded else prefix)
            token = root.findtext(f"{ns}NextContinuationToken")
            if (root.findtext(f"{ns}IsTruncated") or "").lower() != "true" or not token:
                return out, prefixes

    def _list_chunks(
        self, uri: str, page_size: int = 1000, known: Container[str] = ()
    ) -> Generator[list[ObjectInfo], None, None]:
        """Every object under the URI's prefix (keys relative to it, unsorted), in chunks as listings complete.

        The fast path lists the first level with a delimiter, then the sub-prefixes `LIST_CONCURRENCY`
        at a time, and yields each sub-prefix as soon as its listing is done, so a caller can start on
        it while the others are still being listed. First-level folders not in `known` (new eras, the
        likely downloads) are listed first. boto3 yields one chunk per page.
        """
        bucket, prefix = parse_s3_uri(uri)
        pfx = f"{prefix}/" if prefix else ""

        def relative(raw: list[tuple[str, int, str]]) -> list[ObjectInfo]:
            # Directory markers (`a/`) and the prefix itself are not objects of the tree.
            return [ObjectInfo(k[len(pfx) :], size, etag) for k, size, etag in raw if k[len(pfx) :] and k[-1] != "/"]

        if self._fast is None:
            paginator = self.client.get_paginator("list_objects_v2")
            pages = iter(paginator.paginate(Bucket=bucket, Prefix=pfx, PaginationConfig={"PageSize": page_size}))
            while True:
                try:
                    page = next(pages)
                except StopIteration:
                    return
                except _BOTO_ERRORS as exc:
                    raise _store_error(exc, f"s3://{bucket}/{pfx} (list)") from exc
                yield relative(
                    [(o["Key"], int(o.get("Size", 0)), _etag(o.get("ETag"))) for o in page.get("Contents", [])]
                )
        objects, prefixes = self._fast_list(bucket, pfx, page_size, delimiter="/")
        yield relative(objects)
        if not prefixes:
            return
        prefixes.sort(key=lambda p: p[len(pfx) :].rstrip("/") in known)  # stable: new folders first
        pool = ThreadPoolExecutor(max_workers=min(LIST_CONCURRENCY, len(prefixes)), thread_name_prefix="s3ls")
        try:
            futures = [pool.submit(self._fast_list, bucket, p, page_size) for p in prefixes]
            for fut in as_completed(futures):
                yield relative(fut.result()[0])
        finally:
            # Stopped early (an error): drop the queued listings; do not wait for the running ones.
            pool.shutdown(wait=False, cancel_futures=True)

    def list(self, uri: str, *, page_size: int = 1000) -> list[ObjectInfo]:
        """Every object under the URI's prefix (recursive, paginated), keys relative to the prefix, sorted."""
        out = [obj for chunk in self._list_chunks(uri, page_size) for obj in chunk]
        out.sort(key=lambda o: o.key)
        return out

    def head(self, uri: str) -> ObjectInfo | None:
        """Size and ETag of one object, or None if it does not exist."""
        bucket, key = parse_s3_uri(uri)
        try:
            resp = self.client.head_object(Bucket=bucket, Key=key)
        except _BOTO_ERRORS as exc:
            if isinstance(exc, ClientError) and _is_missing(exc):
                return None
            raise _store_error(exc, uri) from exc
        return ObjectInfo(key=PurePosixPath(key).name, size=int(resp["ContentLength"]), etag=_etag(resp["ETag"]))

    def exists(self, uri: str) -> bool:
        """Whether the object exists."""
        return self.head(uri) is not None

    def _fetch(self, uri: str, sink: _HashingFile) -> str:
        """Stream the object into `sink` and check it; returns its ETag. FileNotFoundError if it is missing.

        A body cut short is fetched again (up to `max_attempts` tries). The content is checked against
        the object's length and, for single-part uploads (plain MD5 ETags), its MD5. With `sink.limit`
        set, an object whose Content-Length is over it is refused before its body is read, and a body
        that runs past it (no or a false Content-Length) is cut off: ObjectTooLarge either way.
        """
        bucket, key = parse_s3_uri(uri)
        if not key:
            raise ValueError(f"S3 URI names no object key: {uri!r}")
        if self._fast is not None:
            resp = self._fast_get(bucket, key, into=sink)
            if resp.status != 200:
                self._raise_for(resp, uri)
            etag = _etag(resp.headers.get("ETag"))
        else:
            etag = self._boto_fetch(uri, sink)
        digest = sink.md5.hexdigest()
        if self.verify_md5 and _MD5_ETAG.match(etag) and digest != etag:
            raise StoreError(f"corrupt download of {uri}: MD5 {digest} does not match its ETag {etag}")
        return etag

    def _boto_fetch(self, uri: str, sink: _HashingFile) -> str:
        bucket, key = parse_s3_uri(uri)
        for attempt in range(1, self.max_attempts + 1):
            try:
                obj = self.client.get_object(Bucket=bucket, Key=key)
            except _BOTO_ERRORS as exc:
                raise _store_error(exc, uri) from exc
            length = obj.get("ContentLength")
            if sink.limit is not None and isinstance(length, int) and length > sink.limit:
                obj["Body"].close()
                raise ObjectTooLarge(uri, length, sink.limit)
            sink.reset()
            try:
                for chunk in obj["Body"].iter_chunks(1024 * 1024):
                    sink.write(chunk)
                return _etag(obj.get("ETag"))
            except _STREAM_ERRORS as exc:
                # botocore retries the request, not the read of its body.
                if attempt == self.max_attempts:
                    raise _store_error(exc, uri) from exc
            except ObjectTooLarge:
                obj["Body"].close()  # the rest of a body that ran past the cap is not read
                raise
            time.sleep(backoff(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _get(self, uri: str, max_bytes: int | None = None) -> tuple[bytes, str]:
        buffer = io.BytesIO()
        etag = self._fetch(uri, _HashingFile(buffer, limit=_limit(max_bytes), uri=uri))
        return buffer.getvalue(), etag

    def get_bytes(self, uri: str, *, max_bytes: int | None = None) -> bytes:
        """The object's content; FileNotFoundError if it does not exist.

        With `max_bytes`, an object larger than that raises ObjectTooLarge (naming the URI, its size and
        the cap) without being read into memory; see `kretrain.limits` for the caps of each kind of record.
        """
        return self._get(uri, max_bytes)[0]

    def get_json(self, uri: str, *, max_bytes: int | None = None) -> Any:
        """The object parsed as JSON; FileNotFoundError if it does not exist; `max_bytes` as for get_bytes."""
        data = self.get_bytes(uri, max_bytes=max_bytes)
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreError(f"{uri} is not valid JSON: {exc}") from exc

    def get_json_with_etag(self, uri: str, *, max_bytes: int | None = None) -> tuple[Any, str] | None:
        """The object parsed as JSON with its ETag (for a later compare_and_swap), or None if missing.

        `max_bytes` as for get_bytes.
        """
        try:
            data, etag = self._get(uri, max_bytes)
        except FileNotFoundError:
            return None
        try:
            return json.loads(data), etag
        except json.JSONDecodeError as exc:
            raise StoreError(f"{uri} is not valid JSON: {exc}") from exc

    # ---------------------------------------------------------------- writing

    def _put(self, uri: str, data: bytes, **conditions: str) -> str:
        bucket, key = parse_s3_uri(uri)
        if not key:
            raise ValueError(f"S3 URI names no object key: {uri!r}")
        try:
            resp = self.client.put_object(Bucket=bucket, Key=key, Body=data, **conditions)  # type: ignore[arg-type]
        except _BOTO_ERRORS as exc:
            if conditions and isinstance(exc, ClientError) and _is_precondition(exc):
                cond = ", ".join(f"{k}={v}" for k, v in conditions.items())
                raise PreconditionFailed(f"conditional write of {uri} lost ({cond}): {_code(exc)}") from exc
            raise _store_error(exc, uri) from exc
        return _etag(resp.get("ETag"))

    def put_bytes(self, uri: str, data: bytes) -> str:
        """Write the object unconditionally; returns its ETag."""
        return self._put(uri, data)

    def put_json(self, uri: str, obj: Any) -> str:
        """Write `obj` as indented JSON unconditionally; returns the ETag."""
        return self._put(uri, _json_bytes(obj))

    def put_if_absent(self, uri: str, data: bytes) -> str:
        """Create the object only if no object exists at the key (If-None-Match: *); else PreconditionFailed."""
        return self._put(uri, data, IfNoneMatch="*")

    def compare_and_swap(self, uri: str, data: bytes, expected_etag: str) -> str:
        """Replace the object only if its ETag is still `expected_etag` (If-Match); else PreconditionFailed.

        A missing object also fails (SeaweedFS answers 412, AWS 404; both become PreconditionFailed).
        """
        try:
            return self._put(uri, data, IfMatch=f'"{_etag(expected_etag)}"')
        except ObjectNotFound as exc:
            raise PreconditionFailed(f"conditional write of {uri} lost: the object no longer exists") from exc

    def delete(self, uri: str) -> None:
        """Delete one object (no error if it is missing)."""
        bucket, key = parse_s3_uri(uri)
        try:
            self.client.delete_object(Bucket=bucket, Key=key)
        except _BOTO_ERRORS as exc:
            raise _store_error(exc, uri) from exc

    # ---------------------------------------------------------------- files

    def upload_file(self, path: Path, uri: str) -> str:
        """Upload a local file (multipart for large files, via boto3's transfer manager); returns the ETag."""
        bucket, key = parse_s3_uri(uri)
        path = Path(path)
        if path.stat().st_size <= 64 * 1024 * 1024:
            return self._put(uri, path.read_bytes())
        try:
            self.client.upload_file(str(path), bucket, key)
        except _BOTO_ERRORS as exc:
            raise _store_error(exc, uri) from exc
        info = self.head(uri)
        return info.etag if info else ""

    def download_file(self, uri: str, path: Path, *, max_bytes: int | None = None) -> Path:
        """Download one object to `path` atomically (temp file in the same folder, then rename).

        The content is checked against the object's length and, for single-part uploads, its MD5
        ETag; a failed check raises StoreError and leaves `path` as it was. With `max_bytes`, an object
        over it raises ObjectTooLarge and leaves `path` as it was.
        """
        path = Path(path)
        tmp = path.with_name(_temp_name(path.name))
        try:
            with _create_new(tmp) as fh:
                self._fetch(uri, _HashingFile(fh, limit=_limit(max_bytes), uri=uri))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return path

    def _parallel(self, items: Iterable[Any], fn: Callable[[Any], Any], on_done: Callable[[Any, Any], None]) -> None:
        """Run fn over items on the pool; on_done(item, result) in the caller's thread for each success.

        `items` is consumed lazily, at most 4 x max_workers ahead of the workers, so a generator can feed
        the pool while it is still producing (a listing still under way). On the first error (of fn, of
        on_done or of the iterator itself), nothing new is started and queued work is cancelled;
        transfers already running finish and are reported to on_done (so a sync manifest records them);
        then the first error is raised.
        """
        source = iter(items)
        window = 4 * self.max_workers
        pending: dict[Future[Any], Any] = {}
        first_error: BaseException | None = None

        def fail(exc: BaseException) -> None:
            nonlocal first_error
            if first_error is None:
                first_error = exc
                for other in pending:
                    other.cancel()

        pool = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="s3")
        try:
            while True:
                while first_error is None and len(pending) < window:
                    try:
                        item = next(source)
                    except StopIteration:
                        break
                    except BaseException as source_exc:
                        fail(source_exc)
                        break
                    pending[pool.submit(fn, item)] = item
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    item = pending.pop(fut)
                    if fut.cancelled():
                        continue
                    fn_exc = fut.exception()
                    if fn_exc is not None:
                        fail(fn_exc)
                        continue
                    try:
                        on_done(item, fut.result())
                    except BaseException as cb_exc:
                        fail(cb_exc)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # nothing is queued unless we leave on an error
            close = getattr(source, "close", None)
            if close is not None:
                close()  # a generator stopped early releases what it holds (a listing pool)
        if first_error is not None:
            raise first_error

    def sync_down(self, uri: str, local_dir: Path) -> SyncResult:
        """Mirror every object under `uri` into `local_dir` in parallel; returns what was done.

        A manifest (`.kretrain-sync.json`: key -> etag, size) in `local_dir` records every object that
        was fully downloaded; objects whose ETag and size match it (and whose local file still has that
        size) are skipped. The manifest is rewritten atomically every second during a sync and at the
        end (also on failure), so an interrupted sync resumes where it stopped. Once the whole listing
        is in, files recorded in the manifest whose objects were deleted remotely are removed locally.

        Listing and downloading overlap: each sub-prefix (an era) is downloaded as soon as its listing
        arrives, while the others are still being listed. Every key of a listing is mapped with
        `safe_local_paths` before anything from that listing is downloaded; an unsafe key stops the sync
        with UnsafeKeyError, and nothing is ever written outside `local_dir`.
        """
        local_dir = Path(local_dir)
        local_dir.mkdir(parents=True, exist_ok=True)
        manifest_path = local_dir / MANIFEST_NAME
        manifest = _read_manifest(manifest_path)
        files: dict[str, Path] = {}
        counts = {"downloaded": 0, "skipped": 0, "bytes": 0, "deleted": 0}
        gone: list[str] = []
        saved = time.monotonic()

        def plan() -> Iterator[tuple[ObjectInfo, Path]]:
            """What to download, listing chunk by listing chunk; records every listed key in `files`."""
            known = {key.partition("/")[0] for key in manifest}
            with contextlib.closing(self._list_chunks(uri, known=known)) as chunks:
                yield from plan_chunks(chunks)

        def plan_chunks(chunks: Iterator[list[ObjectInfo]]) -> Iterator[tuple[ObjectInfo, Path]]:
            folders_ready: set[str] = set()
            for chunk in chunks:
                for obj in chunk:
                    if obj.key == MANIFEST_NAME or obj.key.endswith(PART_SUFFIX):
                        raise UnsafeKeyError(f"object key {obj.key!r} under {uri} collides with the sync's own files")
                try:
                    paths = safe_local_paths(local_dir, [o.key for o in chunk])
                except UnsafeKeyError as exc:
                    raise UnsafeKeyError(f"{exc} (listed under {uri}); the sync stops, nothing of it is used") from None
                for obj in chunk:
                    path = files[obj.key] = paths[obj.key]
                    entry = manifest.get(obj.key)
                    if (
                        entry
                        and entry.get("etag") == obj.etag
                        and entry.get("size") == obj.size
                        and _size(path) == obj.size
                    ):
                        counts["skipped"] += 1
                        continue
                    folder = obj.key.rpartition("/")[0]
                    if folder and folder not in folders_ready:
                        clear_way(folder)
                        folders_ready.add(folder)
                    yield obj, path

        def clear_way(folder: str) -> None:
            """Remove files of earlier syncs that sit where `folder` (or a folder above it) must now be."""
            parts = folder.split("/")
            for depth in range(1, len(parts) + 1):
                key = "/".join(parts[:depth])
                if key in manifest and key not in files:
                    forget(key)

        def forget(key: str) -> None:
            """Delete the local file of a manifest entry that no longer belongs, and the entry."""
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, UnsafeKeyError):
                safe_local_path(local_dir, key).unlink()
                counts["deleted"] += 1
            manifest.pop(key)
            gone.append(key)

        def fetch(item: tuple[ObjectInfo, Path]) -> int:
            obj, path = item
            try:
                self.download_file(join_uri(uri, obj.key), path)
            except IsADirectoryError as exc:
                raise StoreError(
                    f"cannot write object {obj.key!r} of {uri}: {path} is a folder (objects of an earlier sync "
                    "were under that key); remove the folder or the object"
                ) from exc
            return obj.size

        def done(item: tuple[ObjectInfo, Path], size: int) -> None:
            nonlocal saved
            obj, _ = item
            manifest[obj.key] = {"etag": obj.etag, "size": obj.size}
            counts["downloaded"] += 1
            counts["bytes"] += size
            if time.monotonic() - saved > 1.0:
                _write_manifest(manifest_path, manifest)
                saved = time.monotonic()

        try:
            self._parallel(plan(), fetch, done)
            for key in [k for k in manifest if k not in files]:
                forget(key)
        finally:
            # A sync that changed nothing leaves the manifest as it was (no rewrite of every entry).
            if counts["downloaded"] or gone or not manifest_path.exists():
                _write_manifest(manifest_path, manifest)
        return SyncResult(
            downloaded=counts["downloaded"],
            skipped=counts["skipped"],
            bytes=counts["bytes"],
            files=files,
            deleted=counts["deleted"],
        )

    def upload_dir(self, local_dir: Path, uri: str) -> int:
        """Upload every file under `local_dir` (recursively, in parallel) under `uri`; returns the count.

        The sync manifest and partial downloads are not uploaded.
        """
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise FileNotFoundError(f"not a directory: {local_dir}")
        paths = [
            p
            for p in sorted(local_dir.rglob("*"))
            if p.is_file() and p.name != MANIFEST_NAME and not p.name.endswith(PART_SUFFIX)
        ]
        count = 0

        def put(path: Path) -> str:
            rel = path.relative_to(local_dir).as_posix()
            return self.upload_file(path, join_uri(uri, rel))

        def done(_: Path, __: str) -> None:
            nonlocal count
            count += 1

        self._parallel(paths, put, done)
        return count


class _HashingFile:
    """A file being downloaded into, with the MD5 of what was written; `reset` starts both over.

    With `limit`, a write that would take the content past `limit` bytes raises ObjectTooLarge.
    """

    def __init__(self, fh: BinaryIO, *, limit: int | None = None, uri: str = "") -> None:
        self.fh = fh
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.written = False
        self.limit = limit
        self.uri = uri
        self.count = 0

    def write(self, data: bytes, /) -> int:
        self.count += len(data)
        if self.limit is not None and self.count > self.limit:
            raise ObjectTooLarge(self.uri, self.count, self.limit, announced=False)
        self.written = True
        self.md5.update(data)
        view = memoryview(data)
        while view:  # an unbuffered file may take less than asked
            view = view[self.fh.write(view) :]
        return len(data)

    def reset(self) -> None:
        if self.written:  # a retry after part of a body: start the file over
            self.fh.seek(0)
            self.fh.truncate()
            self.md5 = hashlib.md5(usedforsecurity=False)
            self.written = False
        self.count = 0


def _limit(max_bytes: int | None) -> int | None:
    if max_bytes is None:
        return None
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise ValueError(f"max_bytes must be a non-negative int, got {max_bytes!r}")
    return max_bytes


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _size(path: Path) -> int:
    """Size of a regular file (not following symlinks); -1 for anything else, so it is downloaded again."""
    try:
        st = os.lstat(path)
    except OSError:
        return -1
    return st.st_size if stat.S_ISREG(st.st_mode) else -1


def _read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    objects = data.get("objects") if isinstance(data, dict) else None
    return dict(objects) if isinstance(objects, dict) else {}


def _write_manifest(path: Path, manifest: dict[str, dict[str, Any]]) -> None:
    _atomic_write(path, json.dumps({"version": 1, "objects": manifest}, separators=(",", ":")).encode())
