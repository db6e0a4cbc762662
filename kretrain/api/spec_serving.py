"""The serving section of the RetrainJob spec: who is told after a promotion (webhook, KServe InferenceService)."""

from __future__ import annotations

from pydantic import Field

from kretrain.api.base import ApiModel
from kretrain.api.spec_types import NAME_PATTERN

WEBHOOK_URL_PATTERN = r"^https?://[^\s/@?#\\%]+(/[^\s#]*)?$"
"""http(s)://host[:port][/path][?query] without user info or fragment (as storage.endpoint)."""
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class SecretKeyRef(ApiModel):
    """One key of a Secret in the RetrainJob's namespace."""

    name: str = Field(pattern=NAME_PATTERN)
    """The Secret's name; must be one the operator policy allows (policy.allowedWebhookSecrets)."""
    key: str = Field(default="hmacKey", pattern=r"^[-._a-zA-Z0-9]{1,253}$")
    """The key holding the HMAC key (at least 16 bytes)."""


class WebhookSpec(ApiModel):
    """A webhook told about each promotion: a signed JSON PromotionNotice POSTed, retried with backoff."""

    url: str = Field(pattern=WEBHOOK_URL_PATTERN, max_length=2048)
    """`http(s)://host[:port][/path]` without user info or fragment; its scheme, host and port must be one the
    operator policy allows (policy.allowedWebhookHosts). Put no token in it: the body is HMAC-signed."""
    secret_ref: SecretKeyRef
    """The Secret key with the HMAC-SHA256 key the body is signed with (header X-Kretrain-Signature)."""


class InferenceServiceRef(ApiModel):
    """A KServe InferenceService in the RetrainJob's own namespace."""

    name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)
    """Its name; after a promotion its spec.predictor.model.storageUri is merge-patched to the version's folder."""


class ServingSpec(ApiModel):
    """Who is told after a promotion (each optional, each delivered at least once, recorded in
    status.notifications); a Promoted Event is always posted. A failing delivery never changes the decision."""

    webhook: WebhookSpec | None = None
    """A webhook receiving the signed PromotionNotice."""
    inference_service: InferenceServiceRef | None = None
    """A KServe InferenceService whose storageUri is pointed at the promoted version."""
