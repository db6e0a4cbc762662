"""A local HTTP server that records each request as sent (raw path, headers, body) and answers a fixed reply."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Sent:
    """One request as it arrived: the path exactly as on the wire (percent-encoding kept), header names Title-Cased."""

    method: str
    raw_path: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        """The raw path without its query."""
        return urlsplit(self.raw_path).path

    @property
    def query(self) -> str:
        """The raw query string."""
        return urlsplit(self.raw_path).query


@dataclass
class Recorder:
    """The server's base URL, what it received, and what it answers next (status and JSON body)."""

    url: str
    sent: list[Sent] = field(default_factory=list)
    status: int = 200
    reply: Any = field(default_factory=lambda: {"kind": "List", "metadata": {}, "items": []})


@contextmanager
def recording_server(tls: tuple[str, str] | None = None) -> Iterator[Recorder]:
    """Serve on a free 127.0.0.1 port until the block ends (HTTPS with `tls` = (cert file, key file)); every
    request is recorded and answered `recorder.status` with `recorder.reply` as JSON."""
    rec = Recorder(url="")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            rec.sent.append(Sent(self.command, self.path, {k.title(): v for k, v in self.headers.items()}, body))
            payload = json.dumps(rec.reply).encode()
            self.send_response(rec.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    rec.url = f"{'https' if tls else 'http'}://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
