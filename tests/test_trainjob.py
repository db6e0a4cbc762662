"""resources.nodes > 1 on Kubeflow Trainer: the TrainJob the operator builds (validated against Kubeflow Trainer's own
TrainJob CRD schema, tests/data/kubeflow-trainer), the same pod contract as the Indexed Job, and the lifecycle
creating and following it on the emulator (conditions Complete / Failed) instead of the Job."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from emulator.client import Client, path
from emulator.server import EmulatorServer
from kretrain.api import RetrainJobSpec
from kretrain.api.conditions import Reason
from kretrain.operator import jobs, lifecycle, trainjob
from kretrain.operator.kube import Kube
from kretrain.operator.settings import OperatorSettings
from kretrain.operator.trainjob_kube import TrainJobs
from kretrain.resolve import SpecError

CRD_FILE = Path(__file__).parent / "data" / "kubeflow-trainer" / "trainer.kubeflow.org_trainjobs.yaml"
CRD = yaml.load(CRD_FILE.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 450 kB: libyaml, not 7 s
NS, NAME = "team", "team-rtj-0123abcd"
BASE = {"registry": "s3://models/registry", "s3_endpoint": "http://s3.local:8333", "trainer_image": "trainer:t",
        "metrics_port": 0, "allowed_toleration_keys": ["nvidia.com/gpu"], "trainer_service_account": "trainer"}  # fmt: skip
SETTINGS = OperatorSettings(**BASE, multinode="auto")  # type: ignore[arg-type]


def _strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists properties (the API server would prune them
    silently: a typo in the builder would vanish instead of failing)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        open_ended = "additionalProperties" in schema or schema.get("x-kubernetes-preserve-unknown-fields")
        if "properties" in schema and not open_ended:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


[_VERSION] = [v for v in CRD["spec"]["versions"] if v["name"] == "v1alpha1"]
VALIDATOR = jsonschema.Draft4Validator(_strict(_VERSION["schema"]["openAPIV3Schema"]))


def validate(tj: dict[str, Any]) -> None:
    """Kubeflow Trainer's schema, and its two CEL rules on the name (jsonschema does not run CEL)."""
    VALIDATOR.validate(tj)
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", tj["metadata"]["name"]) and len(tj["metadata"]["name"]) <= 63


def make_spec(**fields: Any) -> RetrainJobSpec:
    doc = {"model": "traffic", "dataset": {"uri": "s3://data/traffic", "eras": ["q1"]}, **fields}
    return RetrainJobSpec.model_validate(doc)


