"""A Job (or TrainJob) under the run's name is the run's only when the RetrainJob controls it (controller
ownerReference with its uid): labels and names anyone with rights in the namespace may set. Someone else's is
neither adopted, followed, nor patched: the run fails with JobNotOwned. The decision (pure), and the lifecycle
through the real client against the API emulator."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from emulator.client import Client, job_path, path
from emulator.server import EmulatorServer
from kretrain.api.conditions import Reason
from kretrain.operator import jobs, lifecycle, trainjob
from kretrain.operator.kube import Kube
from kretrain.operator.settings import OperatorSettings
from kretrain.operator.steps import controlled_by

NS, NAME, UID = "team", "rtj", "0123abcd-1111-2222"
RUN = jobs.run_id(NS, NAME, UID)
JOB = jobs.job_name(RUN)


def ref(uid: str = UID, controller: Any = True) -> dict[str, Any]:
    out = {"apiVersion": "kretrain.dev/v1alpha1", "kind": "RetrainJob", "name": NAME, "uid": uid}
    return out if controller is None else {**out, "controller": controller}


CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("controlled", {"metadata": {"ownerReferences": [ref()]}}, True),
    ("controlled-among-others", {"metadata": {"ownerReferences": [ref("x", False), ref()]}}, True),
    ("no-owner-references", {"metadata": {}}, False),
    ("no-metadata", {}, False),
    ("another-uid", {"metadata": {"ownerReferences": [ref("ffffffff-0000")]}}, False),
    ("owner-not-controller", {"metadata": {"ownerReferences": [ref(controller=False)]}}, False),
    ("controller-unset", {"metadata": {"ownerReferences": [ref(controller=None)]}}, False),
    ("controller-a-string", {"metadata": {"ownerReferences": [ref(controller="true")]}}, False),
    ("references-not-a-list", {"metadata": {"ownerReferences": ref()}}, False),
    ("labels-alone", {"metadata": {"labels": jobs.labels(UID, NAME)}}, False),
]


@pytest.mark.parametrize(("obj", "ours"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_only_the_controller_reference_makes_an_object_the_runs(obj: dict[str, Any], ours: bool) -> None:
    assert controlled_by(obj, UID) is ours


# ---- the lifecycle through the real client against the emulator ---------------------------------------------
class Reads:
    """A registry that records what is read (no report, no incumbent)."""

    def __init__(self) -> None:
        self.reads: list[str] = []

    def incumbent(self, model: str) -> None:
        self.reads.append("incumbent")

    def read_run_report(self, model: str, run: str, **_: Any) -> None:
        self.reads.append("report")

    def read_progress(self, model: str, run: str) -> None:
        self.reads.append("progress")


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer() as srv:
        Client(srv.url).ensure_namespace(NS)
        yield srv


def deps_for(srv: EmulatorServer, registry: Reads) -> lifecycle.Deps:
    settings = OperatorSettings(registry="s3://models/registry", metrics_port=0, kube_url=srv.url)

    def adopt(objs: list[dict[str, Any]]) -> None:  # what kopf.append_owner_reference does in the handlers
        for obj in objs:
            obj["metadata"].setdefault("ownerReferences", []).append({**ref(), "blockOwnerDeletion": True})

    return lifecycle.Deps(settings=settings, kube=Kube(settings), registry_for=lambda s: registry,  # type: ignore[arg-type,return-value]
                          adopt=adopt, now=lambda: "2026-01-01T00:00:00Z")  # fmt: skip


def rtj(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": NAME, "namespace": NS, "uid": UID, "generation": 1},
        "spec": {"model": "m", "dataset": {"uri": "s3://data/x", "eras": ["a"]}},
        "status": status or {},
    }


def planted(client: Client, name: str = JOB, owners: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A Job someone else made under the run's name, with the RetrainJob's labels (and `owners`)."""
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NS, "labels": jobs.labels(UID, name), "ownerReferences": owners or []},
        "spec": {"suspend": False, "template": {"spec": {"restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "busybox"}]}}},
    }  # fmt: skip
    created: dict[str, Any] = client.create(job_path(NS), job)
    return created


FOREIGN_OWNERS = [[], [ref("ffffffff-0000")], [ref(controller=False)]]


@pytest.mark.parametrize("owners", FOREIGN_OWNERS, ids=["none", "another-retrainjob", "ours-not-controller"])
def test_start_does_not_adopt_a_planted_job(server: EmulatorServer, owners: list[dict[str, Any]]) -> None:
    client, registry = Client(server.url), Reads()
    planted(client, owners=copy.deepcopy(owners))
    out = lifecycle.start(rtj(), deps_for(server, registry))
    assert out.state == "Failed" and out.permanent_error and f"Job {JOB}" in out.permanent_error
    [failed] = [c for c in out.status["conditions"] if c["type"] == "Failed"]
    assert failed["reason"] == Reason.JOB_NOT_OWNED and f"uid {UID}" in failed["message"]
    assert client.list(path("", "v1", "configmaps", NS)) == [] and registry.reads == []  # nothing made or read
    assert [j["metadata"]["name"] for j in client.list(job_path(NS))] == [JOB]


def test_start_does_not_adopt_a_planted_fallback_job(server: EmulatorServer) -> None:
    client = Client(server.url)
    planted(client, jobs.job_name(jobs.fallback_run_id(RUN)))
    out = lifecycle.start(rtj(), deps_for(server, Reads()))
    assert out.state == "Failed" and out.decision_reason == Reason.JOB_NOT_OWNED


def test_poll_and_suspend_leave_a_job_that_took_the_runs_name_alone(server: EmulatorServer) -> None:
    """The run's status says it started, but the object under its name is someone else's (made after the operator's
    was deleted, or in the window of a 409 on create): its state is not the run's, it is never patched."""
    client, registry = Client(server.url), Reads()
    job = planted(client)
    job["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    client.patch(job_path(NS, JOB, "status"), {"status": job["status"]})
    started = {"state": "Training", "jobName": JOB, "runId": RUN}
    out = lifecycle.poll(rtj(started), deps_for(server, registry))
    assert out.state == "Failed" and out.decision_reason == Reason.JOB_NOT_OWNED and registry.reads == []
    out = lifecycle.set_suspend(rtj(started), True, deps_for(server, registry))
    assert out.state == "Failed" and out.decision_reason == Reason.JOB_NOT_OWNED
    assert client.get(job_path(NS, JOB))["spec"]["suspend"] is False


def test_the_operators_own_job_is_found_followed_and_suspended(server: EmulatorServer) -> None:
    client, registry = Client(server.url), Reads()
    first = lifecycle.start(rtj(), deps_for(server, registry))
    assert first.state == "Training", first
    [job] = client.list(job_path(NS))
    assert controlled_by(job, UID)
    again = lifecycle.start(rtj(), deps_for(server, registry))  # a rerun before the status was written finds it
    assert again.events[0].reason == Reason.JOB_FOUND
    assert lifecycle.poll(rtj(first.status), deps_for(server, registry)).state is None  # still running
    assert lifecycle.set_suspend(rtj(first.status), True, deps_for(server, registry)).state == "Suspended"
    assert client.get(job_path(NS, JOB))["spec"]["suspend"] is True


def test_a_trainjob_that_took_the_runs_name_is_not_followed(server: EmulatorServer) -> None:
    """The same for TrainJobs (resources.nodes > 1 on Kubeflow Trainer): the run's TrainJob replaced by one with
    the same name and labels but without the RetrainJob's controller reference is not followed or re-adopted."""
    from test_trainjob import NS as TJ_NS
    from test_trainjob import TJ_PATH, install_crd
    from test_trainjob import deps_for as trainjob_deps
    from test_trainjob import rtj as trainjob_rtj

    install_crd(server)
    client, deps = Client(server.url), trainjob_deps(server, "auto")
    started = lifecycle.start(trainjob_rtj(), deps).status
    name = started["jobName"]
    ours = client.get(path(*TJ_PATH, TJ_NS, name))
    assert ours["kind"] == trainjob.KIND and controlled_by(ours, trainjob_rtj()["metadata"]["uid"])
    client.delete(path(*TJ_PATH, TJ_NS, name))
    theirs = {k: v for k, v in ours.items() if k != "status"}
    theirs["metadata"] = {"name": name, "namespace": TJ_NS, "labels": ours["metadata"]["labels"]}
    client.create(path(*TJ_PATH, TJ_NS), theirs)
    out = lifecycle.poll(trainjob_rtj(started), deps)
    assert out.state == "Failed" and out.decision_reason == Reason.JOB_NOT_OWNED
    assert f"{trainjob.KIND} {name}" in (out.permanent_error or "")
    again = lifecycle.start(trainjob_rtj(), deps)  # a rerun before the status was written: not adopted either
    assert again.state == "Failed" and again.decision_reason == Reason.JOB_NOT_OWNED
