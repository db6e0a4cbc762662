"""Aliases beside the incumbent against a real SeaweedFS: validated names, conditional moves, history, CLI."""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from emulator import sim
from emulator.sim import minimal_report
from kretrain import aliases, registry_cli
from kretrain.api import RetrainJobSpec
from kretrain.limits import MAX_RECORD_BYTES
from kretrain.promotion import conclude
from kretrain.registry import Lineage, Registry, RegistryError, VersionNotFound
from kretrain.store import ObjectStore, StoreError

MODEL = "alias-line"


@pytest.fixture
def registry(s3_env, tmp_path: Path) -> Registry:  # type: ignore[no-untyped-def]
    reg = Registry(ObjectStore(max_workers=16), f"s3://{s3_env.new_bucket('alias')}/models")
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"onnx" * 100)
    for v in ("v1", "v2", "v3"):
        w = tmp_path / f"{v}.pt"
        w.write_bytes(v.encode() * 100)
        reg.register(MODEL, v, w, minimal_report(v, MODEL), {}, Lineage(parent=None), {"onnx": onnx_file})
    return reg


@pytest.mark.parametrize(
    "name",
    ["Production", "-prod", "prod-", "prod_eu", "prod.eu", "a/b", "..", "", "a" * 64, "incumbent", "prod\n"],
    ids=[
        "upper",
        "lead-dash",
        "trail-dash",
        "underscore",
        "dot",
        "slash",
        "dotdot",
        "empty",
        "64-chars",
        "reserved",
        "newline",
    ],
)
def test_bad_alias_names_are_refused(name: str) -> None:
    registry = Registry(ObjectStore(endpoint_url="http://127.0.0.1:9"), "s3://never-reached/models")  # refused first
    with pytest.raises(ValueError, match="alias"):
        aliases.set_alias(registry, MODEL, name, "v1", reason="t", actor="t")
    with pytest.raises(ValueError, match="alias"):
        aliases.get_alias(registry, MODEL, name)


@pytest.mark.parametrize("name", ["production", "staging", "canary-eu-1", "a", "a" * 63], ids=str)
def test_good_alias_names(name: str) -> None:
    assert aliases.check_alias(name) == name


def test_set_move_expect_history(registry: Registry) -> None:
    p1 = aliases.set_alias(registry, MODEL, "production", "v1", expected=None, reason="first", actor="me")
    assert (p1.version, p1.seq, p1.previous) == ("v1", 1, None)
    assert p1.sha256 == registry.version_info(MODEL, "v1").sha256
    assert [a.format for a in p1.artifacts] == ["onnx"] and p1.artifacts[0].uri.startswith(
        registry.version_uri(MODEL, "v1")
    )
    p2 = aliases.set_alias(registry, MODEL, "production", "v2", expected="v1", reason="better", actor="me")
    assert (p2.version, p2.seq, p2.previous) == ("v2", 2, "v1")
    with pytest.raises(aliases.AliasChanged, match="names v2, not v1") as err:  # stale expectation
        aliases.set_alias(registry, MODEL, "production", "v3", expected="v1", reason="x", actor="me")
    assert err.value.current == "v2"
    with pytest.raises(aliases.AliasChanged, match="names v2, not nothing"):
        aliases.set_alias(registry, MODEL, "production", "v3", expected=None, reason="x", actor="me")
    assert aliases.set_alias(registry, MODEL, "production", "v2", reason="again", actor="me").seq == 2  # no-op
    with pytest.raises(VersionNotFound):
        aliases.set_alias(registry, MODEL, "production", "v9", reason="x", actor="me")
    aliases.set_alias(registry, MODEL, "staging", "v3", reason="try", actor="ci")
    assert [(a.alias, a.version) for a in aliases.list_aliases(registry, MODEL)] == [
        ("production", "v2"),
        ("staging", "v3"),
    ]
    hist = aliases.alias_history(registry, MODEL, "production")
    assert [(h.seq, h.version, h.previous, h.reason) for h in hist] == [
        (1, "v1", None, "first"),
        (2, "v2", "v1", "better"),
    ]
    assert registry.incumbent(MODEL) is None  # aliases never move the incumbent


