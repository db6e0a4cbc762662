"""Promotion notices: typed body, HMAC signature, retry schedule, one real delivery to a local HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import ValidationError

from kretrain.operator import notify
from kretrain.registry_records import VersionRecord

KEY = b"k" * 32
INFO = VersionRecord.model_validate({
    "model": "m",
    "version": "run-2",
    "uri": "s3://reg/m/versions/run-2/weights-abc.pt",
    "sha256": "a" * 64,
    "size": 123,
    "registeredAt": "2026-12-01T23:00:00Z",
    "artifacts": [{"format": "onnx", "uri": "s3://reg/m/versions/run-2/model-abc.onnx", "sha256": "b" * 64, "size": 9}],
    "metrics": {"mAP50-95": 0.61, "mAP50": 0.8},
})  # fmt: skip


def notice(**over: Any) -> notify.PromotionNotice:
    n = notify.build_notice(
        registry="s3://reg", info=INFO, pointer="incumbent", previous="v1", namespace="ns", retrain_job="job",
        promoted_at="2026-12-01T23:00:00Z",
    )  # fmt: skip
    return n.model_copy(update=over)


def test_body_is_typed_stable_and_complete() -> None:
    n = notice()
    body = json.loads(notify.body_bytes(n))
    assert body["apiVersion"] == "kretrain.dev/v1" and body["kind"] == "PromotionNotice"
    assert body["id"] == "ns/job/run-2/incumbent" and body["previous"] == "v1"
    assert body["weights"] == {"uri": INFO.uri, "sha256": "a" * 64}
    assert body["artifacts"][0]["format"] == "onnx" and body["metrics"]["mAP50-95"] == 0.61
    assert notify.body_bytes(n) == notify.body_bytes(notify.PromotionNotice.model_validate(body))  # round trip
    with pytest.raises(ValidationError):
        notify.PromotionNotice.model_validate({**body, "extra": 1})


@pytest.mark.parametrize(
    ("mutate", "ok"),
    [
        (lambda b, h, k, t: (b, h, k, t), True),
        (lambda b, h, k, t: (b.replace(b"run-2", b"run-3"), h, k, t), False),  # body changed in flight
        (lambda b, h, k, t: (b, h, b"x" * 32, t), False),  # another key
        (lambda b, h, k, t: (b, h, k, t + 301), False),  # replayed too late
        (lambda b, h, k, t: (b, h.replace("t=", "t=1"), k, t), False),  # timestamp changed
        (lambda b, h, k, t: (b, h.split(",")[1], k, t), False),  # malformed header
        (lambda b, h, k, t: (b, "", k, t), False),
    ],
    ids=["valid", "tampered-body", "wrong-key", "stale", "other-time", "malformed", "missing"],
)
def test_signature(mutate: Any, ok: bool) -> None:
    body, t = notify.body_bytes(notice()), 1_800_000_000
    header = notify.sign(body, KEY, t)
    b, h, k, now = mutate(body, header, KEY, t)
    assert notify.verify(b, h, k, now) is ok


@pytest.mark.parametrize("key", [b"", b"short"], ids=["empty", "short"])
def test_short_keys_are_refused(key: bytes) -> None:
    with pytest.raises(ValueError, match="at least 16"):
        notify.sign(b"{}", key, 1)


@pytest.mark.parametrize(
    "url",
    ["ftp://h/x", "http://user:pw@h/x", "https://h/x#frag", "http://h\\x", "https://h/ x", "", "h/x"],
    ids=["scheme", "userinfo", "fragment", "backslash", "space", "empty", "no-scheme"],
)
def test_bad_webhook_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="webhook URL"):
        notify.url_host(url)


T0 = datetime(2026, 12, 1, 23, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("answers", "delivered", "given_up", "next_in"),
    [
        ([200], True, False, None),
        ([None], False, False, 10),
        ([500, 502], False, False, 20),
        ([500, 500, 500, 204], True, False, None),
        ([503] * 7, False, False, 640),
        ([503] * notify.MAX_ATTEMPTS, False, True, None),
        ([301], False, False, 10),  # a redirect is not a delivery
    ],
    ids=["ok", "no-answer", "two-5xx", "late-success", "seven-failures", "gives-up", "redirect"],
)
def test_retry_schedule(answers: list[int | None], delivered: bool, given_up: bool, next_in: int | None) -> None:
    rec, now, last = notify.DeliveryRecord(kind="webhook", notice_id="n", target="h"), T0, T0
    for status in answers:
        assert notify.due(rec, now)
        rec, last = notify.record_attempt(rec, now, status, None if status else "ConnectionRefusedError: refused"), now
        if rec.next_attempt_at:
            now = datetime.strptime(rec.next_attempt_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert (rec.attempts, rec.delivered, rec.given_up) == (len(answers), delivered, given_up)
    if next_in is None:
        assert rec.next_attempt_at is None and not notify.due(rec, last + timedelta(days=1))
    else:  # the delay after the last failure; not due a second before it
        assert now - last == timedelta(seconds=next_in) and rec.last_error
        assert not notify.due(rec, now - timedelta(seconds=1)) and notify.due(rec, now)


@pytest.fixture
def receiver() -> Iterator[dict[str, Any]]:
    """A local HTTP server that records each POST and answers with the next queued status."""
    state: dict[str, Any] = {"answers": [], "got": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state["got"].append((dict(self.headers), body))
            self.send_response(state["answers"].pop(0) if state["answers"] else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/hooks/kretrain?token=t"
    yield state
    server.shutdown()
    server.server_close()


def test_delivery_is_signed_retried_and_recorded(receiver: dict[str, Any]) -> None:
    receiver["answers"] = [500]
    n, now = notice(), 1_800_000_000
    rec = notify.DeliveryRecord(kind="webhook", notice_id=n.id, target=notify.url_host(receiver["url"]))
    status, error = notify.post(receiver["url"], n, KEY, now)
    rec = notify.record_attempt(rec, T0, status, error)
    assert (status, rec.delivered, rec.attempts, rec.last_status) == (500, False, 1, 500) and "HTTP 500" in str(
        rec.last_error
    )
    status, error = notify.post(receiver["url"], n, KEY, now + 10)
    rec = notify.record_attempt(rec, T0 + timedelta(seconds=10), status, error)
    assert rec.delivered and rec.attempts == 2 and rec.target == receiver["url"].split("/")[2]
    for headers, body in receiver["got"]:
        assert notify.verify(body, headers[notify.SIGNATURE_HEADER], KEY, now + 10)
        assert headers[notify.ID_HEADER] == n.id and json.loads(body)["version"] == "run-2"


def test_unreachable_webhook_is_an_error_not_an_exception() -> None:
    status, error = notify.post("http://127.0.0.1:9/x", notice(), KEY, 1, timeout=2)
    assert status is None and error and "Error" in error


def test_inference_service_patch_points_at_the_version_folder() -> None:
    patch = notify.inference_service_patch(notice())
    assert patch["spec"]["predictor"]["model"]["storageUri"] == "s3://reg/m/versions/run-2/"
    assert patch["metadata"]["annotations"]["kretrain.dev/version"] == "run-2"
    assert notify.inference_service_patch(notice()) == patch  # idempotent
    elsewhere = notice().artifacts[0].model_copy(update={"uri": "s3://evil/model.onnx"})
    with pytest.raises(ValueError, match="not all in"):
        notify.inference_service_patch(notice(artifacts=[elsewhere]))


@pytest.mark.parametrize("code", [301, 302, 307, 308], ids=["301", "302", "307", "308"])
def test_a_redirect_is_an_answer_never_followed(receiver: dict[str, Any], code: int) -> None:
    """The signed body goes only to the configured URL: a redirect (even to an allowed host) is not delivered."""

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(code)
            self.send_header("Location", receiver["url"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        status, error = notify.post(f"http://127.0.0.1:{server.server_address[1]}/hook", notice(), KEY, 1)
    finally:
        server.shutdown()
        server.server_close()
    rec = notify.record_attempt(notify.DeliveryRecord(kind="webhook", notice_id="n", target="h"), T0, status, error)
    assert status == code and not rec.delivered and rec.next_attempt_at
    assert receiver["got"] == []  # the redirect target never saw the body