def built(spec: RetrainJobSpec, name: str = NAME) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the Indexed Job, the TrainJob built from it)."""
    resolved = jobs.resolve_spec(spec, SETTINGS)
    job = jobs.build_job(name=name, namespace=NS, run=name, spec=resolved, incumbent_version="v3",
                         object_labels=jobs.labels("uid-1", name), settings=SETTINGS)  # fmt: skip
    return job, trainjob.build(job, resolved)


CASES = {
    "2x1gpu": {"resources": {"nodes": 2, "gpus": 1}},
    "4x8gpu": {"resources": {"nodes": 4, "gpusPerNode": 8}, "activeDeadlineSeconds": 3600},
    "cpu": {"resources": {"nodes": 2, "gpus": 0, "cpu": "4", "memory": "8Gi"}},
    "scheduling": {"resources": {"nodes": 3, "gpus": 1, "nodeSelector": {"pool": "a100"},
                                 "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}},
    "queued": {"resources": {"nodes": 2, "gpus": 1, "queueName": "team-a"}},
    "suspended": {"resources": {"nodes": 2, "gpus": 1}, "suspend": True},
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_the_trainjob_validates_against_the_kubeflow_trainer_crd(case: str) -> None:
    spec = make_spec(**CASES[case])
    job, tj = built(spec)
    validate(tj)
    assert (tj["apiVersion"], tj["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert tj["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                                        "name": "torch-distributed"}  # fmt: skip
    t = tj["spec"]["trainer"]
    assert t["numNodes"] == spec.resources.nodes and t["numProcPerNode"] == max(spec.resources.per_node_gpus, 1)
    assert tj["spec"]["suspend"] is job["spec"]["suspend"]
    assert tj["spec"].get("activeDeadlineSeconds") == job["spec"].get("activeDeadlineSeconds")
    assert tj["metadata"]["labels"] == job["metadata"]["labels"]  # the uid label it is found by; Kueue's queue


def _node_patch(tj: dict[str, Any]) -> dict[str, Any]:
    [patch] = tj["spec"]["runtimePatches"]
    [rj] = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert rj["name"] == "node" and patch["manager"] == "kretrain.dev/operator"
    return dict(rj["template"]["spec"]["template"]["spec"])


def test_the_trainjob_carries_the_jobs_pod_contract() -> None:
    """Image, env, resources per node, volumes and mounts, both securityContexts, scheduling and ServiceAccount are
    the Indexed Job's; torchrun gets its rendezvous from Kubeflow's PET_* variables instead of the Job's flags."""
    job, tj = built(make_spec(**CASES["scheduling"]))
    pod = job["spec"]["template"]["spec"]
    [c] = pod["containers"]
    t, node = tj["spec"]["trainer"], _node_patch(tj)
    assert t["image"] == c["image"] and t["env"] == c["env"] and t["resourcesPerNode"] == c["resources"]
    assert t["command"] == ["torchrun", "--max-restarts", "0", "--no-python", "kretrain", "train", "--spec",
                            "/etc/kretrain/spec.json"]  # fmt: skip
    assert not [e for e in t["env"] if e["name"].startswith("PET_")]  # reserved for Kubeflow's torch plugin
    no_token = {"name": trainjob.NO_TOKEN_VOLUME, "emptyDir": {"sizeLimit": "1Mi"}}
    assert node["volumes"] == [*pod["volumes"], no_token] and node["securityContext"] == pod["securityContext"]
    token_mount = {"name": trainjob.NO_TOKEN_VOLUME, "mountPath": trainjob.SA_TOKEN_DIR, "readOnly": True}
    assert node["containers"] == [
        {"name": "node", "volumeMounts": [*c["volumeMounts"], token_mount], "securityContext": c["securityContext"]}
    ]
    assert pod["automountServiceAccountToken"] is False  # the Job's way; the TrainJob's is the empty mount above
    for key in ("nodeSelector", "tolerations", "serviceAccountName"):
        assert node[key] == pod[key]
    env = {e["name"] for e in t["env"]}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "KRETRAIN_RUN_ID", "KRETRAIN_INCUMBENT_VERSION"} <= env


@pytest.mark.parametrize(
    ("fields", "name", "message"),
    [
        ({"resources": {"nodes": 2, "priorityClassName": "high"}}, NAME, "priorityClassName cannot be set"),
        ({"resources": {"nodes": 2}}, "a" * 55, "longer than 63"),
    ],
    ids=["priority-class", "hostname-too-long"],
)
def test_what_a_trainjob_cannot_carry_is_refused(fields: dict[str, Any], name: str, message: str) -> None:
    settings = OperatorSettings(**{**BASE, "allowed_priority_classes": ["high"]})  # type: ignore[arg-type]
    resolved = jobs.resolve_spec(make_spec(**fields), settings)
    job = jobs.build_job(name=name, namespace=NS, run=name, spec=resolved, incumbent_version=None,
                         object_labels=jobs.labels("u", name), settings=settings)  # fmt: skip
    with pytest.raises(SpecError, match=message):
        trainjob.build(job, resolved)


@pytest.mark.parametrize(
    ("job", "expected"), [("team-rtj-0123abcd", "team-rtj-0123abcd"), ("7team-rtj-0123abcd", "kt-7team-rtj-0123abcd")]
)
def test_trainjob_names_start_with_a_letter(job: str, expected: str) -> None:
    assert trainjob.name(job) == expected


@pytest.mark.parametrize(
    ("nodes", "mode", "crd", "expected"),
    [(1, "trainjob", True, False), (2, "indexedjob", True, False), (2, "trainjob", False, True),
     (2, "auto", True, True), (2, "auto", False, False)],
    ids=["one-node-never", "indexedjob", "trainjob-even-without-crd", "auto-with-crd", "auto-without-crd"],
)  # fmt: skip
def test_when_a_run_uses_a_trainjob(nodes: int, mode: str, crd: bool, expected: bool) -> None:
    assert trainjob.wanted(make_spec(resources={"nodes": nodes}), mode, crd) is expected


