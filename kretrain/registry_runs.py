"""Run records in the registry: progress.json and report.json of a running trainer, size-capped and validated."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import ValidationError

from kretrain.api.progress import RunProgress
from kretrain.api.report import RunReport
from kretrain.limits import MAX_PROGRESS_BYTES, MAX_REPORT_BYTES
from kretrain.registry_errors import InvalidRunRecord
from kretrain.registry_layout import RegistryLayout, first_errors, json_bytes
from kretrain.store import ObjectTooLarge, join_uri
from kretrain.trainer import runkey


class RegistryRuns(RegistryLayout):
    """Run records (`runs/<run-id>/`): written by the trainer and read by the operator."""

    # Run records are written by the trainer (a custom image may write anything) and read by the operator:
    # both are read with a size cap and validated, and every problem is an InvalidRunRecord naming the object.

    def write_progress(self, model: str, run_id: str, progress: RunProgress | Mapping[str, Any]) -> None:
        """Write `runs/<run-id>/progress.json` (overwritten every epoch); a mapping is validated as RunProgress."""
        uri = join_uri(self.run_uri(model, run_id), "progress.json")
        record = (
            progress if isinstance(progress, RunProgress) else _validated(RunProgress, uri, json_bytes(dict(progress)))
        )
        self.store.put_bytes(uri, _capped(uri, json_bytes(record.dump()), MAX_PROGRESS_BYTES))

    def read_progress(self, model: str, run_id: str) -> RunProgress | None:
        """The run's progress.json, or None before the first epoch; InvalidRunRecord if oversized or malformed."""
        uri = join_uri(self.run_uri(model, run_id), "progress.json")
        data = self._read_capped(uri, MAX_PROGRESS_BYTES)
        return None if data is None else _validated(RunProgress, uri, data)

    def run_report_uri(self, model: str, run_id: str) -> str:
        """`runs/<run-id>/report.json` of the line (its MAC, when signed, is beside it as `report.json.hmac`)."""
        return join_uri(self.run_uri(model, run_id), "report.json")

    def write_run_report(self, model: str, run_id: str, report: RunReport) -> bytes:
        """Write `runs/<run-id>/report.json`; the bytes written (what the run's pod signs, kretrain.trainer.runkey);
        InvalidRunRecord if it is larger than the operator reads."""
        uri = self.run_report_uri(model, run_id)
        data = _capped(uri, json_bytes(report.dump()), MAX_REPORT_BYTES)
        self.store.put_bytes(uri, data)
        return data

    def read_run_report(
        self, model: str, run_id: str, *, stage_key: Callable[[], bytes] | None = None
    ) -> RunReport | None:
        """The run's report.json, or None while the run has not finished; InvalidRunRecord if oversized or
        malformed.

        With `stage_key` (called once a report exists; what it raises propagates) the report counts only when its
        `.hmac` is the MAC of the very bytes read under that key: runkey.Unsigned otherwise, before those bytes
        are parsed (kretrain.trainer.runkey; the operator's check of a run's report, the pod's of its own)."""
        uri = self.run_report_uri(model, run_id)
        data = self._read_capped(uri, MAX_REPORT_BYTES)
        if data is None:
            return None
        if stage_key is not None:
            key = stage_key()
            try:
                ok = runkey.signed(self.store, uri, data, key)
            except ObjectTooLarge:  # an oversized .hmac is no MAC (and must not stall the run as a store fault)
                ok = False
            if not ok:
                msg = f"{uri}: no {runkey.MAC_SUFFIX} matching the run's stage key: not written by this run"
                raise runkey.Unsigned(msg)
        return _validated(RunReport, uri, data)

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
        raise InvalidRunRecord(uri, f"not a valid {model.__name__}: {first_errors(exc)}") from None


def _capped(uri: str, data: bytes, limit: int) -> bytes:
    if len(data) > limit:
        raise InvalidRunRecord(uri, f"{len(data)} bytes, over the cap of {limit} bytes the operator reads")
    return data
