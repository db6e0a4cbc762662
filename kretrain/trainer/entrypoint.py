"""The training pod's whole run: data, training with checkpoint/resume, checks, mixed-era evaluation, report."""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from kretrain.api import Compute, ModelRef, RetrainJobSpec, RunReport, TrainingSummary
from kretrain.api.pod import PodContract
from kretrain.trainer import offline

log = logging.getLogger("kretrain.trainer")


def write_termination(path: Path, text: str) -> None:
    """Write the termination message (best effort: a missing /dev path outside Kubernetes is not an error)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        log.warning("could not write termination log %s: %s", path, exc)


def _event(**fields: Any) -> None:
    print(json.dumps(fields, default=str), file=sys.stderr, flush=True)


MAX_SIDECAR_BYTES = 4096
"""Largest `last.pt.sha256` record read (one hex digest and a file name)."""


def _checkpoint(store: Any, hooks_last_uri: str, dest: Path, key: bytes | None = None) -> Path | None:
    """Download the run's last.pt if a previous attempt left one; None unless it matches last.pt.sha256.

    Trust: `runs/<run-id>/` is written by the line's trainers only (credentials scoped to `runs/` and
    `versions/`, docs/install.md; the trainer image is fixed by the operator policy): the same trust as the
    registry's own records, so the `last.pt.sha256` record the trainer wrote with the upload is the pin
    (kretrain.verified's one policy). A trainer of another run of the line could plant one here: with the run's
    stage key (`key`, kretrain.trainer.runkey) the record counts only when this run signed it. Without a valid
    record nothing is downloaded and the run starts over;
    otherwise the bytes reach `dest` (where torch.load looks) only after they matched; the checkpoint is then
    unpickled by Ultralytics' restricted loader and its model YAML checked.
    """
    from kretrain.store import ObjectTooLarge
    from kretrain.trainer.modelfiles import MAX_WEIGHTS_BYTES
    from kretrain.trainer.runkey import Unsigned, get_record
    from kretrain.verified import VerificationError, check_pin, fetch_verified

    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    if not store.exists(hooks_last_uri):
        return None
    try:
        sidecar = get_record(store, hooks_last_uri + ".sha256", key, MAX_SIDECAR_BYTES)  # signed by this run
        record = sidecar.decode().split()
        pin = check_pin(record[0] if record else None, hooks_last_uri)
        return fetch_verified(store, hooks_last_uri, dest, sha256=pin, max_bytes=MAX_WEIGHTS_BYTES)
    except (FileNotFoundError, ObjectTooLarge, Unsigned, UnicodeDecodeError, VerificationError) as exc:
        _event(event="checkpoint-ignored", uri=hooks_last_uri, reason=f"{type(exc).__name__}: {exc}")
        return None


def run(spec: RetrainJobSpec, pod: PodContract) -> RunReport | None:
    """Run the whole training pod: returns the registered run's report (raises on failure).

    Under torchrun only rank 0 evaluates, checks, exports and registers (the other ranks return None after
    training); each node's local rank 0 pulls and validates the data once for the node.
    """
    from kretrain.registry import Lineage, Registry
    from kretrain.store import ObjectStore
    from kretrain.trainer.report import build_report, termination_summary

    t_wall = time.time()
    from kretrain.trainer import distributed as dist

    env = dist.DistEnv.from_env()
    dist.init_process_group(env, _cuda())  # first: from here on a rank that fails makes its peers fail at once
    if not spec.storage.registry:
        raise ValueError("storage.registry is not set in the spec: no model registry to write to")
    from kretrain.trainer import runkey

    key = runkey.load_key(pod.stage_key_file)  # signs and checks the run's resume records (a planted one is ignored)
    store = ObjectStore(endpoint_url=spec.storage.endpoint, region=spec.storage.region)
    registry = Registry(store, spec.storage.registry)
    report_uri = registry.run_report_uri(spec.model, pod.run_id)
    try:  # with a key, a report counts only when its MAC over the bytes read verifies (the operator checks it too)
        done = registry.read_run_report(spec.model, pod.run_id, stage_key=None if key is None else lambda: key)
    except runkey.Unsigned:  # another writer's report.json: this run goes on (and registers, or fails if its
        done = None  # version was squatted)
        _event(event="report-ignored", runId=pod.run_id, reason="report.json is not signed with this run's key")
    if done is not None and done.candidate is not None:
        _event(event="already-finished", runId=pod.run_id)
        write_termination(pod.termination_log, termination_summary(done, spec.promotion.metric))
        return done

    pod.workdir.mkdir(parents=True, exist_ok=True)
    from kretrain.trainer.modelfiles import restrict_ultralytics

    restrict_ultralytics()  # before Ultralytics is imported: weights_only unpickling, no eval in model YAMLs
    offline.configure(pod.yolo_config_dir or pod.workdir / "yolo-config")
    from kretrain.trainer import stages
    from kretrain.trainer.assess import assess
    from kretrain.trainer.data import prepare
    from kretrain.trainer.train import (
        RunHooks,
        TrainOutcome,
        build_train_args,
        check_train_args,
        read_results,
        resolve_start_weights,
        train,
    )

    project = dist.rank_dir(env, (pod.workdir / "ultralytics").resolve())
    # Ultralytics' own checks on every argument before anything runs (data pull included).
    check_train_args(build_train_args(spec, pod.workdir / "data.yaml", project))
    from kretrain.trainer.export import check_export_args

    check_export_args(spec, _cuda())  # spec.export as well (engine needs a GPU), before the data pull

    data = prepare(spec, store, pod.workdir, pod.cache_dir) if env.node_leader else None
    data_yaml = dist.share_node_data(env, pod.workdir, data.data_yaml if data else None)
    if data is not None:
        eras = list(spec.dataset.eras)
        _event(event="data-ready", runId=pod.run_id, trainImages=data.summary.train_images, eras=eras)

    pointer = registry.incumbent(spec.model)  # incumbent.json: written by the operator only, never by trainers
    incumbent_version = pod.incumbent_version
    if incumbent_version is None:
        incumbent_version = pointer.version if pointer else ""
    incumbent_ref: ModelRef | None = None
    if incumbent_version:
        info = registry.version_info(spec.model, incumbent_version)
        incumbent_ref = ModelRef(version=incumbent_version, uri=info.uri, sha256=info.sha256)
        if pointer is not None and pointer.version == incumbent_version:  # the pointer pins the weights
            incumbent_ref = pointer

    args = build_train_args(spec, data_yaml, project)
    check_train_args(args)
    hooks = RunHooks(
        model=spec.model,
        run_id=pod.run_id,
        epochs=spec.strategy.epochs,
        local_dir=(pod.workdir / "hooks").resolve(),
        registry_uri=spec.storage.registry,
        endpoint=spec.storage.endpoint,
        region=spec.storage.region,
        checkpoint_interval=float(spec.strategy.checkpoint_interval_seconds),
        stage_key=key,
    )
    run_uri = registry.run_uri(spec.model, pod.run_id)
    trained = stages.load_trained(store, run_uri, dist.rank_dir(env, pod.workdir / "trained"), key)
    if trained is not None:  # a previous attempt finished training (and was killed later): go on from there
        record, best, results = trained
        _event(event="training-skipped", runId=pod.run_id, epochs=record.epochs_completed)
        start_desc = record.base_weights
        outcome = TrainOutcome(
            save_dir=best.parent, best=best, last=best, results_csv=results,
            epochs_completed=record.epochs_completed, best_epoch=record.best_epoch,
            final_metrics=dict(record.final_metrics), resumed_from_epoch=record.resumed_from_epoch,
            train_seconds=record.train_seconds, args=dict(record.args),
        )  # fmt: skip
    else:
        resume = _checkpoint(store, hooks.last_uri(), dist.rank_dir(env, pod.workdir / "resume") / "last.pt", key)
        start = None
        if resume is not None:
            _event(event="resume", runId=pod.run_id, checkpoint=hooks.last_uri())
            start_desc = spec.strategy.effective_base_weights
        else:
            weights_dir = dist.rank_dir(env, pod.workdir / "weights")
            start = resolve_start_weights(spec, weights_dir, registry, store, incumbent_version or "")
            start_desc = start.description
        outcome = train(args, start, hooks, resume_from=resume)
    dist.leave(env)  # every rank waits for the others; rank 0 goes on alone
    if not env.leader:
        _event(event="rank-finished", runId=pod.run_id, rank=env.rank)
        return None
    if trained is None:  # before anything else can fail or be killed: a rerun resumes after training
        best_sha256 = stages.save_trained(store, run_uri, outcome, start_desc, key)
        _event(event="trained-saved", runId=pod.run_id, epochs=outcome.epochs_completed)
    else:
        best_sha256 = trained[0].best_sha256
    assert data is not None  # rank 0 is its node's local rank 0
    assessed = stages.load_evaluated(store, run_uri, pod.workdir / "evaluated", best_sha256, incumbent_version, key)
    if assessed is not None:  # a previous attempt evaluated these weights against this incumbent
        _event(event="evaluation-skipped", runId=pod.run_id, incumbent=incumbent_version or None)
    else:
        rows = read_results(outcome.results_csv)
        assessed = assess(spec, data, outcome, rows, registry, incumbent_ref, pod.workdir, _cuda())
        stages.save_evaluated(store, run_uri, best_sha256, incumbent_version, assessed, key)
        _event(event="evaluated", runId=pod.run_id, incumbent=incumbent_version or None)
    wall = time.time() - t_wall
    gpus = spec.resources.gpus * spec.resources.nodes if _cuda() else 0  # every node's GPUs
    compute = Compute(
        wall_seconds=round(wall, 3),
        train_seconds=round(outcome.train_seconds, 3),
        gpu_seconds=round(outcome.train_seconds * gpus, 3) if gpus else None,
        image_epochs=data.summary.train_images * outcome.epochs_completed,
    )
    training = TrainingSummary(
        strategy=spec.strategy.type,
        base_weights=start_desc,
        epochs_planned=spec.strategy.epochs,
        epochs_completed=outcome.epochs_completed,
        best_epoch=outcome.best_epoch,
        resumed_from_epoch=outcome.resumed_from_epoch,
        final_metrics=outcome.final_metrics,
        args=outcome.args,
    )
    report = build_report(
        run_id=pod.run_id,
        spec=spec,
        data=data.summary,
        training=training,
        compute=compute,
        checks=assessed.checks,
        candidate_evaluation=assessed.candidate,
        incumbent_evaluation=assessed.incumbent,
        incumbent=incumbent_ref,
        intervals=assessed.intervals,
    )
    lineage = Lineage(
        parent=incumbent_version or None,
        eras=list(spec.dataset.eras),
        era_hashes=dict(data.summary.era_hashes),
        strategy=spec.strategy.type,
        compute=compute.dump(),
    )
    artifacts = {a.format: a.path for a in assessed.exported}
    ref = registry.register(spec.model, pod.run_id, outcome.best, report, spec.dump(), lineage, artifacts)
    report = report.model_copy(update={"candidate": ref})
    written = registry.write_run_report(spec.model, pod.run_id, report)
    runkey.sign(store, report_uri, written, key)  # the MAC of the exact bytes, after them: unsigned means redo
    summary = termination_summary(report, spec.promotion.metric)
    write_termination(pod.termination_log, summary)
    _event(event="finished", runId=pod.run_id, summary=json.loads(summary))
    return report


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover
        return False


def main(spec_file: Path, pod: PodContract) -> int:
    """Run the pod from a spec file; on failure write a one-paragraph reason to the termination log."""
    from kretrain.trainer.report import failure_summary

    try:
        spec = RetrainJobSpec.model_validate(json.loads(Path(spec_file).read_text()))
    except Exception as exc:
        write_termination(pod.termination_log, failure_summary(pod.run_id, f"invalid spec {spec_file}: {exc}"))
        _event(event="failed", runId=pod.run_id, reason=str(exc))
        return 2
    try:
        run(spec, pod)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        write_termination(pod.termination_log, failure_summary(pod.run_id, reason))
        _event(event="failed", runId=pod.run_id, reason=reason, traceback=traceback.format_exc(limit=8))
        return 1
    return 0
