"""The operator policy: which images, Secrets, S3 endpoints, registries, priority classes and tolerations a spec may use."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kretrain.api import RetrainJobSpec

if TYPE_CHECKING:
    from kretrain.operator.settings import OperatorSettings

# An image reference as the container runtime reads it: [host[:port]/]path[:tag][@sha256:hex], lowercase path
# components with single separators (so no `..`, no empty components, no whitespace or control characters).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]{1,5})?/)"
IMAGE_RE = re.compile(
    rf"^{_HOST}?{_COMPONENT}(?:/{_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?$"
)
_BOUNDARIES = ("/", ":", "@")

# An S3 endpoint: scheme, host (DNS name, IPv4 or bracketed IPv6), optional port, optional plain path. No
# userinfo, query, fragment, percent-escapes or backslashes: what this regex accepts, every URL parser splits
# the same way, so the host compared here is the host botocore connects to.
ENDPOINT_RE = re.compile(
    r"^(?P<scheme>[A-Za-z]+)://"
    r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<path>(?:/[A-Za-z0-9._~-]*)*)$"
)
DEFAULT_PORTS = {"http": 80, "https": 443}


class PolicyError(ValueError):
    """A value is outside the operator policy (the message names the field and the rule)."""


@dataclass(frozen=True)
class Violation:
    """One spec field outside the policy."""

    field: str
    """The spec field, e.g. `spec.resources.image`."""
    value: str
    """The offending value (quoted and shortened in the message)."""
    rule: str
    """Why it is refused, e.g. `is not under an allowed image prefix (allowed: ...)`."""

    def __str__(self) -> str:
        shown = self.value if len(self.value) <= 200 else self.value[:200] + "..."
        return f"{self.field}: {json.dumps(shown)} {self.rule}"


def _allowed_text(values: list[str]) -> str:
    return ", ".join(values) if values else "none"


# ---- images ------------------------------------------------------------------------------------------
def _names_a_reference(entry: str) -> bool:
    """True when the entry carries a tag or a digest (it then allows exactly itself)."""
    return "@" in entry or ":" in entry.rsplit("/", 1)[-1]


def _port_continuation(image: str, entry: str) -> bool:
    """True when `image` continues `entry` with `:<port>/...`: a registry host of the same name on another
    port (`registry.corp:8443/x` under the entry `registry.corp` or `registry.corp:`), not a tag of it."""
    stem = entry[:-1] if entry.endswith(":") else entry
    rest = image[len(stem) :]
    return rest.startswith(":") and "/" in rest


def image_allowed(image: str, entry: str) -> bool:
    """Whether `image` is allowed by one policy entry (exact reference, boundary-ended prefix or repository)."""
    if not IMAGE_RE.fullmatch(image):
        return False
    if entry.endswith(_BOUNDARIES):
        return image.startswith(entry) and len(image) > len(entry) and not _port_continuation(image, entry)
    if _names_a_reference(entry):
        return image == entry
    if image == entry:
        return True
    return image.startswith(entry) and image[len(entry)] in _BOUNDARIES and not _port_continuation(image, entry)


def allowed_images(settings: OperatorSettings) -> list[str]:
    """The image entries in force: the operator's trainer image plus the configured ones."""
    return list(dict.fromkeys([settings.trainer_image, *settings.allowed_images]))


