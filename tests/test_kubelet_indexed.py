"""The kubelet harness as the Job controller for Indexed Jobs: the decisions (table) and two small Jobs on the emulator
(all indexes at once, each with its index and the Service's DNS names resolving here; one index failing fails all)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator import Client, job_path, path
from emulator.server import EmulatorServer
from harness import jobcontrol, poddns
from harness.jobcontrol import Progress
from harness.kubelet import Kubelet
from kretrain.api import RetrainJobSpec
from kretrain.operator import jobs_multinode

NS = "indexed"
DISRUPTED = [{"type": "DisruptionTarget", "status": "True"}]
MULTINODE = {  # what jobs_multinode sets for nodes: 2, backoffLimit: 1
    "completionMode": "Indexed", "completions": 2, "parallelism": 2,
    **jobs_multinode.failure_policy(RetrainJobSpec.model_validate(
        {"model": "m", "dataset": {"uri": "s3://data/d", "eras": ["e"]}, "backoffLimit": 1})),
}  # fmt: skip
FAIL_ON_3 = {
    "rules": [{"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [3]}}]
}


@pytest.mark.parametrize(
    ("spec", "failed", "code", "conditions", "restart", "job_failed"),
    [
        # the multi-node Job: one retry per index, then the Job fails at once (maxFailedIndexes 0)
        (MULTINODE, [], 1, [], True, None),
        (MULTINODE, [1], 1, [], False, "MaxFailedIndexesExceeded"),
        (MULTINODE, [1, 1], 1, DISRUPTED, True, None),  # a disrupted pod does not count
        (MULTINODE, [0], 1, [], True, None),  # index 1's first failure: its own budget
        # a plain Job: backoffLimit over all pods
        ({"backoffLimit": 1}, [0], 1, [], False, "BackoffLimitExceeded"),
        ({"backoffLimit": 1}, [], 1, [], True, None),
        ({}, [0] * 5, 1, [], True, None),  # default backoffLimit 6
        ({}, [0] * 6, 1, [], False, "BackoffLimitExceeded"),
        ({"podFailurePolicy": FAIL_ON_3}, [], 3, [], False, "PodFailurePolicy"),
        ({"podFailurePolicy": FAIL_ON_3}, [], 2, [], True, None),
        # per index without maxFailedIndexes: the Job fails once every index has ended
        ({"completionMode": "Indexed", "completions": 2, "backoffLimitPerIndex": 0}, [], 1, [], False, None),
    ],
    ids=["first-failure-retried", "index-out-of-retries-fails-job", "disruption-ignored", "own-budget-per-index",
         "backoff-limit", "within-backoff-limit", "default-limit-within", "default-limit-exceeded",
         "failjob-rule", "failjob-rule-other-code", "per-index-no-max"],
)  # fmt: skip
def test_what_follows_a_failed_pod(
    spec: dict[str, Any], failed: list[int], code: int, conditions: list[dict[str, Any]],
    restart: bool, job_failed: str | None,
) -> None:  # fmt: skip
    progress = Progress()
    for index in failed:  # the failures before this one
        jobcontrol.pod_failed(spec, progress, index, "Count")
    index = 1
    verdict = jobcontrol.pod_failed(spec, progress, index, jobcontrol.rule_action(spec, "trainer", code, conditions))
    assert verdict.restart is restart
    assert (verdict.job_failed or (None,))[0] == job_failed


def test_failed_indexes_settle_the_job_when_the_rest_ended() -> None:
    spec = {"completionMode": "Indexed", "completions": 3, "backoffLimitPerIndex": 0}
    progress = Progress(succeeded={0})
    jobcontrol.pod_failed(spec, progress, 1, "Count")
    assert jobcontrol.settled(spec, progress) is None  # index 2 still runs
    progress.succeeded.add(2)
    assert jobcontrol.settled(spec, progress) == ("FailedIndexes", "Job has failed indexes")
    assert not jobcontrol.complete(spec, progress)
    assert jobcontrol.status_counts(spec, progress, 0) == {
        "active": 0, "succeeded": 2, "failed": 1, "completedIndexes": "0,2", "failedIndexes": "1",
    }  # fmt: skip


@pytest.mark.parametrize(("indexes", "text"), [(set(), ""), ({0}, "0"), ({0, 1, 2, 5}, "0-2,5"), ({1, 3, 4}, "1,3-4")])
def test_index_ranges(indexes: set[int], text: str) -> None:
    assert jobcontrol.index_ranges(indexes) == text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("j-0.kt-j.ns.svc:29400", "127.0.0.1:5555"),
        ("--x=j-1.kt-j.ns.svc.cluster.local:29400", "--x=127.0.0.1:5555"),
        ("j-0.kt-j", "127.0.0.1"),
        ("j-0.kt-j.ns.svc:8080", "127.0.0.1:8080"),  # not a declared containerPort: unchanged
        ("other-0.kt-j.ns.svc:29400", "other-0.kt-j.ns.svc:29400"),  # another Job's pods: not this Service
        ("j-0.kt-jx.ns.svc:29400", "j-0.kt-jx.ns.svc:29400"),
    ],
)
def test_pod_dns_names_resolve_here(value: str, expected: str) -> None:
    assert poddns.resolver("j", "ns", "kt-j", {29400: 5555})(value) == expected


def job(name: str, script: str, **spec: Any) -> dict[str, Any]:
    """An Indexed Job of two pods running `python -c script` (its command names pod 0 by its DNS name)."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "completionMode": "Indexed", "completions": 2, "parallelism": 2, **spec,
            "template": {"spec": {
                "restartPolicy": "Never", "subdomain": f"kt-{name}",
                "containers": [{
                    "name": "trainer", "image": "x",
                    "command": [sys.executable, "-c", script, f"{name}-0.kt-{name}.{NS}.svc:29400"],
                    "ports": [{"containerPort": 29400}],
                }],
            }},
        },
    }  # fmt: skip


