"""Two operator replicas with Kopf peering, started as the chart's replicaCount: 2 Deployment runs them, against
the emulator: one acts; the other finishes the RetrainJob after a graceful stop or a SIGKILL of the active one."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from typing import Any

import pytest

from emulator import sim
from emulator.operator import OperatorProcess
from emulator.replicas import Replicas, chart_replicas, expires, pod_of, resumed_at
from emulator.scenario import Cluster, running_cluster, settled, started

NS = "ha"
INCUMBENT = {"e1": 0.50, "e2": 0.50, "e3": 0.40}
BETTER = {"e1": 0.55, "e2": 0.56, "e3": 0.50}
LIFETIME = 5
"""peering.lifetime for the test (chart default 60): a SIGKILLed replica's record is stale after 5 s."""


def values(cluster: Cluster, s3: Any) -> dict[str, Any]:
    """The chart's two-replica values; the rest only points it at this test's servers and makes it quick."""
    return {
        "replicaCount": 2,
        "watchNamespaces": [NS],
        "peering": {"lifetime": LIFETIME},
        "config": {"registryUri": cluster.registry_uri, "s3Endpoint": s3.endpoint, "verbose": True,
                   "pollInterval": 0.5, "retryDelay": 1},
    }  # fmt: skip


@pytest.fixture(scope="module")
def ha(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Replicas]]:
    """One emulator and the chart's two replicas for the module: each test starts what is not running."""
    tmp = tmp_path_factory.mktemp("ha")
    with running_cluster(s3, tmp, [NS]) as c:
        replicas = chart_replicas(c.client, c.server.url, tmp, values(c, s3), s3.env())
        try:
            yield c, replicas
        finally:
            for op in replicas.ops:
                op.stop(kill=True)  # no need to wait for graceful exits


def mark(op: OperatorProcess) -> int:
    """Where the replica's log ends now (for `acted`)."""
    return op.log.stat().st_size if op.log.exists() else 0


def acted(op: OperatorProcess, since: int) -> bool:
    """Whether a replica ran any handler since `since` (kopf logs each one at DEBUG; the chart's config.verbose
    gives --verbose)."""
    with op.log.open("rb") as f:
        f.seek(since)
        return b" DEBUG kopf.objects Handler '" in f.read()


def test_the_replicas_run_as_the_chart_says(ha: tuple[Cluster, Replicas]) -> None:
    """What the chart gives each replica is what makes peering work: a drift here fails the tests below too."""
    _, replicas = ha
    assert len(replicas.ops) == 2
    for op in replicas.ops:
        assert op.args is not None and op.args[0] == "operator" and "--standalone" not in op.args
        assert op.env["KRETRAIN_PEERING"] == replicas.peering == "kretrain"
        assert op.env["KRETRAIN_PEERING_LIFETIME"] == str(LIFETIME)
        assert op.env["KRETRAIN_NAMESPACES"] == NS
    assert len({op.env["POD_ID"] for op in replicas.ops}) == 2  # kopf's identity: the pod's name


@pytest.mark.slow
def test_two_replicas_one_acts_and_the_other_takes_over_a_graceful_stop(ha: tuple[Cluster, Replicas]) -> None:
    cluster, replicas = ha
    active = replicas.start_all()
    [standby] = replicas.standbys()
    since = {op.env["POD_ID"]: mark(op) for op in replicas.ops}
    sim.seed_incumbent(cluster.registry, "m-ha", "seed-1", INCUMBENT, cluster.tmp)
    rtj = cluster.create_rtj(NS, "one", "m-ha")
    status = started(cluster, active, NS, "one")
    time.sleep(2)  # time for the standby to act too, if it would
    assert cluster.jobs_created_for(rtj["metadata"]["uid"]) == 1
    assert acted(active, since[active.env["POD_ID"]])
    assert not acted(standby, since[standby.env["POD_ID"]]), standby.tail(40)
    active.stop()  # SIGTERM: kopf withdraws the replica's record, the standby resumes at once
    assert replicas.wait_settled(timeout=10) is standby
    active.prestart()  # loads while the standby finishes: the next test starts it again
    cluster.train("m-ha", status["runId"], BETTER, INCUMBENT)
    sim.complete_job(cluster.client, NS, status["runId"])
    final = settled(cluster, standby, NS, "one", timeout=30)
    assert final["state"] == "Promoted", final
    assert cluster.jobs_created_for(rtj["metadata"]["uid"]) == 1
    assert cluster.promotions("m-ha", status["runId"]) == 1
    assert acted(standby, since[standby.env["POD_ID"]])


@pytest.mark.slow
def test_the_standby_takes_over_after_the_active_replica_is_killed(ha: tuple[Cluster, Replicas]) -> None:
    """SIGKILL: the active replica never withdraws; the standby resumes once its record is LIFETIME s old."""
    cluster, replicas = ha
    active = replicas.start_all()  # the one the graceful test stopped comes back (with a new priority)
    [standby] = replicas.standbys()
    since = mark(standby)
    sim.seed_incumbent(cluster.registry, "m-kill", "seed-1", INCUMBENT, cluster.tmp)
    rtj = cluster.create_rtj(NS, "two", "m-kill")
    status = started(cluster, active, NS, "two")
    assert not acted(standby, since)
    active.stop(kill=True)
    killed = datetime.datetime.now(datetime.UTC)
    stale = expires(replicas.status()[pod_of(active)])  # its last keep-alive's record: nobody renews it now
    # the Job finishes while no replica acts: the standby must pick it up from the RetrainJob's status
    cluster.train("m-kill", status["runId"], BETTER, INCUMBENT)
    sim.complete_job(cluster.client, NS, status["runId"])
    assert replicas.wait_settled(timeout=LIFETIME + 15) is standby
    resumed = resumed_at(standby)
    assert resumed is not None and resumed >= stale - datetime.timedelta(seconds=0.1), (resumed, stale)
    final = settled(cluster, standby, NS, "two", timeout=30)
    assert final["state"] == "Promoted", final
    assert cluster.jobs_created_for(rtj["metadata"]["uid"]) == 1
    assert cluster.promotions("m-kill", status["runId"]) == 1
    assert acted(standby, since)
    takeover = (resumed - killed).total_seconds()
    print(f"the standby resumed {takeover:.1f}s after the SIGKILL (peering lifetime {LIFETIME}s)")
