"""Run a RetrainJob manifest on this machine: the pod's trainer as a subprocess, then the operator's decision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from kretrain.api import Comparison, Decision, RetrainJob, RetrainJobSpec, RunReport
from kretrain.api.pod import PodContract
from kretrain.promotion import conclude, fallback_spec, wants_fallback
from kretrain.registry import Registry, RegistryError
from kretrain.resolve import SpecDefaults, SpecError, resolve_spec
from kretrain.store import ObjectStore, StoreError
from kretrain.tables import comparison_table, decision_text
from kretrain.trainer.data_summary import print_data_summary


class LocalRunError(RuntimeError):
    """The local run could not start or the trainer failed (the message says why)."""


@dataclass
class LocalOutcome:
    """What a local run produced."""

    run_id: str
    report: RunReport
    decision: Decision
    comparison: Comparison
    workdir: Path
    fallback: bool = False
    """A full retrain must follow (incremental candidate rejected, fallbackToFull on)."""


def local_defaults(env: Mapping[str, str]) -> SpecDefaults:
    """The local runner's defaults for a spec's unset storage fields: the caller's environment, as the operator
    fills them from its settings (no credentials Secret and no image: a local run has neither)."""
    return SpecDefaults(
        source="the environment (KRETRAIN_REGISTRY)",
        registry=env.get("KRETRAIN_REGISTRY") or None,
        endpoint=env.get("AWS_ENDPOINT_URL") or None,
        region=env.get("AWS_DEFAULT_REGION") or None,
    )


def resolve_local(spec: RetrainJobSpec, env: Mapping[str, str]) -> RetrainJobSpec:
    """The spec resolved with `local_defaults(env)` (kretrain.resolve.resolve_spec); LocalRunError names the field."""
    try:
        return resolve_spec(spec, local_defaults(env))
    except (SpecError, ValidationError) as exc:
        raise LocalRunError(str(exc)) from None


def _bar(epoch: int, epochs: int, metrics: dict[str, float], eta: float | None, width: int = 30) -> str:
    done = int(width * epoch / epochs) if epochs else 0
    m = metrics.get("metrics/mAP50-95(B)", metrics.get("mAP50-95"))
    metric = f" mAP50-95 {m:.3f}" if isinstance(m, (int, float)) else ""
    eta_text = f" eta {eta:4.0f}s" if eta is not None else ""
    return f"  [{'#' * done}{'.' * (width - done)}] epoch {epoch}/{epochs}{metric}{eta_text}"


def _watch(proc: subprocess.Popen[bytes], registry: Registry, model: str, run_id: str, out: TextIO) -> None:
    """Show a progress bar from the run's progress.json until the trainer exits."""
    last = -1
    tty = out.isatty()
    while proc.poll() is None:
        time.sleep(1.0)
        try:
            progress = registry.read_progress(model, run_id)
        except (StoreError, RegistryError, BotoCoreError, ClientError):  # S3 or the record: keep watching
            progress = None
        if progress is None or progress.epoch == last:
            continue
        last = progress.epoch
        line = _bar(last, progress.epochs, progress.metrics, progress.eta_seconds)
        out.write(("\r" + line) if tty else (line + "\n"))
        out.flush()
    if tty and last >= 0:
        out.write("\n")


def run_spec(
    spec: RetrainJobSpec,
    *,
    workdir: Path,
    run_id: str | None = None,
    actor: str = "kretrain-run",
    out: TextIO = sys.stdout,
    env: dict[str, str] | None = None,
) -> LocalOutcome:
    """Train, evaluate and decide one run locally; promotion follows spec.promotion.mode."""
    env = dict(os.environ if env is None else env)
    spec = resolve_local(spec, env)
    assert spec.storage.registry is not None
    run_id = run_id or f"local-{datetime.now(UTC):%Y%m%d-%H%M%S}-{os.getpid()}"
    store = ObjectStore(
        endpoint_url=spec.storage.endpoint,
        region=spec.storage.region,
        access_key=env.get("AWS_ACCESS_KEY_ID"),
        secret_key=env.get("AWS_SECRET_ACCESS_KEY"),
    )
    registry = Registry(store, spec.storage.registry)
    incumbent = registry.incumbent(spec.model)

    rundir = workdir / run_id
    rundir.mkdir(parents=True, exist_ok=True)
    spec_file = rundir / "spec.json"
    spec_file.write_text(json.dumps(spec.dump(), indent=2))
    termination = rundir / "termination-log"
    contract = PodContract(
        run_id=run_id,
        incumbent_version=incumbent.version if incumbent else "",
        workdir=rundir / "scratch",
        cache_dir=workdir / "cache",
        termination_log=termination,
        endpoint=spec.storage.endpoint,
    )
    child_env = {**env, **contract.to_env()}
    out.write(
        f"run {run_id}: {spec.strategy.type} retrain of {spec.model} on eras {', '.join(spec.dataset.eras)} "
        f"(incumbent: {incumbent.version if incumbent else 'none'})\n"
    )
    out.flush()
    kretrain = Path(sys.executable).parent / "kretrain"
    log = rundir / "trainer.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [str(kretrain), "train", "--spec", str(spec_file)],
            env=child_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=rundir,
        )
        try:
            _watch(proc, registry, spec.model, run_id, out)
        finally:
            if proc.poll() is None:  # interrupted (Ctrl-C, an exception): never leave the trainer behind
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    if proc.returncode != 0:
        print_data_summary(out, None, contract.workdir)  # a run the data stage stopped: what it found
        reason = termination.read_text().strip() if termination.exists() else ""
        raise LocalRunError(f"trainer exited with {proc.returncode}: {reason or 'see ' + str(log)}")

    report = registry.read_run_report(spec.model, run_id)
    if report is None:
        raise LocalRunError(f"trainer finished but wrote no report for run {run_id}")
    print_data_summary(out, report.data, contract.workdir)  # per era used/excluded/background, findings, warnings
    outcome = conclude(registry, report, spec, actor=actor, run_id=run_id)
    (rundir / "report.json").write_text(report.model_dump_json(by_alias=True, indent=2))
    (rundir / "decision.json").write_text(outcome.decision.model_dump_json(by_alias=True, indent=2))
    out.write(comparison_table(outcome.comparison) + "\n")
    out.write(decision_text(outcome.decision) + "\n")
    if outcome.failed:  # the report does not belong to this run (ReportMismatch): nothing was promoted
        raise LocalRunError(f"run {run_id}: the report was refused: {' '.join(outcome.decision.reasons)}")
    return LocalOutcome(
        run_id, report, outcome.decision, outcome.comparison, rundir, fallback=wants_fallback(spec, outcome)
    )


def run_manifest(path: Path, *, workdir: Path, out: TextIO = sys.stdout) -> list[LocalOutcome]:
    """Run a RetrainJob manifest; with fallbackToFull a rejected incremental run is followed by a full one."""
    from kretrain.validate import load_documents, validate_manifest

    outcomes = []
    for doc in load_documents(path):
        problems = validate_manifest(doc)
        if problems:
            raise LocalRunError(f"{path}: " + "; ".join(str(p) for p in problems))
        job = RetrainJob.from_manifest(doc)
        outcome = run_spec(job.spec, workdir=workdir, actor=f"kretrain-run/{job.metadata.name}", out=out)
        outcomes.append(outcome)
        if outcome.fallback:
            out.write("incremental candidate failed the gate; fallbackToFull: running a full retrain\n")
            full = fallback_spec(job.spec)
            outcomes.append(run_spec(full, workdir=workdir, actor=f"kretrain-run/{job.metadata.name}", out=out))
    return outcomes
