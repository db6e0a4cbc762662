"""The incumbent pointer: promotion and rollback by one conditional write each, and the promotion history."""

from __future__ import annotations

import contextlib
import re
import uuid

from kretrain.api.status import ModelRef
from kretrain.condprobe import probe_conditional_writes
from kretrain.limits import MAX_RECORD_BYTES
from kretrain.pointer_write import write_pointer
from kretrain.registry_errors import ConditionalWritesIgnored, IncumbentChanged, RegistryError
from kretrain.registry_layout import json_bytes, now_rfc3339, record_json, validated_record
from kretrain.registry_records import HistoryEntry, IncumbentPointer
from kretrain.registry_versions import RegistryVersions
from kretrain.store import PreconditionFailed


class RegistryIncumbent(RegistryVersions):
    """`incumbent.json`, only ever replaced by a conditional write, and `history/<seq:08d>.json`, one entry a move."""

    def check_conditional_writes(self) -> None:
        """Probe (once per Registry object) that the backend honours conditional writes; promotions need it.

        Raises ConditionalWritesIgnored naming the endpoint when a conflicting put-if-absent or a stale
        If-Match succeeds (or a correct If-Match fails); the verdict is kept, so every later promotion or
        rollback through this object is refused without asking again. Network errors are raised as they
        are and not kept: the next call probes again.
        """
        with self._probe_lock:
            if self._conditional_problems is None:
                self._conditional_problems = probe_conditional_writes(self.store, self.uri)
            problems = self._conditional_problems
        if problems:
            endpoint = self.store.endpoint_url
            raise ConditionalWritesIgnored(
                f"S3 endpoint {endpoint or 'AWS (default endpoint)'} does not honour conditional writes under "
                f"{self.uri}: {'; '.join(problems)}. Refusing to promote or roll back through it: two promotions "
                "could both win. Use a backend that supports If-None-Match and If-Match on PUT.",
                endpoint,
                list(problems),
            )

    def _pointer(self, model: str) -> tuple[IncumbentPointer, str] | None:
        got = self.store.get_json_with_etag(self._incumbent_uri(model), max_bytes=MAX_RECORD_BYTES)
        if got is None:
            return None
        data, etag = got
        return validated_record(IncumbentPointer, self._incumbent_uri(model), data), etag

    def incumbent_pointer(self, model: str) -> IncumbentPointer | None:
        """The validated incumbent pointer (version, previous, seq, actor...), or None when the line has none."""
        got = self._pointer(model)
        return None if got is None else got[0]

    def incumbent(self, model: str) -> ModelRef | None:
        """The version in production, or None when the line has none yet."""
        got = self._pointer(model)
        if got is None:
            return None
        ptr = got[0]
        return ModelRef(version=ptr.version, uri=ptr.uri, sha256=ptr.sha256)

    def promote(self, model: str, version: str, expected: str | None, reason: str, actor: str) -> ModelRef:
        """Make `version` the incumbent if the incumbent is still `expected` (None: there is none).

        Raises IncumbentChanged (with `.current`) when the incumbent is not `expected`, or when another
        writer moved the pointer between our read and our conditional write.
        """
        return self._move(model, version, expected, reason, actor, action="promote", check_expected=True)

    def rollback(self, model: str, version: str, reason: str, actor: str) -> ModelRef:
        """Point the incumbent back at an earlier registered `version` (recorded as a rollback).

        Raises IncumbentChanged if another writer moved the pointer at the same time, RegistryError if
        `version` already is the incumbent, VersionNotFound if it is not registered.
        """
        return self._move(model, version, None, reason, actor, action="rollback", check_expected=False)

    def _move(
        self,
        model: str,
        version: str,
        expected: str | None,
        reason: str,
        actor: str,
        *,
        action: str,
        check_expected: bool,
    ) -> ModelRef:
        self.check_conditional_writes()  # ConditionalWritesIgnored: the pointer's conditional write means nothing
        info = self.version_info(model, version)
        got = self._pointer(model)
        current = got[0] if got else None
        current_version = current.version if current else None
        if current is not None:
            self._ensure_history_entry(model, current)
        if check_expected and current_version != expected:
            raise IncumbentChanged(
                f"incumbent of {model!r} is {current_version or 'none'}, not {expected or 'none'} as expected; "
                f"refusing to {action} {version!r}",
                current=current_version,
                expected=expected,
            )
        if action == "rollback" and current_version == version:
            raise RegistryError(f"{version!r} already is the incumbent of {model!r}; nothing to roll back")
        if action == "rollback" and current_version is None:
            raise RegistryError(f"{model!r} has no incumbent; promote a first version instead of rolling back")
        seq = current.seq + 1 if current else self._next_seq_from_history(model)
        ptr = IncumbentPointer(
            version=version,
            sha256=info.sha256,
            uri=info.uri,
            promoted_at=now_rfc3339(),
            previous=current_version,
            seq=seq,
            action=action,
            actor=actor,
            reason=reason,
            txn=uuid.uuid4().hex,
        )

        def lost(winner: str | None) -> IncumbentChanged:
            return IncumbentChanged(
                f"incumbent of {model!r} changed to {winner or 'none'} while {action} of {version!r} was "
                f"being written (expected {current_version or 'none'}); not applied",
                current=winner,
                expected=current_version,
            )

        etag = None if got is None else got[1]
        data = json_bytes(record_json(ptr))
        write_pointer(self.store, self._incumbent_uri(model), data, etag, ptr.txn, lambda: self._pointer(model), lost)
        self._ensure_history_entry(model, ptr)
        return ModelRef(version=version, uri=info.uri, sha256=info.sha256)

    def _next_seq_from_history(self, model: str) -> int:
        seqs = [int(o.key[:-5]) for o in self.store.list(self._history_uri(model)) if re.fullmatch(r"\d+\.json", o.key)]
        return max(seqs, default=0) + 1

    def _ensure_history_entry(self, model: str, ptr: IncumbentPointer) -> None:
        """Write the pointer's history entry unless it is already there (If-None-Match)."""
        entry = HistoryEntry(
            seq=ptr.seq,
            action=ptr.action,
            version=ptr.version,
            previous=ptr.previous,
            sha256=ptr.sha256,
            at=ptr.promoted_at,
            actor=ptr.actor,
            reason=ptr.reason,
            txn=ptr.txn,
        )
        with contextlib.suppress(PreconditionFailed):
            self.store.put_if_absent(self._history_uri(model, ptr.seq), json_bytes(record_json(entry)))

    def history(self, model: str) -> list[HistoryEntry]:
        """Every promotion and rollback of the line, oldest first."""
        got = self._pointer(model)
        if got is not None:
            self._ensure_history_entry(model, got[0])
        entries: list[HistoryEntry] = []
        for obj in self.store.list(self._history_uri(model)):
            if re.fullmatch(r"\d+\.json", obj.key):
                uri = self._model_uri(model, "history", obj.key)
                with contextlib.suppress(FileNotFoundError):
                    entry = self.store.get_json(uri, max_bytes=MAX_RECORD_BYTES)
                    entries.append(validated_record(HistoryEntry, uri, entry))
        entries.sort(key=lambda e: e.seq)
        return entries
