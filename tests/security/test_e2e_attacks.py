"""The issue's attacks end to end: the real operator against the API emulator and SeaweedFS, with forged records
written into the registry and status patched as an attacker with `patch retrainjobs/status` would."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp.web
import pytest
import yaml

from emulator import Client, Emulator, EmulatorServer, job_path, rtj_path, sim
from emulator.operator import OperatorProcess
from emulator.scenario import ROOT, Cluster, conditions, operator_for, settled, started, wait_for
from kretrain.api import ModelRef
from kretrain.registry import Lineage, Registry
from kretrain.store import ObjectStore, join_uri

WATCHED = ["attack", "bypass", "badreport", "badprogress"]
OTHER = "other-team"  # exists, holds a Job, is not watched by the operator
INCUMBENT = {"e1": 0.50, "e2": 0.50, "e3": 0.40}
BETTER = {"e1": 0.70, "e2": 0.70, "e3": 0.70}


class RecordingEmulator(Emulator):  # type: ignore[misc]
    """The emulator, recording (user agent, method, raw path, decoded path) of every request it gets."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.requests: list[tuple[str, str, str, str]] = []

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        self.requests.append((raw.headers.get("User-Agent", ""), raw.method, raw.raw_path, raw.path))
        return await super().__call__(raw)


@pytest.fixture(scope="module")
def cluster(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    server = EmulatorServer()
    server.emulator = RecordingEmulator()
    server.start()
    client = Client(server.url)
    client.create(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        yaml.safe_load((ROOT / "crds" / "retrainjob.yaml").read_text()),
    )
    for ns in [*WATCHED, OTHER]:
        client.ensure_namespace(ns)
    store = ObjectStore(endpoint_url=s3.endpoint, access_key=s3.server.access_key, secret_key=s3.server.secret_key)
    uri = f"s3://{s3.new_bucket('attacks')}/registry"
    try:
        yield Cluster(server, Registry(store, uri), uri, tmp_path_factory.mktemp("attacks"))
    finally:
        server.stop()


@pytest.fixture(scope="module")
def operator(cluster: Cluster, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    op = operator_for(cluster, s3, tmp_path_factory.mktemp("op") / "operator.log", WATCHED)
    op.start().wait_ready()
    yield op
    op.stop()
    assert "Traceback" not in op.log.read_text(), op.tail(200)


def operator_requests(cluster: Cluster) -> list[tuple[str, str, str, str]]:
    reqs: list[tuple[str, str, str, str]] = cluster.server.call(lambda: list(cluster.server.emulator.requests))
    return [r for r in reqs if not r[0].startswith("kretrain-tests")]


def register_old_version(registry: Registry, model: str, tmp: Path) -> ModelRef:
    """v5: an old registered version that was never promoted, the one the forged report wants in production."""
    rep = sim.report("v5", model, {}, {"e1": 0.9, "e2": 0.9, "e3": 0.9}, None, None)
    return registry.register(model, "v5", sim.weights_file(tmp, "v5"), rep, {}, Lineage(parent=None))


def forge_run(cluster: Cluster, model: str, run_id: str, **changes: Any) -> None:
    """What a custom trainer image could leave behind: a version under the run id and a report of its choosing,
    signed with the run's stage key (the run's own pod has it: the MAC says who wrote a report, not what is in it)."""
    rep = sim.report(run_id, model, {"model": model}, BETTER, INCUMBENT, cluster.registry.incumbent(model))
    ref = cluster.registry.register(model, run_id, sim.weights_file(cluster.tmp, run_id), rep, {}, Lineage(parent=None))
    written = cluster.registry.write_run_report(model, run_id, rep.model_copy(update={"candidate": ref, **changes}))
    sim.sign_report(cluster.registry, model, run_id, written, sim.stage_key(cluster.client, run_id))


def test_a_forged_report_naming_an_old_version_is_not_promoted(cluster: Cluster, operator: OperatorProcess) -> None:
    model = "m-bypass"
    sim.seed_incumbent(cluster.registry, model, "v2", INCUMBENT, cluster.tmp)
    v5 = register_old_version(cluster.registry, model, cluster.tmp)
    cluster.create_rtj("bypass", "forged", model)
    run_id = started(cluster, operator, "bypass", "forged")["runId"]
    forge_run(cluster, model, run_id, candidate=v5)  # main promoted v5 here: incumbent v2 -> v5
    sim.complete_job(cluster.client, "bypass", run_id)
    status = settled(cluster, operator, "bypass", "forged")
    failed = conditions(status)["Failed"]
    assert status["state"] == "Failed" and failed["reason"] == "ReportMismatch", status
    assert "'v5'" in failed["message"] and status["decision"]["promoted"] is False
    assert cluster.registry.incumbent(model).version == "v2"
    assert cluster.promotions(model, "v5") == 0 and cluster.promotions(model, run_id) == 0
    assert ("Warning", "ReportMismatch") in [(t, r) for t, r, _ in cluster.events("bypass")]


def test_a_report_without_the_incumbents_evaluation_is_not_gated_as_a_first_model(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    model = "m-first"
    sim.seed_incumbent(cluster.registry, model, "v2", INCUMBENT, cluster.tmp)
    cluster.create_rtj("bypass", "no-incumbent", model)
    run_id = started(cluster, operator, "bypass", "no-incumbent")["runId"]
    forge_run(cluster, model, run_id, incumbent_evaluation=None)  # main: gated as "first model", promoted
    sim.complete_job(cluster.client, "bypass", run_id)
    status = settled(cluster, operator, "bypass", "no-incumbent")
    assert status["state"] == "Rejected" and conditions(status)["Promoted"]["reason"] == "MissingEvaluation"
    assert any("incumbentEvaluation" in r for r in status["decision"]["reasons"])
    assert cluster.registry.incumbent(model).version == "v2"


def test_a_cross_namespace_job_name_in_status_never_reaches_the_other_namespace(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    victim = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "x", "namespace": OTHER},
        "spec": {"suspend": False, "template": {"spec": {"restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "busybox"}]}}},
    }  # fmt: skip
    cluster.client.create(job_path(OTHER), victim)
    cluster.create_rtj("attack", "run", "m-attack")
    own = started(cluster, operator, "attack", "run")
    hostile = "../../other-team/jobs/x"
    cluster.client.patch(rtj_path("attack", "run", "status"), {"status": {"jobName": hostile, "runId": "../x"}})
    # The operator polls (GET) and, on spec.suspend, PATCHes its Job: main sent both to other-team/jobs/x.
    cluster.client.patch(rtj_path("attack", "run"), {"spec": {"suspend": True}})
    wait_for("the run's own Job to be suspended", lambda: cluster.jobs("attack")[0]["spec"]["suspend"], op=operator)
    wait_for(
        "the status to be corrected",
        lambda: (
            cluster.status("attack", "run").get("jobName") == own["jobName"]
            and cluster.status("attack", "run").get("runId") == own["runId"]
        ),
        op=operator,
    )
    time.sleep(1.5)  # a few more polls (interval 0.5 s) with the status the attacker wrote
    assert cluster.client.get(job_path(OTHER, "x"))["spec"]["suspend"] is False
    touched = [r for r in operator_requests(cluster) if OTHER in r[2] or OTHER in r[3] or "%2F" in r[2].split("?")[0]]
    assert touched == [], touched
    assert "StatusCorrected" in [r for _, r, _ in cluster.events("attack")]
    assert cluster.status("attack", "run")["state"] == "Suspended"


def test_a_malformed_report_fails_the_run_after_three_tries(cluster: Cluster, operator: OperatorProcess) -> None:
    model = "m-badreport"
    cluster.create_rtj("badreport", "run", model)
    run_id = started(cluster, operator, "badreport", "run")["runId"]
    uri = join_uri(cluster.registry.run_uri(model, run_id), "report.json")
    malformed = b'{"runId": "' + run_id.encode() + b'", "promote": "v5"}'
    cluster.registry.store.put_bytes(uri, malformed)
    sim.sign_report(cluster.registry, model, run_id, malformed, sim.stage_key(cluster.client, run_id))  # its own pod
    t0 = time.monotonic()
    sim.complete_job(cluster.client, "badreport", run_id)
    status = settled(cluster, operator, "badreport", "run")  # main retried this forever
    failed = conditions(status)["Failed"]
    assert status["state"] == "Failed" and failed["reason"] == "InvalidReport", status
    assert "report.json" in failed["message"] and "try 3 of 3" in failed["message"]
    assert time.monotonic() - t0 < 15  # three tries 1 s apart (KRETRAIN_RETRY_DELAY), not a hot loop either


def test_nan_progress_never_reaches_the_status_and_fails_the_run(cluster: Cluster, operator: OperatorProcess) -> None:
    model = "m-badprogress"
    cluster.create_rtj("badprogress", "run", model)
    run_id = started(cluster, operator, "badprogress", "run")["runId"]
    uri = join_uri(cluster.registry.run_uri(model, run_id), "progress.json")
    cluster.registry.store.put_bytes(uri, b'{"epoch": 1, "epochs": 3, "etaSeconds": NaN, "metrics": {"m": Infinity}}')
    status = settled(cluster, operator, "badprogress", "run")  # main put NaN into the status patch, forever
    failed = conditions(status)["Failed"]
    assert status["state"] == "Failed" and failed["reason"] == "InvalidProgress", status
    assert "progress.json" in failed["message"] and "etaSeconds" in failed["message"]
    assert "progress" not in status