# ---- S3 endpoints --------------------------------------------------------------------------------------
def canonical_endpoint(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of an endpoint URL, lowercased with the default port filled in.

    Raises PolicyError for anything but a plain `http(s)://host[:port][/path]` URL.
    """
    match = ENDPOINT_RE.fullmatch(url)
    if match is None:
        raise PolicyError("is not a plain http(s)://host[:port][/path] URL (no user info, query or fragment)")
    scheme = match["scheme"].lower()
    if scheme not in DEFAULT_PORTS:
        raise PolicyError("must use http or https")
    port = int(match["port"]) if match["port"] is not None else DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise PolicyError("has a port outside 1-65535")
    return scheme, match["host"].lower(), port, match["path"].rstrip("/")


def allowed_endpoints(settings: OperatorSettings) -> list[str]:
    """The endpoint URLs in force: the operator's own endpoint plus the configured ones."""
    own = [settings.s3_endpoint] if settings.s3_endpoint else []
    return list(dict.fromkeys([*own, *settings.allowed_s3_endpoints]))


def endpoint_violation(endpoint: str | None, settings: OperatorSettings) -> str | None:
    """Why `endpoint` is outside the policy (None: allowed). Unset means the operator's own default."""
    if endpoint is None:
        return None
    allowed = allowed_endpoints(settings)
    try:
        wanted = canonical_endpoint(endpoint)
    except PolicyError as exc:
        return str(exc)
    if wanted in {canonical_endpoint(a) for a in allowed}:
        return None
    return f"is not an allowed S3 endpoint (allowed: {_allowed_text(allowed)})"


def require_allowed_endpoint(endpoint: str | None, settings: OperatorSettings) -> None:
    """Raise PolicyError unless the operator may use its own S3 credentials against `endpoint`."""
    why = endpoint_violation(endpoint, settings)
    if why is not None:
        raise PolicyError(str(Violation("spec.storage.endpoint", endpoint or "", why)))


# ---- registries and datasets --------------------------------------------------------------------------------
def allowed_registries(settings: OperatorSettings) -> list[str]:
    """The registry prefixes in force: the operator's default registry plus the configured ones."""
    own = [settings.registry] if settings.registry else []
    return list(dict.fromkeys(r.rstrip("/") for r in [*own, *settings.allowed_registries]))


def uri_under(uri: str, entry: str) -> bool:
    """Whether the s3 `uri` equals the prefix `entry` or lies under it at a `/` boundary (no `..` segments)."""
    uri, entry = uri.rstrip("/"), entry.rstrip("/")
    if any(part in ("", ".", "..") for part in uri.removeprefix("s3://").split("/")):
        return False
    return uri == entry or uri.startswith(entry + "/")


def dataset_violation(uri: str, settings: OperatorSettings) -> str | None:
    """Why a RetrainSchedule may not list `uri` with the operator's credentials (None: allowed)."""
    entries = settings.allowed_datasets
    if not entries or any(uri_under(uri, e) for e in entries):
        return None
    return f"is not under an allowed dataset prefix (allowed: {_allowed_text(entries)})"


# ---- webhooks ------------------------------------------------------------------------------------------------
WEBHOOK_ORIGIN_RE = re.compile(r"^(?P<origin>[A-Za-z]+://[^/?#]+)(?:[/?].*)?$")


def webhook_violation(url: str, settings: OperatorSettings) -> str | None:
    """Why the operator may not POST promotion notices to `url` (None: allowed): its origin (scheme, host,
    port) must equal one of settings.allowed_webhook_hosts."""
    allowed = settings.allowed_webhook_hosts
    match = WEBHOOK_ORIGIN_RE.fullmatch(url)
    try:
        wanted = canonical_endpoint(match["origin"] if match else url)[:3]
    except PolicyError as exc:
        return str(exc)
    if wanted in {canonical_endpoint(a)[:3] for a in allowed}:
        return None
    return f"is not at an allowed webhook origin (allowed: {_allowed_text(allowed)})"


def serving_violations(spec: RetrainJobSpec, settings: OperatorSettings) -> list[Violation]:
    """spec.serving fields outside the policy: the webhook's origin and its Secret."""
    hook = spec.serving.webhook
    if hook is None:
        return []
    out: list[Violation] = []
    why = webhook_violation(hook.url, settings)
    if why is not None:
        out.append(Violation("spec.serving.webhook.url", hook.url, why))
    secrets = settings.allowed_webhook_secrets
    if hook.secret_ref.name not in secrets:
        rule = f"is not an allowed webhook Secret (allowed: {_allowed_text(secrets)})"
        out.append(Violation("spec.serving.webhook.secretRef.name", hook.secret_ref.name, rule))
    return out


# ---- the whole spec ------------------------------------------------------------------------------------
def violations(spec: RetrainJobSpec, settings: OperatorSettings) -> list[Violation]:
    """Every field of a resolved spec that is outside the operator policy (empty: the spec is allowed)."""
    out: list[Violation] = []
    res, storage = spec.resources, spec.storage
    images = allowed_images(settings)
    if res.image is not None and not any(image_allowed(res.image, e) for e in images):
        rule = (
            "is not a well-formed image reference"
            if not IMAGE_RE.fullmatch(res.image)
            else "is not under an allowed image prefix"
        )
        out.append(Violation("spec.resources.image", res.image, f"{rule} (allowed: {_allowed_text(images)})"))
    secrets = list(dict.fromkeys([settings.credentials_secret, *settings.allowed_credentials_secrets]))
    if storage.credentials_secret is not None and storage.credentials_secret not in secrets:
        rule = f"is not an allowed credentials Secret (allowed: {_allowed_text(secrets)})"
        out.append(Violation("spec.storage.credentialsSecret", storage.credentials_secret, rule))
    why = endpoint_violation(storage.endpoint, settings)
    if why is not None:
        out.append(Violation("spec.storage.endpoint", storage.endpoint or "", why))
    registries = allowed_registries(settings)
    if storage.registry is not None and not any(uri_under(storage.registry, e) for e in registries):
        rule = f"is not under an allowed registry (allowed: {_allowed_text(registries)})"
        out.append(Violation("spec.storage.registry", storage.registry, rule))
    classes = settings.allowed_priority_classes
    if res.priority_class_name is not None and res.priority_class_name not in classes:
        rule = f"is not an allowed priority class (allowed: {', '.join([*classes, 'unset'])})"
        out.append(Violation("spec.resources.priorityClassName", res.priority_class_name, rule))
    keys = settings.allowed_toleration_keys
    for i, toleration in enumerate(res.tolerations):
        field = f"spec.resources.tolerations[{i}].key"
        if toleration.key is None:
            out.append(
                Violation(field, "", f"is unset, which tolerates every taint (allowed keys: {_allowed_text(keys)})")
            )
        elif toleration.key not in keys:
            out.append(
                Violation(field, toleration.key, f"is not an allowed toleration key (allowed: {_allowed_text(keys)})")
            )
    return out + serving_violations(spec, settings)


def check(spec: RetrainJobSpec, settings: OperatorSettings) -> None:
    """Raise PolicyError naming every field of a resolved spec that is outside the policy."""
    found = violations(spec, settings)
    if found:
        raise PolicyError("; ".join(str(v) for v in found))