WRITE_INDEX = """import os, sys, time
open(os.environ["OUT"] + "/" + os.environ["JOB_COMPLETION_INDEX"], "w").write(os.environ["HOSTNAME"] + " " + sys.argv[1])
time.sleep(1.0)  # both indexes run at the same time
"""
INDEX_1_FAILS = """import os, sys, time
if os.environ["JOB_COMPLETION_INDEX"] == "1":
    sys.exit(1)
time.sleep(60)  # index 0 would wait for its peer: stopped when the Job fails
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, Kubelet, Path]]:
    out = tmp_path_factory.mktemp("out")
    out.chmod(0o777)
    with EmulatorServer() as server:
        client = Client(server.url)
        client.ensure_namespace(NS)
        kubelet = Kubelet(client, tmp_path_factory.mktemp("node"), extra_env={"OUT": str(out)}, poll=0.05,
                          enforce=False).start()  # fmt: skip
        try:
            yield client, kubelet, out
        finally:
            kubelet.stop()


def _finished(client: Client, name: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(job_path(NS, name)).get("status") or {}
        if any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in status.get("conditions", [])):
            return dict(status)
        time.sleep(0.05)
    raise AssertionError(f"Job {name} did not finish")


def test_all_indexes_run_at_once_and_the_job_succeeds_when_all_did(cluster: tuple[Client, Kubelet, Path]) -> None:
    client, kubelet, out = cluster
    t0 = time.monotonic()
    client.create(job_path(NS), job("both", WRITE_INDEX))
    status = _finished(client, "both")
    assert time.monotonic() - t0 < 1.9  # two pods sleeping 1 s each ran side by side
    assert status["succeeded"] == 2 and status["completedIndexes"] == "0-1"
    assert [c["type"] for c in status["conditions"] if c["status"] == "True"][-1] == "Complete"
    [state] = [s for s in kubelet.jobs.values() if s.name == "both"]
    port = state.ports[29400]
    assert port != 29400
    for index in (0, 1):  # hostname <job>-<index>; pod 0's Service name is this host, at the Job's own port
        assert (out / str(index)).read_text() == f"both-{index} 127.0.0.1:{port}"
    pods = client.list(path("", "v1", "pods", NS))
    assert sorted(p["spec"]["hostname"] for p in pods if p["metadata"]["labels"]["job-name"] == "both") == [
        "both-0",
        "both-1",
    ]


def test_one_index_out_of_retries_fails_the_job_and_stops_the_others(cluster: tuple[Client, Kubelet, Path]) -> None:
    client, kubelet, _ = cluster
    t0 = time.monotonic()
    client.create(job_path(NS), job("broken", INDEX_1_FAILS, **MULTINODE))
    status = _finished(client, "broken")
    assert time.monotonic() - t0 < 30
    failed = [c for c in status["conditions"] if c["type"] == "Failed"]
    assert failed and failed[0]["reason"] == "MaxFailedIndexesExceeded", status
    assert status["failedIndexes"] == "1" and status["failed"] == 2 and status["succeeded"] == 0  # index 1 twice
    [state] = [s for s in kubelet.jobs.values() if s.name == "broken"]
    assert state.running == {} and state.last[0].killed_for == "MaxFailedIndexesExceeded"
