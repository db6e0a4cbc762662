"""Model registry against a real SeaweedFS server: versions, promotion races, history, tampered weights."""

from __future__ import annotations

import hashlib
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from emulator import sim
from kretrain.api import RunProgress, RunReport
from kretrain.registry import (
    IncumbentChanged,
    Lineage,
    Registry,
    RegistryError,
    TamperedWeights,
    VersionExists,
    VersionNotFound,
)
from kretrain.store import ObjectStore, join_uri

MODEL = "detector"


def report(run_id: str, value: float = 0.5) -> RunReport:
    return sim.minimal_report(run_id, MODEL, value, wall_seconds=1.5)


LINEAGE = Lineage(
    parent=None, eras=["e1", "e2"], era_hashes={"e1": "h1", "e2": "h2"}, strategy="full", compute={"wallSeconds": 1.5}
)


@pytest.fixture
def registry(s3_env) -> Registry:  # type: ignore[no-untyped-def]
    bucket = s3_env.new_bucket("reg")
    return Registry(ObjectStore(max_workers=16), f"s3://{bucket}/models")


def weights_file(tmp_path: Path, name: str, content: bytes | None = None) -> Path:
    path = tmp_path / f"{name}.pt"
    path.write_bytes(content if content is not None else f"weights of {name}".encode() * 100)
    return path


def reg(registry: Registry, tmp_path: Path, version: str, value: float = 0.5) -> None:
    registry.register(MODEL, version, weights_file(tmp_path, version), report(version, value), {"v": version}, LINEAGE)


def reg_all(registry: Registry, tmp_path: Path, versions: list[str]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda v: reg(registry, tmp_path, v), versions))


def test_register_is_immutable_and_idempotent(registry: Registry, tmp_path: Path) -> None:
    w = weights_file(tmp_path, "v1")
    ref = registry.register(MODEL, "v1", w, report("v1", 0.42), {"model": MODEL}, LINEAGE)
    assert ref.sha256 == hashlib.sha256(w.read_bytes()).hexdigest()
    # The weights live under a name unique to the writer; version.json (the commit) points at them.
    assert re.fullmatch(re.escape(join_uri(registry.uri, MODEL, "versions/v1/weights-")) + r"[0-9a-f]{16}\.pt", ref.uri)
    assert registry.register(MODEL, "v1", w, report("v1", 0.42), {"model": MODEL}, LINEAGE) == ref  # idempotent
    with pytest.raises(VersionExists, match=r"'v1'.*already exists.*refusing to overwrite"):
        registry.register(MODEL, "v1", weights_file(tmp_path, "other"), report("v1"), {}, LINEAGE)
    info = registry.version_info(MODEL, "v1")
    assert info.uri == ref.uri and info.sha256 == ref.sha256
    assert info.lineage.model_dump(mode="json", by_alias=True) == {
        "parent": None,
        "eras": ["e1", "e2"],
        "eraHashes": {"e1": "h1", "e2": "h2"},
        "strategy": "full",
        "compute": {"wallSeconds": 1.5},
    }
    assert info.metrics["mAP50-95"] == 0.42
    stored = registry.read_report(MODEL, "v1")
    assert stored.candidate == ref and stored.compute.wall_seconds == 1.5
    store = registry.store
    assert store.get_json(info.spec_uri) == {"model": MODEL}
    # Nothing but this writer's objects and the commit marker; the refused writer's attempt left nothing.
    names = sorted(o.key for o in store.list(registry.version_uri(MODEL, "v1")))
    writer = info.writer
    assert names == sorted([f"weights-{writer}.pt", f"report-{writer}.json", f"spec-{writer}.json", "version.json"])


def test_versions_and_missing(registry: Registry, tmp_path: Path) -> None:
    assert registry.versions(MODEL) == []
    assert registry.incumbent(MODEL) is None
    reg(registry, tmp_path, "v1")
    reg(registry, tmp_path, "v2")
    registry.promote(MODEL, "v2", expected=None, reason="first", actor="test")
    assert [v.version for v in registry.versions(MODEL)] == ["v1", "v2"]
    pointer = registry.incumbent_pointer(MODEL)
    assert pointer is not None and pointer.version == "v2" and pointer.previous is None and pointer.seq == 1
    with pytest.raises(VersionNotFound, match="'nope'"):
        registry.promote(MODEL, "nope", expected="v2", reason="", actor="t")
    with pytest.raises(VersionNotFound):
        registry.read_report(MODEL, "nope")


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "a\\b"])
def test_names_are_checked(tmp_path: Path, bad: str) -> None:
    # Names are checked before any request, so no server (and no bucket) is needed.
    registry = Registry(ObjectStore(endpoint_url="http://127.0.0.1:9", region="us-east-1"), "s3://unused/models")
    with pytest.raises(RegistryError, match="invalid"):
        registry.register(bad, "v1", weights_file(tmp_path, "v1"), report("v1"), {}, LINEAGE)
    with pytest.raises(RegistryError, match="invalid version"):
        registry.register(MODEL, bad, weights_file(tmp_path, "v1"), report("v1"), {}, LINEAGE)


