"""409 answers told apart (found by the chaos run): AlreadyExists means the object is there, Conflict means retry."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from emulator.recorder import Recorder, recording_server
from kretrain.operator.kube import Kube, KubeError
from kretrain.operator.settings import OperatorSettings
from kretrain.operator.steps import transient, waiting

NS = "team-a"
JOB = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "j", "namespace": NS},
    "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}], "restartPolicy": "Never"}}},
}


def status_doc(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message,
            "code": code}  # fmt: skip


@pytest.fixture
def recorder() -> Iterator[tuple[Kube, Recorder]]:
    with recording_server() as rec:
        yield Kube(OperatorSettings(kube_url=rec.url)), rec


@pytest.mark.parametrize(
    ("reason", "created", "retryable"),
    [("AlreadyExists", False, None), ("Conflict", None, True), ("", None, True)],  # "": the HTTP phrase, Conflict
    ids=["already-exists", "conflict", "no-reason"],
)
def test_only_already_exists_means_the_job_is_there(
    recorder: tuple[Kube, Recorder], reason: str, created: bool | None, retryable: bool | None
) -> None:
    """A create answered 409 Conflict created nothing: taking it for AlreadyExists left a RetrainJob without a Job
    (the chaos run's fault proxy answered a Job's POST with 409 Conflict; the run ended Failed: JobLost)."""
    kube, rec = recorder
    rec.status, rec.reply = 409, status_doc(409, reason, "the object has been modified; please try again")
    if created is not None:
        assert kube.create(JOB) == (JOB, created)
        return
    with pytest.raises(KubeError) as caught:
        kube.create(JOB)
    assert caught.value.status == 409 and caught.value.retryable is retryable
    assert len(rec.sent) == 1  # one try per call: the lifecycle decides when to try again


def test_a_conflict_is_retried_soon_other_409s_after_the_long_delay() -> None:
    conflict, other = KubeError(409, "Conflict", "modified"), KubeError(409, "AlreadyExists", "exists")
    assert transient(conflict) and not transient(other)
    assert waiting("cannot create Job j", conflict).retry_delay is None  # KRETRAIN_RETRY_DELAY
    assert waiting("cannot create Job j", other).retry_delay == 60.0


@pytest.mark.parametrize(("reason", "exists"), [("AlreadyExists", True), ("Conflict", False)])
def test_only_already_exists_means_the_scheduled_run_is_there(reason: str, exists: bool) -> None:
    """The schedule's create_run: a 409 Conflict created no RetrainJob (the trigger must be retried, not skipped)."""
    from kretrain.operator.schedule_kube import RunsApi

    run = {"apiVersion": "kretrain.dev/v1alpha1", "kind": "RetrainJob", "metadata": {"name": "n", "namespace": NS}}
    with recording_server() as rec:
        rec.status, rec.reply = 409, status_doc(409, reason, "m")
        api = RunsApi(OperatorSettings(kube_url=rec.url))
        if exists:
            assert api.create_run(run) is False
        else:
            with pytest.raises(KubeError) as caught:
                api.create_run(run)
            assert caught.value.retryable
