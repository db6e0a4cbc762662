"""Stop and restart the real operator at every point of the lifecycle: one Job per RetrainJob, at most one promotion."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from emulator import sim
from emulator.scenario import Cluster, operator_for, running_cluster, settled, started

NS = "restart"
INCUMBENT = {"e1": 0.5, "e2": 0.5, "e3": 0.4}
BETTER = {"e1": 0.6, "e2": 0.6, "e3": 0.6}


@pytest.fixture
def cluster(s3: Any, tmp_path: Any) -> Iterator[Cluster]:
    with running_cluster(s3, tmp_path, [NS]) as c:
        yield c


def test_restarts_never_duplicate_jobs_or_promotions(cluster: Cluster, s3: Any, tmp_path: Any) -> None:
    op = operator_for(cluster, s3, tmp_path / "operator.log", [NS])
    models = {name: f"m-{name}" for name in ("a", "b", "c", "d")}
    for model in models.values():
        sim.seed_incumbent(cluster.registry, model, "seed", INCUMBENT, tmp_path)

    # Start 1: `a` was created while the operator was down; then a crash (SIGKILL) right after `b` is
    # created, probably in the middle of its handler.
    cluster.create_rtj(NS, "a", models["a"])
    op.start().wait_ready()
    run_a = started(cluster, op, NS, "a")["runId"]
    cluster.create_rtj(NS, "b", models["b"])
    time.sleep(0.3)
    op.stop(kill=True)

    # Start 2: `c` is created while the operator is down; everything resumes. Then a graceful stop.
    cluster.create_rtj(NS, "c", models["c"])
    op.start().wait_ready()
    run_b = started(cluster, op, NS, "b")["runId"]
    run_c = started(cluster, op, NS, "c")["runId"]
    op.stop()

    # While it is down: three Jobs finish, and for `c` an earlier operator had already promoted
    # (it crashed between the registry write and the status write). `d` is created.
    for name, run in (("a", run_a), ("b", run_b), ("c", run_c)):
        cluster.train(models[name], run, BETTER, INCUMBENT)
        sim.complete_job(cluster.client, NS, run)
    cluster.registry.promote(models["c"], run_c, expected="seed", reason="earlier attempt", actor="tests")
    cluster.create_rtj(NS, "d", models["d"])

    # Start 3: the finished runs are decided once; `d` starts. A crash just as d's Job succeeds.
    op.start().wait_ready()
    for name in ("a", "b", "c"):
        assert settled(cluster, op, NS, name)["state"] == "Promoted"
    assert any("already the incumbent" in r for r in cluster.status(NS, "c")["decision"]["reasons"])
    run_d = started(cluster, op, NS, "d")["runId"]
    cluster.train(models["d"], run_d, BETTER, INCUMBENT)
    sim.complete_job(cluster.client, NS, run_d)
    time.sleep(0.2)
    op.stop(kill=True)

    # Start 4: `d` is decided; once everything is decided, nothing changes any more.
    op.start().wait_ready()
    assert settled(cluster, op, NS, "d")["state"] == "Promoted"
    before = {name: cluster.status(NS, name) for name in models}
    time.sleep(1.5)  # several poll intervals
    assert {name: cluster.status(NS, name) for name in models} == before
    op.stop()

    for name, model in models.items():
        obj = cluster.rtj(NS, name)
        assert obj is not None
        run = obj["status"]["runId"]
        assert cluster.jobs_created_for(obj["metadata"]["uid"]) == 1, name
        assert cluster.promotions(model, run) == 1, name
        assert cluster.registry.incumbent(model).version == run
    assert len(cluster.jobs(NS)) == len(models)
    assert op.starts == 4
    assert "Traceback" not in op.log.read_text(), op.tail(200)