# ---- the lifecycle on the emulator -----------------------------------------------------------------------------
class NoReport:
    def incumbent(self, model: str) -> None:
        return None

    def read_run_report(self, model: str, run: str, *, stage_key: Any = None) -> None:
        return None

    def read_progress(self, model: str, run: str) -> None:
        return None


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer() as srv:
        Client(srv.url).ensure_namespace(NS)
        yield srv


def install_crd(srv: EmulatorServer) -> None:
    Client(srv.url).create(path("apiextensions.k8s.io", "v1", "customresourcedefinitions"), copy.deepcopy(CRD))


def deps_for(srv: EmulatorServer, mode: str) -> lifecycle.Deps:
    settings = OperatorSettings(**BASE, multinode=mode, kube_url=srv.url)  # type: ignore[arg-type]
    return lifecycle.Deps(settings=settings, kube=Kube(settings), registry_for=lambda s: NoReport(),  # type: ignore[arg-type,return-value]
                          adopt=adopt)  # fmt: skip


def adopt(objs: list[dict[str, Any]]) -> None:
    """What kopf.append_owner_reference does in the handlers: rtj()'s RetrainJob controls each object it makes."""
    meta = rtj()["metadata"]
    ref = {"apiVersion": "kretrain.dev/v1alpha1", "kind": "RetrainJob", "name": meta["name"], "uid": meta["uid"],
           "controller": True, "blockOwnerDeletion": True}  # fmt: skip
    for obj in objs:
        obj["metadata"].setdefault("ownerReferences", []).append(ref)


def rtj(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "rtj", "namespace": NS, "uid": "0123abcd-ffff", "generation": 1},
        "spec": {"model": "traffic", "dataset": {"uri": "s3://data/traffic", "eras": ["q1"]},
                 "resources": {"nodes": 2, "gpus": 1}},
        "status": status or {},
    }  # fmt: skip


TJ_PATH = ("trainer.kubeflow.org", "v1alpha1", "trainjobs")


def test_auto_with_the_crd_creates_a_trainjob_and_no_job(server: EmulatorServer) -> None:
    install_crd(server)
    client, deps = Client(server.url), deps_for(server, "auto")
    first = lifecycle.start(rtj(), deps)
    assert first.status["state"] == "Training", first
    [tj] = client.list(path(*TJ_PATH, NS))
    validate({k: v for k, v in tj.items() if k != "status"} | {"metadata": {"name": tj["metadata"]["name"]}})
    assert tj["metadata"]["name"] == first.status["jobName"] == NAME
    assert client.list(path("batch", "v1", "jobs", NS)) == [] and client.list(path("", "v1", "services", NS)) == []
    assert len(client.list(path("", "v1", "configmaps", NS))) == 1
    again = lifecycle.start(rtj(), deps)  # a rerun before the status was written finds it
    assert again.events[0].reason == Reason.JOB_FOUND and len(client.list(path(*TJ_PATH, NS))) == 1


def test_auto_without_the_crd_creates_the_indexed_job(server: EmulatorServer) -> None:
    client = Client(server.url)
    assert lifecycle.start(rtj(), deps_for(server, "auto")).status["state"] == "Training"
    [job] = client.list(path("batch", "v1", "jobs", NS))
    assert job["spec"]["completionMode"] == "Indexed" and len(client.list(path("", "v1", "services", NS))) == 1


def test_trainjob_mode_without_kubeflow_fails_the_run_saying_so(server: EmulatorServer) -> None:
    out = lifecycle.start(rtj(), deps_for(server, "trainjob"))
    assert out.status["state"] == "Failed", out
    assert "serves no TrainJobs (is Kubeflow Trainer installed?)" in str(out.status["conditions"])


