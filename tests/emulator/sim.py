"""The trainer's and the kubelet's part of a run, simulated: reports in the registry, Job/pod status in the API."""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path
from typing import Any

from emulator.client import Client, job_path, path
from kretrain.api import (
    CHECK_NAMES,
    CheckResult,
    Compute,
    DataSummary,
    Evaluation,
    Metrics,
    ModelRef,
    RunReport,
    TrainingSummary,
)
from kretrain.operator import jobs
from kretrain.registry import Lineage, Registry
from kretrain.trainer import runkey


def metrics(value: float) -> Metrics:
    return Metrics.model_validate(
        {"mAP50-95": value, "mAP50": min(1.0, value + 0.2), "precision": value, "recall": value, "images": 40}
    )


def evaluation(scores: dict[str, float], version: str | None = None) -> Evaluation:
    """An evaluation whose pooled metric is the mean of the per-era scores."""
    pooled = sum(scores.values()) / len(scores)
    return Evaluation(model_version=version, pooled=metrics(pooled), eras={e: metrics(v) for e, v in scores.items()})


def passing_checks() -> list[CheckResult]:
    return [CheckResult(name=n, passed=True, value=0.0, threshold=1.0, detail="ok") for n in CHECK_NAMES]


def report(
    run_id: str,
    model: str,
    spec: dict[str, Any],
    candidate: dict[str, float],
    incumbent: dict[str, float] | None,
    incumbent_ref: ModelRef | None,
) -> RunReport:
    return RunReport(
        run_id=run_id,
        model=model,
        spec=spec,
        data=DataSummary(classes=["a"]),
        training=TrainingSummary(strategy="full", base_weights="yolov8n.yaml", epochs_planned=3, epochs_completed=3),
        compute=Compute(wall_seconds=1.0),
        checks=passing_checks(),
        candidate_evaluation=evaluation(candidate),
        incumbent_evaluation=evaluation(incumbent, incumbent_ref.version) if incumbent and incumbent_ref else None,
        incumbent=incumbent_ref,
        created_at=datetime.datetime.now(datetime.UTC).isoformat(),
    )


def minimal_report(run_id: str, model: str, value: float = 0.5, wall_seconds: float = 1.0) -> RunReport:
    """The smallest valid report of a one-epoch full run (pooled metric `value`), for registry tests."""
    return RunReport(
        run_id=run_id,
        model=model,
        spec={"model": model},
        data=DataSummary(),
        training=TrainingSummary(strategy="full", base_weights="yolov8n.yaml", epochs_planned=1, epochs_completed=1),
        compute=Compute(wall_seconds=wall_seconds),
        candidate_evaluation=Evaluation(pooled=Metrics(map50_95=value, map50=value, precision=0.5, recall=0.5)),
    )


def weights_file(tmp: Path, version: str) -> Path:
    f = tmp / f"{hashlib.sha256(version.encode()).hexdigest()[:12]}.pt"
    f.write_bytes(b"fake weights of " + version.encode())
    return f


def seed_incumbent(registry: Registry, model: str, version: str, scores: dict[str, float], tmp: Path) -> ModelRef:
    """Register a first version and make it the incumbent (as an earlier run would have)."""
    rep = report(version, model, {}, scores, None, None)
    registry.register(model, version, weights_file(tmp, version), rep, {}, Lineage(parent=None, eras=list(scores)))
    return registry.promote(model, version, expected=None, reason="seed", actor="tests")


def train(
    registry: Registry,
    model: str,
    run_id: str,
    candidate: dict[str, float],
    incumbent: dict[str, float] | None,
    tmp: Path,
    key: bytes | None = None,
) -> RunReport:
    """What the trainer leaves behind: a registered candidate version and runs/<run-id>/report.json, signed as
    the pod signs it when `key` is the run's stage key (the operator concludes only a signed report: in an
    operator test pass `stage_key(...)`, or use scenario.Cluster.train)."""
    inc_ref = registry.incumbent(model)
    rep = report(run_id, model, {"model": model}, candidate, incumbent, inc_ref)
    ref = registry.register(
        model, run_id, weights_file(tmp, run_id), rep, {}, Lineage(parent=inc_ref.version if inc_ref else None)
    )
    rep = rep.model_copy(update={"candidate": ref})
    sign_report(registry, model, run_id, registry.write_run_report(model, run_id, rep), key)
    return rep


def sign_report(registry: Registry, model: str, run_id: str, data: bytes, key: bytes | None) -> None:
    """The MAC the run's pod writes beside the report bytes it wrote (kretrain.trainer.entrypoint): nothing without
    a key."""
    runkey.sign(registry.store, registry.run_report_uri(model, run_id), data, key)


def stage_key(client: Client, run_id: str) -> bytes:
    """The run's stage key as its pod reads it: `stage.key` of the ConfigMap the operator made for the run (named
    like the run's Job; looked up in every namespace)."""
    from kretrain.api.pod import STAGE_KEY_FILE

    name = jobs.job_name(run_id)
    [configmap] = [c for c in client.list(path("", "v1", "configmaps")) if c["metadata"]["name"] == name]
    return bytes.fromhex(configmap["data"][STAGE_KEY_FILE])


def complete_job(client: Client, namespace: str, name: str) -> None:
    """The Job controller's view of a successful pod."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    conds = [
        {"type": t, "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods",
         "lastTransitionTime": now}
        for t in ("SuccessCriteriaMet", "Complete")
    ]  # fmt: skip
    client.patch(job_path(namespace, name, "status"), {"status": {"succeeded": 1, "active": 0, "conditions": conds}})


def fail_job(client: Client, namespace: str, name: str, reason: str, message: str, termination: str) -> None:
    """A failed pod (with the trainer's termination message) and the Job's Failed condition."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{name}-x1", "namespace": namespace, "labels": {"job-name": name}},
        "spec": {"containers": [{"name": "trainer", "image": "trainer"}]},
    }
    client.create(path("", "v1", "pods", namespace), pod)
    status = {
        "phase": "Failed",
        "containerStatuses": [
            {"name": "trainer", "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": termination}}}
        ],
    }
    client.patch(path("", "v1", "pods", namespace, f"{name}-x1", "status"), {"status": status})
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cond = {"type": "Failed", "status": "True", "reason": reason, "message": message, "lastTransitionTime": now}
    client.patch(job_path(namespace, name, "status"), {"status": {"failed": 1, "active": 0, "conditions": [cond]}})
