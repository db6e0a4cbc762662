"""Shared pydantic configuration for every API model (camelCase, extra=forbid, docstrings)."""

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """Base of every kretrain API model: camelCase in YAML, unknown fields rejected."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        validate_assignment=True,
    )

    def dump(self) -> dict:
        """The model as the JSON-compatible dict Kubernetes and S3 see (camelCase, no nulls)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
