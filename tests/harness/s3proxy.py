"""A fault-injecting HTTP(S) proxy in front of a real S3 server: throttling, 5xx, dropped and cut-short responses.

Requests are forwarded unchanged (the Host header too, so SigV4 signatures made for the proxy's address
still verify upstream). `fail_next(...)` queues faults; each request takes the next one whose method
matches, or is forwarded when none is queued:

- `"503"`, `"500"`, `"429"`: answer with that status and an S3 error document (SlowDown, InternalError);
- `"drop"`: close the connection without answering;
- `"truncate"`: forward, but send only half the body (with the full Content-Length) and close;
- `"close-after"`: forward, then close the connection without saying so (a server that ends idle
  keep-alive connections), so the client's next request on it finds it dead;
- `"stall"`: answer nothing for `stall_seconds`, then close (a hung server; the client should time out);
- `"chunked"`: forward, but send the body with `Transfer-Encoding: chunked` and no Content-Length (a
  server that does not say how much is coming);
- `"inflate"`: forward, but answer a 200 with the body repeated `inflate_factor` times, chunked and without
  Content-Length (a lying server sending far more than the object holds).

With `tls=(certfile, keyfile)` the proxy speaks HTTPS.

`extra_keys` (full object keys) are added to every ListObjectsV2 answer (a hostile server or a
compromised bucket listing keys that SeaweedFS itself refuses to store, such as `../x` or `a\\b`).

`conditions` emulates S3-compatible backends that ignore conditional writes (they differ: older MinIO
releases and some gateways accept If-None-Match/If-Match and overwrite anyway). The headers are signed
(SigV4 covers every header botocore sends), so the proxy cannot just drop them: a conditional PUT is
re-signed with `credentials` without the condition and sent upstream as a plain PUT.

- `"honour"` (default): forward unchanged;
- `"strip"`: drop If-None-Match and If-Match (the PUT overwrites and answers 200);
- `"strip-if-none-match"` / `"strip-if-match"`: drop only that one;
- `"412-after-write"`: on a conditional PUT of an existing object, overwrite it anyway, then answer 412.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import socket
import ssl
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import quote, urlsplit
from xml.sax.saxutils import escape as xml_escape

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

_ERRORS = {
    "429": ("SlowDown", "Please reduce your request rate."),
    "500": ("InternalError", "We encountered an internal error. Please try again."),
    "503": ("SlowDown", "Please reduce your request rate."),
}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}
CONDITION_MODES = ("honour", "strip", "strip-if-none-match", "strip-if-match", "412-after-write")
_CONDITIONS = {"strip": ("if-none-match", "if-match"), "strip-if-none-match": ("if-none-match",)}
_CONDITIONS |= {"strip-if-match": ("if-match",), "412-after-write": ("if-none-match", "if-match")}


class FaultProxy:
    """A threaded proxy to `upstream` (http://host:port) on a free 127.0.0.1 port; use as a context manager."""

    def __init__(
        self,
        upstream: str,
        tls: tuple[str, str] | None = None,
        stall_seconds: float = 3.0,
        inflate_factor: int = 64,
        credentials: tuple[str, str] | None = None,
        conditions: str = "honour",
        extra_keys: tuple[str, ...] = (),
    ) -> None:
        parts = urlsplit(upstream)
        self.inflate_factor = inflate_factor
        self.credentials = credentials
        self.conditions = conditions
        self.extra_keys = extra_keys
        self.conditions_dropped = 0  # conditional PUTs sent upstream without their condition
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._faults: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()  # method -> requests seen
        self.faults_served: list[str] = []
        self.connections = 0
        self.closed_after = 0  # connections ended after a "close-after" answer (their FIN sent)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._take(self.command)
                if fault == "stall":
                    time.sleep(stall_seconds)
                    self.close_connection = True
                    return
                if fault == "drop":
                    self.close_connection = True
                    return
                if fault in _ERRORS:
                    code, message = _ERRORS[fault]
                    doc = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
                    data = doc.encode()
                    self.send_response(int(fault))
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if self.command == "PUT" and proxy._drops_condition(self.headers):
                    status, headers, payload = proxy._put_without_condition(self.path, dict(self.headers), body)
                else:
                    status, headers, payload = proxy._forward(self.command, self.path, dict(self.headers), body)
                if self.command == "GET" and status == 200 and proxy.extra_keys:
                    payload = proxy._with_extra_keys(self.path, payload)
                if fault in ("chunked", "inflate") and self.command != "HEAD":
                    self._send_chunked(status, headers, payload, proxy.inflate_factor if fault == "inflate" else 1)
                    return
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if fault == "truncate":
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if self.command != "HEAD":
                    self.wfile.write(payload)
                if fault == "close-after":
                    self.wfile.flush()
                    self.close_connection = True
                    with contextlib.suppress(OSError):  # the FIN goes out now, not when the handler returns
                        self.connection.shutdown(socket.SHUT_WR)
                    with proxy._lock:
                        proxy.closed_after += 1

            def _send_chunked(self, status: int, headers: list[tuple[str, str]], payload: bytes, times: int) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for _ in range(times):
                        if payload:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except OSError:  # the client stopped reading (a size cap): what it should do
                    pass
                self.close_connection = True

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

        tls_context: ssl.SSLContext | None = None
        if tls is not None:
            tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls_context.load_cert_chain(*tls)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, Any]:
                sock, addr = self.socket.accept()
                with proxy._lock:
                    proxy.connections += 1  # counted before the TLS handshake, which may fail
                if tls_context is not None:
                    sock.settimeout(10)
                    sock = tls_context.wrap_socket(sock, server_side=True)
                return sock, addr

        self._server = Server(("127.0.0.1", 0), Handler)
        self.endpoint = f"{'https' if tls else 'http'}://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    def fail_next(self, *faults: str, method: str | None = None) -> None:
        """Queue faults for the next requests (of `method`, or of any method)."""
        with self._lock:
            self._faults += [(fault, method) for fault in faults]

    def pending(self) -> int:
        """Faults queued and not yet served."""
        with self._lock:
            return len(self._faults)

    def _take(self, method: str) -> str | None:
        with self._lock:
            self.requests[method] += 1
            for i, (fault, only) in enumerate(self._faults):
                if only is None or only == method:
                    del self._faults[i]
                    self.faults_served.append(fault)
                    return fault
            return None

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def _with_extra_keys(self, path: str, payload: bytes) -> bytes:
        """A ListObjectsV2 answer with `extra_keys` listed too (URL-encoded when the client asked for it)."""
        end = b"</ListBucketResult>"
        if "list-type=2" not in path or end not in payload:
            return payload
        encode = "encoding-type=url" in path
        entries = b"".join(
            b"<Contents><Key>%s</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified>"
            b"<ETag>&quot;0123456789abcdef0123456789abcdef&quot;</ETag><Size>1</Size>"
            b"<StorageClass>STANDARD</StorageClass></Contents>"
            % xml_escape(quote(key, safe="/") if encode else key).encode()
            for key in self.extra_keys
        )
        return payload.replace(end, entries + end, 1)

    def _drops_condition(self, headers: Any) -> bool:
        if self.conditions not in CONDITION_MODES:
            raise ValueError(f"conditions must be one of {CONDITION_MODES}, got {self.conditions!r}")
        return any(headers.get(name) is not None for name in _CONDITIONS.get(self.conditions, ()))

    def _put_without_condition(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """The PUT re-signed without the conditions this mode drops, as a backend ignoring them would write."""
        if self.credentials is None:
            raise RuntimeError("FaultProxy needs credentials=(access_key, secret_key) to drop signed conditions")
        drop = set(_CONDITIONS[self.conditions]) | {"authorization", "x-amz-date", "x-amz-content-sha256", "host"}
        kept = {k: v for k, v in headers.items() if k.lower() not in drop and k.lower() not in _HOP_BY_HOP}
        lie = self.conditions == "412-after-write"
        if lie and self._signed("HEAD", path, {}, b"")[0] == 404:
            lie = False  # a fresh key: written as asked (If-None-Match: * holds)
        with self._lock:
            self.conditions_dropped += 1
        status, out, payload = self._signed("PUT", path, kept, body)
        if lie and status == 200:
            doc = b"<?xml version='1.0'?><Error><Code>PreconditionFailed</Code><Message>At least one of the "
            doc += b"pre-conditions you specified did not hold</Message></Error>"
            return 412, [("Content-Type", "application/xml")], doc
        return status, out, payload

    def _signed(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self.credentials is not None
        host = f"{self.upstream[0]}:{self.upstream[1]}"
        request = AWSRequest(method=method, url=f"http://{host}{path}", data=body, headers=headers)
        S3SigV4Auth(Credentials(*self.credentials), "s3", "us-east-1").add_auth(request)
        signed = dict(request.headers.items())
        signed["Host"] = host
        return self._forward(method, path, signed, body)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
