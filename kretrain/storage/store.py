"""ObjectStore: the thin S3 store every module uses (reads, writes, conditional writes, files, mirroring)."""

from __future__ import annotations

import io
import json
import os
import re
import threading
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import boto3
from botocore.config import Config

from kretrain.storage.boto import Boto3Transport
from kretrain.storage.errors import ObjectTooLarge, StoreError
from kretrain.storage.listing import list_sorted
from kretrain.storage.localfs import PART_SUFFIX, replacing
from kretrain.storage.location import S3Location
from kretrain.storage.manifest import MANIFEST_NAME
from kretrain.storage.mirror import SyncResult, sync_down
from kretrain.storage.obs import ObstoreTransport
from kretrain.storage.parallel import parallel_map
from kretrain.storage.transport import ObjectInfo, Sink, Transport

TransportName = Literal["obstore", "boto3"]
# Files up to this size are uploaded in one PUT; larger ones as multipart uploads.
SINGLE_PUT_BYTES = 64 * 1024 * 1024
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")


class ObjectStore:
    """An S3 store over one transport (obstore by default, boto3 on request) and a thread pool for bulk transfers.

    Unset constructor arguments fall back to boto3's own resolution (`AWS_ENDPOINT_URL(_S3)`,
    `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, profiles, instance and web-identity
    roles): botocore resolves (and refreshes) the credentials for both transports. Requests are retried
    with exponential backoff and jitter on throttling, 5xx and connection errors, `max_attempts` tries;
    HTTPS endpoints are verified against `AWS_CA_BUNDLE` or the system store. Downloads of objects
    whose ETag is a plain MD5 (single-part uploads) are verified against it. Every failure is a
    `kretrain.storage.errors.StoreError` subclass, whichever transport ran the request.

    `transport="obstore"` (default) sends gets, puts (conditional ones too) and heads through obstore
    (Rust `object_store`): about half the client CPU of the former hand-written fast path per small
    object. `transport="boto3"` sends everything through boto3; `fast_path=True/False`, the former
    switch, picks obstore/boto3. `client` is the boto3 client on the same endpoint and credentials, for
    what obstore does not cover: listings and deletes (on either transport, see `ObstoreTransport`), keys
    object_store cannot address, answers without Content-Length, bucket administration and the
    schedule scanner's raw listings.
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
        transport: TransportName = "obstore",
        fast_path: bool | None = None,
    ) -> None:
        if fast_path is not None:  # the former switch: the fast path is now the obstore transport
            transport = "obstore" if fast_path else "boto3"
        self.max_workers = max(1, int(max_workers))
        self.max_attempts = max(1, max_attempts)
        self.verify_md5 = verify_md5
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        self._session = boto3.session.Session(
            aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region
        )
        self._retry_mode = retry_mode
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._boto3_transport: Boto3Transport | None = None
        self.transport: Transport
        boto = self._boto3()  # listings go through boto3 on either transport: made now, not inside a first request
        if transport == "boto3":
            self.transport = boto
        elif transport == "obstore":
            self.transport = ObstoreTransport(
                self.endpoint_url,
                self._session.region_name or "us-east-1",
                self._session.get_credentials(),
                max_attempts=self.max_attempts,
                max_connections=self.max_workers + 4,
                ca_bundle=os.environ.get("AWS_CA_BUNDLE") or None,
                fallback=self._boto3,
            )
        else:
            raise ValueError(f"transport must be 'obstore' or 'boto3', got {transport!r}")

    @property
    def client(self) -> Any:
        """The shared, thread-safe boto3 S3 client on the store's endpoint and credentials."""
        with self._client_lock:
            if self._client is None:
                config = Config(
                    retries={"mode": self._retry_mode, "total_max_attempts": self.max_attempts},  # type: ignore[arg-type]
                    max_pool_connections=self.max_workers + 4,
                    connect_timeout=10,
                    read_timeout=60,
                    # Custom endpoints (SeaweedFS, MinIO) on an IP/port need path-style addressing.
                    s3={"addressing_style": "path"} if self.endpoint_url else {},
                    # No CRC beyond what the service requires: S3-compatible servers accept the requests.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                )
                self._client = self._session.client("s3", endpoint_url=self.endpoint_url, config=config)
            return self._client

    def _boto3(self) -> Boto3Transport:
        """The boto3 transport on `client` (one per store)."""
        client = self.client
        with self._client_lock:
            if self._boto3_transport is None:
                self._boto3_transport = Boto3Transport(client, max_attempts=self.max_attempts)
            return self._boto3_transport

    def close(self) -> None:
        """Release pooled connections; the store can still be used after."""
        self.transport.close()
        if self._client is not None:
            self._client.close()

    # ---------------------------------------------------------------- listing

    def list(self, uri: str, *, page_size: int = 1000) -> list[ObjectInfo]:
        """Every object under the URI's prefix (recursive), keys relative to the prefix, sorted."""
        return list_sorted(self.transport, S3Location.parse(uri))

    def head(self, uri: str) -> ObjectInfo | None:
        """Size and ETag of one object (key: the object's name), or None if it does not exist."""
        loc = S3Location.parse(uri)
        info = self.transport.head(loc.bucket, loc.object_key())
        return None if info is None else info._replace(key=PurePosixPath(loc.key).name)

    def exists(self, uri: str) -> bool:
        """Whether the object exists."""
        return self.head(uri) is not None

    # ---------------------------------------------------------------- reading

    def _fetch(self, uri: str, sink: Sink) -> str:
        """Stream the object into `sink` and check it against its MD5 ETag; returns the ETag."""
        loc = S3Location.parse(uri)
        etag = self.transport.get(loc.bucket, loc.object_key(), sink)
        digest = sink.md5.hexdigest()
        if self.verify_md5 and _MD5_ETAG.match(etag) and digest != etag:
            raise StoreError(f"corrupt download of {uri}: MD5 {digest} does not match its ETag {etag}")
        return etag

    def _get(self, uri: str, max_bytes: int | None = None) -> tuple[bytes, str]:
        buffer = io.BytesIO()
        etag = self._fetch(uri, Sink(buffer, limit=_limit(max_bytes), uri=uri))
        return buffer.getvalue(), etag

    def get_bytes(self, uri: str, *, max_bytes: int | None = None) -> bytes:
        """The object's content; ObjectNotFound (a FileNotFoundError) if it does not exist.

        With `max_bytes`, an object larger than that raises ObjectTooLarge (naming the URI, its size and
        the cap) without being read into memory; see `kretrain.limits` for the caps of each kind of record.
        """
        return self._get(uri, max_bytes)[0]

    def get_json(self, uri: str, *, max_bytes: int | None = None) -> Any:
        """The object parsed as JSON; ObjectNotFound if it does not exist; `max_bytes` as for get_bytes."""
        data = self.get_bytes(uri, max_bytes=max_bytes)
        return _parse_json(uri, data)

    def get_json_with_etag(self, uri: str, *, max_bytes: int | None = None) -> tuple[Any, str] | None:
        """The object parsed as JSON with its ETag (for a later compare_and_swap), or None if missing."""
        try:
            data, etag = self._get(uri, max_bytes)
        except FileNotFoundError:
            return None
        return _parse_json(uri, data), etag

    # ---------------------------------------------------------------- writing

    def _put(self, uri: str, data: bytes, *, if_none_match: bool = False, if_match: str = "") -> str:
        loc = S3Location.parse(uri)
        return self.transport.put(loc.bucket, loc.object_key(), data, if_none_match=if_none_match, if_match=if_match)

    def put_bytes(self, uri: str, data: bytes) -> str:
        """Write the object unconditionally; returns its ETag."""
        return self._put(uri, data)

    def put_json(self, uri: str, obj: Any) -> str:
        """Write `obj` as indented JSON unconditionally; returns the ETag."""
        return self._put(uri, _json_bytes(obj))

    def put_if_absent(self, uri: str, data: bytes) -> str:
        """Create the object only if no object exists at the key (If-None-Match: *); else PreconditionFailed."""
        return self._put(uri, data, if_none_match=True)

    def compare_and_swap(self, uri: str, data: bytes, expected_etag: str) -> str:
        """Replace the object only if its ETag is still `expected_etag` (If-Match); else PreconditionFailed.

        A missing object also fails (SeaweedFS answers 412, AWS 404; both become PreconditionFailed).
        """
        return self._put(uri, data, if_match=expected_etag.strip('"'))

    def delete(self, uri: str) -> None:
        """Delete one object (no error if it is missing)."""
        loc = S3Location.parse(uri)
        self.transport.delete(loc.bucket, loc.object_key())

    # ---------------------------------------------------------------- files

    def upload_file(self, path: Path, uri: str) -> str:
        """Upload a local file (one PUT up to SINGLE_PUT_BYTES, multipart above); returns the ETag."""
        path = Path(path)
        if path.stat().st_size <= SINGLE_PUT_BYTES:
            return self._put(uri, path.read_bytes())
        loc = S3Location.parse(uri)
        return self.transport.put_file(loc.bucket, loc.object_key(), path)

    def download_file(self, uri: str, path: Path, *, max_bytes: int | None = None) -> Path:
        """Download one object to `path` atomically (temp file in the same folder, then rename).

        The content is checked against the object's length and, for single-part uploads, its MD5
        ETag; a failed check raises StoreError and leaves `path` as it was. With `max_bytes`, an object
        over it raises ObjectTooLarge and leaves `path` as it was.
        """
        path = Path(path)
        with replacing(path) as fh:
            self._fetch(uri, Sink(fh, limit=_limit(max_bytes), uri=uri))
        return path

    def sync_down(self, uri: str, local_dir: Path) -> SyncResult:
        """Mirror every object under `uri` into `local_dir`; see `kretrain.storage.mirror.sync_down`."""
        return sync_down(self, uri, local_dir)

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

        def done(_: Path, __: str) -> None:
            nonlocal count
            count += 1

        base = S3Location.parse(uri)
        parallel_map(
            paths,
            lambda p: self.upload_file(p, base.join(p.relative_to(local_dir).as_posix()).uri),
            done,
            max_workers=self.max_workers,
        )
        return count


def _limit(max_bytes: int | None) -> int | None:
    if max_bytes is None:
        return None
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise ValueError(f"max_bytes must be a non-negative int, got {max_bytes!r}")
    return max_bytes


def _parse_json(uri: str, data: bytes) -> Any:
    """`data` parsed as JSON; StoreError naming `uri` when it is not JSON or nests too deeply to parse (a few
    kilobytes of `[[[[...` exhaust the parser's recursion: the object is untrusted, so that is its fault)."""
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{uri} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise StoreError(f"{uri} is not valid JSON: nested too deeply") from None


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


__all__ = ["ObjectStore", "ObjectTooLarge", "SyncResult", "TransportName"]
