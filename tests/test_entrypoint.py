"""The training pod end to end against SeaweedFS: `kretrain train` full run, incremental run, kill-and-resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kretrain.api import CHECK_NAMES, RetrainJobSpec
from kretrain.api.pod import PodContract
from kretrain.registry import Registry
from kretrain.store import ObjectStore
from kretrain.trainer.start_weights import resolve_start_weights
from kretrain.trainer.synthetic import EraConfig, generate_dataset, upload_dataset
from kretrain.trainer.train import read_results
from kretrain.trainer.train_errors import TrainingError

pytestmark = pytest.mark.slow

KRETRAIN = str(Path(sys.executable).parent / "kretrain")
CLASSES = ["circle", "square"]


def tiny_eras(images: int = 60) -> list[EraConfig]:
    """Two small eras that a yolov8n learns in about 10 epochs at imgsz 64 on CPU."""
    return [
        EraConfig(name="era1", images=images, classes=CLASSES, background=(30, 30, 40), scale=(0.3, 0.5),
                  objects=(1, 2), seed=0),
        EraConfig(name="era2", images=images, classes=CLASSES, background=(200, 200, 190), scale=(0.25, 0.4),
                  objects=(1, 2), seed=1, texture=0.3),
    ]  # fmt: skip


def tiny_spec(bucket: str, endpoint: str, **strategy: Any) -> dict[str, Any]:
    """A RetrainJob spec (JSON, camelCase) for the tiny eras: CPU, imgsz 64, explicit AdamW."""
    s: dict[str, Any] = {
        "type": "full",
        "baseWeights": "yolov8n.yaml",
        "epochs": 10,
        "patience": 0,
        "imgsz": 64,
        "batch": 16,
        "optimizer": "AdamW",
        "lr0": 0.005,
        "augmentation": {"mosaic": 0.0},
        "hyperparameters": {"workers": 0, "nbs": 16, "warmupEpochs": 0.5, "seed": 0},
    }
    s.update(strategy)
    # hyperparameters keep Ultralytics' own (snake_case) names
    s["hyperparameters"] = {("warmup_epochs" if k == "warmupEpochs" else k): v for k, v in s["hyperparameters"].items()}
    return {
        "model": "shapes",
        "dataset": {"uri": f"s3://{bucket}/data", "eras": ["era1", "era2"], "newEras": 1},
        "strategy": s,
        "resources": {"gpus": 0},
        "storage": {"endpoint": endpoint, "registry": f"s3://{bucket}/registry"},
    }


class Pod:
    """Runs `kretrain train` as the pod would, with the contract's environment."""

    def __init__(self, s3: Any, root: Path, bucket: str, stage_key: str | None = None) -> None:
        self.s3, self.root, self.bucket, self.stage_key = s3, root, bucket, stage_key
        self.store = ObjectStore(endpoint_url=s3.endpoint, access_key=s3.server.access_key,
                                 secret_key=s3.server.secret_key, region="us-east-1")  # fmt: skip
        self.registry = Registry(self.store, f"s3://{bucket}/registry")

    def env(self, run_id: str, incumbent: str = "") -> dict[str, str]:
        contract = PodContract(
            run_id=run_id,
            incumbent_version=incumbent,
            workdir=self.root / run_id / "scratch",
            cache_dir=self.root / "cache",
            termination_log=self.root / run_id / "termination-log",
            yolo_config_dir=self.root / "yolo-config",
            stage_key_file=self._key_file(run_id),
        )
        return {**os.environ, **self.s3.env(), **contract.to_env()}

    def _key_file(self, run_id: str) -> Path | None:
        """The run's stage key as the ConfigMap would mount it (None: the pod signs nothing, as `kretrain run`)."""
        if self.stage_key is None:
            return None
        path = self.root / run_id / "stage.key"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.stage_key)
        return path

    def spec_file(self, run_id: str, spec: dict[str, Any]) -> Path:
        RetrainJobSpec.model_validate(spec)
        path = self.root / run_id / "spec.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(spec))
        return path

    def start(self, run_id: str, spec: dict[str, Any], incumbent: str = "") -> subprocess.Popen[bytes]:
        log = open(self.root / f"{run_id}.log", "ab")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(
            [KRETRAIN, "train", "--spec", str(self.spec_file(run_id, spec))],
            env=self.env(run_id, incumbent), stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
        )  # fmt: skip

    def run(self, run_id: str, spec: dict[str, Any], incumbent: str = "", timeout: float = 300) -> int:
        proc = self.start(run_id, spec, incumbent)
        return proc.wait(timeout=timeout)

    def log(self, run_id: str) -> str:
        return (self.root / f"{run_id}.log").read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def pod(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Pod:
    root = tmp_path_factory.mktemp("pod")
    bucket = s3.new_bucket("trainer")
    p = Pod(s3, root, bucket)
    generate_dataset(root / "dataset", tiny_eras(), CLASSES)
    upload_dataset(root / "dataset", p.store, f"s3://{bucket}/data")
    return p


@pytest.fixture(scope="module")
def full_run(pod: Pod) -> dict[str, Any]:
    """The first model of the line: a full run that names no start weights (random init: no incumbent yet),
    then promoted by hand (the operator's job)."""
    spec = tiny_spec(pod.bucket, pod.s3.endpoint)
    del spec["strategy"]["baseWeights"]
    t0 = time.time()
    rc = pod.run("full-1", spec)
    assert rc == 0, pod.log("full-1")
    report = pod.registry.read_run_report("shapes", "full-1")
    assert report is not None
    pod.registry.promote("shapes", "full-1", expected=None, reason="first model", actor="test")
    return {"report": report, "seconds": time.time() - t0, "spec": spec}


def test_full_run_learns_and_reports(pod: Pod, full_run: dict[str, Any]) -> None:
    report = full_run["report"]
    ev = report.candidate_evaluation
    assert ev.pooled.map50 > 0.3, ev.pooled
    assert set(ev.eras) == {"era1", "era2"}
    assert sum(m.images for m in ev.eras.values()) == ev.pooled.images > 0
    assert report.incumbent_evaluation is None and report.incumbent is None
    assert report.training.base_weights == "yolov8n.yaml (no incumbent yet)"
    assert [c.name for c in report.checks] == list(CHECK_NAMES) or {c.name for c in report.checks} == set(CHECK_NAMES)
    by_name = {c.name: c for c in report.checks}
    assert by_name["finiteLoss"].passed and by_name["predictsSomething"].passed, report.checks
    assert by_name["fusionConsistency"].passed, by_name["fusionConsistency"]
    assert report.training.epochs_completed == 10 and report.training.resumed_from_epoch is None
    assert report.compute.image_epochs == report.data.train_images * 10 > 0
    assert report.compute.gpu_seconds is None and 0 < report.compute.train_seconds <= report.compute.wall_seconds
    # registered as version <run-id>, not promoted by the trainer; weights verify
    assert report.candidate is not None and report.candidate.version == "full-1"
    info = pod.registry.version_info("shapes", "full-1")
    assert info.sha256 == report.candidate.sha256
    # exported to ONNX in the pod, proven equal (exportParity), registered with its sha256 (docs/serving.md)
    assert by_name["exportParity"].passed and "onnx:" in by_name["exportParity"].detail, by_name["exportParity"]
    [art] = info.artifacts
    assert art.format == "onnx" and art.uri.startswith(pod.registry.version_uri("shapes", "full-1") + "/")
    # progress.json of the last epoch, last.pt and its sidecar in the run folder
    progress = pod.registry.read_progress("shapes", "full-1")
    assert progress is not None and progress.epoch == progress.epochs == 10
    assert {"epoch", "epochs", "metrics", "elapsedSeconds", "etaSeconds", "updatedAt"} <= set(progress.dump())
    assert "mAP50-95" in progress.metrics
    run_uri = pod.registry.run_uri("shapes", "full-1")
    # last.pt is uploaded at most every checkpointIntervalSeconds (default 60): progress.json says which epoch
    uploaded = (progress.checkpoint_epoch or 0) > 0
    assert pod.store.exists(run_uri + "/last.pt") == uploaded == pod.store.exists(run_uri + "/last.pt.sha256")
    # the termination message: JSON under 4 KB
    term = (pod.root / "full-1" / "termination-log").read_bytes()
    assert len(term) < 4096
    summary = json.loads(term)
    assert summary["status"] == "Succeeded" and summary["candidate"] == "full-1"
    # one JSON log line per epoch
    lines = [json.loads(x) for x in pod.log("full-1").splitlines() if x.startswith('{"event": "epoch"')]
    assert [x["epoch"] for x in lines][-3:] == [8, 9, 10]


def test_rerun_of_finished_run_is_idempotent(pod: Pod, full_run: dict[str, Any]) -> None:
    rc = pod.run("full-1", full_run["spec"])
    assert rc == 0, pod.log("full-1")
    assert "already-finished" in pod.log("full-1")


def test_incremental_run_with_replay_evaluates_both_models(pod: Pod, full_run: dict[str, Any]) -> None:
    spec = tiny_spec(
        pod.bucket, pod.s3.endpoint, type="incremental", baseWeights=None, epochs=3, lr0=0.001, optimizer="SGD",
        freeze=10, replay={"fraction": 0.5, "seed": 0},
    )  # fmt: skip
    spec["strategy"] = {k: v for k, v in spec["strategy"].items() if v is not None}
    rc = pod.run("inc-1", spec, incumbent="full-1")
    assert rc == 0, pod.log("inc-1")
    report = pod.registry.read_run_report("shapes", "inc-1")
    assert report is not None
    assert report.training.base_weights == "incumbent (full-1)"
    assert report.training.args["optimizer"] == "SGD" and report.training.args["lr0"] == 0.001
    assert report.training.args["freeze"] == 10
    assert report.incumbent is not None and report.incumbent.version == "full-1"
    inc, cand = report.incumbent_evaluation, report.candidate_evaluation
    assert inc is not None
    # the same images for both models
    assert {e: m.images for e, m in inc.eras.items()} == {e: m.images for e, m in cand.eras.items()}
    assert inc.pooled.instances == cand.pooled.instances
    # the incumbent's numbers on the same test set equal its own run's evaluation
    assert inc.pooled.map50_95 == pytest.approx(full_run["report"].candidate_evaluation.pooled.map50_95, abs=1e-9)
    # replay: new era's train split plus half of the old era's
    eras = report.data.eras
    assert eras["era2"]["train"] < report.data.train_images < eras["era1"]["train"] + eras["era2"]["train"]
    assert pod.registry.incumbent("shapes").version == "full-1"  # the trainer never promotes


def test_a_full_retrain_starts_from_the_incumbent_by_default(pod: Pod, full_run: dict[str, Any]) -> None:
    """strategy.baseWeights unset: a full retrain warm-starts from the line's incumbent (verified against the
    pointer's sha256), a line without one from FIRST_MODEL_WEIGHTS; an incremental one needs an incumbent."""
    spec = RetrainJobSpec.model_validate(full_run["spec"])
    assert spec.strategy.base_weights is None and spec.strategy.first_model_fallback
    start = resolve_start_weights(spec, pod.root / "start-full", pod.registry, pod.store)
    pointer = pod.registry.incumbent("shapes")
    assert pointer is not None and pointer.version == "full-1"
    assert start.description == "incumbent (full-1)" and start.version == "full-1" and start.yaml is None
    assert start.weights is not None and start.sha256 == pointer.sha256
    other = spec.model_copy(update={"model": "no-line-yet"})
    first = resolve_start_weights(other, pod.root / "start-first", pod.registry, pod.store)
    assert first.weights is None and first.description == "yolov8n.yaml (no incumbent yet)"
    assert first.yaml is not None and Path(first.yaml).name == "yolov8n.yaml"
    # The operator's view wins: "" (no incumbent when the run was created) is a first model even though the
    # line has one now; a version the pointer no longer names is refused (its weights would be unpinned).
    first = resolve_start_weights(spec, pod.root / "start-op-none", pod.registry, pod.store, "")
    assert first.weights is None and first.description == "yolov8n.yaml (no incumbent yet)"
    with pytest.raises(TrainingError, match="now names full-1: it moved since the run started"):
        resolve_start_weights(spec, pod.root / "start-moved", pod.registry, pod.store, "older-1")
    incremental = other.model_copy(update={"strategy": other.strategy.model_copy(update={"type": "incremental"})})
    with pytest.raises(TrainingError, match="has no incumbent yet"):
        resolve_start_weights(incremental, pod.root / "start-inc", pod.registry, pod.store)


def test_invalid_hyperparameter_fails_before_anything_runs(pod: Pod) -> None:
    spec = tiny_spec(pod.bucket, pod.s3.endpoint)
    spec["strategy"]["hyperparameters"]["nbs"] = "many"
    rc = pod.run("bad-hp", spec)
    assert rc == 1
    term = json.loads((pod.root / "bad-hp" / "termination-log").read_text())
    assert term["status"] == "Failed" and "nbs" in term["reason"], term
    assert not (pod.root / "bad-hp" / "scratch" / "data").exists()  # no data pulled


def test_kill_after_epoch_n_then_resume(pod: Pod) -> None:
    """Kill the trainer once progress.json says epoch 3; the rerun resumes and every epoch appears once."""
    spec = tiny_spec(pod.bucket, pod.s3.endpoint, epochs=6, checkpointIntervalSeconds=0)  # last.pt every epoch
    proc = pod.start("resume-1", spec)
    deadline = time.time() + 240
    seen = 0
    try:
        while time.time() < deadline and proc.poll() is None:
            progress = pod.registry.read_progress("shapes", "resume-1")
            seen = progress.epoch if progress else 0
            if seen >= 3:
                break
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert seen >= 3, pod.log("resume-1")
    after_kill = pod.registry.read_progress("shapes", "resume-1")
    assert after_kill is not None and after_kill.epoch < 6
    killed_at = after_kill.epoch
    assert pod.registry.read_run_report("shapes", "resume-1") is None

    shutil.rmtree(pod.root / "resume-1" / "scratch")  # a new pod: fresh scratch, only S3 survives
    rc = pod.run("resume-1", spec)
    assert rc == 0, pod.log("resume-1")
    report = pod.registry.read_run_report("shapes", "resume-1")
    assert report is not None
    # progress.json N means last.pt of epoch N was uploaded first; an upload of N+1 may have raced the kill
    assert report.training.resumed_from_epoch in (killed_at, killed_at + 1), pod.log("resume-1")
    assert report.training.epochs_completed == 6
    rows = read_results(pod.root / "resume-1" / "scratch" / "ultralytics" / "train" / "results.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert "Resuming training" in pod.log("resume-1") or '"event": "resume"' in pod.log("resume-1")
