"""The real operator against the emulator and SeaweedFS: a RetrainSchedule stamps RetrainJobs when complete eras land."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulator import path, sim
from emulator.operator import OperatorProcess
from emulator.scenario import Cluster, operator_for, running_cluster, wait_for
from kretrain.api import GROUP, SCHEDULE_PLURAL, VERSION
from kretrain.operator import kube as kube_mod
from kretrain.operator.settings import OperatorSettings

NS = "sched"
NS2 = "sched-restart"
NS3 = "sched-more"


def rts_path(ns: str | None = None, name: str | None = None, sub: str | None = None) -> str:
    return path(GROUP, VERSION, SCHEDULE_PLURAL, ns, name, sub)


@pytest.fixture(scope="module")
def cluster(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(s3, tmp_path_factory.mktemp("weights"), [NS, NS2, NS3]) as c:
        yield c


@pytest.fixture(scope="module")
def operator(cluster: Cluster, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    op = operator_for(cluster, s3, tmp_path_factory.mktemp("op") / "operator.log", [NS, NS2, NS3])
    op.env["KRETRAIN_SCHEDULE_TICK"] = "0.3"
    op.start().wait_ready()
    yield op
    op.stop()
    assert "Traceback" not in op.log.read_text(), op.tail(200)


def put(s3: Any, bucket: str, *keys: str) -> None:
    client = s3.client()
    for key in keys:
        client.put_object(Bucket=bucket, Key=f"set/{key}", Body=b"x")


def rtjs(cluster: Cluster, ns: str = NS) -> dict[str, dict[str, Any]]:
    items = cluster.client.list(path(GROUP, VERSION, "retrainjobs", ns))
    return {o["metadata"]["name"]: o for o in items}


def sched_status(cluster: Cluster, name: str, ns: str = NS) -> dict[str, Any]:
    return (cluster.client.get_or_none(rts_path(ns, name)) or {}).get("status") or {}


def events(cluster: Cluster, reason: str) -> list[str]:
    return [m for _, r, m in cluster.events(NS) if r == reason]


def kubectl(cluster: Cluster, home: Path, *args: str) -> str:
    """The real kubectl against the emulator."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": cluster.server.url}}],
        "users": [{"name": "tests", "user": {}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tests"}}],
        "current-context": "emulator",
    }
    (home / "kubeconfig").write_text(yaml.safe_dump(config))
    env = {**os.environ, "KUBECONFIG": str(home / "kubeconfig"), "HOME": str(home)}
    proc = subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_new_complete_era_starts_one_run_forbid_skips_and_history_prunes(
    cluster: Cluster, operator: OperatorProcess, s3: Any, tmp_path: Path
) -> None:
    bucket = s3.new_bucket("data")
    put(s3, bucket, "classes.yaml", "e1/images/a.jpg", "e1/_READY", "_scratch/x", "bad name/y")
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RetrainSchedule",
        "metadata": {"name": "nightly", "namespace": NS},
        "spec": {
            "template": {"model": "m-sched", "dataset": {"uri": f"s3://{bucket}/set"}, "resources": {"gpus": 0}},
            "trigger": {"newEra": {"pollSeconds": 1}},
            "failedRunsHistoryLimit": 0,
        },
    }
    manifest = tmp_path / "schedule.yaml"
    manifest.write_text(yaml.safe_dump(body))
    assert "created" in kubectl(cluster, tmp_path, "apply", "--validate=false", "-f", str(manifest))
    uid = cluster.client.get(rts_path(NS, "nightly"))["metadata"]["uid"]

    # The eras there first are the baseline; names that are not eras are reported.
    st = wait_for("the baseline", lambda: (s := sched_status(cluster, "nightly")).get("latestEra") and s, op=operator)
    assert st["eras"] == ["e1"] and st["lastDecision"]["reason"] == "Baseline"
    assert sorted(st["invalidNames"]) == ["_scratch", "bad name"]
    assert events(cluster, "InvalidEraNames")
    assert rtjs(cluster) == {}

    # A half-uploaded era (no marker) starts nothing.
    put(s3, bucket, "e2/images/a.jpg")
    wait_for("e2 pending", lambda: "e2" in sched_status(cluster, "nightly").get("pendingEras", []), op=operator)
    assert rtjs(cluster) == {}

    # The marker lands: exactly one RetrainJob, on every complete era, owned by the schedule.
    put(s3, bucket, "e2/_READY")
    run = wait_for("the e2 run", lambda: rtjs(cluster).get("nightly-e2"), op=operator)
    assert run["spec"]["dataset"]["eras"] == ["e1", "e2"] and run["spec"]["model"] == "m-sched"
    assert "baseWeights" not in run["spec"]["strategy"]  # first model of the line: the default start weights
    assert run["metadata"]["ownerReferences"][0]["uid"] == uid
    assert run["metadata"]["labels"]["kretrain.dev/schedule-uid"] == uid
    st = wait_for("the run in status", lambda: (s := sched_status(cluster, "nightly")).get("lastRun") and s)
    assert st["lastRun"] == "nightly-e2" and st["lastTrigger"] == "newEra" and st["latestEra"] == "e2"
    assert st["lastDecision"]["action"] == "Started" and "new era e2" in st["lastTriggerReason"]
    assert any("nightly-e2" in m for m in events(cluster, "RunStarted"))
    # The RetrainJob operator picks the run up (its Job is never run here): the run is active.
    wait_for("the run to be active", lambda: (rtjs(cluster)["nightly-e2"].get("status") or {}).get("jobName"))

    # Forbid: a new era while the run is active is skipped, and an Event says why.
    put(s3, bucket, "e3/images/a.jpg", "e3/_READY")
    st = wait_for(
        "the skip", lambda: (s := sched_status(cluster, "nightly"))["lastDecision"]["action"] == "Skipped" and s
    )
    assert st["lastDecision"]["reason"] == "ConcurrencyForbid" and "nightly-e2 is still active" in st["summary"]
    assert st["active"] == ["nightly-e2"]
    assert any("still active" in m for m in events(cluster, "RunSkipped"))
    assert set(rtjs(cluster)) == {"nightly-e2"}

    # The active run fails: the deferred era starts its run (the template's strategy as it is: the RetrainJob's
    # default starts a full retrain from the incumbent's weights), and the failed run is pruned (limit 0).
    sim.seed_incumbent(cluster.registry, "m-sched", "seed-1", {"e1": 0.5, "e2": 0.5}, cluster.tmp)
    e2_job = rtjs(cluster)["nightly-e2"]["status"]["jobName"]
    sim.fail_job(cluster.client, NS, e2_job, "BackoffLimitExceeded", "Job has reached the specified backoff limit", "")
    run3 = wait_for("the e3 run", lambda: rtjs(cluster).get("nightly-e3"), op=operator)
    assert run3["spec"]["dataset"]["eras"] == ["e1", "e2", "e3"]
    assert run3["spec"]["strategy"]["type"] == "full" and "baseWeights" not in run3["spec"]["strategy"]
    wait_for("e3 in status", lambda: sched_status(cluster, "nightly").get("lastRun") == "nightly-e3")
    wait_for("the prune", lambda: "nightly-e2" not in rtjs(cluster), op=operator)
    assert any("nightly-e2" in m for m in events(cluster, "RunPruned"))
    assert set(rtjs(cluster)) == {"nightly-e3"}

    # The e3 run trains (simulated: the trainer's report and weights written as a pod would) and is promoted.
    run_id = wait_for("the e3 Job", lambda: (rtjs(cluster)["nightly-e3"].get("status") or {}).get("runId"))
    scores = {"e1": 0.6, "e2": 0.6, "e3": 0.6}
    cluster.train("m-sched", run_id, scores, {"e1": 0.5, "e2": 0.5, "e3": 0.5})
    sim.complete_job(cluster.client, NS, rtjs(cluster)["nightly-e3"]["status"]["jobName"])
    wait_for("the promotion", lambda: (rtjs(cluster)["nightly-e3"].get("status") or {}).get("state") == "Promoted")

    # Suspended: a new era is recorded but starts nothing.
    cluster.client.patch(rts_path(NS, "nightly"), {"spec": {"suspend": True, "concurrencyPolicy": "Allow"}})
    put(s3, bucket, "e4/images/a.jpg", "e4/_READY")
    st = wait_for("the suspend skip", lambda: (s := sched_status(cluster, "nightly")).get("latestEra") == "e4" and s)
    assert st["lastDecision"]["reason"] == "Suspended"
    assert set(rtjs(cluster)) == {"nightly-e3"}

    # kubectl shows the schedule's last decision next to its runs.
    table = kubectl(cluster, tmp_path, "get", "rts,rtj", "-n", NS)
    print(table)
    row = next(line for line in table.splitlines() if line.startswith("retrainschedule.kretrain.dev/nightly"))
    assert "m-sched" in row and "true" in row and "e4" in row and "nightly-e3" in row and "Skipped" in row
    assert "retrainjob.kretrain.dev/nightly-e3" in table and "Promoted" in table


