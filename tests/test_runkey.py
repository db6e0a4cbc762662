"""The run's stage key: the line's other trainers can write `runs/<run-id>/` but not this run's key, so a checkpoint
record, trained stage or evaluated stage they plant (or copy from another run) is ignored (real SeaweedFS)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from test_stages_record import GOOD, _assessment, _store

from kretrain.api.pod import SPEC_DIR, STAGE_KEY_FILE, PodContract
from kretrain.operator import jobs
from kretrain.trainer import runkey, stages
from kretrain.trainer.entrypoint import _checkpoint

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


@pytest.mark.parametrize(
    ("text", "ok"),
    [("ab" * 32, True), ("ab" * 32 + "\n", True), ("AB" * 32, False), ("ab" * 31, False), ("zz" * 32, False)],
    ids=["hex", "newline", "upper", "short", "not-hex"],
)
def test_load_key(tmp_path: Path, text: str, ok: bool) -> None:
    f = tmp_path / "stage.key"
    f.write_text(text)
    if ok:
        assert runkey.load_key(f) == bytes.fromhex("ab" * 32)
    else:
        with pytest.raises(runkey.RunKeyError, match=r"stage\.key"):
            runkey.load_key(f)
    assert runkey.load_key(None) is None and runkey.load_key(tmp_path / "absent") is None


def test_a_mac_is_bound_to_key_uri_and_bytes() -> None:
    m = runkey.mac(KEY, "s3://b/r/m/runs/r1/trained/trained.json", b"{}").encode()
    assert runkey.verify(KEY, "s3://b/r/m/runs/r1/trained/trained.json", b"{}", m)
    assert not runkey.verify(OTHER, "s3://b/r/m/runs/r1/trained/trained.json", b"{}", m)
    assert not runkey.verify(KEY, "s3://b/r/m/runs/r2/trained/trained.json", b"{}", m)  # copied from another run
    assert not runkey.verify(KEY, "s3://b/r/m/runs/r1/trained/trained.json", b"{ }", m)
    assert not runkey.verify(KEY, "s3://b/r/m/runs/r1/trained/trained.json", b"{}", b"not a mac")


def _trained(store: Any, run_uri: str, key: bytes | None) -> None:
    weights = b"weights bytes"
    store.put_bytes(f"{run_uri}/trained/best.pt", weights)
    record = json.dumps({**GOOD, "bestSha256": hashlib.sha256(weights).hexdigest()}).encode()
    runkey.put_record(store, f"{run_uri}/trained/trained.json", record, key)


@pytest.mark.parametrize(
    ("writer", "reader", "used"),
    [(KEY, KEY, True), (None, KEY, False), (OTHER, KEY, False), (None, None, True), (KEY, None, True)],
    ids=["signed", "planted-unsigned", "planted-other-key", "no-key-anywhere", "reader-without-key"],
)
def test_a_trained_stage_counts_only_when_signed_with_the_runs_key(
    s3: Any, tmp_path: Path, writer: bytes | None, reader: bytes | None, used: bool
) -> None:
    store = _store(s3)
    run_uri = f"s3://{s3.new_bucket('runkey')}/registry/m/runs/r1"
    _trained(store, run_uri, writer)
    got = stages.load_trained(store, run_uri, tmp_path / "trained", reader)
    assert (got is not None) is used
    if not used:
        assert not (tmp_path / "trained" / "best.pt").exists()


def test_a_planted_evaluated_stage_is_ignored(s3: Any, tmp_path: Path) -> None:
    """The red team's scenario: another trainer of the line writes this run's evaluated stage for its real weights
    and incumbent (both readable in S3) with made-up numbers and its own export; without the key it is ignored."""
    store = _store(s3)
    run_uri = f"s3://{s3.new_bucket('runkey')}/registry/m/runs/r1"
    stages.save_evaluated(store, run_uri, "a" * 64, "v1", _assessment(tmp_path, b"attacker onnx"), OTHER)
    assert stages.load_evaluated(store, run_uri, tmp_path / "evaluated", "a" * 64, "v1", KEY) is None
    assert not (tmp_path / "evaluated" / "model-onnx.onnx").exists()  # nothing downloaded
    stages.save_evaluated(store, run_uri, "a" * 64, "v1", _assessment(tmp_path, b"our onnx"), KEY)
    got = stages.load_evaluated(store, run_uri, tmp_path / "evaluated", "a" * 64, "v1", KEY)
    assert got is not None and got.exported[0].path.read_bytes() == b"our onnx"


def test_a_planted_checkpoint_record_is_ignored(s3: Any, tmp_path: Path) -> None:
    store = _store(s3)
    uri = f"s3://{s3.new_bucket('runkey')}/registry/m/runs/r1/last.pt"
    store.put_bytes(uri, b"planted checkpoint")
    record = f"{hashlib.sha256(b'planted checkpoint').hexdigest()}  last.pt\n".encode()
    runkey.put_record(store, uri + ".sha256", record, OTHER)
    assert _checkpoint(store, uri, tmp_path / "resume" / "last.pt", KEY) is None
    runkey.put_record(store, uri + ".sha256", record, KEY)
    assert _checkpoint(store, uri, tmp_path / "resume" / "last.pt", KEY) == tmp_path / "resume" / "last.pt"


def test_the_operator_gives_each_run_a_key_in_its_configmap_and_the_pod_finds_it() -> None:
    from test_jobs import SETTINGS, build, make_spec

    spec = make_spec()
    cm = jobs.build_configmap("n", "ns", jobs.resolve_spec(spec, SETTINGS), {}, "ab" * 32)
    assert cm["data"][STAGE_KEY_FILE] == "ab" * 32
    [vol] = [v for v in build(spec)["spec"]["template"]["spec"]["volumes"] if v["name"] == "spec"]
    assert {"key": STAGE_KEY_FILE, "path": STAGE_KEY_FILE} in vol["configMap"]["items"]
    contract = PodContract.in_cluster(run_id="r", incumbent_version=None, endpoint=None, region="us-east-1")
    assert contract.stage_key_file == Path(SPEC_DIR) / STAGE_KEY_FILE


def test_a_report_is_signed_over_its_bytes_and_a_planted_one_is_not_signed(s3: Any) -> None:
    """The pod's 'already finished' shortcut (and the operator's conclusion) trusts report.json only with this
    run's MAC over the very bytes read: a report another trainer of the line wrote (say after squatting the run's
    version id) is not, and the run goes on."""
    from emulator import sim
    from kretrain.registry import Registry

    registry = Registry(_store(s3), f"s3://{s3.new_bucket('runkey')}/registry")
    report = sim.report("r1", "m", {"model": "m"}, {"e1": 0.5}, None, None)
    uri = registry.run_report_uri("m", "r1")
    assert uri.endswith("/m/runs/r1/report.json")
    written = registry.write_run_report("m", "r1", report)
    runkey.sign(registry.store, uri, written, KEY)
    assert registry.store.get_bytes(uri) == written and runkey.signed(registry.store, uri, written, KEY)
    assert registry.read_run_report("m", "r1", stage_key=lambda: KEY) == report
    registry.write_run_report("m", "r1", report.model_copy(update={"checks": []}))  # planted: its MAC is not this
    with pytest.raises(runkey.Unsigned, match=r"runs/r1/report\.json"):
        registry.read_run_report("m", "r1", stage_key=lambda: KEY)
    registry.write_run_report("m", "r1", report)
    with pytest.raises(runkey.Unsigned):
        registry.read_run_report("m", "r1", stage_key=lambda: OTHER)
    registry.store.delete(uri + runkey.MAC_SUFFIX)
    with pytest.raises(runkey.Unsigned):
        registry.read_run_report("m", "r1", stage_key=lambda: KEY)
    assert registry.read_run_report("m", "r1") == report  # no key: nothing is signed or required


@pytest.mark.parametrize(
    ("raw", "ok"),
    [("ab" * 32, True), (b"ab" * 32 + b"\n", True), ("ab" * 32 + " " * runkey.MAX_KEY_BYTES, False),
     ("é" * 64, False), ("", False)],
    ids=["str", "bytes-newline", "oversized", "non-ascii", "empty"],
)  # fmt: skip
def test_parse_key_names_where_the_key_came_from(raw: str | bytes, ok: bool) -> None:
    if ok:
        assert runkey.parse_key(raw, "ConfigMap x stage.key") == bytes.fromhex("ab" * 32)
    else:
        with pytest.raises(runkey.RunKeyError, match=r"ConfigMap x stage\.key"):
            runkey.parse_key(raw, "ConfigMap x stage.key")
