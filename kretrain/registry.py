"""Model registry on S3: immutable versions, a conditionally written incumbent pointer, promotion history."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from botocore.exceptions import ClientError
from pydantic import ValidationError

from kretrain.api.progress import RunProgress
from kretrain.api.report import RunReport
from kretrain.api.status import ModelRef
from kretrain.artifacts import upload_artifacts
from kretrain.condprobe import probe_conditional_writes
from kretrain.limits import MAX_PROGRESS_BYTES, MAX_RECORD_BYTES, MAX_REPORT_BYTES
from kretrain.registry_errors import (  # callers catch them from kretrain.registry too
    ConditionalWritesIgnored,
    IncumbentChanged,
    InvalidRunRecord,
    RegistryError,
    TamperedWeights,
    VersionExists,
    VersionNotFound,
)
from kretrain.registry_records import HistoryEntry, IncumbentPointer, VersionLineage, VersionRecord
from kretrain.store import ObjectStore, ObjectTooLarge, PreconditionFailed, StoreError, join_uri, parse_s3_uri
from kretrain.verified import HashMismatch, fetch_verified
from kretrain.verified import sha256_file as sha256_file  # re-exported (artifacts, tests)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


Lineage = VersionLineage
"""Where a version came from (the lineage block of version.json)."""


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 with a `Z`."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise RegistryError(
            f"invalid {kind} {name!r}: use letters, digits, '.', '_' and '-' (starting with a letter or digit)"
        )
    return name


_R = TypeVar("_R", VersionRecord, IncumbentPointer, HistoryEntry)


def _validated_record(model: type[_R], uri: str, data: Any) -> _R:
    """`data` (parsed JSON of `uri`) validated as `model`; RegistryError naming the first three bad fields."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RegistryError(f"{uri} is not a valid {model.__name__}: {_first_errors(exc)}") from None


def _first_errors(exc: ValidationError) -> str:
    """The first three validation errors as `field.path: message`, joined by `; `, with a count of the rest."""
    errors = exc.errors(include_url=False)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '(document)'}: {e['msg']}" for e in errors[:3]]
    return "; ".join(parts) + (f" (+{len(errors) - 3} more)" if len(errors) > 3 else "")


def _record_json(record: VersionRecord | IncumbentPointer | HistoryEntry) -> dict[str, Any]:
    """A registry record as written to S3: camelCase, every field (unset ones as null)."""
    return record.model_dump(mode="json", by_alias=True)


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