def test_promote_rollback_history(registry: Registry, tmp_path: Path) -> None:
    for v in ("v1", "v2", "v3"):
        reg(registry, tmp_path, v)
    registry.promote(MODEL, "v1", expected=None, reason="first model", actor="alice")
    registry.promote(MODEL, "v2", expected="v1", reason="better", actor="op")
    with pytest.raises(IncumbentChanged, match="incumbent of 'detector' is v2, not v1") as info:
        registry.promote(MODEL, "v3", expected="v1", reason="stale decision", actor="op")
    assert info.value.current == "v2" and info.value.expected == "v1"
    with pytest.raises(IncumbentChanged, match="is v2, not none"):
        registry.promote(MODEL, "v3", expected=None, reason="", actor="op")
    ref = registry.rollback(MODEL, "v1", reason="v2 misbehaves", actor="bob")
    assert registry.incumbent(MODEL) == ref and ref.version == "v1"
    with pytest.raises(RegistryError, match="already is the incumbent"):
        registry.rollback(MODEL, "v1", reason="", actor="bob")
    hist = registry.history(MODEL)
    assert [(h.seq, h.action, h.version, h.previous, h.actor) for h in hist] == [
        (1, "promote", "v1", None, "alice"),
        (2, "promote", "v2", "v1", "op"),
        (3, "rollback", "v1", "v2", "bob"),
    ]
    assert hist[2].reason == "v2 misbehaves" and hist[2].at.endswith("Z")


def test_history_entry_lost_in_a_crash_is_restored(registry: Registry, tmp_path: Path) -> None:
    reg(registry, tmp_path, "v1")
    reg(registry, tmp_path, "v2")
    registry.promote(MODEL, "v1", expected=None, reason="first", actor="a")
    registry.promote(MODEL, "v2", expected="v1", reason="second", actor="a")
    # A writer that won the pointer but died before writing its history entry:
    registry.store.delete(join_uri(registry.uri, MODEL, "history/00000002.json"))
    assert [h.version for h in registry.history(MODEL)] == ["v1", "v2"]


def _race(registry: Registry, candidates: list[str], expected: str | None) -> tuple[list[str], list[IncumbentChanged]]:
    barrier = threading.Barrier(len(candidates))
    wins: list[str] = []
    refusals: list[IncumbentChanged] = []
    errors: list[BaseException] = []

    def go(version: str) -> None:
        barrier.wait()
        try:
            registry.promote(MODEL, version, expected=expected, reason=f"race {version}", actor=version)
            wins.append(version)
        except IncumbentChanged as exc:
            refusals.append(exc)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(v,)) for v in candidates]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return wins, refusals


def test_sixteen_racing_promotions_have_exactly_one_winner(registry: Registry, tmp_path: Path) -> None:
    reg(registry, tmp_path, "base")
    registry.promote(MODEL, "base", expected=None, reason="first", actor="setup")
    candidates = [f"cand{i:02d}" for i in range(16)]
    reg_all(registry, tmp_path, candidates)

    wins, refusals = _race(registry, candidates, expected="base")

    assert len(wins) == 1, wins
    assert len(refusals) == 15
    winner = wins[0]
    assert all(r.current == winner for r in refusals), [str(r) for r in refusals]
    assert all(winner in str(r) for r in refusals)
    ref = registry.incumbent(MODEL)
    assert ref is not None and ref.version == winner
    hist = registry.history(MODEL)
    assert [(h.seq, h.version, h.previous) for h in hist] == [(1, "base", None), (2, winner, "base")]
    assert len(registry.store.list(join_uri(registry.uri, MODEL, "history"))) == 2


def test_racing_first_promotions_have_exactly_one_winner(registry: Registry, tmp_path: Path) -> None:
    candidates = [f"first{i}" for i in range(8)]
    reg_all(registry, tmp_path, candidates)
    wins, refusals = _race(registry, candidates, expected=None)
    assert len(wins) == 1 and len(refusals) == 7
    assert [(h.seq, h.version) for h in registry.history(MODEL)] == [(1, wins[0])]


