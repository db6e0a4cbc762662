"""Aliases: named pointers beside the incumbent (`production`, `staging`, ...), each moved by a conditional write."""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from typing import TYPE_CHECKING

from pydantic import Field, ValidationError

from kretrain.api.base import ApiModel
from kretrain.limits import MAX_RECORD_BYTES
from kretrain.pointer_write import write_pointer
from kretrain.registry import IncumbentChanged, RegistryError, now_rfc3339
from kretrain.registry_records import VersionArtifact
from kretrain.store import PreconditionFailed

if TYPE_CHECKING:  # pragma: no cover
    from kretrain.registry import Registry

ALIAS_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
"""An alias is a DNS-1123 label (it may become part of a Service or InferenceService name)."""
RESERVED_ALIASES = frozenset({"incumbent"})
"""Names that are not aliases: the incumbent pointer moves only through the gate, promote and rollback."""
_SHA256 = r"^[0-9a-f]{64}$"
_URI = r"^s3://[^\s]+$"


class AliasMove(ApiModel):
    """<model>/alias-history/<alias>/<seq:08d>.json: one move of an alias, written once with If-None-Match."""

    alias: str = Field(pattern=ALIAS_PATTERN)
    """The alias (its file name)."""
    version: str = Field(max_length=253)
    """The version it names."""
    sha256: str = Field(pattern=_SHA256)
    """Its weights' SHA-256 (as in its version record)."""
    uri: str = Field(pattern=_URI, max_length=2048)
    """Its weights object."""
    previous: str | None = Field(default=None, max_length=253)
    """The version the alias named before (None for the first)."""
    seq: int = Field(ge=1)
    """Number of this move in the alias's history (1, 2, ...)."""
    at: str = Field(max_length=64)
    """When the alias was moved (RFC 3339)."""
    actor: str = Field(default="", max_length=1024)
    """Who moved it."""
    reason: str = Field(default="", max_length=64 * 1024)
    """Why."""
    txn: str = Field(default="", max_length=64)
    """Id of the write (tells a retried request of ours from another writer's)."""


class AliasPointer(AliasMove):
    """<model>/aliases/<alias>.json: the version an alias names, replaced only by conditional writes."""

    artifacts: list[VersionArtifact] = Field(default_factory=list, max_length=8)
    """Its serving artifacts (ONNX, TensorRT) with their sha256, copied from the version record."""


class AliasChanged(IncumbentChanged):
    """The alias did not name the expected version, or another writer moved it during our write."""


def check_alias(alias: str) -> str:
    """`alias` if it is a valid, unreserved alias name; ValueError naming it otherwise."""
    if not isinstance(alias, str) or not re.fullmatch(ALIAS_PATTERN, alias):
        raise ValueError(
            f"alias {str(alias)[:80]!r} is not a valid name: lowercase letters, digits and '-', 1-63 characters, "
            "starting and ending with a letter or digit (a DNS label)"
        )
    if alias in RESERVED_ALIASES:
        raise ValueError(f"alias {alias!r} is reserved: the incumbent moves through the gate, promote and rollback")
    return alias


def _pointer_uri(registry: Registry, model: str, alias: str) -> str:
    return registry._model_uri(model, "aliases", f"{check_alias(alias)}.json")


def _history_uri(registry: Registry, model: str, alias: str, seq: int | None = None) -> str:
    parts = [] if seq is None else [f"{seq:08d}.json"]
    return registry._model_uri(model, "alias-history", check_alias(alias), *parts)


def _read(registry: Registry, model: str, alias: str) -> tuple[AliasPointer, str] | None:
    uri = _pointer_uri(registry, model, alias)
    got = registry.store.get_json_with_etag(uri, max_bytes=MAX_RECORD_BYTES)
    if got is None:
        return None
    try:
        ptr = AliasPointer.model_validate(got[0])
    except ValidationError as exc:
        raise RegistryError(f"{uri} is not a valid alias pointer: {exc.errors()[0]['msg']}") from None
    if ptr.alias != alias:
        raise RegistryError(f"{uri} is the pointer of alias {ptr.alias!r}, not of {alias!r}; refusing it")
    return ptr, got[1]


def get_alias(registry: Registry, model: str, alias: str) -> AliasPointer | None:
    """The alias's pointer, or None when it was never set."""
    got = _read(registry, model, alias)
    return None if got is None else got[0]


