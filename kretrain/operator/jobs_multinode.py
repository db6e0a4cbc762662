"""Pure builders for training across nodes: an Indexed Job plus a headless Service for torchrun's rendezvous."""

from __future__ import annotations

import copy
import re
from typing import Any

from kretrain.api import RetrainJobSpec
from kretrain.resolve import SpecError

RDZV_PORT = 29400
"""torchrun's c10d rendezvous port on pod 0 (the process group itself uses a port torchrun picks there)."""
SERVICE_PREFIX = "kt-"
"""Service names must start with a letter (DNS-1035); run ids start with the namespace, which may not."""
MAX_LABEL = 63
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def service_name(job: str) -> str:
    """The headless Service of a Job: `kt-<job>`, shortened to a DNS-1035 label (63) when longer."""
    from kretrain.operator.jobs import _shorten

    return _shorten(SERVICE_PREFIX + job, MAX_LABEL)


def nproc_per_node(spec: RetrainJobSpec) -> int:
    """Processes per pod: one per GPU, one on CPU."""
    return max(spec.resources.per_node_gpus, 1)


def rendezvous_endpoint(job: str, namespace: str) -> str:
    """Pod 0's stable DNS name (Indexed Job hostname `<job>-0` under the Service's subdomain) and port."""
    return f"{job}-0.{service_name(job)}.{namespace}.svc:{RDZV_PORT}"


def torchrun_command(spec: RetrainJobSpec, job: str, namespace: str, train_command: list[str]) -> list[str]:
    """`torchrun` over `resources.nodes` pods (c10d rendezvous on pod 0), running the pod's usual command."""
    return [
        "torchrun",
        "--nnodes", str(spec.resources.nodes),
        "--nproc-per-node", str(nproc_per_node(spec)),
        "--rdzv-backend", "c10d",
        "--rdzv-endpoint", rendezvous_endpoint(job, namespace),
        "--rdzv-id", job,
        "--max-restarts", "0",  # a rank that dies fails the whole group; the Job's backoffLimit retries it
        "--no-python",
        *train_command,
    ]  # fmt: skip


def check_names(job: str, nodes: int) -> None:
    """Pod hostnames are `<job>-<index>`: DNS labels of at most 63 characters; SpecError otherwise."""
    longest = f"{job}-{nodes - 1}"
    if len(longest) > MAX_LABEL or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", longest):
        raise SpecError(
            f"resources.nodes {nodes}: pod hostname {longest!r} is not a DNS label of at most {MAX_LABEL} "
            "characters (shorten the RetrainJob's name or namespace)"
        )


def build_service(job: str, namespace: str, object_labels: dict[str, str]) -> dict[str, Any]:
    """The headless Service that gives each of the Job's pods a DNS name (published before they are ready)."""
    name = service_name(job)
    if not _DNS1035.fullmatch(name):
        raise SpecError(f"Service name {name!r} is not a DNS-1035 label")
    selector = {k: v for k, v in object_labels.items() if k.startswith("kretrain.dev/")}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(object_labels)},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,  # rendezvous happens before any pod could be ready
            "selector": selector,
            "ports": [{"name": "rendezvous", "port": RDZV_PORT, "targetPort": RDZV_PORT, "protocol": "TCP"}],
        },
    }


def failure_policy(spec: RetrainJobSpec) -> dict[str, Any]:
    """How the Indexed Job treats a failed pod: a rank that dies fails every rank (torchrun, --max-restarts 0), so
    each index is retried `backoffLimit` times (the whole group restarts, resuming from the run's checkpoint) and the
    first index out of retries fails the Job at once (maxFailedIndexes 0: its other pods are stopped, never a
    partial run). A pod disrupted by the cluster (preemption, eviction, node drain) is retried without counting."""
    return {
        "backoffLimitPerIndex": spec.backoff_limit,
        "maxFailedIndexes": 0,
        "podFailurePolicy": {
            "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
        },
    }


def to_indexed(job: dict[str, Any], spec: RetrainJobSpec) -> dict[str, Any]:
    """The single-pod training Job made into an Indexed Job of `resources.nodes` pods running torchrun.

    Pure: returns a new object. `nodes: 1` never comes here (the Job stays exactly as it is).
    """
    nodes = spec.resources.nodes
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    check_names(name, nodes)
    out = copy.deepcopy(job)
    js = out["spec"]
    js.update(completionMode="Indexed", completions=nodes, parallelism=nodes, **failure_policy(spec))
    del js["backoffLimit"]  # the per-index limit is the run's retry budget (every index fails when one rank does)
    pod = js["template"]["spec"]
    pod["subdomain"] = service_name(name)
    [container] = pod["containers"]
    container["command"] = torchrun_command(spec, name, namespace, list(container["command"]))
    container["ports"] = [{"name": "rendezvous", "containerPort": RDZV_PORT, "protocol": "TCP"}]
    return out  # the GPU limit is already per pod (`gpus` equals `gpusPerNode`)
