"""Kueue admission: queued Jobs are built suspended and labelled, and the real operator (against the emulator, with a
Kueue stand-in that admits and preempts by patching spec.suspend) shows Queued until admission and never unsuspends
a queued Job itself."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from emulator import job_path, rtj_path, sim
from emulator.client import Client
from emulator.operator import OperatorProcess
from emulator.scenario import Cluster, conditions, operator_for, running_cluster, wait_for
from kretrain.api import RetrainJobSpec
from kretrain.api.conditions import Cond, Reason, Status
from kretrain.operator import jobs, kueue
from kretrain.operator.kube import USER_AGENT
from kretrain.operator.settings import OperatorSettings

NAMESPACES = ["queued", "held", "fallback"]
QUEUE = kueue.LABEL_QUEUE
HELD = kueue.ANNOTATION_HELD
STANDIN = "kueue-standin"


# ---- the pure pieces ---------------------------------------------------------------------------------------
def _spec(**resources: Any) -> RetrainJobSpec:
    raw = {
        "model": "m",
        "dataset": {"uri": "s3://data/set", "eras": ["e1", "e2"]},
        "resources": {"gpus": 1, **resources},
        "storage": {"registry": "s3://reg/x", "credentialsSecret": "kretrain-s3", "region": "us-east-1"},
    }
    spec = RetrainJobSpec.model_validate(raw)
    return spec


def _job(spec: RetrainJobSpec, suspend: bool, default_queue: str | None) -> dict[str, Any]:
    settings = OperatorSettings(default_queue_name=default_queue)
    spec = jobs.fill_defaults(spec.model_copy(update={"suspend": suspend}), settings)
    return jobs.build_job(
        name="r",
        namespace="ns",
        run="r",
        spec=spec,
        incumbent_version=None,
        object_labels=jobs.labels("u", "r"),
        settings=settings,
    )


BUILD_CASES = [
    # id, resources, spec.suspend, operator default, (queue label, held annotation, Job suspend)
    ("no-queue", {}, False, None, (None, None, False)),
    ("no-queue-suspended", {}, True, None, (None, None, True)),
    ("spec-queue", {"queueName": "team-a"}, False, None, ("team-a", None, True)),
    ("default-queue", {}, False, "shared", ("shared", None, True)),
    ("spec-wins-over-default", {"queueName": "team-a"}, False, "shared", ("team-a", None, True)),
    ("queue-held-by-spec-suspend", {"queueName": "team-a"}, True, None, (None, "team-a", True)),
    ("multi-node-queued", {"queueName": "team-a", "nodes": 2, "gpusPerNode": 1}, False, None, ("team-a", None, True)),
]


@pytest.mark.parametrize(("resources", "suspend", "default", "want"), [c[1:] for c in BUILD_CASES],
                         ids=[c[0] for c in BUILD_CASES])  # fmt: skip
def test_build_job_queue(resources: dict[str, Any], suspend: bool, default: str | None, want: tuple[Any, ...]) -> None:
    job = _job(_spec(**resources), suspend, default)
    labels, annotations = job["metadata"]["labels"], job["metadata"].get("annotations") or {}
    assert (labels.get(QUEUE), annotations.get(HELD), job["spec"]["suspend"]) == want
    assert QUEUE not in job["spec"]["template"]["metadata"]["labels"]  # Kueue reads the Job's label


@pytest.mark.parametrize("bad", ["Team", "a_b", "-a", "a" * 64], ids=["upper", "underscore", "dash", "too-long"])
def test_queue_name_is_validated(bad: str) -> None:
    with pytest.raises(ValueError, match=r"queue_?[nN]ame"):
        _spec(queueName=bad)


def _meta(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"labels": labels or {}, "annotations": annotations or {}}, "spec": {"suspend": True}}


PATCH_CASES = [
    ("plain-suspend", _meta(), True, {"spec": {"suspend": True}}),
    ("plain-resume", _meta(), False, {"spec": {"suspend": False}}),
    (
        "queued-suspend-holds",
        _meta({QUEUE: "q"}),
        True,
        {"metadata": {"labels": {QUEUE: None}, "annotations": {HELD: "q"}}, "spec": {"suspend": True}},
    ),
    ("queued-resume-left-to-kueue", _meta({QUEUE: "q"}), False, None),
    (
        "held-resume-releases-to-queue",
        _meta(annotations={HELD: "q"}),
        False,
        {"metadata": {"labels": {QUEUE: "q"}, "annotations": {HELD: None}}},
    ),
    ("held-suspend-again", _meta(annotations={HELD: "q"}), True, {"spec": {"suspend": True}}),
]


@pytest.mark.parametrize(("job", "suspend", "want"), [c[1:] for c in PATCH_CASES], ids=[c[0] for c in PATCH_CASES])
def test_suspend_patch(job: dict[str, Any], suspend: bool, want: dict[str, Any] | None) -> None:
    patch = kueue.suspend_patch(job, suspend)
    assert patch == want
    assert ((patch or {}).get("spec") or {}).get("suspend") is not False or not (kueue.queued(job) or kueue.held(job))


# ---- against the emulator ------------------------------------------------------------------------------------
class KueueStandIn:
    """What Kueue does to a batch/v1 Job: admit a suspended Job carrying the queue label (after `delay`) by patching
    `suspend: false` while its namespace is open, and preempt an admitted one by patching `suspend: true`."""

    def __init__(self, url: str, namespaces: list[str], delay: float = 0.3) -> None:
        self.client = Client(url, user_agent=STANDIN)
        self.namespaces, self.delay = namespaces, delay
        self.open: set[str] = set()
        self.admitted: list[str] = []
        self._seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> KueueStandIn:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for ns in self.namespaces:
                for job in self.client.list(job_path(ns)):
                    self._consider(ns, job)

    def _consider(self, ns: str, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        key = f"{ns}/{name}"
        if not (job["spec"].get("suspend") and kueue.queued(job) and ns in self.open):
            self._seen.pop(key, None)
            return
        first = self._seen.setdefault(key, time.monotonic())
        if time.monotonic() - first >= self.delay:
            self.client.patch(job_path(ns, name), {"spec": {"suspend": False}})
            self.admitted.append(key)
            self._seen.pop(key, None)

    def preempt(self, ns: str, name: str) -> None:
        self.client.patch(job_path(ns, name), {"spec": {"suspend": True}})


@pytest.fixture(scope="module")
def cluster(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(s3, tmp_path_factory.mktemp("weights"), NAMESPACES) as c:
        yield c


@pytest.fixture(scope="module")
def standin(cluster: Cluster) -> Iterator[KueueStandIn]:
    with KueueStandIn(cluster.server.url, NAMESPACES) as k:
        yield k


@pytest.fixture(scope="module")
def operator(cluster: Cluster, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    op = operator_for(cluster, s3, tmp_path_factory.mktemp("op") / "operator.log", NAMESPACES)
    op.start().wait_ready()
    yield op
    op.stop()
    assert "Traceback" not in op.log.read_text(), op.tail(200)


def _state(cluster: Cluster, op: OperatorProcess, ns: str, want: str) -> dict[str, Any]:
    status: dict[str, Any] = wait_for(
        f"{ns}/run to be {want}", lambda: (s := cluster.status(ns, "run")).get("state") == want and s, op=op
    )
    return status


def _the_job(cluster: Cluster, ns: str) -> dict[str, Any]:
    [job] = cluster.jobs(ns)
    return job


def _stays_suspended(cluster: Cluster, ns: str, state: str, seconds: float = 1.5) -> None:
    """Over several operator polls and stand-in rounds the Job stays suspended and the state stays `state`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert _the_job(cluster, ns)["spec"]["suspend"] is True
        assert cluster.status(ns, "run")["state"] == state
        time.sleep(0.1)


