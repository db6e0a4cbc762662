"""resources.nodes > 1: the Indexed Job + headless Service the operator builds for torchrun across pods."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pydantic
import pytest

from kretrain.api import RetrainJobSpec
from kretrain.operator import jobs, jobs_multinode
from kretrain.operator.settings import OperatorSettings
from kretrain.resolve import SpecError

SETTINGS = OperatorSettings(
    registry="s3://models/registry", s3_endpoint="http://s3.local:8333", trainer_image="trainer:test", metrics_port=0
)
NAME, NS = "ns-rtj-0123abcd", "ns"
TRAIN = ["kretrain", "train", "--spec", "/etc/kretrain/spec.json"]


def make_spec(**resources: Any) -> RetrainJobSpec:
    return RetrainJobSpec.model_validate(
        {"model": "traffic", "dataset": {"uri": "s3://data/traffic", "eras": ["q1"]}, "resources": resources}
    )


def build(spec: RetrainJobSpec, name: str = NAME) -> dict[str, Any]:
    resolved = jobs.resolve_spec(spec, SETTINGS)
    return jobs.build_job(
        name=name, namespace=NS, run=name, spec=resolved, incumbent_version=None,
        object_labels=jobs.labels("uid-1", name), settings=SETTINGS,
    )  # fmt: skip


def test_one_node_is_the_single_pod_job_unchanged() -> None:
    job = build(make_spec(gpus=2, nodes=1))
    assert job == build(make_spec(gpus=2))
    js = job["spec"]
    assert "completionMode" not in js and js["completions"] == js["parallelism"] == 1
    assert "subdomain" not in js["template"]["spec"]
    assert js["template"]["spec"]["containers"][0]["command"] == TRAIN


@pytest.mark.parametrize(
    ("resources", "nproc", "gpu_limit"),
    [
        ({"nodes": 2, "gpus": 1}, 1, "1"),
        ({"nodes": 4, "gpusPerNode": 8}, 8, "8"),
        ({"nodes": 3, "gpus": 8, "gpusPerNode": 8}, 8, "8"),
        ({"nodes": 2, "gpusPerNode": 0}, 1, None),
        ({"nodes": 2, "gpus": 0}, 1, None),
    ],
    ids=["2x1gpu", "4x8gpu-per-node", "gpus-equal-gpusPerNode", "2x-cpu-gpusPerNode-0", "2x-cpu-gpus-0"],
)
def test_nodes_make_an_indexed_job_running_torchrun(
    resources: dict[str, Any], nproc: int, gpu_limit: str | None
) -> None:
    spec = make_spec(**resources)
    job = build(spec)
    nodes = resources["nodes"]
    js = job["spec"]
    assert (js["completionMode"], js["completions"], js["parallelism"]) == ("Indexed", nodes, nodes)
    pod = js["template"]["spec"]
    svc = jobs_multinode.build_service(NAME, NS, jobs.labels("uid-1", NAME))
    assert pod["subdomain"] == svc["metadata"]["name"] == f"kt-{NAME}"
    [c] = pod["containers"]
    assert c["command"] == [
        "torchrun", "--nnodes", str(nodes), "--nproc-per-node", str(nproc), "--rdzv-backend", "c10d",
        "--rdzv-endpoint", f"{NAME}-0.kt-{NAME}.{NS}.svc:29400", "--rdzv-id", NAME, "--max-restarts", "0",
        "--no-python", *TRAIN,
    ]  # fmt: skip
    assert c["resources"]["limits"].get("nvidia.com/gpu") == gpu_limit
    # the headless Service selects exactly this Job's pods and publishes them before they are ready
    labels = js["template"]["metadata"]["labels"]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] and svc["spec"]["selector"].items() <= labels.items()
    kubernetes_validate.validate(job, "1.32", strict=True)
    kubernetes_validate.validate(svc, "1.32", strict=True)


def test_the_single_pod_job_is_otherwise_untouched() -> None:
    """Everything but the Indexed fields, the failure policy, the command and the port is the single-pod Job's."""
    one, two = build(make_spec(gpus=1)), build(make_spec(gpus=1, nodes=2))
    for job in (one, two):
        js = job["spec"]
        for key in (
            "completionMode",
            "completions",
            "parallelism",
            "backoffLimit",
            "backoffLimitPerIndex",
            "maxFailedIndexes",
            "podFailurePolicy",
        ):
            js.pop(key, None)
        js["template"]["spec"].pop("subdomain", None)
        c = js["template"]["spec"]["containers"][0]
        c.pop("command")
        c.pop("ports", None)
    assert one == two