class Registry:
    """A model registry under `uri` (`s3://bucket/prefix`); see docs/internals.md for the layout.

    - Versions are immutable: `versions/<v>/version.json` is written last with If-None-Match and is the
      commit marker; re-registering the same version with the same sha256 returns the existing ref.
    - `incumbent.json` is only ever replaced by a conditional write (If-None-Match for the first
      promotion, If-Match on its ETag afterwards), so of several racing promotions exactly one wins;
      the others get IncumbentChanged.
    - Every pointer carries `seq` (previous seq + 1) and the whole history entry; after winning the
      conditional write, the entry is written to `history/<seq:08d>.json` with If-None-Match. An entry
      a crashed writer did not get to write is restored from the pointer by the next reader or
      writer, so the history has exactly one entry per successful promotion or rollback.
    """

    def __init__(self, store: ObjectStore, uri: str) -> None:
        parse_s3_uri(uri)  # ValueError naming the uri
        self.store = store
        self.uri = uri.rstrip("/")
        self._conditional_problems: list[str] | None = None  # the probe's verdict, once it ran
        self._probe_lock = threading.Lock()

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

    # ---------------------------------------------------------------- paths

    def _model_uri(self, model: str, *parts: str) -> str:
        return join_uri(self.uri, _check_name("model name", model), *parts)

    def run_uri(self, model: str, run_id: str) -> str:
        """`<registry>/<model>/runs/<run-id>`: where a running trainer writes progress and checkpoints."""
        return self._model_uri(model, "runs", _check_name("run id", run_id))

    def version_uri(self, model: str, version: str) -> str:
        """`<registry>/<model>/versions/<version>`."""
        return self._model_uri(model, "versions", _check_name("version", version))

    def _incumbent_uri(self, model: str) -> str:
        return self._model_uri(model, "incumbent.json")

    def _history_uri(self, model: str, seq: int | None = None) -> str:
        if seq is None:
            return self._model_uri(model, "history")
        return self._model_uri(model, "history", f"{seq:08d}.json")

    # ---------------------------------------------------------------- versions

    def register(
        self,
        model: str,
        version: str,
        weights: Path,
        report: RunReport,
        spec: dict,
        lineage: Lineage,
        artifacts: Mapping[str, Path] | None = None,
    ) -> ModelRef:
        """Store a candidate version: weights, report and spec under names unique to this writer, then
        version.json (If-None-Match: the commit marker), which points at them and holds the weights' sha256.

        Of several writers racing to register the same version exactly one commits; the others delete
        what they uploaded and get VersionExists, unless they registered the same weights (same sha256),
        which returns the existing ref (idempotent). Nothing a loser wrote is ever referenced, so the
        committed version always verifies (`fetch_weights` checks the sha256 in version.json). `artifacts`
        (format -> local file, e.g. the checked ONNX export) are uploaded the same way, listed with their sha256.
        """
        base = self.version_uri(model, version)
        weights = Path(weights)
        if not weights.is_file():
            raise RegistryError(f"weights file {weights} for version {version!r} does not exist")
        digest = sha256_file(weights)
        writer = uuid.uuid4().hex[:16]
        weights_uri = join_uri(base, f"weights-{writer}.pt")
        ref = ModelRef(version=version, uri=weights_uri, sha256=digest)
        existing = self._version_info(model, version)
        if existing is not None:
            return self._same_or_raise(existing, ref, model)
        report_uri, spec_uri = join_uri(base, f"report-{writer}.json"), join_uri(base, f"spec-{writer}.json")
        uploaded: list[str] = []
        try:
            uploaded.append(weights_uri)
            self.store.upload_file(weights, weights_uri)
            stored_report = report.model_copy(update={"candidate": ref}) if report.candidate is None else report
            uploaded.append(report_uri)
            self.store.put_bytes(report_uri, _json(stored_report.dump()))
            uploaded.append(spec_uri)
            self.store.put_bytes(spec_uri, _json(spec))
            pooled = report.candidate_evaluation.pooled.dump()
            exported = upload_artifacts(self.store, base, writer, artifacts or {}, uploaded)
            record = VersionRecord(
                model=model,
                version=version,
                sha256=digest,
                size=weights.stat().st_size,
                uri=weights_uri,
                report_uri=report_uri,
                spec_uri=spec_uri,
                writer=writer,
                registered_at=now_rfc3339(),
                lineage=lineage,
                metrics={k: v for k, v in pooled.items() if isinstance(v, int | float)},
                artifacts=exported,
            )
            self.store.put_if_absent(join_uri(base, "version.json"), _json(_record_json(record)))
        except PreconditionFailed:
            self._discard(uploaded)
            existing = self._version_info(model, version)
            if existing is None:  # pragma: no cover - the object existed a moment ago
                raise RegistryError(f"version {version!r} of {model!r} could not be committed") from None
            return self._same_or_raise(existing, ref, model)
        except BaseException:
            self._discard(uploaded)  # nothing points at them; best effort
            raise
        return ref

    def _discard(self, uris: list[str]) -> None:
        """Delete objects of ours that no version.json points at (errors ignored: they are only litter)."""
        for uri in uris:
            with contextlib.suppress(StoreError, ClientError, OSError):
                self.store.delete(uri)

    @staticmethod
    def _same_or_raise(existing: VersionRecord, ref: ModelRef, model: str) -> ModelRef:
        if existing.sha256 != ref.sha256:
            raise VersionExists(
                f"version {ref.version!r} of {model!r} already exists with sha256 {existing.sha256}; "
                f"refusing to overwrite it with different weights (sha256 {ref.sha256})"
            )
        return ModelRef(version=ref.version, uri=existing.uri, sha256=ref.sha256)

    def _version_info(self, model: str, version: str) -> VersionRecord | None:
        """The version's record, validated as a VersionRecord (and naming this model and version), or None."""
        uri = join_uri(self.version_uri(model, version), "version.json")
        try:
            info = self.store.get_json(uri, max_bytes=MAX_RECORD_BYTES)
        except FileNotFoundError:
            return None
        record = _validated_record(VersionRecord, uri, info)
        if (record.model, record.version) != (model, version):
            raise RegistryError(
                f"{uri} is the record of version {record.version[:80]!r} of {record.model[:80]!r}, not of "
                f"{version!r} of {model!r}; refusing it"
            )
        return record

    def version_info(self, model: str, version: str) -> VersionRecord:
        """The version's `version.json` (sha256, uri, lineage, pooled metrics); VersionNotFound if missing."""
        info = self._version_info(model, version)
        if info is None:
            raise VersionNotFound(f"version {version!r} of model {model!r} is not registered under {self.uri}")
        return info

    def versions(self, model: str) -> list[VersionRecord]:
        """Every registered version's record, oldest first (the incumbent is `incumbent_pointer`'s version)."""
        listing = self.store.list(self._model_uri(model, "versions"))
        names = sorted({o.key.split("/")[0] for o in listing if o.key.endswith("/version.json")})
        out = [r for r in (self._version_info(model, name) for name in names) if r is not None]
        out.sort(key=lambda r: (r.registered_at, r.version))
        return out

    def _record_object(self, model: str, version: str, uri: str | None, field: str, default: str) -> str:
        """The URI a version.json names in `field` (`default` in records older than the field), checked to be
        an object directly in the version's folder: a record never sends a reader elsewhere."""
        base = self.version_uri(model, version)
        uri = uri or join_uri(base, default)
        name = uri[len(base) + 1 :] if isinstance(uri, str) and uri.startswith(base + "/") else ""
        if not _NAME.fullmatch(name):
            raise RegistryError(
                f"version.json of version {version!r} of {model!r} names {field} {str(uri)[:200]!r}, which is not "
                f"an object in {base}/; refusing to follow it"
            )
        return str(uri)

    def read_report(self, model: str, version: str) -> RunReport:
        """The version's report (named by version.json); VersionNotFound if the version does not exist."""
        info = self.version_info(model, version)
        uri = self._record_object(model, version, info.report_uri, "reportUri", "report.json")
        try:
            data = self.store.get_json(uri, max_bytes=MAX_REPORT_BYTES)
        except FileNotFoundError:
            raise VersionNotFound(f"version {version!r} of model {model!r} has no report ({uri})") from None
        return RunReport.model_validate(data)

    def fetch_weights(self, model: str, version: str, dest_dir: Path) -> Path:
        """Download the version's weights to `dest_dir/weights.pt` and verify them; returns that path.

        The authority is version.json: the weights are the object it names (in the version's folder) and
        their sha256 must be the one it holds (a `.sha256` file beside them is not consulted: whoever can
        write the weights can write it too). An object larger than the registered size is not downloaded.
        On a mismatch TamperedWeights is raised and nothing is left at the returned path. An existing
        file with the right sha256 is reused without downloading.
        """
        info = self.version_info(model, version)  # a VersionRecord: sha256 is 64 hex digits, size >= 0
        expected, size = info.sha256, info.size
        weights_uri = self._record_object(model, version, info.uri, "uri", "weights.pt")
        try:  # kretrain.verified: nothing at dest unless the bytes have the registered sha256
            return fetch_verified(self.store, weights_uri, Path(dest_dir) / "weights.pt", sha256=expected,
                                  max_bytes=size, reuse=True)  # fmt: skip
        except ObjectTooLarge as exc:
            raise TamperedWeights(
                f"weights of version {version!r} of {model!r} ({weights_uri}) are {exc.size} bytes, but "
                f"{size} were registered; they were changed after registration and will not be loaded"
            ) from None
        except HashMismatch as exc:
            raise TamperedWeights(
                f"weights of version {version!r} of {model!r} ({weights_uri}) have sha256 {exc.actual}, but "
                f"{expected} was registered; they were changed after registration and will not be loaded"
            ) from None

    # ---------------------------------------------------------------- incumbent

    def _pointer(self, model: str) -> tuple[IncumbentPointer, str] | None:
        got = self.store.get_json_with_etag(self._incumbent_uri(model), max_bytes=MAX_RECORD_BYTES)
        if got is None:
            return None
        data, etag = got
        return _validated_record(IncumbentPointer, self._incumbent_uri(model), data), etag

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
        uri = self._incumbent_uri(model)
        try:
            if got is None:
                self.store.put_if_absent(uri, _json(_record_json(ptr)))
            else:
                self.store.compare_and_swap(uri, _json(_record_json(ptr)), got[1])
        except PreconditionFailed:
            now = self._pointer(model)
            if now is None or now[0].txn != ptr.txn:  # a retried request of ours may have won after all
                winner = now[0].version if now else None
                raise IncumbentChanged(
                    f"incumbent of {model!r} changed to {winner or 'none'} while {action} of {version!r} was "
                    f"being written (expected {current_version or 'none'}); not applied",
                    current=winner,
                    expected=current_version,
                ) from None
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
            self.store.put_if_absent(self._history_uri(model, ptr.seq), _json(_record_json(entry)))

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
                    entries.append(_validated_record(HistoryEntry, uri, entry))
        entries.sort(key=lambda e: e.seq)
        return entries

    # ---------------------------------------------------------------- runs
    # Run records are written by the trainer (a custom image may write anything) and read by the operator:
    # both are read with a size cap and validated, and every problem is an InvalidRunRecord naming the object.

    def write_progress(self, model: str, run_id: str, progress: RunProgress | Mapping[str, Any]) -> None:
        """Write `runs/<run-id>/progress.json` (overwritten every epoch); a mapping is validated as RunProgress."""
        uri = join_uri(self.run_uri(model, run_id), "progress.json")
        record = progress if isinstance(progress, RunProgress) else _validated(RunProgress, uri, _json(dict(progress)))
        self.store.put_bytes(uri, _capped(uri, _json(record.dump()), MAX_PROGRESS_BYTES))

    def read_progress(self, model: str, run_id: str) -> RunProgress | None:
        """The run's progress.json, or None before the first epoch; InvalidRunRecord if oversized or malformed."""
        uri = join_uri(self.run_uri(model, run_id), "progress.json")
        data = self._read_capped(uri, MAX_PROGRESS_BYTES)
        return None if data is None else _validated(RunProgress, uri, data)

    def write_run_report(self, model: str, run_id: str, report: RunReport) -> None:
        """Write `runs/<run-id>/report.json`; InvalidRunRecord if it is larger than the operator reads."""
        uri = join_uri(self.run_uri(model, run_id), "report.json")
        self.store.put_bytes(uri, _capped(uri, _json(report.dump()), MAX_REPORT_BYTES))

    def read_run_report(self, model: str, run_id: str) -> RunReport | None:
        """The run's report.json, or None while the run has not finished; InvalidRunRecord if oversized or
        malformed."""
        uri = join_uri(self.run_uri(model, run_id), "report.json")
        data = self._read_capped(uri, MAX_REPORT_BYTES)
        return None if data is None else _validated(RunReport, uri, data)

    def _read_capped(self, uri: str, limit: int) -> bytes | None:
        try:
            return self.store.get_bytes(uri, max_bytes=limit)
        except FileNotFoundError:
            return None
        except ObjectTooLarge as exc:
            raise InvalidRunRecord(uri, f"{exc.size} bytes or more, over the cap of {limit} bytes; not read") from None


_Record = TypeVar("_Record", RunProgress, RunReport)


def _validated(model: type[_Record], uri: str, data: bytes) -> _Record:
    """`data` validated as `model`; InvalidRunRecord naming the first three bad fields otherwise."""
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise InvalidRunRecord(uri, f"not a valid {model.__name__}: {_first_errors(exc)}") from None


def _capped(uri: str, data: bytes, limit: int) -> bytes:
    if len(data) > limit:
        raise InvalidRunRecord(uri, f"{len(data)} bytes, over the cap of {limit} bytes the operator reads")
    return data
