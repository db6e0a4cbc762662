"""Two operator replicas with Kopf peering (the chart's replicaCount: 2 setup) against the emulator: one acts."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulator import path, sim
from emulator.operator import KRETRAIN, OperatorProcess
from emulator.scenario import Cluster, operator_for, running_cluster, settled, started, wait_for

ROOT = Path(__file__).resolve().parent.parent
NS = "ha"
PEERING = "kretrain"
INCUMBENT = {"e1": 0.50, "e2": 0.50, "e3": 0.40}


@pytest.fixture
def cluster(s3: Any, tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(s3, tmp_path, [NS]) as c:
        for crd in yaml.safe_load_all((ROOT / "charts/kretrain/crds/kopf-peering.yaml").read_text()):
            if crd:
                c.client.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        # what charts/kretrain/templates/peering.yaml creates in each watched namespace
        body = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING, "namespace": NS}}
        c.client.create(path("kopf.dev", "v1", "kopfpeerings", NS), body)
        yield c


class PeeredOperator(OperatorProcess):
    """`kretrain operator` as the chart runs it with replicaCount > 1: KRETRAIN_PEERING set, no --standalone."""

    def start(self) -> PeeredOperator:
        args = [KRETRAIN, "operator", "--verbose", *(f"--namespace={ns}" for ns in self.namespaces)]
        self.starts += 1
        self.env["KRETRAIN_PEERING"] = PEERING
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return self


def replicas(cluster: Cluster, s3: Any, tmp: Path) -> list[OperatorProcess]:
    ops: list[OperatorProcess] = []
    for i in range(2):  # one after the other: the first watches the peering object before the second writes to it
        base = operator_for(cluster, s3, tmp / f"operator-{i}.log", [NS])
        op = PeeredOperator(base.kube_url, base.log, base.namespaces, base.env)
        op.metrics_port = base.metrics_port  # the port base.env gives KRETRAIN_METRICS_PORT
        ops.append(op.start())
        op.wait_ready()
        keepalive = f"replica {i}'s first peering keep-alive"
        wait_for(keepalive, lambda log=op.log: "Keep-alive in 'kretrain'" in log.read_text())
    if len(ops) > 1:  # until a replica has seen another's peering record (then kopf decides who acts)
        seen = ("Pausing operations in favour of", "Possibly conflicting operators with the same priority")
        wait_for(  # a loaded machine starts two operators slowly
            "the replicas to see each other",
            lambda: any(m in op.log.read_text() for op in ops for m in seen),
            timeout=90.0,
        )
        time.sleep(2)
    return ops


def acted(op: OperatorProcess, name: str) -> bool:
    """Whether a replica ran any handler (the test has one RetrainJob, `name`; kopf logs each one at DEBUG)."""
    return " DEBUG kopf.objects Handler '" in op.log.read_text(errors="replace")


@pytest.mark.slow
@pytest.mark.xfail(
    strict=False,
    reason="flaky (about 1 run in 3 here): sometimes neither replica ever sees the other's KopfPeering record in the "
    "emulator, so both act; issue #21 stays open for it",
)
def test_two_replicas_one_acts_and_the_other_takes_over(cluster: Cluster, s3: Any, tmp_path: Path) -> None:
    ops = replicas(cluster, s3, tmp_path)
    try:
        sim.seed_incumbent(cluster.registry, "m-ha", "seed-1", INCUMBENT, cluster.tmp)
        rtj = cluster.create_rtj(NS, "one", "m-ha")
        status = started(cluster, ops[0], NS, "one")
        time.sleep(3)  # time for a second replica to act too, if it would
        assert cluster.jobs_created_for(rtj["metadata"]["uid"]) == 1
        active = [op for op in ops if acted(op, "one")]
        assert len(active) == 1, [op.tail(40) for op in ops]
        [standby] = [op for op in ops if op is not active[0]]
        # the active replica goes (graceful: it withdraws from the peering); the standby finishes the run
        active[0].stop()
        sim.train(cluster.registry, "m-ha", status["runId"], {"e1": 0.55, "e2": 0.56, "e3": 0.50}, INCUMBENT,
                  cluster.tmp)  # fmt: skip
        sim.complete_job(cluster.client, NS, status["runId"])
        final = settled(cluster, standby, NS, "one", timeout=60)
        assert final["state"] == "Promoted", final
        assert cluster.jobs_created_for(rtj["metadata"]["uid"]) == 1
        assert cluster.promotions("m-ha", status["runId"]) == 1
        wait_for("the standby to have acted", lambda: acted(standby, "one"))
    finally:
        for op in ops:
            op.stop()
