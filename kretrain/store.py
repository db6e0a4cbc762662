"""S3 object store over boto3: listing, parallel cached sync, conditional writes, safe local paths."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import stat
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote_plus, urlencode

import boto3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.httpsession import URLLib3Session

# Name of the small manifest (key -> etag, size) that `sync_down` keeps in the local directory.
MANIFEST_NAME = ".kretrain-sync.json"
# Suffix of in-flight downloads; they are renamed into place only when complete.
PART_SUFFIX = ".kretrain-part"
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class StoreError(Exception):
    """Base of every error raised by the object store."""


class UnsafeKeyError(StoreError, ValueError):
    """An object key that would map to a path outside the local directory."""


class PreconditionFailed(StoreError):
    """A conditional write (If-Match / If-None-Match) lost: HTTP 412, or 409 on concurrent writes."""


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


def _check_key(root: Path, key: str) -> None:
    """Raise UnsafeKeyError if the key is malformed or could escape `root` lexically."""
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
        out[key] = base.joinpath(*key.split("/"))
    return out


def safe_local_path(root: Path, key: str) -> Path:
    """The path of `key` under `root`; UnsafeKeyError if the key could escape it or is malformed.

    Rejected: empty keys, absolute keys (leading `/`), backslashes, NUL bytes, empty segments (`a//b`),
    `.` and `..` segments, and Windows drive prefixes (`C:`).
    """
    _check_key(root, key)
    base = Path(root).resolve()
    path = base.joinpath(*key.split("/"))
    # Defence in depth: a symlink already in the cache must not lead outside it either.
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        raise UnsafeKeyError(f"unsafe object key {key!r}: it resolves to {resolved}, outside {base}")
    return path


@dataclass(frozen=True)
class ObjectInfo:
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
    return _status(exc) == 404 or _code(exc) in ("NoSuchKey", "404", "NotFound")


def _is_precondition(exc: ClientError) -> bool:
    return _status(exc) in (409, 412) or _code(exc) in (
        "PreconditionFailed",
        "ConditionalRequestConflict",
        "412",
        "409",
    )


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{PART_SUFFIX}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


class ObjectStore:
    """An S3 bucket store: one shared, thread-safe boto3 client and a thread pool for bulk transfers.

    Unset constructor arguments fall back to boto3's own resolution (`AWS_ENDPOINT_URL`,
    `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, instance roles). Retries use
    botocore's `standard` mode (exponential backoff with jitter on throttling, 5xx and connection
    errors) with `max_attempts` tries; `retry_mode="adaptive"` adds client-side rate limiting.
    Downloads of objects whose ETag is a plain MD5 (single-part uploads) are verified against it.

    Fast path: with an explicit endpoint (SeaweedFS, MinIO, any path-style S3), bulk listing and the
    object GETs of `download_file`/`sync_down` are sent as SigV4-signed requests straight over
    botocore's urllib3 session, with the XML listing parsed by ElementTree. The client CPU per small
    object is about half of a boto3 `get_object` call, and listing is about 20x cheaper than
    botocore's generic response parser; on a small machine that CPU is what limits a pull. Those
    requests are retried the same way (exponential backoff with full jitter on 429/5xx/connection
    errors, `max_attempts` tries). Without an endpoint (AWS), or with `fast_path=False`, boto3 is used.
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
            retries={"mode": retry_mode, "max_attempts": max_attempts},  # type: ignore[arg-type]
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
        self._fast = bool(fast_path and endpoint)
        self._credentials = session.get_credentials() if self._fast else None
        self._region = self.client.meta.region_name or "us-east-1"
        self._base = str(self.client.meta.endpoint_url).rstrip("/")
        self._http: URLLib3Session | None = None
        if self._fast:
            timeouts: Any = (10, 60)  # (connect, read); botocore's stub only admits one number
            self._http = URLLib3Session(timeout=timeouts, max_pool_connections=self.max_workers + 4)

    # ---------------------------------------------------------------- fast path (signed raw requests)

    def _send(
        self, bucket: str, key: str = "", query: dict[str, str] | None = None, stream: bool = False
    ) -> AWSResponse:
        """A signed GET of /bucket/key?query, retried on 429/5xx and connection errors."""
        assert self._http is not None and self._credentials is not None
        url = f"{self._base}/{quote(bucket)}/{quote(key, safe='/~')}" if key else f"{self._base}/{quote(bucket)}"
        if query:
            url += "?" + urlencode(sorted(query.items()), quote_via=quote, safe="~")
        delay = 0.1
        for attempt in range(1, self.max_attempts + 1):
            request = AWSRequest(method="GET", url=url)
            request.stream_output = stream
            S3SigV4Auth(self._credentials.get_frozen_credentials(), "s3", self._region).add_auth(request)
            try:
                resp = self._http.send(request.prepare())
            except HTTPClientError:
                if attempt == self.max_attempts:
                    raise
            else:
                if resp.status_code not in _RETRY_STATUS or attempt == self.max_attempts:
                    return resp
                if stream:
                    resp.raw.release_conn()
            time.sleep(random.uniform(0, delay))  # full jitter
            delay = min(delay * 2, 20.0)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _raise_for(resp: AWSResponse, what: str) -> None:
        body = resp.content
        code = message = ""
        with contextlib.suppress(ET.ParseError):
            root = ET.fromstring(body or b"<x/>")
            code, message = root.findtext("Code") or "", root.findtext("Message") or ""
        if resp.status_code == 404 and code in ("NoSuchKey", ""):
            raise FileNotFoundError(f"no such object: {what}")
        raise StoreError(f"S3 GET {what} failed: HTTP {resp.status_code} {code} {message}".rstrip())

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
            resp = self._send(bucket, query=query)
            if resp.status_code != 200:
                self._raise_for(resp, f"s3://{bucket}/{pfx} (list)")
            root = ET.fromstring(resp.content)
            ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
            for c in root.iter(f"{ns}Contents"):
                key = unquote_plus(c.findtext(f"{ns}Key") or "")
                out.append((key, int(c.findtext(f"{ns}Size") or 0), _etag(c.findtext(f"{ns}ETag"))))
            for cp in root.iter(f"{ns}CommonPrefixes"):
                prefixes.append(unquote_plus(cp.findtext(f"{ns}Prefix") or ""))
            token = root.findtext(f"{ns}NextContinuationToken")
            if (root.findtext(f"{ns}IsTruncated") or "").lower() != "true" or not token:
                return out, prefixes

    def _fast_list_tree(self, bucket: str, pfx: str, page_size: int) -> list[tuple[str, int, str]]:
        """List the first level with a delimiter, then every sub-prefix in parallel (wall time of the largest)."""
        objects, prefixes = self._fast_list(bucket, pfx, page_size, delimiter="/")
        if len(prefixes) <= 1:
            return objects + [o for p in prefixes for o in self._fast_list(bucket, p, page_size)[0]]
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(prefixes)), thread_name_prefix="s3ls") as pool:
            for sub, _ in pool.map(lambda p: self._fast_list(bucket, p, page_size), prefixes):
                objects += sub
        return objects

    def list(self, uri: str, *, page_size: int = 1000) -> list[ObjectInfo]:
        """Every object under the URI's prefix (recursive, paginated), keys relative to the prefix, sorted."""
        bucket, prefix = parse_s3_uri(uri)
        pfx = f"{prefix}/" if prefix else ""
        out: list[ObjectInfo] = []
        raw: list[tuple[str, int, str]] = []
        if self._fast:
            raw = self._fast_list_tree(bucket, pfx, page_size)
        else:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=pfx, PaginationConfig={"PageSize": page_size}):
                raw += [(o["Key"], int(o.get("Size", 0)), _etag(o.get("ETag"))) for o in page.get("Contents", [])]
        for key, size, etag in raw:
            rel = key[len(pfx) :]
            if not rel or rel.endswith("/"):
                continue  # directory markers
            out.append(ObjectInfo(key=rel, size=size, etag=etag))
        out.sort(key=lambda o: o.key)
        return out

    def head(self, uri: str) -> ObjectInfo | None:
        """Size and ETag of one object, or None if it does not exist."""
        bucket, key = parse_s3_uri(uri)
        try:
            resp = self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise
        return ObjectInfo(key=PurePosixPath(key).name, size=int(resp["ContentLength"]), etag=_etag(resp["ETag"]))

    def exists(self, uri: str) -> bool:
        """Whether the object exists."""
        return self.head(uri) is not None

    def _get(self, uri: str) -> tuple[bytes, str]:
        bucket, key = parse_s3_uri(uri)
        try:
            resp = self.client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                raise FileNotFoundError(f"no such object: {uri}") from exc
            raise
        data = resp["Body"].read()
        etag = _etag(resp.get("ETag"))
        self._check_md5(uri, data, etag)
        return data, etag

    def _check_md5(self, uri: str, data: bytes, etag: str) -> None:
        if self.verify_md5 and _MD5_ETAG.match(etag):
            digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
            if digest != etag:
                raise StoreError(f"corrupt download of {uri}: MD5 {digest} does not match its ETag {etag}")

    def get_bytes(self, uri: str) -> bytes:
        """The object's content; FileNotFoundError if it does not exist."""
        return self._get(uri)[0]

    def get_json(self, uri: str) -> Any:
        """The object parsed as JSON; FileNotFoundError if it does not exist."""
        data = self.get_bytes(uri)
        try:
            return json.loads(data)
        except json.JSONDecodeError as exc:
            raise StoreError(f"{uri} is not valid JSON: {exc}") from exc

    def get_json_with_etag(self, uri: str) -> tuple[Any, str] | None:
        """The object parsed as JSON with its ETag (for a later compare_and_swap), or None if missing."""
        try:
            data, etag = self._get(uri)
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
        except ClientError as exc:
            if conditions and _is_precondition(exc):
                cond = ", ".join(f"{k}={v}" for k, v in conditions.items())
                raise PreconditionFailed(f"conditional write of {uri} lost ({cond}): {_code(exc)}") from exc
            raise
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
        except ClientError as exc:
            if _is_missing(exc):
                raise PreconditionFailed(f"conditional write of {uri} lost: the object no longer exists") from exc
            raise

    def delete(self, uri: str) -> None:
        """Delete one object (no error if it is missing)."""
        bucket, key = parse_s3_uri(uri)
        self.client.delete_object(Bucket=bucket, Key=key)

    # ---------------------------------------------------------------- files

    def upload_file(self, path: Path, uri: str) -> str:
        """Upload a local file (multipart for large files, via boto3's transfer manager); returns the ETag."""
        bucket, key = parse_s3_uri(uri)
        path = Path(path)
        if path.stat().st_size <= 64 * 1024 * 1024:
            return self._put(uri, path.read_bytes())
        self.client.upload_file(str(path), bucket, key)
        info = self.head(uri)
        return info.etag if info else ""

    def download_file(self, uri: str, path: Path) -> Path:
        """Download one object to `path` atomically (temp file in the same folder, then rename)."""
        bucket, key = parse_s3_uri(uri)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{PART_SUFFIX}")
        try:
            md5 = hashlib.md5(usedforsecurity=False)
            if self._fast:
                raw = self._send(bucket, key, stream=True)
                try:
                    if raw.status_code != 200:
                        self._raise_for(raw, uri)
                    etag = _etag(raw.headers.get("ETag"))
                    with tmp.open("wb") as fh:
                        for chunk in raw.raw.stream(1024 * 1024):
                            fh.write(chunk)
                            md5.update(chunk)
                    expected_size = raw.headers.get("Content-Length")
                    if expected_size is not None and tmp.stat().st_size != int(expected_size):
                        raise StoreError(f"truncated download of {uri}: {tmp.stat().st_size} of {expected_size} bytes")
                finally:
                    raw.raw.release_conn()
            else:
                try:
                    resp = self.client.get_object(Bucket=bucket, Key=key)
                except ClientError as exc:
                    if _is_missing(exc):
                        raise FileNotFoundError(f"no such object: {uri}") from exc
                    raise
                etag = _etag(resp.get("ETag"))
                body = resp["Body"]
                with tmp.open("wb") as fh:
                    for chunk in iter(lambda: body.read(1024 * 1024), b""):
                        fh.write(chunk)
                        md5.update(chunk)
            if self.verify_md5 and _MD5_ETAG.match(etag) and md5.hexdigest() != etag:
                raise StoreError(f"corrupt download of {uri}: MD5 {md5.hexdigest()} does not match its ETag {etag}")
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return path

    def _parallel(self, items: Iterable[Any], fn: Callable[[Any], Any], on_done: Callable[[Any, Any], None]) -> None:
        """Run fn over items on the pool; on_done(item, result) in the caller's thread for each success.

        On the first error, work not yet started is cancelled, transfers already running are allowed to
        finish (and reported to on_done, so a sync manifest records them), then the first error is raised.
        """
        first_error: BaseException | None = None
        with ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="s3") as pool:
            pending: dict[Future[Any], Any] = {pool.submit(fn, item): item for item in items}
            while pending:
                done, _ = wait(pending, return_when=FIRST_EXCEPTION)
                for fut in done:
                    item = pending.pop(fut)
                    if fut.cancelled():
                        continue
                    exc = fut.exception()
                    if exc is not None:
                        if first_error is None:
                            first_error = exc
                            for other in pending:
                                other.cancel()
                        continue
                    try:
                        on_done(item, fut.result())
                    except BaseException as cb_exc:
                        if first_error is None:
                            first_error = cb_exc
                            for other in pending:
                                other.cancel()
        if first_error is not None:
            raise first_error

    def sync_down(self, uri: str, local_dir: Path) -> SyncResult:
        """Mirror every object under `uri` into `local_dir` in parallel; returns what was done.

        A manifest (`.kretrain-sync.json`: key -> etag, size) in `local_dir` records every object that
        was fully downloaded; objects whose ETag and size match it (and whose local file still has that
        size) are skipped. The manifest is rewritten atomically every second during a sync and at the
        end (also on failure), so an interrupted sync resumes where it stopped. Files recorded in the
        manifest whose objects were deleted remotely are removed locally. Every key is mapped with
        `safe_local_path`; an unsafe key fails the sync before anything is downloaded.
        """
        local_dir = Path(local_dir)
        local_dir.mkdir(parents=True, exist_ok=True)
        objects = self.list(uri)
        manifest_path = local_dir / MANIFEST_NAME
        manifest = _read_manifest(manifest_path)
        files: dict[str, Path] = {}
        todo: list[tuple[ObjectInfo, Path]] = []
        skipped = 0
        for obj in objects:
            if obj.key == MANIFEST_NAME or obj.key.endswith(PART_SUFFIX):
                raise UnsafeKeyError(f"object key {obj.key!r} under {uri} collides with the sync's own files")
        paths = safe_local_paths(local_dir, [o.key for o in objects])
        for obj in objects:
            path = paths[obj.key]
            files[obj.key] = path
            entry = manifest.get(obj.key)
            if entry and entry.get("etag") == obj.etag and entry.get("size") == obj.size and _size(path) == obj.size:
                skipped += 1
            else:
                todo.append((obj, path))
        remote = {o.key for o in objects}
        deleted = 0
        for key in [k for k in manifest if k not in remote]:
            with contextlib.suppress(FileNotFoundError, UnsafeKeyError):
                safe_local_path(local_dir, key).unlink()
                deleted += 1
            manifest.pop(key, None)

        lock = threading.Lock()
        state = {"downloaded": 0, "bytes": 0, "saved": time.monotonic()}

        def fetch(item: tuple[ObjectInfo, Path]) -> int:
            obj, path = item
            self.download_file(join_uri(uri, obj.key), path)
            return obj.size

        def done(item: tuple[ObjectInfo, Path], size: int) -> None:
            obj, _ = item
            with lock:
                manifest[obj.key] = {"etag": obj.etag, "size": obj.size}
                state["downloaded"] += 1
                state["bytes"] += size
                if time.monotonic() - state["saved"] > 1.0:
                    _write_manifest(manifest_path, manifest)
                    state["saved"] = time.monotonic()

        try:
            self._parallel(todo, fetch, done)
        finally:
            _write_manifest(manifest_path, manifest)
        return SyncResult(
            downloaded=int(state["downloaded"]),
            skipped=skipped,
            bytes=int(state["bytes"]),
            files=files,
            deleted=deleted,
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


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _size(path: Path) -> int:
    """Size of a regular file (not following symlinks); -1 for anything else, so it is downloaded again."""
    try:
        st = path.lstat()
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
