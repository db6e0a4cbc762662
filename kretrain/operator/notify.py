"""Telling the serving side about a promotion: the typed webhook body, its HMAC signature, retry schedule, delivery."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

from pydantic import Field

from kretrain.api.base import ApiModel
from kretrain.api.spec import WEBHOOK_URL_PATTERN
from kretrain.api.status import Notification
from kretrain.registry_records import VersionArtifact, VersionRecord

SIGNATURE_HEADER = "X-Kretrain-Signature"
"""`t=<unix seconds>,v1=<hex HMAC-SHA256 over '<t>.' + body>` (the receiver recomputes it with the shared key)."""
ID_HEADER = "X-Kretrain-Notice-Id"
"""The notice's id: a receiver that saw it already ignores a repeat (deliveries are at least once)."""
MAX_ATTEMPTS = 8
"""Attempts before a delivery is given up (recorded as failed; the promotion stands)."""
FIRST_DELAY_SECONDS = 10
"""Delay before the second attempt; each later one doubles, up to MAX_DELAY_SECONDS."""
MAX_DELAY_SECONDS = 3600
MIN_KEY_BYTES = 16
"""Shortest HMAC key accepted from the Secret."""
_SHA256 = r"^[0-9a-f]{64}$"
_URI = r"^s3://[^\s]+$"
_OBJECT_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}"
"""An object directly in a version's folder (the form kretrain.artifacts and the registry's readers accept)."""


class NoticeWeights(ApiModel):
    """The promoted version's PyTorch weights."""

    uri: str = Field(pattern=_URI, max_length=2048)
    """The weights object in the version's folder."""
    sha256: str = Field(pattern=_SHA256)
    """Their SHA-256 (as in version.json)."""


class PromotionNotice(ApiModel):
    """The webhook body: which version a model line's pointer (the incumbent or an alias) names now."""

    api_version: str = Field(default="kretrain.dev/v1", pattern=r"^kretrain\.dev/v1$")
    """Schema version of this body."""
    kind: str = Field(default="PromotionNotice", pattern=r"^PromotionNotice$")
    """Always `PromotionNotice`."""
    id: str = Field(max_length=512)
    """Stable id of this promotion (`<namespace>/<retrainjob>/<version>/<pointer>`): the same on every retry."""
    model: str = Field(max_length=253)
    """Model line."""
    pointer: str = Field(max_length=63)
    """`incumbent` or the alias that moved (spec.promotion.alias)."""
    version: str = Field(max_length=253)
    """The version the pointer names now."""
    previous: str | None = Field(default=None, max_length=253)
    """The version it named before (None for the first)."""
    namespace: str = Field(max_length=63)
    """Namespace of the RetrainJob that promoted it."""
    retrain_job: str = Field(max_length=253)
    """Name of that RetrainJob."""
    promoted_at: str = Field(max_length=64)
    """When the operator decided (RFC 3339)."""
    registry: str = Field(pattern=_URI, max_length=2048)
    """Registry root; the version's folder is `<registry>/<model>/versions/<version>/`."""
    weights: NoticeWeights
    """The PyTorch weights."""
    artifacts: list[VersionArtifact] = Field(default_factory=list, max_length=8)
    """Serving artifacts (ONNX, TensorRT) that passed exportParity, with their sha256: verify before loading."""
    metrics: dict[str, float] = Field(default_factory=dict, max_length=64)
    """Pooled metrics of the version on the mixed-era test set."""


DeliveryRecord = Notification
"""status.notifications[]: where one notice's delivery stands (kretrain.api.status.Notification)."""


def build_notice(
    *, registry: str, info: VersionRecord, pointer: str, previous: str | None, namespace: str, retrain_job: str,
    promoted_at: str,
) -> PromotionNotice:  # fmt: skip
    """The notice for a promotion from the promoted version's record (`Registry.version_info`).

    version.json is the trainer's: ValueError unless its weights and every artifact are objects directly in the
    version's own folder (as the registry's readers require), so a signed notice never names anything else.
    """
    model, version = info.model, info.version
    folder = f"{registry.rstrip('/')}/{model}/versions/{version}/"
    for what, uri in [("weights", info.uri), *(("artifact", a.uri) for a in info.artifacts)]:
        name = uri[len(folder) :] if uri.startswith(folder) else ""
        if not re.fullmatch(_OBJECT_NAME, name):
            raise ValueError(f"version.json names {what} {uri[:200]!r}, which is not an object in {folder}")
    return PromotionNotice(
        id=f"{namespace}/{retrain_job}/{version}/{pointer}", model=model, pointer=pointer, version=version,
        previous=previous, namespace=namespace, retrain_job=retrain_job, promoted_at=promoted_at,
        registry=registry, weights=NoticeWeights(uri=info.uri, sha256=info.sha256),
        artifacts=info.artifacts, metrics=dict(info.metrics),
    )  # fmt: skip


