"""A stand-in for Kubeflow Trainer's controller on the API emulator (not Kubeflow itself): it turns each TrainJob on
the torch-distributed runtime into the Indexed Job that runtime's JobSet makes, and mirrors that Job's end onto
the TrainJob's conditions, so that the kubelet harness can run a TrainJob's pods.

What it reproduces, from kubeflow/trainer v2.3.0 (pkg/runtime/framework/plugins/torch/torch.go and the
torch-distributed ClusterTrainingRuntime): the replicated Job `node` (child Job `<trainjob>-node-0`,
`numNodes` pods, Indexed, `subdomain: <trainjob>`), the container `node` with the TrainJob's image, command, env
and resourcesPerNode, the runtimePatches' volumes, mounts, securityContexts and scheduling fields, and the torch
plugin's env: PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK (the completion index), PET_MASTER_ADDR
`<trainjob>-node-0-0.<trainjob>` and PET_MASTER_PORT 29500. Not reproduced: JobSet's failure policy (the child
Job fails at the first failed pod), initializers, status.jobsStatus.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from emulator import ApiStatusError, Client, job_path, path

GROUP_VERSION = ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
MASTER_PORT = 29500
INDEX_FIELD = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def child_job(tj: dict[str, Any]) -> dict[str, Any]:
    """The batch/v1 Job Kubeflow's torch-distributed runtime runs for a TrainJob."""
    name, ns = tj["metadata"]["name"], tj["metadata"]["namespace"]
    trainer, nodes = tj["spec"]["trainer"], int(tj["spec"]["trainer"]["numNodes"])
    [patch] = [p for p in tj["spec"].get("runtimePatches") or [] if "trainingRuntimeSpec" in p]
    [rjob] = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert rjob["name"] == "node", rjob["name"]
    pod_patch = dict(rjob["template"]["spec"]["template"]["spec"])
    [container_patch] = pod_patch.pop("containers")
    assert container_patch["name"] == "node"
    env = [
        *trainer.get("env", []),
        {"name": "PET_NNODES", "value": str(nodes)},
        {"name": "PET_NPROC_PER_NODE", "value": str(trainer.get("numProcPerNode", "auto"))},
        {"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": INDEX_FIELD}}},
        {"name": "PET_MASTER_ADDR", "value": f"{name}-node-0-0.{name}"},
        {"name": "PET_MASTER_PORT", "value": str(MASTER_PORT)},
    ]
    container = {
        "name": "node", "image": trainer["image"], "command": trainer["command"], "env": env,
        "resources": trainer.get("resourcesPerNode", {}), "ports": [{"containerPort": MASTER_PORT}],
        **{k: v for k, v in container_patch.items() if k != "name"},
    }  # fmt: skip
    labels = {**rjob["template"]["spec"]["template"].get("metadata", {}).get("labels", {}),
              "jobset.sigs.k8s.io/jobset-name": name}  # fmt: skip
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"{name}-node-0", "namespace": ns, "labels": labels},
        "spec": {
            "completionMode": "Indexed", "completions": nodes, "parallelism": nodes, "backoffLimit": 0,
            "suspend": bool(tj["spec"].get("suspend")),
            "template": {"metadata": {"labels": labels},
                         "spec": {"restartPolicy": "Never", "subdomain": name, "containers": [container], **pod_patch}},
        },
    }  # fmt: skip


class KubeflowStandIn:
    """Polls TrainJobs; creates each one's child Job once; copies the Job's Complete/Failed onto the TrainJob."""

    def __init__(self, client: Client, poll: float = 0.3) -> None:
        self.client, self.poll = client, poll
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kubeflow-stand-in", daemon=True)

    def __enter__(self) -> KubeflowStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                for tj in self.client.list(path(*GROUP_VERSION)):
                    self._sync(tj)
            except Exception as exc:  # keep going; the test reads self.errors
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.poll)

    def _sync(self, tj: dict[str, Any]) -> None:
        ns, name = tj["metadata"]["namespace"], tj["metadata"]["name"]
        if any(c.get("type") in ("Complete", "Failed") for c in (tj.get("status") or {}).get("conditions") or []):
            return
        try:
            job = self.client.get(job_path(ns, f"{name}-node-0"))
        except ApiStatusError as exc:
            if exc.code != 404:
                raise
            self.client.create(job_path(ns), child_job(tj))
            return
        for cond in (job.get("status") or {}).get("conditions") or []:
            if cond["type"] in ("Complete", "Failed") and cond["status"] == "True":
                now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                reason = "JobSetCompleted" if cond["type"] == "Complete" else "JobSetFailed"
                done = {"type": cond["type"], "status": "True", "reason": reason,
                        "message": cond.get("message", ""), "lastTransitionTime": now}  # fmt: skip
                self.client.patch(path(*GROUP_VERSION, ns, name, "status"), {"status": {"conditions": [done]}})