@pytest.mark.parametrize("backoff", [0, 2, 5])
def test_a_rank_that_dies_retries_the_group_within_the_runs_backoff_limit(backoff: int) -> None:
    """Every index gets the run's backoffLimit (one rank failing fails all of them); the first index out of retries
    fails the Job (maxFailedIndexes 0); disruptions by the cluster do not count; no Job-wide backoffLimit."""
    spec = RetrainJobSpec.model_validate(
        {"model": "traffic", "dataset": {"uri": "s3://data/traffic", "eras": ["q1"]}, "resources": {"nodes": 2},
         "backoffLimit": backoff}
    )  # fmt: skip
    js = build(spec)["spec"]
    assert (js["backoffLimitPerIndex"], js["maxFailedIndexes"]) == (backoff, 0) and "backoffLimit" not in js
    assert js["podFailurePolicy"] == {
        "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
    }
    assert build(make_spec())["spec"]["backoffLimit"] == 2 and "podFailurePolicy" not in build(make_spec())["spec"]


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"nodes": 0}, "greater than or equal to 1"),
        ({"nodes": 65}, "less than or equal to 64"),
        ({"nodes": 2, "gpus": 2, "gpusPerNode": 4}, "gpus (2) and gpusPerNode (4) disagree"),
        ({"gpusPerNode": 2}, "gpusPerNode applies only with nodes > 1"),
        ({"nodes": 2, "gpusPerNode": 17}, "less than or equal to 16"),
    ],
    ids=["zero-nodes", "too-many-nodes", "gpus-disagree", "gpusPerNode-on-one-node", "too-many-gpus"],
)
def test_bad_resources_are_refused_naming_the_field(resources: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=re.escape(message)):
        make_spec(**resources)


@pytest.mark.parametrize(
    ("name", "nodes"),
    [("a" * 62, 2), ("a" * 61, 11), ("ns.dotted-rtj-0123abcd", 2)],
    ids=["hostname-over-63", "two-digit-index-over-63", "dot-in-hostname"],
)
def test_names_that_cannot_be_pod_hostnames_are_refused(name: str, nodes: int) -> None:
    with pytest.raises(SpecError, match=r"resources.nodes .*not a DNS label"):
        build(make_spec(nodes=nodes), name=name)


def test_longest_allowed_name_validates() -> None:
    name = "a" * 61  # hostname a..a-1 is 63 characters
    job = build(make_spec(nodes=2), name=name)
    svc = jobs_multinode.build_service(name, NS, jobs.labels("uid-1", name))
    assert (
        len(svc["metadata"]["name"]) <= 63 and job["spec"]["template"]["spec"]["subdomain"] == svc["metadata"]["name"]
    )
    kubernetes_validate.validate(job, "1.32", strict=True)
    kubernetes_validate.validate(svc, "1.32", strict=True)


@pytest.mark.parametrize(("nodes", "services"), [(1, 0), (2, 1)], ids=["one-node-no-service", "two-nodes-service"])
def test_run_objects_on_the_emulator(nodes: int, services: int) -> None:
    """create_run_objects with the operator's own client: the Service (nodes > 1) exists before the Job; twice
    is still one of each (409 is 'already there')."""
    from emulator.client import Client, path
    from emulator.server import EmulatorServer
    from kretrain.operator.kube import Kube
    from kretrain.operator.steps import Deps, create_run_objects

    with EmulatorServer() as server:
        client = Client(server.url)
        client.ensure_namespace(NS)
        resolved = jobs.resolve_spec(make_spec(nodes=nodes, gpus=0), SETTINGS)
        adopted: list[str] = []
        deps = Deps(settings=SETTINGS, kube=Kube(OperatorSettings(kube_url=server.url)), registry_for=lambda s: None,  # type: ignore[arg-type,return-value]
                    adopt=lambda objs: adopted.extend(o["kind"] for o in objs))  # fmt: skip
        assert create_run_objects(NS, "uid-1", NAME, NAME, resolved, None, deps) is True
        assert create_run_objects(NS, "uid-1", NAME, NAME, resolved, None, deps) is False
        svcs = client.list(path("", "v1", "services", NS))
        [job] = client.list(path("batch", "v1", "jobs", NS))
        assert len(svcs) == services and len(client.list(path("", "v1", "configmaps", NS))) == 1
        assert adopted[: 2 + services] == ["ConfigMap", *["Service"] * services, "Job"]
        if services:
            assert job["spec"]["template"]["spec"]["subdomain"] == svcs[0]["metadata"]["name"]
            assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == nodes