def body_bytes(notice: PromotionNotice) -> bytes:
    """The exact bytes sent and signed: compact JSON with sorted keys."""
    return json.dumps(notice.dump(), sort_keys=True, separators=(",", ":")).encode()


def check_key(key: bytes) -> bytes:
    """The HMAC key if it is long enough; ValueError otherwise (it comes from a Secret)."""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"webhook HMAC key is {len(key)} bytes; at least {MIN_KEY_BYTES} are needed")
    return key


def sign(body: bytes, key: bytes, timestamp: int) -> str:
    """The SIGNATURE_HEADER value for `body` sent at `timestamp` (unix seconds)."""
    mac = hmac.new(check_key(key), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(body: bytes, header: str, key: bytes, now: int, tolerance: int = 300) -> bool:
    """A receiver's check: the header is well formed, fresh within `tolerance` seconds, and its MAC matches."""
    m = re.fullmatch(r"t=(\d{1,12}),v1=([0-9a-f]{64})", header or "")
    if m is None or abs(now - int(m.group(1))) > tolerance:
        return False
    expected = hmac.new(key, f"{m.group(1)}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, m.group(2))


def url_host(url: str) -> str:
    """The host[:port] of a webhook URL; ValueError for a URL outside WEBHOOK_URL_PATTERN."""
    if not re.fullmatch(WEBHOOK_URL_PATTERN, url or "") or len(url) > 2048:
        raise ValueError("webhook URL must be http(s)://host[:port][/path] without user info or fragment")
    return url.split("/")[2]


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_attempt(
    record: Notification, now: datetime, status: int | None, error: str | None,
    first_delay: float = FIRST_DELAY_SECONDS,
) -> Notification:  # fmt: skip
    """Pure: the record after one attempt answered `status` (None: no answer) or failed with `error`.

    The next attempt is scheduled `first_delay` * 2^(attempts-1) seconds later (capped), never slept for: the
    caller re-runs the delivery when it is due (a kopf timer or the next poll).
    """
    attempts = record.attempts + 1
    ok = status is not None and 200 <= status < 300
    if ok:
        return record.model_copy(update=dict(attempts=attempts, delivered=True, last_status=status, last_error=None,
                                             next_attempt_at=None))  # fmt: skip
    why = (error or f"HTTP {status}")[:512]
    if attempts >= MAX_ATTEMPTS:
        return record.model_copy(update=dict(attempts=attempts, given_up=True, last_status=status, last_error=why,
                                             next_attempt_at=None))  # fmt: skip
    delay = min(first_delay * 2 ** (attempts - 1), MAX_DELAY_SECONDS)
    return record.model_copy(update=dict(attempts=attempts, last_status=status, last_error=why,
                                         next_attempt_at=_rfc3339(now + timedelta(seconds=delay))))  # fmt: skip


def due(record: Notification, now: datetime) -> bool:
    """Whether another attempt should be made now."""
    if record.delivered or record.given_up:
        return False
    if record.next_attempt_at is None:
        return True
    try:
        at = datetime.strptime(record.next_attempt_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:  # the status is anyone's to patch: an unreadable time is due now (and rewritten)
        return True
    return now >= at


def post(
    url: str, notice: PromotionNotice, key: bytes, now: int, timeout: float = 5.0
) -> tuple[int | None, str | None]:
    """One attempt: POST the signed body; returns (HTTP status or None, error or None). No redirects followed.

    Blocking I/O bounded by `timeout`: run it in a worker thread (asyncio.to_thread), never in the event loop.
    """
    url_host(url)
    body = body_bytes(notice)
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, key, now), ID_HEADER: notice.id}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            return int(response.status), None
    except urllib.error.HTTPError as exc:
        return int(exc.code), f"HTTP {exc.code} {str(exc.reason)[:200]}"
    except (urllib.error.URLError, OSError) as exc:
        return None, f"{type(exc).__name__}: {str(exc)[:300]}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer (3xx, not delivered), never followed: the signed body goes only where configured."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


INFERENCE_SERVICE = ("serving.kserve.io", "v1beta1", "inferenceservices")
"""The KServe resource the operator may patch (RBAC: `patch` on exactly this resource, nothing else)."""


def inference_service_patch(notice: PromotionNotice) -> dict:
    """The JSON merge patch pointing a KServe InferenceService's predictor at the notice's version folder.

    `storageUri` is the folder (`<registry>/<model>/versions/<version>/`), where KServe's storage initializer
    finds the artifact; the patch is idempotent (the same notice gives the same patch).
    """
    folder = f"{notice.registry.rstrip('/')}/{notice.model}/versions/{notice.version}/"
    if not all(a.uri.startswith(folder) for a in notice.artifacts):
        raise ValueError(f"the notice's artifacts are not all in {folder}; refusing to point a predictor there")
    return {
        "metadata": {"annotations": {"kretrain.dev/version": notice.version, "kretrain.dev/notice-id": notice.id}},
        "spec": {"predictor": {"model": {"storageUri": folder}}},
    }
