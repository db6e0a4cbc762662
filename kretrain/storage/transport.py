"""The interface every S3 transport implements, the listed-object record and the download sink."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import BinaryIO, NamedTuple, Protocol

from kretrain.storage.errors import ObjectTooLarge


class ObjectInfo(NamedTuple):
    """One object as listed: key (relative to the listed prefix, or full from a transport), size, ETag without quotes."""

    key: str
    size: int
    etag: str


class Sink:
    """Where a downloaded body goes, with the MD5 of what was written; `reset` starts both over.

    With `limit`, a write that would take the content past `limit` bytes raises ObjectTooLarge.
    """

    def __init__(self, fh: BinaryIO, *, limit: int | None = None, uri: str = "") -> None:
        self.fh = fh
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.written = False
        self.limit = limit
        self.uri = uri
        self.count = 0

    def check_announced(self, size: int | None) -> None:
        """ObjectTooLarge if the size the server announced is over the limit (before reading the body)."""
        if self.limit is not None and size is not None and size > self.limit:
            raise ObjectTooLarge(self.uri, size, self.limit)

    def write(self, data: bytes, /) -> int:
        self.count += len(data)
        if self.limit is not None and self.count > self.limit:
            raise ObjectTooLarge(self.uri, self.count, self.limit, announced=False)
        self.written = True
        self.md5.update(data)
        view = memoryview(data)
        while view:  # an unbuffered file may take less than asked
            view = view[self.fh.write(view) or 0 :]
        return len(data)

    def reset(self) -> None:
        if self.written:  # a retry after part of a body: start the file over
            self.fh.seek(0)
            self.fh.truncate()
            self.md5 = hashlib.md5(usedforsecurity=False)
            self.written = False
        self.count = 0


class Transport(Protocol):
    """S3 requests on one endpoint; every failure is raised as a kretrain StoreError subclass.

    Keys are full object keys; `what` names the URI in error messages. Requests are retried
    (exponential backoff with jitter on throttling, 5xx and connection errors) up to the store's
    `max_attempts` before an error is raised.
    """

    name: str

    def list(self, bucket: str, prefix: str, *, delimiter: bool = False) -> tuple[list[ObjectInfo], list[str]]:
        """Every object under `prefix` (with `delimiter`, only the first level) and the common prefixes."""
        ...

    def get(self, bucket: str, key: str, sink: Sink) -> str:
        """Stream the object into `sink` (reset before each try; its limit honoured); returns the ETag."""
        ...

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """Size and ETag of one object (full key), or None if it does not exist."""
        ...

    def put(self, bucket: str, key: str, data: bytes, *, if_none_match: bool = False, if_match: str = "") -> str:
        """Write the object (only if absent / only if its ETag is `if_match`); returns the new ETag.

        A lost condition raises PreconditionFailed.
        """
        ...

    def put_file(self, bucket: str, key: str, path: Path) -> str:
        """Upload a large local file (multipart); returns the ETag."""
        ...

    def delete(self, bucket: str, key: str) -> None:
        """Delete one object (no error if it is missing)."""
        ...

    def close(self) -> None:
        """Release pooled connections; the transport can still be used after."""
        ...


def strip_etag(raw: str | None) -> str:
    """An ETag without its quotes."""
    return (raw or "").strip('"')


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based): full jitter, up to 1 s, 2 s, 4 s ... 20 s."""
    return random.uniform(0, min(2.0 ** (attempt - 1), 20.0))
