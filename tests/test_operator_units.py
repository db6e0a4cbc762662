"""Pure parts of the operator, table-driven: Job states, messages, progress, conditions, spec errors, idempotent start."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kretrain.api import ModelRef, RetrainJobSpec, RunProgress
from kretrain.api.conditions import Cond, Reason, Status
from kretrain.operator import bounds, jobs, lifecycle
from kretrain.operator.kube import KubeError
from kretrain.operator.settings import OperatorSettings

SETTINGS = OperatorSettings(registry="s3://models/reg", metrics_port=0)
NOW = "2026-01-01T00:00:00Z"


def cond(type_: str, status: str = "True", reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        ({"status": {"conditions": [cond("Complete", reason="CompletionsReached")]}}, "succeeded"),
        ({"status": {"conditions": [cond("SuccessCriteriaMet")]}}, "succeeded"),
        ({"status": {"conditions": [cond("Failed", reason="DeadlineExceeded")]}}, "failed"),
        ({"status": {"conditions": [cond("FailureTarget", reason="BackoffLimitExceeded")]}}, "failed"),
        ({"status": {"conditions": [cond("Failed", status="False")]}, "spec": {}}, "running"),
        ({"spec": {"suspend": True}}, "suspended"),
        ({"status": {"conditions": [cond("Suspended")]}}, "suspended"),
        ({"spec": {"suspend": True}, "status": {"conditions": [cond("Complete")]}}, "succeeded"),
        ({}, "running"),
    ],
)
def test_job_state(job: dict[str, Any], expected: str) -> None:
    assert lifecycle.job_state(job)[0] == expected


def test_job_state_keeps_the_failure_reason() -> None:
    job = {"status": {"conditions": [cond("Failed", reason="DeadlineExceeded", message="Job was active longer")]}}
    assert lifecycle.job_state(job) == ("failed", "DeadlineExceeded", "Job was active longer")


def pod(created: str, **state: Any) -> dict[str, Any]:
    return {"metadata": {"creationTimestamp": created}, "status": {"containerStatuses": [{"name": "trainer", **state}]}}


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        ([], ""),
        ([pod("1", state={"terminated": {"message": " out of memory \n"}})], "out of memory"),
        (
            [pod("1", state={"terminated": {"message": "old"}}), pod("2", state={"terminated": {"message": "new"}})],
            "new",
        ),
        ([pod("1", lastState={"terminated": {"message": "previous try"}}, state={"running": {}})], "previous try"),
        (
            [pod("1", state={"terminated": {"reason": "OOMKilled", "exitCode": 137}})],
            "container trainer OOMKilled (exit code 137)",
        ),
        ([pod("1", state={"running": {}})], ""),
    ],
)
def test_termination_message(pods: list[dict[str, Any]], expected: str) -> None:
    assert lifecycle.termination_message(pods) == expected


@pytest.mark.parametrize(
    ("progress", "expected"),
    [
        ({"epoch": 3, "epochs": 10}, {"epoch": 3, "epochs": 10, "display": "3/10", "metrics": {}}),
        (
            {"epoch": 1, "epochs": 2, "etaSeconds": 12, "metrics": {"mAP50": 0.5}, "checkpointEpoch": 1},
            {"epoch": 1, "epochs": 2, "display": "1/2", "etaSeconds": 12.0, "metrics": {"mAP50": 0.5}},
        ),
        ({"epoch": 0, "epochs": 0}, {"epoch": 0, "epochs": 0, "display": "0/0", "metrics": {}}),
    ],
)
def test_progress_status(progress: dict[str, Any], expected: dict[str, Any]) -> None:
    # Non-numeric metrics and a record without epochs are refused by RunProgress (tests/security/).
    assert bounds.progress(RunProgress.model_validate(progress)).dump() == expected


def test_with_condition_keeps_transition_time_until_the_status_changes() -> None:
    conds = lifecycle.with_condition([], Cond.TRAINING, Status.TRUE, Reason.JOB_CREATED, "m", 1, "t1")
    same = lifecycle.with_condition(conds, Cond.TRAINING, Status.TRUE, Reason.JOB_RUNNING, "m2", 2, "t2")
    assert [c.dump() for c in same] == [{"type": "Training", "status": "True", "reason": "JobRunning", "message": "m2",
                                         "lastTransitionTime": "t1", "observedGeneration": 2}]  # fmt: skip
    flipped = lifecycle.with_condition(same, Cond.TRAINING, Status.FALSE, Reason.JOB_SUCCEEDED, "", 2, "t3")
    assert flipped[0].last_transition_time == "t3"
    both = lifecycle.with_condition(flipped, Cond.FAILED, Status.TRUE, "X", "", None, "t4")
    assert [c.type for c in both] == ["Training", "Failed"] and both[1].observed_generation is None


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"model": "m", "dataset": {"uri": "s3://data/x", "eras": ["a"], "newEras": 2}}, "spec.dataset: "),
        ({"model": "m", "dataset": {"uri": "s3://data/x", "eras": ["a"]}, "backoffLimit": -1}, "spec.backoffLimit: "),
        ({"model": "M!", "dataset": {"uri": "s3://data/x", "eras": ["a"]}}, "spec.model: "),
        ({"model": "m", "dataset": {"uri": "s3://data/x", "eras": ["a"]}, "bogus": 1}, "spec.bogus: "),
    ],
)
def test_spec_errors_name_the_field(spec: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as err:
        RetrainJobSpec.model_validate(spec)
    assert fragment in lifecycle.spec_error_message(err.value)


def test_settings_read_namespaces_from_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRETRAIN_NAMESPACES", "a, b,,c")
    monkeypatch.setenv("KRETRAIN_POLL_INTERVAL", "2.5")
    s = OperatorSettings()
    assert s.namespaces == ["a", "b", "c"] and s.poll_interval == 2.5


# ---- start(): idempotency against an in-memory stand-in of the two API calls it makes -------------------
class Jobs:
    """Records Jobs/ConfigMaps by name and answers like the API server would (409 on a second create)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.creates = 0

    def find_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        key, value = label_selector.split("=")
        return [
            o for (kind, _), o in self.objects.items() if kind == "Job" and o["metadata"]["labels"].get(key) == value
        ]

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get(("Job", name))

    def create(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        self.creates += 1
        key = (obj["kind"], obj["metadata"]["name"])
        if key in self.objects:
            return obj, False
        self.objects[key] = obj
        return obj, True

    def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        raise KubeError(500, "NotUsed", "")

    def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        return []


class Incumbent:
    def incumbent(self, model: str) -> ModelRef:
        return ModelRef(version="v7", uri="s3://models/reg/m/versions/v7/weights.pt", sha256="0" * 64)


def rtj(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "run", "namespace": "ns", "uid": "12345678-aaaa", "generation": 1},
        "spec": {"model": "m", "dataset": {"uri": "s3://data/x", "eras": ["a", "b"]}},
        "status": status or {},
    }


