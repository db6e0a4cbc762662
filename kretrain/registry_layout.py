"""The registry's layout on S3: the path of every object, name checks, and how records are written and read."""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import ValidationError

from kretrain.registry_errors import RegistryError
from kretrain.registry_records import HistoryEntry, IncumbentPointer, VersionRecord
from kretrain.store import ObjectStore, join_uri, parse_s3_uri

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
"""A name that may be one part of a registry key: a model, version, run id, or an object in a version's folder."""


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 with a `Z`."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def check_name(kind: str, name: str) -> str:
    """`name` if it may be part of a registry key (no `..`, no slash); RegistryError naming `kind` otherwise."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or ".." in name:
        raise RegistryError(
            f"invalid {kind} {name!r}: use letters, digits, '.', '_' and '-' (starting with a letter or digit)"
        )
    return name


_R = TypeVar("_R", VersionRecord, IncumbentPointer, HistoryEntry)


def validated_record(model: type[_R], uri: str, data: Any) -> _R:
    """`data` (parsed JSON of `uri`) validated as `model`; RegistryError naming the first three bad fields."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RegistryError(f"{uri} is not a valid {model.__name__}: {first_errors(exc)}") from None


def first_errors(exc: ValidationError) -> str:
    """The first three validation errors as `field.path: message`, joined by `; `, with a count of the rest."""
    errors = exc.errors(include_url=False)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '(document)'}: {e['msg']}" for e in errors[:3]]
    return "; ".join(parts) + (f" (+{len(errors) - 3} more)" if len(errors) > 3 else "")


def record_json(record: VersionRecord | IncumbentPointer | HistoryEntry) -> dict[str, Any]:
    """A registry record as written to S3: camelCase, every field (unset ones as null)."""
    return record.model_dump(mode="json", by_alias=True)


def json_bytes(obj: Any) -> bytes:
    """`obj` as the registry writes JSON: indented, keys sorted, a final newline."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


class RegistryLayout:
    """A registry under `uri` (`s3://bucket/prefix`): its store and the URI of each object (see docs/internals.md)."""

    def __init__(self, store: ObjectStore, uri: str) -> None:
        parse_s3_uri(uri)  # ValueError naming the uri
        self.store = store
        self.uri = uri.rstrip("/")
        self._conditional_problems: list[str] | None = None  # the probe's verdict, once it ran
        self._probe_lock = threading.Lock()

    def _model_uri(self, model: str, *parts: str) -> str:
        return join_uri(self.uri, check_name("model name", model), *parts)

    def run_uri(self, model: str, run_id: str) -> str:
        """`<registry>/<model>/runs/<run-id>`: where a running trainer writes progress and checkpoints."""
        return self._model_uri(model, "runs", check_name("run id", run_id))

    def version_uri(self, model: str, version: str) -> str:
        """`<registry>/<model>/versions/<version>`."""
        return self._model_uri(model, "versions", check_name("version", version))

    def _incumbent_uri(self, model: str) -> str:
        return self._model_uri(model, "incumbent.json")

    def _history_uri(self, model: str, seq: int | None = None) -> str:
        if seq is None:
            return self._model_uri(model, "history")
        return self._model_uri(model, "history", f"{seq:08d}.json")
