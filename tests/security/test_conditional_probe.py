"""The registry refuses to promote through a backend that ignores conditional writes (SeaweedFS, and a proxy faking one)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import kopf
import pytest

from emulator import sim
from harness.s3proxy import FaultProxy
from kretrain.api import RunReport
from kretrain.condprobe import PROBE_PREFIX
from kretrain.registry import ConditionalWritesIgnored, IncumbentChanged, Lineage, Registry
from kretrain.store import ObjectStore, StoreUnavailable

MODEL = "detector"


def _report(run_id: str) -> RunReport:
    return sim.minimal_report(run_id, MODEL)


@pytest.fixture(scope="module")
def bucket(s3) -> str:  # type: ignore[no-untyped-def]
    return s3.new_bucket("probe")


@pytest.fixture
def uri(bucket: str) -> str:
    return f"s3://{bucket}/{uuid.uuid4().hex[:8]}/registry"


@pytest.fixture
def proxy(s3) -> Iterator[FaultProxy]:  # type: ignore[no-untyped-def]
    with FaultProxy(s3.endpoint, credentials=(s3.server.access_key, s3.server.secret_key)) as p:
        yield p


def _registry(s3, uri: str, endpoint: str | None = None, attempts: int = 3) -> Registry:  # type: ignore[no-untyped-def]
    store = ObjectStore(
        endpoint_url=endpoint or s3.endpoint,
        access_key=s3.server.access_key,
        secret_key=s3.server.secret_key,
        region="us-east-1",
        max_attempts=attempts,
    )
    return Registry(store, uri)


def _seed(s3, uri: str, tmp_path: Path, versions: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Register versions directly on SeaweedFS (registering needs no conditional write but the commit marker)."""
    direct = _registry(s3, uri)
    for v in versions:
        weights = tmp_path / f"{v}.pt"
        weights.write_bytes(v.encode() * 100)
        direct.register(MODEL, v, weights, _report(v), {}, Lineage(parent=None))


