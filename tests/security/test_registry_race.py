"""Racing `register` on SeaweedFS: one writer commits, losers get VersionExists, the version verifies; forged records."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from emulator import sim
from kretrain.api import RunReport
from kretrain.api.status import ModelRef
from kretrain.registry import Lineage, Registry, RegistryError, TamperedWeights, VersionExists
from kretrain.store import ObjectStore, join_uri

MODEL = "detector"
WRITERS = 8
LINEAGE = Lineage(parent=None, eras=["e1"], era_hashes={"e1": "h1"})


def _report(run_id: str) -> RunReport:
    return sim.minimal_report(run_id, MODEL)


@pytest.fixture(scope="module")
def bucket(s3) -> str:  # type: ignore[no-untyped-def]
    return s3.new_bucket("race")


def _registry(s3, uri: str) -> Registry:  # type: ignore[no-untyped-def]
    """A registry client of its own (its own store and connections), as a separate writer would have."""
    store = ObjectStore(
        endpoint_url=s3.endpoint,
        access_key=s3.server.access_key,
        secret_key=s3.server.secret_key,
        region="us-east-1",
    )
    return Registry(store, uri)


def _race(s3, uri: str, files: list[Path]) -> list[ModelRef | BaseException]:  # type: ignore[no-untyped-def]
    """Every file registered as version v1 by its own writer, all released at once.

    A second barrier holds each writer just before its conditional write of version.json until every
    writer got there, so all of them really contend for the commit (SeaweedFS decides who wins).
    """
    registries = [_registry(s3, uri) for _ in files]
    barrier = threading.Barrier(len(files))
    at_commit = threading.Barrier(len(files), timeout=60)
    for registry in registries:
        put_if_absent = registry.store.put_if_absent

        def held(target: str, data: bytes, put_if_absent: Any = put_if_absent) -> str:
            if target.endswith("/version.json"):
                at_commit.wait()
            return str(put_if_absent(target, data))

        registry.store.put_if_absent = held  # type: ignore[method-assign]

    def one(i: int) -> ModelRef | BaseException:
        barrier.wait()
        try:
            return registries[i].register(MODEL, "v1", files[i], _report("v1"), {"writer": i}, LINEAGE)
        except RegistryError as exc:
            return exc

    with ThreadPoolExecutor(len(files)) as pool:
        return list(pool.map(one, range(len(files))))


def _weights(tmp_path: Path, i: int, content: bytes | None = None) -> Path:
    path = tmp_path / f"w{i}.pt"
    path.write_bytes(content if content is not None else f"weights of writer {i} ".encode() * 20_000)
    return path


@pytest.mark.parametrize(
    "groups",
    [[1] * WRITERS, [WRITERS], [WRITERS // 2, WRITERS // 2], [1, 3, 4]],
    ids=["8-different", "8-identical", "2x4-identical", "1+3+4"],
)
def test_racing_register_has_one_winner_and_the_version_verifies(  # type: ignore[no-untyped-def]
    s3, bucket: str, tmp_path: Path, groups: list[int]
) -> None:
    """`groups`: how many writers share each distinct weights file (identical weights are idempotent)."""
    uri = f"s3://{bucket}/{uuid.uuid4().hex[:8]}"
    files, group_of = [], []
    for g, count in enumerate(groups):
        for _ in range(count):
            files.append(_weights(tmp_path, len(files), f"weights of group {g} ".encode() * 20_000))
            group_of.append(g)
    results = _race(s3, uri, files)

    registry = _registry(s3, uri)
    info = registry.version_info(MODEL, "v1")
    winner_digest = info.sha256
    winners = {
        g for g, f in zip(group_of, files, strict=True) if hashlib.sha256(f.read_bytes()).hexdigest() == winner_digest
    }
    assert len(winners) == 1
    for g, result in zip(group_of, results, strict=True):
        if g in winners:  # the committer and every writer of the same weights get the committed ref
            assert isinstance(result, ModelRef), result
            assert (result.uri, result.sha256) == (info.uri, winner_digest)
        else:
            assert isinstance(result, VersionExists), result
            assert "already exists" in str(result) and winner_digest in str(result)

    # The version verifies, and only the committed writer's objects are left (losers cleaned up).
    got = registry.fetch_weights(MODEL, "v1", tmp_path / "dl")
    assert hashlib.sha256(got.read_bytes()).hexdigest() == winner_digest
    writer = info.writer
    keys = sorted(o.key for o in registry.store.list(registry.version_uri(MODEL, "v1")))
    assert keys == sorted([f"weights-{writer}.pt", f"report-{writer}.json", f"spec-{writer}.json", "version.json"])
    report = registry.read_report(MODEL, "v1")
    assert report.candidate is not None and report.candidate.sha256 == winner_digest


def _forge(registry: Registry, field: str, value: Any) -> None:
    uri = join_uri(registry.version_uri(MODEL, "v1"), "version.json")
    info = registry.store.get_json(uri)
    info[field] = value
    registry.store.put_bytes(uri, json.dumps(info).encode())


FORGED = [
    ("uri", "s3://elsewhere/evil.pt", RegistryError, "not an object in"),
    ("uri", "{base}/../../other/versions/v9/weights-x.pt", RegistryError, "not an object in"),
    ("uri", "{base}/sub/weights.pt", RegistryError, "not an object in"),
    ("uri", "{base}/weights.pt\n", RegistryError, "not a valid VersionRecord: uri"),
    ("uri", 42, RegistryError, "not a valid VersionRecord: uri"),
    ("sha256", "not-a-digest", RegistryError, "not a valid VersionRecord: sha256"),
    ("sha256", "", RegistryError, "not a valid VersionRecord: sha256"),
    ("size", -1, RegistryError, "not a valid VersionRecord: size"),
    ("version", "v9", RegistryError, "record of version 'v9'"),
    ("model", "other", RegistryError, "of 'other', not of"),
    ("metrics", {"mAP50-95": "high"}, RegistryError, "not a valid VersionRecord: metrics"),
    ("injected", True, RegistryError, "not a valid VersionRecord: injected"),
    ("reportUri", "s3://elsewhere/report.json", RegistryError, "not an object in"),
]


@pytest.mark.parametrize(
    ("field", "value", "error", "match"), FORGED, ids=[f"{f}={str(v)[:30]!r}" for f, v, *_ in FORGED]
)
def test_forged_version_record_is_not_followed(  # type: ignore[no-untyped-def]
    s3, bucket: str, tmp_path: Path, field: str, value: Any, error: type[Exception], match: str
) -> None:
    """version.json is the authority, but it never sends a reader outside the version's folder."""
    registry = _registry(s3, f"s3://{bucket}/{uuid.uuid4().hex[:8]}")
    registry.register(MODEL, "v1", _weights(tmp_path, 0), _report("v1"), {}, LINEAGE)
    base = registry.version_uri(MODEL, "v1")
    _forge(registry, field, value.format(base=base) if isinstance(value, str) else value)
    with pytest.raises(error, match=match):
        if field == "reportUri":
            registry.read_report(MODEL, "v1")
        else:
            registry.fetch_weights(MODEL, "v1", tmp_path / "dl")
    assert not (tmp_path / "dl" / "weights.pt").exists()