def test_racing_moves_have_exactly_one_winner(registry: Registry) -> None:
    aliases.set_alias(registry, MODEL, "production", "v1", reason="seed", actor="t")
    registry.check_conditional_writes()  # probe once, outside the race
    won: list[str] = []
    lost: list[aliases.AliasChanged] = []
    barrier = threading.Barrier(8)

    def move(i: int) -> None:
        target = ("v2", "v3")[i % 2]
        barrier.wait()
        try:
            aliases.set_alias(registry, MODEL, "production", target, expected="v1", reason=f"r{i}", actor=f"t{i}")
            won.append(target)
        except aliases.AliasChanged as exc:
            lost.append(exc)

    threads = [threading.Thread(target=move, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    now = aliases.get_alias(registry, MODEL, "production")
    assert now is not None and now.seq == 2
    # Every winner moved it to the version it names now (a same-target loser after the winner sees a no-op
    # only with expected=ANY; here expected=v1, so everyone else is refused).
    assert won == [now.version] and len(lost) == 7
    assert [h.seq for h in aliases.alias_history(registry, MODEL, "production")] == [1, 2]


def test_history_entry_lost_in_a_crash_is_restored(registry: Registry) -> None:
    ptr = aliases.set_alias(registry, MODEL, "production", "v1", reason="seed", actor="t")
    registry.store.delete(aliases._history_uri(registry, MODEL, "production", ptr.seq))
    assert [h.seq for h in aliases.alias_history(registry, MODEL, "production")] == [1]


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        (b"{not json", "is not valid JSON"),
        (json.dumps({"alias": "staging", "version": "v1", "sha256": "0" * 64, "uri": "s3://b/k", "seq": 1, "at": "t"}).encode(), "not of 'production'"),
        (json.dumps({"alias": "production", "version": "v1", "seq": 1}).encode(), "not a valid alias pointer"),
        (json.dumps({"alias": "production", "version": "v1", "sha256": "0" * 64, "uri": "s3://b/k", "seq": 1, "at": "t", "extra": 1}).encode(), "not a valid alias pointer"),
        (b" " * (MAX_RECORD_BYTES + 1), "bytes"),  # over the record cap: not read
    ],
    ids=["not-json", "other-alias", "missing-fields", "extra-field", "oversized"],
)  # fmt: skip
def test_forged_pointer_is_refused(registry: Registry, doc: bytes, error: str) -> None:
    registry.store.put_bytes(aliases._pointer_uri(registry, MODEL, "production"), doc)
    with pytest.raises((RegistryError, StoreError)) as err:
        aliases.get_alias(registry, MODEL, "production")
    assert error in str(err.value)
    with pytest.raises((RegistryError, StoreError)):  # and nothing moves on top of it
        aliases.set_alias(registry, MODEL, "production", "v2", reason="x", actor="t")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="kretrain")
    registry_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code = args.func(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_alias_set_list_history(registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    r = ["--registry", registry.uri, "--actor", "me"]
    registry.promote(MODEL, "v1", expected=None, reason="seed", actor="t")
    code, out, _ = run(capsys, "models", "alias", "set", MODEL, "production", "v2", "--expected", "none", *r)
    assert code == 0 and "alias production of alias-line -> v2 (was nothing)" in out
    code, _, err = run(capsys, "models", "alias", "set", MODEL, "production", "v3", "--expected", "v1", *r)
    assert code == registry_cli.EXIT_INCUMBENT_CHANGED and "names v2, not v1" in err
    code, _, err = run(capsys, "models", "alias", "set", MODEL, "Prod", "v3", *r)
    assert code == registry_cli.EXIT_ERROR and "not a valid name" in err
    code, out, _ = run(capsys, "models", "alias", "list", MODEL, "--json", "--registry", registry.uri)
    rows = json.loads(out)
    assert [(x["alias"], x["version"], x["formats"]) for x in rows] == [
        ("incumbent", "v1", []),
        ("production", "v2", ["onnx"]),
    ]
    code, out, _ = run(capsys, "models", "alias", "list", MODEL, "--registry", registry.uri)
    assert code == 0 and "production" in out and "incumbent" in out
    code, out, _ = run(capsys, "models", "alias", "history", MODEL, "production", "--json", "--registry", registry.uri)
    assert [(h["seq"], h["version"], h["actor"]) for h in json.loads(out)] == [(1, "v2", "me")]


# -- the gate moves the alias a RetrainJob names (promotion.alias) ---------------------------------


def _gate_spec(alias: str | None) -> RetrainJobSpec:
    promotion: dict = {"minImprovement": {"absolute": 0.01}}
    if alias is not None:
        promotion["alias"] = alias
    return RetrainJobSpec.model_validate({"model": MODEL, "dataset": {"uri": "s3://data/set", "eras": ["e1", "e2"]},
                                          "promotion": promotion})  # fmt: skip


@pytest.mark.parametrize("alias", ["incumbent", "Staging", "st/aging"], ids=str)
def test_bad_promotion_alias_is_refused_at_admission(alias: str) -> None:
    with pytest.raises(ValidationError, match="alias"):
        _gate_spec(alias)


def test_passing_candidate_moves_the_named_alias_not_the_incumbent(s3_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    reg = Registry(ObjectStore(), f"s3://{s3_env.new_bucket('gate-alias')}/models")
    sim.seed_incumbent(reg, MODEL, "v1", {"e1": 0.5, "e2": 0.5}, tmp_path)
    report = sim.train(reg, MODEL, "run-2", {"e1": 0.6, "e2": 0.6}, {"e1": 0.5, "e2": 0.5}, tmp_path)
    spec = _gate_spec("staging")
    first = conclude(reg, report, spec, actor="tests", run_id="run-2")
    assert first.reason == "Promoted" and first.decision.promoted, first.decision.reasons
    assert "Alias 'staging' now names run-2; the incumbent stays v1." in first.decision.reasons
    staged = aliases.get_alias(reg, MODEL, "staging")
    assert staged is not None and staged.version == "run-2" and staged.actor == "tests"
    assert reg.incumbent(MODEL).version == "v1"  # type: ignore[union-attr]
    again = conclude(reg, report, spec, actor="tests", run_id="run-2")  # an operator retry: no second move
    assert again.reason == "Promoted" and [h.seq for h in aliases.alias_history(reg, MODEL, "staging")] == [1]
    # Unset alias: the incumbent moves, as before.
    assert conclude(reg, report, _gate_spec(None), actor="tests", run_id="run-2").reason == "Promoted"
    assert reg.incumbent(MODEL).version == "run-2"  # type: ignore[union-attr]