def adopt(objs: list[dict[str, Any]]) -> None:
    """What kopf.append_owner_reference does in the handlers: the RetrainJob of rtj() controls each object."""
    for obj in objs:
        obj["metadata"].setdefault("ownerReferences", []).append({"uid": rtj()["metadata"]["uid"], "controller": True})


def deps(kube: Jobs) -> lifecycle.Deps:
    return lifecycle.Deps(settings=SETTINGS, kube=kube, registry_for=lambda spec: Incumbent(), adopt=adopt,
                          now=lambda: NOW)  # fmt: skip


def test_start_creates_one_job_and_a_rerun_creates_none() -> None:
    kube = Jobs()
    first = lifecycle.start(rtj(), deps(kube))
    assert first.status["jobName"] == "ns-run-12345678" and first.status["state"] == "Training"
    assert first.status["incumbent"]["version"] == "v7"
    [job] = [o for (k, _), o in kube.objects.items() if k == "Job"]
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KRETRAIN_INCUMBENT_VERSION"] == "v7"
    # The handler runs again before its status was written (a crash): the Job is found, not re-created.
    again = lifecycle.start(rtj(), deps(kube))
    assert again.events[0].reason == Reason.JOB_FOUND and kube.creates == 2
    # ...and once the status is there, a resumed operator does nothing at all.
    assert lifecycle.start(rtj(first.status), deps(kube)) == lifecycle.Outcome()
    assert len([k for k in kube.objects if k[0] == "Job"]) == 1


def test_start_does_not_recreate_a_job_that_is_gone() -> None:
    kube = Jobs()
    outcome = lifecycle.start(rtj({"jobName": "ns-run-12345678", "runId": "ns-run-12345678"}), deps(kube))
    assert outcome == lifecycle.Outcome() and kube.creates == 0


@pytest.mark.parametrize("state", ["Promoted", "Rejected", "Failed"])
def test_terminal_runs_are_left_alone(state: str) -> None:
    kube = Jobs()
    assert lifecycle.start(rtj({"state": state}), deps(kube)) == lifecycle.Outcome()
    assert lifecycle.poll(rtj({"state": state, "jobName": "j", "runId": "r"}), deps(kube)) == lifecycle.Outcome()
    assert kube.creates == 0


def test_invalid_spec_is_a_permanent_failed_condition() -> None:
    body = rtj()
    body["spec"]["dataset"]["newEras"] = 3
    outcome = lifecycle.start(body, deps(Jobs()))
    assert outcome.status["state"] == "Failed" and outcome.permanent_error
    [failed] = outcome.status["conditions"]
    assert failed["reason"] == Reason.INVALID_SPEC and "spec.dataset" in failed["message"]
    assert outcome.status["observedGeneration"] == 1


def test_job_names_stay_deterministic() -> None:
    assert jobs.job_name(jobs.run_id("ns", "run", "12345678-aaaa")) == "ns-run-12345678"
