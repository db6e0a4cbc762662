"""Patterns and constrained string types the spec sections share: names, eras, versions, quantities, S3 URIs, pins."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

S3_URI_PATTERN = r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[A-Za-z0-9._\-/]*)?$"
NAME_PATTERN = r"^[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?$"
ERA_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,62}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"
BUILTIN_YAML_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*\.ya?ml$"
"""An Ultralytics built-in model YAML name (a bare file name that ships inside the ultralytics package)."""
PIN_SEPARATOR = "@sha256:"
"""Separates an s3:// model file from the sha256 of its content: `s3://bucket/key.pt@sha256:<64 hex>`."""
SHA256_PATTERN = r"^[0-9a-f]{64}$"

S3Uri = Annotated[str, Field(pattern=S3_URI_PATTERN, max_length=1024)]
EraName = Annotated[str, Field(pattern=ERA_PATTERN)]
Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN)]
