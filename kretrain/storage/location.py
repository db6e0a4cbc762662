"""S3 locations: `s3://bucket/key` parsed and validated once into a value type."""

from __future__ import annotations

import re
from dataclasses import dataclass

_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-_]{0,254}")


@dataclass(frozen=True, slots=True)
class S3Location:
    """A bucket and a key (or key prefix) without leading or trailing slashes."""

    bucket: str
    key: str = ""

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        """`s3://bucket/a/b` -> S3Location("bucket", "a/b"); ValueError naming the URI if it is not one."""
        if not isinstance(uri, str) or not uri.startswith("s3://"):
            raise ValueError(f"not an S3 URI (expected s3://bucket/prefix): {uri!r}")
        bucket, _, key = uri[len("s3://") :].partition("/")
        if not bucket or not _BUCKET.fullmatch(bucket):
            raise ValueError(f"S3 URI has no valid bucket name: {uri!r}")
        return cls(bucket, key.strip("/"))

    @property
    def uri(self) -> str:
        """The location as an `s3://` URI."""
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"

    @property
    def prefix(self) -> str:
        """The key as a listing prefix: `a/b/` (empty for the whole bucket)."""
        return f"{self.key}/" if self.key else ""

    def object_key(self) -> str:
        """The key of the object this location names; ValueError if it names only a bucket."""
        if not self.key:
            raise ValueError(f"S3 URI names no object key: {self.uri!r}")
        return self.key

    def join(self, *parts: str) -> S3Location:
        """A location below this one: `S3Location("b", "p").join("x", "y.json")` -> `b/p/x/y.json`."""
        keys = [p for p in (self.key, *(part.strip("/") for part in parts)) if p]
        return S3Location(self.bucket, "/".join(keys))

    def __str__(self) -> str:
        return self.uri


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split `s3://bucket/a/b` into `("bucket", "a/b")` (no leading/trailing slash on the key prefix)."""
    loc = S3Location.parse(uri)
    return loc.bucket, loc.key


def join_uri(base: str, *parts: str) -> str:
    """Join URI/key parts with single slashes: `join_uri("s3://b/p/", "x", "y.json")` -> `s3://b/p/x/y.json`."""
    out = base.rstrip("/")
    for part in parts:
        part = part.strip("/")
        if part:
            out = f"{out}/{part}"
    return out