def list_aliases(registry: Registry, model: str) -> list[AliasPointer]:
    """Every alias of the line, by name (objects under `aliases/` that are not valid alias files are skipped)."""
    out = []
    for obj in registry.store.list(registry._model_uri(model, "aliases")):
        name = obj.key[:-5] if obj.key.endswith(".json") else ""
        if re.fullmatch(ALIAS_PATTERN, name) and name not in RESERVED_ALIASES:
            ptr = get_alias(registry, model, name)
            if ptr is not None:
                out.append(ptr)
    return sorted(out, key=lambda p: p.alias)


def _ensure_history_entry(registry: Registry, model: str, ptr: AliasPointer) -> None:
    """Write the move's history entry unless it is there (If-None-Match); restores one a crash left out."""
    entry = AliasMove.model_validate(ptr.model_dump(exclude={"artifacts"}))
    data = (json.dumps(entry.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True) + "\n").encode()
    with contextlib.suppress(PreconditionFailed):
        registry.store.put_if_absent(_history_uri(registry, model, ptr.alias, ptr.seq), data)


def alias_history(registry: Registry, model: str, alias: str) -> list[AliasMove]:
    """Every move of the alias, oldest first; RegistryError naming an entry that is not a valid AliasMove."""
    got = _read(registry, model, alias)
    if got is not None:
        _ensure_history_entry(registry, model, got[0])
    entries = []
    for obj in registry.store.list(_history_uri(registry, model, alias)):
        if re.fullmatch(r"\d{8}\.json", obj.key):
            uri = _history_uri(registry, model, alias, int(obj.key[:8]))
            with contextlib.suppress(FileNotFoundError):
                raw = registry.store.get_json(uri, max_bytes=MAX_RECORD_BYTES)
                try:
                    entries.append(AliasMove.model_validate(raw))
                except ValidationError as exc:
                    raise RegistryError(f"{uri} is not a valid alias history entry: {exc.errors()[0]['msg']}") from None
    return sorted(entries, key=lambda e: e.seq)


ANY = object()
"""`expected` for set_alias: move the alias whatever it names now (still one conditional write)."""


def set_alias(
    registry: Registry, model: str, alias: str, version: str, *, expected: object = ANY, reason: str, actor: str
) -> AliasPointer:
    """Point `alias` at the registered `version` if it still names `expected` (a version, None for unset, or ANY).

    One conditional write (If-None-Match for a new alias, If-Match on its ETag after), then the history entry
    (If-None-Match). AliasChanged when the alias does not name `expected` or another writer moved it between
    our read and our write; VersionNotFound for an unregistered version; ConditionalWritesIgnored when the
    backend does not honour conditional writes. Moving an alias to the version it names already is a no-op.
    """
    check_alias(alias)
    registry.check_conditional_writes()
    info = registry.version_info(model, version)
    got = _read(registry, model, alias)
    current = got[0] if got else None
    if current is not None:
        _ensure_history_entry(registry, model, current)
    current_version = current.version if current else None
    if expected is not ANY and current_version != expected:
        raise AliasChanged(
            f"alias {alias!r} of {model!r} names {current_version or 'nothing'}, not {expected or 'nothing'} as "
            f"expected; refusing to move it to {version!r}",
            current=current_version,
            expected=None if expected is None else str(expected),
        )
    if current is not None and current_version == version:
        return current
    seq = current.seq + 1 if current else _next_seq(registry, model, alias)
    ptr = AliasPointer(
        alias=alias, version=version, sha256=info.sha256, uri=info.uri, artifacts=info.artifacts,
        previous=current_version, seq=seq, at=now_rfc3339(), actor=actor, reason=reason, txn=uuid.uuid4().hex,
    )  # fmt: skip
    data = (json.dumps(ptr.dump(), indent=2, sort_keys=True) + "\n").encode()

    def lost(winner: str | None) -> AliasChanged:
        return AliasChanged(
            f"alias {alias!r} of {model!r} moved to {winner or 'nothing'} while it was being moved to "
            f"{version!r} (it named {current_version or 'nothing'}); not applied",
            current=winner,
            expected=current_version,
        )

    uri = _pointer_uri(registry, model, alias)
    etag = None if got is None else got[1]
    write_pointer(registry.store, uri, data, etag, ptr.txn, lambda: _read(registry, model, alias), lost)
    _ensure_history_entry(registry, model, ptr)
    return ptr


def _next_seq(registry: Registry, model: str, alias: str) -> int:
    keys = [o.key for o in registry.store.list(_history_uri(registry, model, alias))]
    return max((int(k[:8]) for k in keys if re.fullmatch(r"\d{8}\.json", k)), default=0) + 1
