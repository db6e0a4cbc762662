"""Registry versions: registering a candidate (version.json as the commit marker) and reading a version back."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping
from pathlib import Path

from botocore.exceptions import ClientError

from kretrain.api.report import RunReport
from kretrain.api.status import ModelRef
from kretrain.artifacts import upload_artifacts
from kretrain.limits import MAX_RECORD_BYTES, MAX_REPORT_BYTES
from kretrain.registry_errors import RegistryError, TamperedWeights, VersionExists, VersionNotFound
from kretrain.registry_layout import NAME_RE, RegistryLayout, json_bytes, now_rfc3339, record_json, validated_record
from kretrain.registry_records import VersionLineage, VersionRecord
from kretrain.store import ObjectTooLarge, PreconditionFailed, StoreError, join_uri
from kretrain.verified import HashMismatch, fetch_verified, sha256_file

Lineage = VersionLineage
"""Where a version came from (the lineage block of version.json)."""


class RegistryVersions(RegistryLayout):
    """Immutable versions: `versions/<v>/version.json` is written last with If-None-Match and is the commit marker."""

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
            self.store.put_bytes(report_uri, json_bytes(stored_report.dump()))
            uploaded.append(spec_uri)
            self.store.put_bytes(spec_uri, json_bytes(spec))
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
            self.store.put_if_absent(join_uri(base, "version.json"), json_bytes(record_json(record)))
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
        record = validated_record(VersionRecord, uri, info)
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
        if not NAME_RE.fullmatch(name):
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

    def fetch_weights(self, model: str, version: str, dest_dir: Path, *, pinned: str | None = None) -> Path:
        """Download the version's weights to `dest_dir/weights.pt` and verify them; returns that path.

        The authority is version.json: the weights are the object it names (in the version's folder) and
        their sha256 must be the one it holds (a `.sha256` file beside them is not consulted: whoever can
        write the weights can write it too). An object larger than the registered size is not downloaded.
        On a mismatch TamperedWeights is raised and nothing is left at the returned path. An existing
        file with the right sha256 is reused without downloading. `pinned`: a sha256 from a record the caller
        trusts more (the incumbent pointer, which trainers cannot write): version.json must name the same weights.
        """
        info = self.version_info(model, version)  # a VersionRecord: sha256 is 64 hex digits, size >= 0
        expected, size = info.sha256, info.size
        if pinned is not None and pinned != expected:
            raise TamperedWeights(
                f"version.json of version {version!r} of {model!r} names weights with sha256 {expected}, but the "
                f"incumbent pointer pins {pinned}: the version record was rewritten and will not be used"
            )
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
