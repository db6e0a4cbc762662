"""Signed S3 GETs over pooled keep-alive http.client connections: the low-CPU path for bulk pulls."""

from __future__ import annotations

import http.client
import random
import socket
import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass
from email.message import Message
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest

from kretrain.limits import MAX_ERROR_BODY_BYTES

# Statuses worth another try: throttling and server-side failures.
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
# Failures of the connection itself (refused, reset, timed out, closed mid-response).
_CONNECTION_ERRORS = (OSError, http.client.HTTPException)
# What a request on a keep-alive connection that the server closed while it sat idle fails with.
_STALE_ERRORS = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
_CHUNK = 1024 * 1024


class S3HTTPError(Exception):
    """A request that could not be completed after every attempt (connection failures)."""


class BodyTooLarge(Exception):
    """A 200 answer whose Content-Length is over the caller's `max_body`; its body was not read."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"Content-Length {length} is over the limit of {limit} bytes")
        self.length = length
        self.limit = limit


class Sink(Protocol):
    """Where a streamed body goes: written in chunks, reset before a retry starts it over."""

    def write(self, data: bytes, /) -> object: ...

    def reset(self) -> None: ...


@dataclass(frozen=True)
class Response:
    """A completed GET: status, headers and the body (empty when it was streamed into a file)."""

    status: int
    headers: Message
    body: bytes


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based): full jitter as botocore's standard mode, up
    to 1 s, 2 s, 4 s ... 20 s."""
    return random.uniform(0, min(2.0 ** (attempt - 1), 20.0))


def proxied(endpoint_url: str) -> bool:
    """Whether the environment (HTTP(S)_PROXY without a NO_PROXY match) sends requests to the endpoint via a proxy."""
    parts = urlsplit(endpoint_url)
    if parts.scheme not in urllib.request.getproxies():
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


