"""The storage section of the RetrainJob spec: S3 endpoint, region, registry and the credentials Secret."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, model_validator

from kretrain.api.base import ApiModel
from kretrain.api.spec_types import NAME_PATTERN, S3Uri

CREDENTIAL_KEYS = re.compile(r"(access.?key|secret|password|token|session)", re.IGNORECASE)


class StorageSpec(ApiModel):
    """S3 connection; credentials come only from a Secret."""

    endpoint: str | None = Field(default=None, max_length=1024, pattern=r"^https?://[^\s/@?#\\%]+(/[^\s?#]*)?$")
    """S3 endpoint URL, `http(s)://host[:port][/path]` without user info, query or fragment (unset: the
    operator's default, or AWS); must be one the operator policy allows."""
    region: str | None = Field(default=None, pattern=r"^[a-z0-9\-]+$")
    """S3 region the requests are signed for (unset: the operator's default, KRETRAIN_S3_REGION, us-east-1
    unless the admin sets another; `kretrain run`: AWS_DEFAULT_REGION)."""
    credentials_secret: str | None = Field(default=None, pattern=NAME_PATTERN)
    """Name of a Secret in the RetrainJob's namespace with keys AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY (unset: the operator's default Secret); must be one the operator policy allows."""
    registry: S3Uri | None = None
    """S3 prefix of the model registry (unset: the operator's default)."""

    @model_validator(mode="before")
    @classmethod
    def _no_inline_credentials(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = {"credentialsSecret", "credentials_secret"}
            inline = sorted(k for k in data if k not in allowed and CREDENTIAL_KEYS.search(str(k)))
            if inline:
                raise ValueError(
                    f"credentials must not be inlined in the spec (found {', '.join(inline)}); "
                    "store them in a Secret and name it in storage.credentialsSecret"
                )
        return data