def test_restart_after_create_makes_no_duplicate(cluster: Cluster, operator: OperatorProcess, s3: Any) -> None:
    """The operator dies after creating a run but before recording it: the restarted one finds the run by its
    deterministic name (409 AlreadyExists), records it and creates nothing twice."""
    bucket = s3.new_bucket("data")
    put(s3, bucket, "e1/_READY")
    spec = {
        "template": {"model": "m-again", "dataset": {"uri": f"s3://{bucket}/set"}},
        "trigger": {"newEra": {"pollSeconds": 1}},
    }
    sched = cluster.client.create(
        rts_path(NS2),
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RetrainSchedule", "metadata": {"name": "again"}, "spec": spec},
    )
    wait_for("the baseline", lambda: sched_status(cluster, "again", NS2).get("latestEra") == "e1", op=operator)
    operator.stop(kill=True)
    try:
        put(s3, bucket, "e2/_READY")
        owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RetrainSchedule", "name": "again",
                 "uid": sched["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}  # fmt: skip
        run = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "RetrainJob",
            "metadata": {
                "name": "again-e2",
                "labels": {"kretrain.dev/schedule-uid": sched["metadata"]["uid"], "kretrain.dev/trigger": "newEra"},
                "ownerReferences": [owner],
            },
            "spec": {"model": "m-again", "dataset": {"uri": f"s3://{bucket}/set", "eras": ["e1", "e2"]}},
        }
        cluster.client.create(path(GROUP, VERSION, "retrainjobs", NS2), run)
    finally:
        operator.start().wait_ready()
    st = wait_for("the run recorded", lambda: (s := sched_status(cluster, "again", NS2)).get("lastRun") and s)
    assert st["lastRun"] == "again-e2" and "not created twice" in st["summary"]

    def added() -> int:
        log = cluster.server.emulator.logs[(GROUP, VERSION, "retrainjobs")]
        return sum(1 for _, e in log if e["type"] == "ADDED" and e["object"]["metadata"]["name"] == "again-e2")

    assert cluster.server.call(added) == 1 and set(rtjs(cluster, NS2)) == {"again-e2"}