class FastS3:
    """SigV4-signed GETs of path-style S3 URLs, sent over a LIFO pool of keep-alive connections.

    botocore signs each request (`S3SigV4Auth`, with refreshable credentials); the request itself goes
    over plain `http.client`, which costs about a third of the client CPU of a boto3 `get_object`.
    Requests are retried like botocore's standard mode (exponential backoff with full jitter, 1 s base,
    20 s cap) on 429/5xx and connection errors (a timeout, a body cut short), at most `max_attempts`
    tries. A pooled keep-alive connection that the server had closed while idle (reset or closed before
    any answer) is replaced by a new one once per request without counting as an attempt. HTTPS
    endpoints are verified (hostname and chain) against `ca_bundle` (a PEM file) or the system store;
    `verify=False` turns that off.
    """

    def __init__(
        self,
        endpoint_url: str,
        credentials: Any,
        region: str,
        *,
        max_connections: int = 20,
        max_attempts: int = 8,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        verify: bool = True,
        ca_bundle: str | None = None,
    ) -> None:
        parts = urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"S3 endpoint must be an http(s)://host[:port] URL, got {endpoint_url!r}")
        self.base = endpoint_url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._path = parts.path.rstrip("/")
        self._credentials = credentials
        self._region = region
        self.max_attempts = max(1, max_attempts)
        self._max_idle = max(1, max_connections)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._ssl: ssl.SSLContext | None = None
        if self._https:
            self._ssl = ssl.create_default_context(cafile=ca_bundle)
            if not verify:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- connections

    def _connect(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self._ssl is not None:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._connect_timeout, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._connect_timeout)
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(self._read_timeout)
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _checkout(self, fresh: bool = False) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection (reused=True) or, when there is none or `fresh` is asked for, a new one."""
        with self._lock:
            if self._idle and not fresh:
                return self._idle.pop(), True
        return self._connect(), False

    def _checkin(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # ---------------------------------------------------------------- requests

    def url(self, bucket: str, key: str = "", query: dict[str, str] | None = None) -> str:
        """The path-style URL of bucket/key?query, percent-encoded as it is signed and sent."""
        path = f"{self._path}/{quote(bucket)}"
        if key:
            path += f"/{quote(key, safe='/~')}"
        if query:
            path += "?" + urlencode(sorted(query.items()), quote_via=quote, safe="~")
        return path

    def _signed_headers(self, target: str) -> dict[str, str]:
        request = AWSRequest(method="GET", url=f"{self.base}{target[len(self._path) :]}")
        S3SigV4Auth(self._credentials.get_frozen_credentials(), "s3", self._region).add_auth(request)
        return dict(request.headers.items())

    def get(
        self,
        bucket: str,
        key: str = "",
        query: dict[str, str] | None = None,
        *,
        into: Sink | None = None,
        max_body: int | None = None,
    ) -> Response:
        """GET bucket/key?query; a 200 body is streamed to `into` (reset before each try) if given.

        Returns the final response, which may be an error status (the body then holds the first
        `MAX_ERROR_BODY_BYTES` of the S3 error XML); raises S3HTTPError when the connection failed on every
        attempt. A 200 answer with a Content-Length over `max_body` raises BodyTooLarge before its body is
        read (a body without Content-Length is bounded by the sink). Errors of `into` itself (a full disk,
        a size cap) are raised as they are, not retried.
        """
        target = self.url(bucket, key, query)
        attempt = 0
        stale_retry_used = False
        fresh = False
        while True:
            attempt += 1
            conn: http.client.HTTPConnection | None = None
            reused = answered = False
            try:
                conn, reused = self._checkout(fresh=fresh)
                fresh = False
                conn.request("GET", target, headers=self._signed_headers(target))
                resp = conn.getresponse()
                answered = True
                status = resp.status
                body = b""
                if status == 200 and max_body is not None:
                    length = _content_length(resp)
                    if length is not None and length > max_body:
                        raise BodyTooLarge(length, max_body)
                if status == 200 and into is not None:
                    self._stream(resp, into)
                    keep = not resp.will_close
                else:
                    body = resp.read(MAX_ERROR_BODY_BYTES if status != 200 else None)
                    keep = not resp.will_close and resp.isclosed()  # an error body left unread: drop the connection
            except _SinkError as exc:
                _close(conn)
                assert exc.__cause__ is not None
                raise exc.__cause__ from None
            except ssl.SSLCertVerificationError as exc:
                _close(conn)
                raise S3HTTPError(
                    f"S3 endpoint {self.base} presented a certificate that is not trusted ({exc.verify_message}); "
                    "set AWS_CA_BUNDLE to the PEM file of the CA that signed it"
                ) from exc
            except _CONNECTION_ERRORS as exc:
                _close(conn)
                if reused and not answered and not stale_retry_used and isinstance(exc, _STALE_ERRORS):
                    # A keep-alive connection the server had closed while idle: once, on a new connection.
                    stale_retry_used = fresh = True
                    attempt -= 1
                    continue
                if attempt >= self.max_attempts:
                    raise S3HTTPError(f"S3 GET {self.base}{target} failed after {attempt} attempts: {exc!r}") from exc
            except BaseException:
                _close(conn)
                raise
            else:
                if keep:
                    self._checkin(conn)
                else:
                    conn.close()
                if status not in RETRY_STATUS or attempt >= self.max_attempts:
                    return Response(status=status, headers=resp.headers, body=body)
            time.sleep(backoff(attempt))

    @staticmethod
    def _stream(resp: http.client.HTTPResponse, into: Sink) -> None:
        """Copy a 200 body into the sink; IncompleteRead if it ends before its Content-Length."""
        try:
            into.reset()
        except BaseException as exc:
            raise _SinkError() from exc
        received = 0
        while chunk := resp.read(_CHUNK):
            try:
                into.write(chunk)
            except BaseException as exc:
                raise _SinkError() from exc
            received += len(chunk)
        length = resp.headers.get("Content-Length")
        if length is not None and received != int(length):
            raise http.client.IncompleteRead(b"", int(length) - received)


def _content_length(resp: http.client.HTTPResponse) -> int | None:
    raw = resp.headers.get("Content-Length")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


class _SinkError(Exception):
    """Raised from a failing sink (its cause is the real error), so it is not taken for a network failure."""


def _close(conn: http.client.HTTPConnection | None) -> None:
    if conn is not None:
        conn.close()