def test_fetch_weights_verifies_sha256(registry: Registry, tmp_path: Path) -> None:
    w = weights_file(tmp_path, "v1")
    ref = registry.register(MODEL, "v1", w, report("v1"), {}, LINEAGE)
    out = registry.fetch_weights(MODEL, "v1", tmp_path / "dl")
    assert out == tmp_path / "dl" / "weights.pt" and out.read_bytes() == w.read_bytes()
    assert registry.fetch_weights(MODEL, "v1", tmp_path / "dl") == out  # cached copy reused
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["weights.pt"]
    with pytest.raises(VersionNotFound):
        registry.fetch_weights(MODEL, "v9", tmp_path / "dl9")
    assert registry.version_info(MODEL, "v1").uri == ref.uri


def test_tampered_weights_are_refused_before_loading(registry: Registry, tmp_path: Path) -> None:
    w = weights_file(tmp_path, "v1")
    ref = registry.register(MODEL, "v1", w, report("v1"), {}, LINEAGE)
    dest = tmp_path / "dl"
    registry.fetch_weights(MODEL, "v1", dest)  # a good copy is already in the cache
    evil = b"import os; os.system('echo pwned')" + w.read_bytes()[34:]
    assert len(evil) == w.stat().st_size  # same size, different bytes
    registry.store.put_bytes(ref.uri, evil)
    # The cached copy still matches the registered sha256, so it is the genuine file that is handed out.
    assert registry.fetch_weights(MODEL, "v1", dest).read_bytes() == w.read_bytes()
    (dest / "weights.pt").unlink()
    with pytest.raises(TamperedWeights, match=r"sha256 .* was registered") as info:
        registry.fetch_weights(MODEL, "v1", dest)
    assert hashlib.sha256(evil).hexdigest() in str(info.value)
    assert list(dest.iterdir()) == []  # nothing left at the returned path, no temp file either

    # An attacker who also writes a sidecar is still caught: version.json holds the registered hash.
    registry.store.put_bytes(ref.uri + ".sha256", f"{hashlib.sha256(evil).hexdigest()}  weights.pt\n".encode())
    with pytest.raises(TamperedWeights, match="was registered"):
        registry.fetch_weights(MODEL, "v1", dest)
    assert not (dest / "weights.pt").exists()


def test_a_rewritten_version_record_of_the_incumbent_is_refused_against_the_pointer(
    registry: Registry, tmp_path: Path
) -> None:
    """A line trainer (scoped credentials may PUT under versions/) rewrites the incumbent's version.json to name
    other, consistent weights: fetched with the pointer's sha256 (which trainers cannot write) it is refused."""
    import json

    w = weights_file(tmp_path, "v1")
    registry.register(MODEL, "v1", w, report("v1"), {}, LINEAGE)
    registry.promote(MODEL, "v1", expected=None, reason="first", actor="tests")
    pointer = registry.incumbent(MODEL)
    assert pointer is not None
    weak = tmp_path / "weak.pt"
    weak.write_bytes(b"weaker weights")
    record_uri = registry.version_uri(MODEL, "v1").rstrip("/") + "/version.json"
    record = json.loads(registry.store.get_bytes(record_uri))
    weak_uri = registry.version_uri(MODEL, "v1").rstrip("/") + "/weights-weak.pt"
    registry.store.upload_file(weak, weak_uri)
    record.update(sha256=hashlib.sha256(b"weaker weights").hexdigest(), size=weak.stat().st_size, uri=weak_uri)
    registry.store.put_bytes(record_uri, json.dumps(record).encode())
    assert registry.fetch_weights(MODEL, "v1", tmp_path / "a").read_bytes() == b"weaker weights"  # unpinned: fooled
    with pytest.raises(TamperedWeights, match="incumbent pointer pins"):
        registry.fetch_weights(MODEL, "v1", tmp_path / "b", pinned=pointer.sha256)
    assert not (tmp_path / "b" / "weights.pt").exists()


def test_run_progress_and_report(registry: Registry) -> None:
    assert registry.read_progress(MODEL, "run-1") is None
    assert registry.read_run_report(MODEL, "run-1") is None
    registry.write_progress(MODEL, "run-1", {"epoch": 3, "epochs": 10})
    assert registry.read_progress(MODEL, "run-1") == RunProgress(epoch=3, epochs=10)
    registry.write_run_report(MODEL, "run-1", report("run-1", 0.7))
    got = registry.read_run_report(MODEL, "run-1")
    assert got is not None and got.candidate_evaluation.pooled.map50_95 == 0.7
    assert registry.run_uri(MODEL, "run-1") == join_uri(registry.uri, MODEL, "runs/run-1")