def test_settled_era_and_cron_slot_start_runs(cluster: Cluster, operator: OperatorProcess, s3: Any) -> None:
    """`completeWhen: settled` counts an era once it stopped changing; a cron-only schedule retrains on the
    complete eras when a slot is due (the slot is made due by an earlier lastCronTime, as after a missed slot)."""
    bucket = s3.new_bucket("data")
    put(s3, bucket, "e1/images/a.jpg", "e1/labels/a.txt")
    template = {"model": "m-more", "dataset": {"uri": f"s3://{bucket}/set"}}
    new = lambda name, trigger: cluster.client.create(  # noqa: E731
        rts_path(NS3),
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RetrainSchedule", "metadata": {"name": name},
         "spec": {"template": template, "trigger": trigger}},
    )  # fmt: skip
    new("settled", {"newEra": {"pollSeconds": 1, "completeWhen": "settled", "settleSeconds": 2, "runExisting": True}})
    st = wait_for("e1 settling", lambda: (s := sched_status(cluster, "settled", NS3)).get("pendingEras") and s)
    assert st["pendingEras"] == ["e1"] and "settled-e1" not in rtjs(cluster, NS3)
    run = wait_for("the settled run", lambda: rtjs(cluster, NS3).get("settled-e1"), op=operator)
    assert run["spec"]["dataset"]["eras"] == ["e1"]

    put(s3, bucket, "e1/_READY")  # the cron-only schedule uses the default rule: the marker
    new("monthly", {"cron": {"schedule": "0 0 1 * *", "timeZone": "Europe/Berlin"}})
    st = wait_for("the next slot", lambda: (s := sched_status(cluster, "monthly", NS3)).get("nextScheduleTime") and s)
    assert st["lastDecision"]["reason"] == "WaitingForCron" and not st.get("eras")  # nothing listed before a slot
    cluster.client.patch(rts_path(NS3, "monthly", "status"), {"status": {"lastCronTime": "2020-01-01T00:00:00Z"}})
    runs = wait_for("the cron run", lambda: [r for n, r in rtjs(cluster, NS3).items() if n.startswith("monthly-cron-")])
    assert runs[0]["spec"]["dataset"]["eras"] == ["e1"] and len(runs) == 1
    st = wait_for("the cron status", lambda: (s := sched_status(cluster, "monthly", NS3)).get("lastTrigger") and s)
    assert st["lastTrigger"] == "cron" and st["lastRun"] == runs[0]["metadata"]["name"]
    assert st["lastCronTime"] > "2020-01-01T00:00:00Z"

    # Deleting a schedule deletes its runs (owner references); other schedules' runs stay.
    cluster.client.delete(rts_path(NS3, "monthly"))
    wait_for("the schedule gone", lambda: cluster.client.get_or_none(rts_path(NS3, "monthly")) is None, op=operator)
    wait_for("its runs gone", lambda: not [n for n in rtjs(cluster, NS3) if n.startswith("monthly-")], op=operator)
    assert "settled-e1" in rtjs(cluster, NS3)


