"""Pure builder of a Kubeflow Trainer TrainJob (trainer.kubeflow.org/v1alpha1, torch runtime) for resources.nodes > 1.

The TrainJob carries the same pod contract as the Indexed Job (kretrain.operator.jobs_multinode): image, command,
env (S3 credentials from the Secret, the contract's variables), resources per node, volumes and mounts, the pod's
and the container's securityContext, node selector, tolerations and ServiceAccount. Kubeflow Trainer's torch plugin
sets PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_ADDR and PET_MASTER_PORT (pod 0 through the
JobSet's headless Service, port 29500), which `torchrun` reads: the command names no rendezvous of its own. What
the TrainJob API cannot set (runtimePatches allow only some pod fields) is the runtime's: restartPolicy, the
termination message path (the default /dev/termination-log, as the pod contract has it), automountServiceAccountToken
(an empty volume at the token's path keeps the token out of the `node` container: SA_TOKEN_DIR) and
enableServiceLinks, the group's failure policy (the runtime's JobSet). A priority class cannot be set here.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from kretrain.api import RetrainJobSpec
from kretrain.operator import jobs_multinode
from kretrain.resolve import SpecError

API_VERSION = "trainer.kubeflow.org/v1alpha1"
KIND = "TrainJob"
GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
CRD_NAME = f"{PLURAL}.{GROUP}"
RUNTIME = "torch-distributed"
"""The ClusterTrainingRuntime Kubeflow Trainer installs for PyTorch (torchrun); its trainer Job and container are
both named `node`."""
NODE = "node"
MANAGER = "kretrain.dev/operator"
"""Who owns the TrainJob's runtime patch (runtimePatches are keyed by manager)."""
MODES = ("indexedjob", "trainjob", "auto")
SA_TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
"""Where Kubernetes mounts the ServiceAccount token: the runtime patch cannot set automountServiceAccountToken,
so an empty read-only volume is mounted there instead (the ServiceAccount admission plugin then mounts no token
into that container: "existing mounts at the default mount path prevent mounting of the API token")."""
NO_TOKEN_VOLUME = "no-sa-token"
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def name(job: str) -> str:
    """The TrainJob of a run's Job name: the same name when it is a DNS-1035 label (TrainJob names must start with a
    letter), else `kt-<job>` shortened to 63."""
    if _DNS1035.fullmatch(job):
        return job
    return jobs_multinode.service_name(job)


def child_job(trainjob: str) -> str:
    """The batch/v1 Job the JobSet makes for the runtime's `node` replicated Job (its pods carry job-name=this)."""
    return f"{trainjob}-{NODE}-0"


def wanted(spec: RetrainJobSpec, mode: str, crd_exists: bool) -> bool:
    """Whether a run trains through a TrainJob: nodes > 1 and mode `trainjob`, or `auto` with the CRD installed."""
    if spec.resources.nodes <= 1 or mode == "indexedjob":
        return False
    return mode == "trainjob" or crd_exists


def _train_command(container: dict[str, Any]) -> list[str]:
    """The pod's own command inside torchrun's (`torchrun ... --no-python <command>`)."""
    command: list[str] = container["command"]
    return command[command.index("--no-python") + 1 :] if "--no-python" in command else list(command)


def build(job: dict[str, Any], spec: RetrainJobSpec) -> dict[str, Any]:
    """The TrainJob equivalent of the multi-node Job `job` (jobs.build_job's answer for nodes > 1). Pure.

    Raises SpecError for what a TrainJob cannot carry (a priority class) or names its pods cannot have.
    """
    meta, js = job["metadata"], job["spec"]
    pod = copy.deepcopy(js["template"]["spec"])
    [container] = pod["containers"]
    nodes = spec.resources.nodes
    tj_name = name(meta["name"])
    longest = f"{child_job(tj_name)}-{nodes - 1}"  # the JobSet's pod hostname
    if len(longest) > jobs_multinode.MAX_LABEL:
        raise SpecError(f"resources.nodes {nodes}: pod hostname {longest!r} is longer than 63 characters")
    if pod.get("priorityClassName"):
        raise SpecError("resources.priorityClassName cannot be set on a Kubeflow Trainer TrainJob (set it in the "
                        f"ClusterTrainingRuntime {RUNTIME}, or run this operator with KRETRAIN_MULTINODE=indexedjob)")  # fmt: skip
    labels = dict(js["template"]["metadata"]["labels"])
    no_token = {"name": NO_TOKEN_VOLUME, "mountPath": SA_TOKEN_DIR, "readOnly": True}  # as the Job's automount: false
    node_patch: dict[str, Any] = {
        "securityContext": pod["securityContext"],
        "volumes": [*pod["volumes"], {"name": NO_TOKEN_VOLUME, "emptyDir": {"sizeLimit": "1Mi"}}],
        "containers": [
            {
                "name": NODE,
                "volumeMounts": [*container["volumeMounts"], no_token],
                "securityContext": container["securityContext"],
            }
        ],
    }
    for key in ("nodeSelector", "tolerations", "serviceAccountName"):
        if key in pod:
            node_patch[key] = pod[key]
    trainer = {
        "image": container["image"],
        "command": ["torchrun", "--max-restarts", "0", "--no-python", *_train_command(container)],
        "env": container["env"],
        "numNodes": nodes,
        "numProcPerNode": jobs_multinode.nproc_per_node(spec),
        "resourcesPerNode": container["resources"],
    }
    tj_spec: dict[str, Any] = {
        "runtimeRef": {"apiGroup": GROUP, "kind": "ClusterTrainingRuntime", "name": RUNTIME},
        "suspend": bool(js.get("suspend")),
        "trainer": trainer,
        "runtimePatches": [
            {
                "manager": MANAGER,
                "trainingRuntimeSpec": {
                    "template": {
                        "spec": {
                            "replicatedJobs": [
                                {
                                    "name": NODE,
                                    "template": {
                                        "metadata": {"labels": labels},
                                        "spec": {"template": {"metadata": {"labels": labels}, "spec": node_patch}},
                                    },
                                }
                            ]
                        }
                    }
                },
            }
        ],
    }
    if js.get("activeDeadlineSeconds") is not None:
        tj_spec["activeDeadlineSeconds"] = js["activeDeadlineSeconds"]
    metadata = {key: copy.deepcopy(meta[key]) for key in ("labels", "annotations") if key in meta}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": tj_name, "namespace": meta["namespace"], **metadata},
        "spec": tj_spec,
    }