def _operator_job_patches(cluster: Cluster, ns: str) -> list[Any]:
    patches: list[tuple[str, str, str, Any]] = cluster.server.call(lambda: list(cluster.server.emulator.patches))
    agent = USER_AGENT.split("/")[0]
    return [body for who, res, key, body in patches if who == agent and res == "jobs" and key.startswith(f"{ns}/")]


def _never_unsuspended(cluster: Cluster, ns: str) -> list[Any]:
    mine = _operator_job_patches(cluster, ns)
    assert not [p for p in mine if ((p or {}).get("spec") or {}).get("suspend") is False], mine
    return mine


def test_queued_until_admitted_preempted_and_suspended_on_top(
    cluster: Cluster, operator: OperatorProcess, standin: KueueStandIn
) -> None:
    ns = "queued"
    cluster.create_rtj(ns, "run", "m-queued", resources={"gpus": 1, "queueName": "team-a"})
    status = _state(cluster, operator, ns, "Queued")
    queued = conditions(status)[Cond.QUEUED]
    assert (queued["status"], queued["reason"]) == (Status.TRUE, Reason.WAITING_FOR_ADMISSION)
    job = _the_job(cluster, ns)
    assert kueue.queued(job) == "team-a" and job["spec"]["suspend"] is True
    _stays_suspended(cluster, ns, "Queued")  # the queue is closed: nobody unsuspends it

    standin.open.add(ns)  # Kueue admits it
    status = _state(cluster, operator, ns, "Training")
    assert _the_job(cluster, ns)["spec"]["suspend"] is False
    admitted = conditions(status)[Cond.QUEUED]
    assert (admitted["status"], admitted["reason"]) == (Status.FALSE, Reason.ADMITTED)

    standin.open.discard(ns)  # Kueue preempts it: suspended again, waiting for a new admission
    standin.preempt(ns, status["jobName"])
    status = _state(cluster, operator, ns, "Queued")
    again = conditions(status)[Cond.QUEUED]
    assert (again["status"], again["reason"]) == (Status.TRUE, Reason.PREEMPTED)
    standin.open.add(ns)
    _state(cluster, operator, ns, "Training")

    cluster.client.patch(rtj_path(ns, "run"), {"spec": {"suspend": True}})  # spec.suspend on top of the queue
    status = _state(cluster, operator, ns, "Suspended")
    job = _the_job(cluster, ns)
    assert job["spec"]["suspend"] is True and kueue.queued(job) is None and kueue.held(job) == "team-a"
    _stays_suspended(cluster, ns, "Suspended")  # the queue is open, but Kueue does not see a held Job

    cluster.client.patch(rtj_path(ns, "run"), {"spec": {"suspend": False}})  # back to the queue, admission is Kueue's
    _state(cluster, operator, ns, "Training")
    job = _the_job(cluster, ns)
    assert kueue.queued(job) == "team-a" and kueue.held(job) is None and job["spec"]["suspend"] is False
    assert standin.admitted.count(f"{ns}/{status['jobName']}") == 3
    assert _never_unsuspended(cluster, ns), "the operator sent no Job patch at all: the hold was not exercised"


