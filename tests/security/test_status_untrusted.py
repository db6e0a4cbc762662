"""Status is a cache, not an input: hostile status.jobName/runId never reach the API or the registry, and kube.py
refuses any name that is not DNS-1123 before it builds a URL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from emulator.recorder import Sent, recording_server
from kretrain.api import RunReport
from kretrain.operator import jobs, lifecycle
from kretrain.operator.kube import Kube, UnsafeName
from kretrain.operator.settings import OperatorSettings

SETTINGS = OperatorSettings(registry="s3://models/reg", metrics_port=0, kube_url="http://127.0.0.1:9")
NOW = "2026-01-01T00:00:00Z"
NS, NAME, UID = "ns", "run", "12345678-aaaa"
OURS = {"ownerReferences": [{"uid": UID, "controller": True}]}
"""The metadata the operator's own Job carries (kopf.append_owner_reference)."""
RUN = jobs.run_id(NS, NAME, UID)
JOB = jobs.job_name(RUN)

HOSTILE_NAMES = [
    ("dot-dot-slash-other-namespace", "../../other-team/jobs/x"),
    ("slash-inside", "x/../../y"),
    ("percent-encoded-slashes", "..%2F..%2Fother-team%2Fjobs%2Fx"),
    ("dot-dot", ".."),
    ("uppercase", "Other-Team"),
    ("too-long", "a" * 64),
    ("query-string", "x?labelSelector=a"),
    ("fragment", "x#y"),
    ("selector-injection", "x,job-name=y"),
    ("empty", ""),
    ("newline", "x\ny"),
    ("unicode-line-separator", "x\u2028y"),
]
# A cleared jobName means "not started" (nothing is called at all): the lifecycle cases use the others.
STARTED = [(i, h) for i, h in HOSTILE_NAMES if h]