@pytest.mark.parametrize(
    ("condition", "reason", "text"),
    [({"type": "Failed", "reason": "DeadlineExceeded", "message": "too long"}, "DeadlineExceeded", "rank 1 died"),
     ({"type": "Complete", "reason": "JobSetCompleted", "message": ""}, Reason.NO_REPORT, "report.json is missing")],
    ids=["failed", "complete"],
)  # fmt: skip
def test_poll_follows_the_trainjob_conditions(
    server: EmulatorServer, condition: dict[str, Any], reason: str, text: str
) -> None:
    install_crd(server)
    client, deps = Client(server.url), deps_for(server, "auto")
    started = lifecycle.start(rtj(), deps).status
    tj_name = started["jobName"]
    running = lifecycle.poll(rtj(started), deps)
    assert running.status.get("state", "Training") == "Training"
    client.create(path("", "v1", "pods", NS), {  # the JobSet's pod of node 1, as the Job controller labels it
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{tj_name}-node-0-1-abcde", "labels": {"job-name": trainjob.child_job(tj_name)}},
        "spec": {"containers": [{"name": "node", "image": "x"}]},
    })  # fmt: skip
    client.patch(path("", "v1", "pods", NS, f"{tj_name}-node-0-1-abcde", "status"), {"status": {
        "containerStatuses": [{"name": "node", "state": {"terminated": {"exitCode": 1, "message": "rank 1 died"}}}]}})  # fmt: skip
    client.patch(path(*TJ_PATH, NS, tj_name, "status"),
                 {"status": {"conditions": [{**condition, "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})  # fmt: skip
    done = lifecycle.poll(rtj(started), deps)
    assert done.status["state"] == "Failed"
    failed = [c for c in done.status["conditions"] if c["type"] == "Failed"]
    assert failed[0]["reason"] == reason and text in failed[0]["message"], failed


def test_suspend_patches_the_trainjob(server: EmulatorServer) -> None:
    install_crd(server)
    client, deps = Client(server.url), deps_for(server, "auto")
    started = lifecycle.start(rtj(), deps).status
    out = lifecycle.set_suspend(rtj(started), True, deps)
    assert out.status["state"] == "Suspended"
    assert client.get(path(*TJ_PATH, NS, started["jobName"]))["spec"]["suspend"] is True


def test_trainjob_calls_are_the_listed_ones(server: EmulatorServer) -> None:
    """Every TrainJobs method against the emulator: the calls recorded are TRAINJOB_API_CALLS (the chart grants)."""
    from kretrain.operator.trainjob_kube import TRAINJOB_API_CALLS

    install_crd(server)
    api = TrainJobs(Kube(OperatorSettings(kube_url=server.url)))
    _, tj = built(make_spec(resources={"nodes": 2}))
    server.call(lambda: server.emulator.calls.clear())
    assert api.crd_exists() and api.create(tj)[1] and not api.create(tj)[1]
    assert api.get(NS, tj["metadata"]["name"]) is not None and api.get(NS, "absent") is None
    assert len(api.find(NS, jobs.selector("uid-1"))) == 1
    api.patch(NS, tj["metadata"]["name"], {"spec": {"suspend": True}})
    made = server.call(lambda: set().union(*server.emulator.calls.values()))
    assert made == TRAINJOB_API_CALLS, sorted(made ^ TRAINJOB_API_CALLS)


@pytest.mark.parametrize(
    ("reason", "created_before"), [("AlreadyExists", True), ("Conflict", False)], ids=["already-exists", "conflict"]
)
def test_only_409_already_exists_means_the_trainjob_is_there(reason: str, created_before: bool) -> None:
    """A 409 Conflict (a webhook or proxy refusing the POST) created nothing: a retryable KubeError, not 'found'."""
    from emulator.recorder import recording_server
    from kretrain.operator.kube import KubeError

    _, tj = built(make_spec(resources={"nodes": 2}))
    with recording_server() as rec:
        rec.status = 409
        rec.reply = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": "m",
                     "code": 409}  # fmt: skip
        api = TrainJobs(Kube(OperatorSettings(kube_url=rec.url)))
        if created_before:
            assert api.create(tj) == (tj, False)
        else:
            with pytest.raises(KubeError) as caught:
                api.create(tj)
            assert caught.value.retryable and caught.value.reason == "Conflict"