def _probe_litter(s3, uri: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [o.key for o in _registry(s3, uri).store.list(f"{uri}/{PROBE_PREFIX}")]


def test_seaweedfs_honours_conditional_writes(s3, uri: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _seed(s3, uri, tmp_path, ["v1", "v2"])
    registry = _registry(s3, uri)
    registry.check_conditional_writes()
    registry.promote(MODEL, "v1", expected=None, reason="first", actor="t")
    registry.promote(MODEL, "v2", expected="v1", reason="better", actor="t")
    assert registry.rollback(MODEL, "v1", reason="back", actor="t").version == "v1"
    assert _probe_litter(s3, uri) == []  # the probe's objects are deleted


BAD_BACKENDS = [
    ("strip", ["replaced an existing object", "stale If-Match"]),
    ("strip-if-none-match", ["replaced an existing object"]),
    ("strip-if-match", ["stale If-Match"]),
    ("412-after-write", ["answered 412 but replaced the object anyway"]),
]


@pytest.mark.parametrize(("mode", "seen"), BAD_BACKENDS, ids=[m for m, _ in BAD_BACKENDS])
def test_a_backend_ignoring_conditions_gets_no_promotion(  # type: ignore[no-untyped-def]
    s3, proxy: FaultProxy, uri: str, tmp_path: Path, mode: str, seen: list[str]
) -> None:
    _seed(s3, uri, tmp_path, ["v1", "v2"])
    direct = _registry(s3, uri)
    direct.promote(MODEL, "v1", expected=None, reason="first", actor="t")
    proxy.conditions = mode
    registry = _registry(s3, uri, proxy.endpoint)
    for attempt in (
        lambda: registry.promote(MODEL, "v2", expected="v1", reason="better", actor="t"),
        lambda: registry.rollback(MODEL, "v2", reason="back", actor="t"),
        registry.check_conditional_writes,
    ):
        with pytest.raises(ConditionalWritesIgnored) as info:
            attempt()
        assert proxy.endpoint in str(info.value) and info.value.endpoint == proxy.endpoint
        assert "Refusing to promote" in str(info.value)
        assert all(any(s in p for p in info.value.problems) for s in seen), info.value.problems
    assert proxy.conditions_dropped >= 1
    assert direct.incumbent(MODEL).version == "v1"  # type: ignore[union-attr]
    assert [h.version for h in direct.history(MODEL)] == ["v1"]
    assert _probe_litter(s3, uri) == []


def test_the_emulated_backend_really_lets_two_promotions_win(  # type: ignore[no-untyped-def]
    s3, proxy: FaultProxy, uri: str, tmp_path: Path
) -> None:
    """Why the probe matters: with it skipped, two first promotions through the stripping proxy both 'win'."""
    _seed(s3, uri, tmp_path, ["a", "b"])
    proxy.conditions = "strip"
    first, second = _registry(s3, uri, proxy.endpoint), _registry(s3, uri, proxy.endpoint)
    for r in (first, second):
        r._conditional_problems = []  # pretend it was probed fine
    first.promote(MODEL, "a", expected=None, reason="", actor="one")
    # The second writer read "no incumbent" before the first wrote; its put-if-absent is not refused.
    second._pointer = lambda model: None  # type: ignore[method-assign]
    second.promote(MODEL, "b", expected=None, reason="", actor="two")  # no IncumbentChanged: both won
    # Through SeaweedFS itself the same second write loses, as it must.
    honest = _registry(s3, uri)
    honest._pointer = lambda model: None  # type: ignore[method-assign]
    with pytest.raises(IncumbentChanged):
        honest.promote(MODEL, "a", expected=None, reason="", actor="three")


def test_the_verdict_is_kept_per_registry_object(s3, proxy: FaultProxy, uri: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _seed(s3, uri, tmp_path, ["v1"])
    proxy.conditions = "strip"
    registry = _registry(s3, uri, proxy.endpoint)
    with pytest.raises(ConditionalWritesIgnored):
        registry.check_conditional_writes()
    puts = proxy.requests["PUT"]
    proxy.conditions = "honour"  # the backend "changes": the same object does not ask again
    with pytest.raises(ConditionalWritesIgnored):
        registry.promote(MODEL, "v1", expected=None, reason="", actor="t")
    assert proxy.requests["PUT"] == puts
    fresh = _registry(s3, uri, proxy.endpoint)  # a new Registry probes again
    fresh.promote(MODEL, "v1", expected=None, reason="", actor="t")
    assert proxy.requests["PUT"] > puts


def test_a_network_error_during_the_probe_is_not_a_verdict(s3, proxy: FaultProxy, uri: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _seed(s3, uri, tmp_path, ["v1"])
    registry = _registry(s3, uri, proxy.endpoint, attempts=1)
    proxy.fail_next("drop", method="PUT")
    with pytest.raises(StoreUnavailable):
        registry.check_conditional_writes()
    registry.promote(MODEL, "v1", expected=None, reason="", actor="t")  # probed again, fine this time
    assert registry.incumbent(MODEL).version == "v1"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("mode", "refused"), [("strip", True), ("honour", False)], ids=["stripping-proxy", "seaweedfs"]
)
def test_operator_startup_probes_the_default_registry(  # type: ignore[no-untyped-def]
    s3_env,
    proxy: FaultProxy,
    uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog,
    mode: str,
    refused: bool,
) -> None:
    """The operator's startup handler (handlers.configure) probes; a bad backend's verdict refuses its promotions."""
    from kretrain.operator import handlers

    _seed(s3_env, uri, tmp_path, ["v1"])
    proxy.conditions = mode
    settings = handlers._settings.model_copy(update={"registry": uri, "s3_endpoint": proxy.endpoint, "metrics_port": 0})
    monkeypatch.setattr(handlers, "_settings", settings)
    handlers._registry.cache_clear()
    try:
        with caplog.at_level(logging.INFO):
            handlers.configure(settings=kopf.OperatorSettings(), logger=logging.getLogger("test-operator"))
        registry = handlers._registry(proxy.endpoint, settings.s3_region, uri)  # what RetrainJobs will use
        if refused:
            assert any(r.levelno == logging.ERROR and proxy.endpoint in r.getMessage() for r in caplog.records)
            with pytest.raises(ConditionalWritesIgnored, match="Refusing to promote"):
                registry.promote(MODEL, "v1", expected=None, reason="", actor="operator")
            assert _registry(s3_env, uri).incumbent(MODEL) is None
        else:
            assert any("honours conditional writes" in r.getMessage() for r in caplog.records)
            assert registry.promote(MODEL, "v1", expected=None, reason="", actor="operator").version == "v1"
    finally:
        handlers._registry.cache_clear()


def test_the_real_operator_refuses_to_promote_through_a_stripping_backend(  # type: ignore[no-untyped-def]
    s3, proxy: FaultProxy, tmp_path: Path
) -> None:
    """`kretrain operator` against the emulator, its S3 endpoint the stripping proxy: a candidate that passes the
    gate is not promoted and the run fails (RegistryUnsafe) naming the endpoint; the incumbent stays."""
    from emulator import sim
    from emulator.operator import OperatorProcess
    from emulator.scenario import running_cluster, started, wait_for

    incumbent = {"e1": 0.5, "e2": 0.5, "e3": 0.4}
    proxy.conditions = "strip"
    with running_cluster(s3, tmp_path, ["probe"]) as cluster:
        env = {**s3.env(), "KRETRAIN_REGISTRY": cluster.registry_uri, "KRETRAIN_S3_ENDPOINT": proxy.endpoint}
        op = OperatorProcess(cluster.server.url, tmp_path / "operator.log", ["probe"], env)
        sim.seed_incumbent(cluster.registry, MODEL, "seed-1", incumbent, tmp_path)  # on SeaweedFS directly
        op.start().wait_ready()
        try:
            wait_for("the startup probe's verdict", lambda: "promotions are refused" in op.tail(200), op=op)
            assert proxy.endpoint in op.tail(200)
            obj = cluster.create_rtj("probe", "run", MODEL)
            status = started(cluster, op, "probe", "run")
            run_id = status["runId"]
            assert run_id.endswith(obj["metadata"]["uid"][:8])
            cluster.train(MODEL, run_id, {"e1": 0.6, "e2": 0.6, "e3": 0.6}, incumbent)
            sim.complete_job(cluster.client, "probe", run_id)
            wait_for("a refused promotion", lambda: cluster.status("probe", "run").get("state") == "Failed", op=op)
            assert cluster.registry.incumbent(MODEL).version == "seed-1"  # type: ignore[union-attr]
            # Failed at once, naming the endpoint: the verdict is kept, so a retry could never promote.
            [cond] = [c for c in cluster.status("probe", "run")["conditions"] if c["type"] == "Failed"]
            assert cond["reason"] == "RegistryUnsafe" and proxy.endpoint in cond["message"], cond
            assert [h.version for h in cluster.registry.history(MODEL)] == ["seed-1"]
        finally:
            op.stop()
        assert "Traceback" not in op.log.read_text(), op.tail(200)