class RecordingKube:
    """Answers like the API server for one running Job and records every (call, namespace, name)."""

    def __init__(self, job: dict[str, Any] | None = None) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.job = job if job is not None else {"metadata": {"name": JOB, **OURS}, "spec": {}, "status": {}}

    def find_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        self.calls.append(("find_jobs", namespace, label_selector))
        return []

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get_job", namespace, name))
        return self.job

    def create(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        self.calls.append(("create", obj["metadata"]["namespace"], obj["metadata"]["name"]))
        return obj, True

    def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch_job", namespace, name))
        return self.job

    def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        self.calls.append(("job_pods", namespace, job))
        return []


class RecordingRegistry:
    """Records which run ids the operator reads (a stand-in: the SeaweedFS cases are in the other files)."""

    def __init__(self) -> None:
        self.reads: list[tuple[str, str, str]] = []

    def read_progress(self, model: str, run_id: str) -> None:
        self.reads.append(("progress", model, run_id))

    def read_run_report(self, model: str, run_id: str, *, stage_key: Any = None) -> RunReport | None:
        self.reads.append(("report", model, run_id))
        return None


def rtj(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": NAME, "namespace": NS, "uid": UID, "generation": 1},
        "spec": {"model": "m", "dataset": {"uri": "s3://data/x", "eras": ["a", "b"]}},
        "status": status,
    }


def deps(kube: RecordingKube, registry: RecordingRegistry | None = None) -> lifecycle.Deps:
    reg = registry or RecordingRegistry()
    return lifecycle.Deps(settings=SETTINGS, kube=kube, registry_for=lambda spec: reg, adopt=lambda objs: None,  # type: ignore[arg-type,return-value]
                          now=lambda: NOW)  # fmt: skip


@pytest.mark.parametrize("hostile", [h for _, h in STARTED], ids=[i for i, _ in STARTED])
def test_poll_uses_the_operators_job_name_never_status_job_name(hostile: str) -> None:
    kube, registry = RecordingKube(), RecordingRegistry()
    outcome = lifecycle.poll(rtj({"jobName": hostile, "runId": RUN, "state": "Training"}), deps(kube, registry))
    assert kube.calls == [("get_job", NS, JOB)]
    assert registry.reads == [("progress", "m", RUN)]
    # the status is put back and the tampering is reported
    assert outcome.status["jobName"] == JOB and outcome.status["runId"] == RUN
    assert [e.reason for e in outcome.events] == ["StatusCorrected"]
    assert outcome.retry is None and outcome.permanent_error is None


@pytest.mark.parametrize("hostile", [h for _, h in STARTED], ids=[i for i, _ in STARTED])
def test_suspend_patches_only_the_operators_job(hostile: str) -> None:
    kube = RecordingKube()
    outcome = lifecycle.set_suspend(rtj({"jobName": hostile, "runId": RUN, "state": "Training"}), True, deps(kube))
    assert kube.calls == [("get_job", NS, JOB), ("patch_job", NS, JOB)]
    assert outcome.status["state"] == "Suspended" and outcome.status["jobName"] == JOB


@pytest.mark.parametrize(
    "run_id",
    ["other-team-victim-abcdef12", "../other/runs/x", RUN + "-full", ""],
    ids=["another-teams-run", "path", "the-fallback-run-without-a-fallback", "empty"],
)
def test_a_tampered_run_id_is_never_read(run_id: str) -> None:
    kube = RecordingKube({"metadata": OURS, "status": {"conditions": [{"type": "Complete", "status": "True"}]}})
    registry = RecordingRegistry()
    outcome = lifecycle.poll(rtj({"jobName": JOB, "runId": run_id, "state": "Training"}), deps(kube, registry))
    assert registry.reads == [("report", "m", RUN)]
    assert (
        outcome.status["state"] == "Failed" and f"runs/{RUN}/report.json" in outcome.status["conditions"][-1]["message"]
    )


def test_a_cleared_job_name_calls_nothing() -> None:
    kube, registry = RecordingKube(), RecordingRegistry()
    body = rtj({"jobName": "", "runId": RUN, "state": "Training"})
    assert lifecycle.poll(body, deps(kube, registry)) == lifecycle.Outcome()
    assert lifecycle.set_suspend(body, True, deps(kube)) == lifecycle.Outcome()
    assert kube.calls == [] and registry.reads == []


def test_status_fallback_selects_only_between_the_objects_own_two_runs() -> None:
    kube, registry = RecordingKube(), RecordingRegistry()
    status = {"jobName": "../../x", "runId": "x", "state": "Training", "fallback": {"runId": "x", "decision": {}}}
    lifecycle.poll(rtj(status), deps(kube, registry))
    full = jobs.fallback_run_id(RUN)
    assert kube.calls == [("get_job", NS, jobs.job_name(full))] and registry.reads == [("progress", "m", full)]


def test_start_ignores_a_labelled_job_with_a_foreign_name() -> None:
    """A Job someone else labelled with our uid is not taken for the run's Job (its name is not ours)."""

    class Labelled(RecordingKube):
        def find_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
            super().find_jobs(namespace, label_selector)
            return [{"metadata": {"name": "someone-elses-job"}}]

    class Incumbentless(RecordingRegistry):
        def incumbent(self, model: str) -> None:
            return None

    kube = Labelled()
    outcome = lifecycle.start(rtj({}), deps(kube, Incumbentless()))
    assert outcome.status["jobName"] == JOB
    assert ("create", NS, JOB) in kube.calls and all(c[2] != "someone-elses-job" for c in kube.calls)


# ---- kube.py: refused before any request --------------------------------------------------------------
@pytest.fixture
def kube() -> Iterator[tuple[Kube, list[Sent]]]:
    """The real client against a local server that records every request as sent."""
    with recording_server() as server:
        yield Kube(SETTINGS.model_copy(update={"kube_url": server.url})), server.sent


CALLS = {
    "get_job": lambda k, ns, n: k.get_job(ns, n),
    "patch_job": lambda k, ns, n: k.patch_job(ns, n, {"spec": {"suspend": True}}),
    "job_pods": lambda k, ns, n: k.job_pods(ns, n),
    "create": lambda k, ns, n: k.create({"kind": "Job", "metadata": {"namespace": ns, "name": n}}),
}


@pytest.mark.parametrize("call", list(CALLS), ids=list(CALLS))
@pytest.mark.parametrize("hostile", [h for _, h in HOSTILE_NAMES], ids=[i for i, _ in HOSTILE_NAMES])
def test_kube_refuses_a_hostile_name_before_any_request(kube: tuple[Kube, list[Any]], call: str, hostile: str) -> None:
    client, sent = kube
    with pytest.raises(UnsafeName, match="DNS-1123"):
        CALLS[call](client, NS, hostile)
    assert sent == []


@pytest.mark.parametrize("namespace", ["../kube-system", "a/b", "Kube-System", "a.b", "", "x" * 64, "ns%2F.."])
def test_kube_refuses_a_hostile_namespace(kube: tuple[Kube, list[Any]], namespace: str) -> None:
    client, sent = kube
    for call in [*CALLS.values(), lambda k, ns, n: k.find_jobs(ns, "a=b")]:
        with pytest.raises(UnsafeName, match="namespace"):
            call(client, namespace, JOB)
    assert sent == []


def test_kube_paths_of_valid_names_are_exact(kube: tuple[Kube, list[Any]]) -> None:
    client, sent = kube
    client.get_job("team-a", "run.v1-x")
    client.patch_job("team-a", "run.v1-x", {})
    client.job_pods("team-a", "run.v1-x")
    assert [(s.method, s.path) for s in sent] == [
        ("GET", "/apis/batch/v1/namespaces/team-a/jobs/run.v1-x"),
        ("PATCH", "/apis/batch/v1/namespaces/team-a/jobs/run.v1-x"),
        ("GET", "/api/v1/namespaces/team-a/pods"),
    ]