def test_replace_deletes_the_active_run(cluster: Cluster, operator: OperatorProcess, s3: Any) -> None:
    bucket = s3.new_bucket("data")
    put(s3, bucket, "e1/_READY")
    spec = {
        "template": {"model": "m-replace", "dataset": {"uri": f"s3://{bucket}/set"}},
        "trigger": {"newEra": {"pollSeconds": 1}},
        "concurrencyPolicy": "Replace",
    }
    cluster.client.create(
        rts_path(NS3),
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RetrainSchedule", "metadata": {"name": "replace"}, "spec": spec},
    )
    wait_for("the baseline", lambda: sched_status(cluster, "replace", NS3).get("latestEra") == "e1", op=operator)
    put(s3, bucket, "e2/_READY")
    wait_for(
        "the e2 run active", lambda: ((rtjs(cluster, NS3).get("replace-e2") or {}).get("status") or {}).get("jobName")
    )
    put(s3, bucket, "e3/_READY")
    wait_for("the e3 run", lambda: "replace-e3" in rtjs(cluster, NS3), op=operator)
    wait_for("the e2 run deleted", lambda: "replace-e2" not in rtjs(cluster, NS3), op=operator)
    st = wait_for(
        "e3 in status", lambda: (s := sched_status(cluster, "replace", NS3)).get("lastRun") == "replace-e3" and s
    )
    assert st["lastDecision"]["reason"] == "ReplacedActiveRun" and "replacing replace-e2" in st["summary"]
    assert st["active"] == ["replace-e3"]