def test_swapped_larger_weights_are_not_downloaded(s3, bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Weights replaced by a bigger object are refused on their size (the registered one), before any download."""
    registry = _registry(s3, f"s3://{bucket}/{uuid.uuid4().hex[:8]}")
    ref = registry.register(MODEL, "v1", _weights(tmp_path, 0, b"small" * 100), _report("v1"), {}, LINEAGE)
    registry.store.put_bytes(ref.uri, b"x" * 1_000_000)
    with pytest.raises(TamperedWeights, match="1000000 bytes, but 500 were registered"):
        registry.fetch_weights(MODEL, "v1", tmp_path / "dl")
    assert list((tmp_path / "dl").iterdir()) == []


POINTERS = [
    ({"version": "v1"}, "sha256"),  # before: KeyError 'uri' out of Registry.incumbent
    ({"sha256": "0" * 64, "uri": "s3://b/k", "seq": 1}, "version"),
    ({"version": "v1", "sha256": "0" * 64, "uri": "s3://b/k", "seq": 0}, "seq"),
    ({"version": "v1", "sha256": "0" * 64, "uri": "s3://b/k", "seq": "1; drop"}, "seq"),
    ({"version": "v1", "sha256": "0" * 64, "uri": "s3://b/k", "seq": 1, "action": "delete"}, "action"),
    ({"version": "v1", "sha256": "0" * 64, "uri": "s3://b/k", "seq": 1, "reason": "r" * 70_000}, "reason"),
    (["v1"], "(document)"),
]


@pytest.mark.parametrize(("pointer", "field"), POINTERS, ids=[*[f for _, f in POINTERS][:-1], "a-list"])
def test_forged_incumbent_pointer_is_refused_by_name(s3, bucket: str, pointer: Any, field: str) -> None:  # type: ignore[no-untyped-def]
    """incumbent.json is read by the operator at every start: a malformed one is a RegistryError naming the field."""
    registry = _registry(s3, f"s3://{bucket}/{uuid.uuid4().hex[:8]}")
    registry.store.put_bytes(f"{registry.uri}/{MODEL}/incumbent.json", json.dumps(pointer).encode())
    for read in (lambda: registry.incumbent(MODEL), lambda: registry.history(MODEL)):
        with pytest.raises(
            RegistryError, match=rf"incumbent\.json is not a valid IncumbentPointer: {re.escape(field)}"
        ):
            read()


def test_forged_history_entry_is_refused_by_name(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    registry = _registry(s3, f"s3://{bucket}/{uuid.uuid4().hex[:8]}")
    entry = {"seq": 1, "action": "pwn", "version": "v1"}
    registry.store.put_bytes(f"{registry.uri}/{MODEL}/history/00000001.json", json.dumps(entry).encode())
    with pytest.raises(RegistryError, match=r"00000001\.json is not a valid HistoryEntry: action"):
        registry.history(MODEL)