def test_created_held_when_spec_suspend_is_true(
    cluster: Cluster, operator: OperatorProcess, standin: KueueStandIn
) -> None:
    ns = "held"
    standin.open.add(ns)
    cluster.create_rtj(ns, "run", "m-held", suspend=True, resources={"gpus": 1, "queueName": "team-b"})
    _state(cluster, operator, ns, "Suspended")
    job = _the_job(cluster, ns)
    assert kueue.queued(job) is None and kueue.held(job) == "team-b"
    _stays_suspended(cluster, ns, "Suspended")
    cluster.client.patch(rtj_path(ns, "run"), {"spec": {"suspend": False}})
    status = _state(cluster, operator, ns, "Training")
    assert conditions(status)[Cond.QUEUED]["reason"] == Reason.ADMITTED
    assert [a for a in standin.admitted if a.startswith(f"{ns}/")] == [f"{ns}/{status['jobName']}"]
    _never_unsuspended(cluster, ns)


def test_the_full_retrain_after_a_rejected_incremental_run_waits_in_the_queue_too(
    cluster: Cluster, operator: OperatorProcess, standin: KueueStandIn
) -> None:
    ns, model, incumbent = "fallback", "m-q-fallback", {"e1": 0.50, "e2": 0.50, "e3": 0.40}
    sim.seed_incumbent(cluster.registry, model, "seed-1", incumbent, cluster.tmp)
    strategy = {"type": "incremental", "fallbackToFull": True, "replay": {"fraction": 0.2}}
    cluster.create_rtj(ns, "run", model, strategy=strategy, resources={"gpus": 1, "queueName": "team-c"})
    standin.open.add(ns)
    first = _state(cluster, operator, ns, "Training")
    standin.open.discard(ns)
    cluster.train(model, first["runId"], {"e1": 0.30, "e2": 0.60, "e3": 0.70}, incumbent)
    sim.complete_job(cluster.client, ns, first["jobName"])
    status = wait_for("the fallback Job", lambda: (s := cluster.status(ns, "run")).get("fallback") and s, op=operator)
    assert status["state"] == "Queued", status
    assert conditions(status)[Cond.QUEUED]["reason"] == Reason.WAITING_FOR_ADMISSION  # a new Job, not a preemption
    full = {j["metadata"]["name"]: j for j in cluster.jobs(ns)}[status["jobName"]]
    assert kueue.queued(full) == "team-c" and full["spec"]["suspend"] is True
    _stays_suspended_job(cluster, ns, status["jobName"])
    standin.open.add(ns)
    assert _state(cluster, operator, ns, "Training")["jobName"] == status["jobName"]
    _never_unsuspended(cluster, ns)


def _stays_suspended_job(cluster: Cluster, ns: str, name: str, seconds: float = 1.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert cluster.client.get(job_path(ns, name))["spec"]["suspend"] is True
        assert cluster.status(ns, "run")["state"] == "Queued"
        time.sleep(0.1)