@pytest.mark.parametrize(
    ("name", "template", "reason", "says"),
    [
        (
            "other-endpoint",
            {"storage": {"endpoint": "http://127.0.0.1:9"}},
            "PollRefused",
            "is not an allowed S3 endpoint",
        ),
        (
            "other-image",
            {"resources": {"image": "evil.example/miner:latest"}},
            "InvalidRun",
            "spec.resources.image",
        ),
    ],
    ids=["endpoint-outside-policy", "image-outside-policy"],
)
def test_schedule_outside_the_operator_policy_starts_nothing(
    cluster: Cluster, operator: OperatorProcess, s3: Any, name: str, template: dict[str, Any], reason: str, says: str
) -> None:
    """The operator lists S3 with its own credentials only at endpoints its policy allows, and stamps no run the
    policy would refuse: the decision says why, with a Warning Event."""
    bucket = s3.new_bucket("data")
    put(s3, bucket, "e1/_READY")
    spec = {
        "template": {"model": "m-policy", "dataset": {"uri": f"s3://{bucket}/set"}, **template},
        "trigger": {"newEra": {"pollSeconds": 1, "runExisting": True}},
    }
    cluster.client.create(
        rts_path(NS3),
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RetrainSchedule", "metadata": {"name": name}, "spec": spec},
    )
    st = wait_for(
        "the refusal",
        lambda: (s := sched_status(cluster, name, NS3)).get("lastDecision", {}).get("reason") == reason and s,
    )
    assert st["lastDecision"]["action"] == "Error" and says in st["summary"], st["summary"]
    assert not [n for n in rtjs(cluster, NS3) if n.startswith(name)]
    assert any(says in m for t, _, m in cluster.events(NS3) if t == "Warning")


def test_every_api_call_is_declared_for_rbac(cluster: Cluster, operator: OperatorProcess) -> None:
    calls: dict[str, set[tuple[str, str]]] = cluster.server.call(lambda: dict(cluster.server.emulator.calls))
    made = calls.get("kretrain-operator", set()) | calls.get("kopf", set())
    assert ("create", "retrainjobs.kretrain.dev") in made and ("delete", "retrainjobs.kretrain.dev") in made
    assert ("patch", "retrainschedules.kretrain.dev/status") in made
    assert made <= kube_mod.API_CALLS, f"undeclared API calls: {sorted(made - kube_mod.API_CALLS)}"


class _Recorder(BaseHTTPRequestHandler):
    calls: list[tuple[str, str]] = []

    def _answer(self) -> None:
        self.calls.append((self.command, self.path.split("?")[0]))
        body = b'{"kind": "List", "items": [], "metadata": {}}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_runs_api_makes_exactly_the_schedule_calls() -> None:
    """Every RunsApi method on the wire maps to SCHEDULE_API_CALLS, and every entry there is made."""
    from kretrain.operator.schedule_kube import RunsApi

    calls: list[tuple[str, str]] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("R", (_Recorder,), {"calls": calls}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = RunsApi(OperatorSettings(kube_url=f"http://127.0.0.1:{server.server_port}"))
        api.list_runs("ns", "a=b")
        api.create_run({"metadata": {"name": "n", "namespace": "ns"}})
        api.delete_run("ns", "n")
        before = len(calls)
        for bad in ("../x", "a/b", "N", "x" * 64):
            with pytest.raises(kube_mod.UnsafeName):
                api.delete_run("ns", bad)
            with pytest.raises(kube_mod.UnsafeName):
                api.create_run({"metadata": {"name": bad, "namespace": "ns"}})
            with pytest.raises(kube_mod.UnsafeName):
                api.list_runs(bad, "a=b")
        assert len(calls) == before  # refused before any request
    finally:
        server.shutdown()
        server.server_close()
    verbs = {("GET", False): "list", ("POST", False): "create", ("DELETE", True): "delete"}
    recorded = {(verbs[(m, p.count("/") == 7)], "retrainjobs.kretrain.dev") for m, p in calls}
    assert all("/apis/kretrain.dev/v1alpha1/namespaces/ns/retrainjobs" in p for _, p in calls)
    assert recorded == kube_mod.SCHEDULE_API_CALLS
