"""Training with Ultralytics: arguments from the spec, start weights, per-epoch progress/checkpoint hooks, resume."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kretrain.api import RetrainJobSpec, RunProgress
from kretrain.api.progress import finite_metrics
from kretrain.api.ultralytics_args import ULTRALYTICS_TRAIN_ARGS
from kretrain.registry import now_rfc3339
from kretrain.trainer.distributed import train_kwargs
from kretrain.trainer.modelfiles import (
    MAX_WEIGHTS_BYTES,
    ModelFileError,
    check_loaded_model,
    check_model_file,
    fetch_pinned,
    model_yaml,
    restrict_ultralytics,
    sha256_file,
)

if TYPE_CHECKING:  # pragma: no cover
    from kretrain.registry import Registry
    from kretrain.store import ObjectStore

log = logging.getLogger("kretrain.trainer")

# Progress metric names: Ultralytics' result keys -> the names in progress.json and the report.
METRIC_NAMES = {
    "metrics/precision(B)": "precision",
    "metrics/recall(B)": "recall",
    "metrics/mAP50(B)": "mAP50",
    "metrics/mAP50-95(B)": "mAP50-95",
}


class TrainingError(RuntimeError):
    """Training could not start or finish; the message names the field or file at fault."""


# --------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------


def device_for(gpus: int) -> int | list[int] | str:
    """Ultralytics `device` for the pod's GPU count: 'cpu', 0, or [0..n-1] (DDP over all of them)."""
    if gpus < 0:
        raise ValueError(f"resources.gpus must be >= 0, got {gpus}")
    if gpus == 0:
        return "cpu"
    if gpus == 1:
        return 0
    return list(range(gpus))


def build_train_args(
    spec: RetrainJobSpec, data_yaml: Path, project: Path, name: str = "train", seed: int = 0
) -> dict[str, Any]:
    """The Ultralytics train arguments for a spec: dedicated fields first, then `hyperparameters`.

    Pure: no Ultralytics import. Paths are absolute (Ultralytics puts relative run dirs elsewhere).
    """
    s = spec.strategy
    args: dict[str, Any] = {
        "data": str(Path(data_yaml).resolve()),
        "project": str(Path(project).resolve()),
        "name": name,
        "exist_ok": True,
        "epochs": s.epochs,
        "patience": s.patience,
        "imgsz": s.imgsz,
        "batch": s.batch,
        "optimizer": s.effective_optimizer,
        "device": device_for(spec.resources.gpus),
        "seed": seed,
        "plots": False,
        "save": True,
        "val": True,
        "verbose": False,
    }
    if s.lr0 is not None:
        args["lr0"] = s.lr0
    if s.freeze is not None:
        args["freeze"] = s.freeze
    if s.weight_decay is not None:
        args["weight_decay"] = s.weight_decay
    if s.dropout is not None:
        args["dropout"] = s.dropout
    for key, value in s.augmentation.model_dump(by_alias=False).items():
        if value is not None:
            args[key] = value
    args.update(s.hyperparameters)
    return args


def check_train_args(args: dict[str, Any]) -> None:
    """Check every argument with Ultralytics' own key list and value checks (`check_cfg`).

    Raises TrainingError naming the argument. Imports Ultralytics (call `offline.configure()` first).
    """
    from ultralytics.cfg import check_cfg
    from ultralytics.utils import DEFAULT_CFG_DICT

    unknown = sorted(k for k in args if k not in DEFAULT_CFG_DICT)
    if unknown:
        raise TrainingError(f"strategy.hyperparameters: not Ultralytics arguments: {', '.join(unknown)}")
    not_train = sorted(k for k in args if k not in ULTRALYTICS_TRAIN_ARGS)
    if not_train:
        raise TrainingError(f"strategy.hyperparameters: not Ultralytics train arguments: {', '.join(not_train)}")
    try:
        check_cfg(dict(args), hard=True)
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"strategy.hyperparameters: {exc}") from exc


# --------------------------------------------------------------------------------------------------
# Start weights
# --------------------------------------------------------------------------------------------------


@dataclass
class StartWeights:
    """What training starts from."""

    description: str
    """What the spec asked for (`incumbent (v3)`, `s3://...pt`, `yolov8n.yaml`)."""
    weights: Path | None = None
    """Verified local .pt, or None for a random init from a YAML."""
    yaml: str | None = None
    """Model YAML (local path or Ultralytics name) to build the network from; None: the .pt's own network."""
    sha256: str | None = None
    """SHA-256 of `weights`."""
    version: str | None = None
    """Registry version the weights came from."""


def resolve_start_weights(
    spec: RetrainJobSpec,
    dest: Path,
    registry: Registry | None = None,
    store: ObjectStore | None = None,
    incumbent_version: str | None = None,
) -> StartWeights:
    """Fetch and verify the start weights named by `strategy.baseWeights` / `strategy.architecture`.

    Nothing is unpickled or parsed before its hash matched:
    - `incumbent` / a registry version: `Registry.fetch_weights` (verified against the registry's record);
    - `s3://...pt@sha256:<hex>`: downloaded and refused unless its sha256 equals the spec's pin (no sidecar);
    - an Ultralytics built-in model YAML name: random init, from the installed package only.
    Every model YAML (built-in or pinned s3) is checked (`modelfiles.check_model_yaml`) and Ultralytics
    reads only the checked copy. With `architecture`, the network is built from that YAML and the
    weights transferred where layers match.
    """
    s = spec.strategy
    base = s.effective_base_weights
    dest.mkdir(parents=True, exist_ok=True)
    start: StartWeights
    try:
        if s.base_weights_pin is not None:
            if store is None:
                raise TrainingError(f"strategy.baseWeights {base}: no object store configured")
            digest = s.base_weights_pin[1]
            local = fetch_pinned(store, base, dest / "base.pt", "strategy.baseWeights", MAX_WEIGHTS_BYTES)
            start = StartWeights(description=base, weights=local, sha256=digest)
        elif base.endswith((".yaml", ".yml")):
            yaml_path = model_yaml(base, "strategy.baseWeights", dest / "base-yaml", store)
            start = StartWeights(description=base, yaml=str(yaml_path))
        else:
            start = _registry_weights(spec, base, dest, registry, incumbent_version)
        if s.architecture:
            arch = model_yaml(s.architecture, "strategy.architecture", dest / "architecture", store)
            start.yaml = str(arch)
            start.description = f"{s.architecture} <- {start.description}"
    except ModelFileError as exc:
        raise TrainingError(str(exc)) from exc
    return start


def _registry_weights(
    spec: RetrainJobSpec, base: str, dest: Path, registry: Registry | None, incumbent_version: str | None
) -> StartWeights:
    if registry is None:
        raise TrainingError(f"strategy.baseWeights {base!r}: no model registry configured")
    version = base
    if base == "incumbent":
        version = incumbent_version or ""
        if not version:
            ref = registry.incumbent(spec.model)
            version = ref.version if ref else ""
        if not version:
            raise TrainingError(
                f"strategy.baseWeights is 'incumbent' (strategy.type {spec.strategy.type}) but model "
                f"{spec.model!r} has no incumbent yet; train a first model with strategy.type full"
            )
    local = registry.fetch_weights(spec.model, version, dest / version)  # TamperedWeights unless it verifies
    return StartWeights(
        description=f"{base} ({version})" if base == "incumbent" else version,
        weights=local,
        sha256=sha256_file(local),
        version=version,
    )


def build_model(start: StartWeights) -> Any:
    """The Ultralytics YOLO model to train: YAML (random init), .pt, or YAML with weights transferred.

    The YAML (and the model YAML a .pt carries, from which Ultralytics rebuilds the network to train)
    is checked first; `start.weights` must already be verified (`resolve_start_weights`).
    """
    restrict_ultralytics()
    from ultralytics import YOLO

    try:
        if start.yaml:
            check_model_file(Path(start.yaml), f"model YAML {Path(start.yaml).name}")
        if start.yaml and start.weights:
            return YOLO(start.yaml).load(str(start.weights))
        if start.weights:
            yolo = YOLO(str(start.weights))
            check_loaded_model(yolo, f"start weights {start.description}")
            return yolo
        if start.yaml:
            return YOLO(start.yaml)
    except ModelFileError as exc:
        raise TrainingError(str(exc)) from exc
    raise TrainingError("no start weights or model YAML")


# --------------------------------------------------------------------------------------------------
# Per-epoch hooks: progress.json, one log line, last.pt upload
# --------------------------------------------------------------------------------------------------


def _rank() -> int:
    return int(os.environ.get("RANK", "-1"))


def epoch_metrics(trainer: Any) -> dict[str, float]:
    """The epoch's validation metrics and training losses, with kretrain's names."""
    out: dict[str, float] = {}
    for key, value in (trainer.metrics or {}).items():
        name = METRIC_NAMES.get(key, key)
        try:
            out[name] = float(value)
        except (TypeError, ValueError):
            continue
    try:
        for key, value in trainer.label_loss_items(trainer.tloss, prefix="train").items():
            out[key] = float(value)
    except Exception:  # tloss unset before the first batch
        pass
    if getattr(trainer, "fitness", None) is not None:
        out["fitness"] = float(trainer.fitness)
    return out


@dataclass
class RunHooks:
    """Ultralytics callbacks of one run: picklable (DDP carries them to rank 0 with cloudpickle).

    After every epoch (or at most every `checkpoint_interval` seconds): last.pt is copied and uploaded to
    `runs/<run-id>/last.pt`; then progress.json is written (its `checkpointEpoch` is the epoch of the last
    queued upload), both in one background thread in that order, so training does not wait for S3. One JSON log line per epoch goes to stderr at once.
    """

    model: str
    """Model line."""
    run_id: str
    """Run id."""
    epochs: int
    """Epochs planned."""
    local_dir: Path
    """Local folder for snapshots and a local copy of progress.json."""
    registry_uri: str | None = None
    """Registry URI; None: progress only locally (no S3)."""
    endpoint: str | None = None
    """S3 endpoint (None: from the environment)."""
    region: str | None = None
    """S3 region."""
    elapsed_before: float = 0.0
    """Training seconds spent by earlier attempts of this run (resume)."""
    start_epoch: int = 0
    """Epochs already done when this attempt started."""
    checkpoint_interval: float = 0.0
    """Upload last.pt at most every this many seconds (0: after every epoch)."""
    _last_upload: float | None = field(default=None, repr=False)
    _checkpoint_epoch: int = field(default=0, repr=False)
    _t0: float | None = field(default=None, repr=False)
    _saved_epoch: int | None = field(default=None, repr=False)
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)
    _futures: list[Future[None]] = field(default_factory=list, repr=False)
    _lock: threading.Lock | None = field(default=None, repr=False)
    _registry_obj: Registry | None = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_pool=None, _futures=[], _lock=None, _registry_obj=None)
        return state

    def install(self, yolo: Any) -> None:
        """Add the callbacks to an Ultralytics model before `train()`."""
        yolo.add_callback("on_train_start", self.on_train_start)
        yolo.add_callback("on_model_save", self.on_model_save)
        yolo.add_callback("on_fit_epoch_end", self.on_fit_epoch_end)
        yolo.add_callback("on_train_end", self.on_train_end)

    # -- internals --
    def _submit(self, fn: Any, *args: Any) -> None:
        if self._lock is None:
            self._lock = threading.Lock()
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kretrain-upload")
            self._futures.append(self._pool.submit(fn, *args))

    def _registry(self) -> Registry:
        """One registry (and one boto3 client) per run, not one per epoch."""
        from kretrain.registry import Registry
        from kretrain.store import ObjectStore

        assert self.registry_uri is not None
        if self._registry_obj is None:
            store = ObjectStore(endpoint_url=self.endpoint, region=self.region)
            self._registry_obj = Registry(store, self.registry_uri)
        return self._registry_obj

    def _store(self) -> ObjectStore:
        return self._registry().store

    def last_uri(self) -> str:
        """S3 URI of this run's last.pt."""
        return self._registry().run_uri(self.model, self.run_id).rstrip("/") + "/last.pt"

    def _upload(self, snapshot: Path) -> None:
        store, uri = self._store(), self.last_uri()
        digest = sha256_file(snapshot)
        store.upload_file(snapshot, uri)
        store.put_bytes(uri + ".sha256", f"{digest}  last.pt\n".encode())  # a resume verifies against it
        snapshot.unlink(missing_ok=True)

    def _write_progress(self, progress: RunProgress) -> None:
        self.local_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.local_dir / "progress.json.tmp"
        tmp.write_text(json.dumps(progress.dump()))
        tmp.replace(self.local_dir / "progress.json")
        if self.registry_uri:
            self._registry().write_progress(self.model, self.run_id, progress)

    # -- callbacks --
    def on_train_start(self, trainer: Any) -> None:
        """Remember when training (this attempt) started."""
        self._t0 = time.time()
        self._last_upload = time.monotonic()
        self.start_epoch = int(getattr(trainer, "start_epoch", 0) or 0)
        self._checkpoint_epoch = self.start_epoch

    def on_model_save(self, trainer: Any) -> None:
        """Snapshot last.pt and queue its upload (at most every `checkpoint_interval` seconds)."""
        self._saved_epoch = int(trainer.epoch)
        if _rank() > 0 or not self.registry_uri:
            return
        now = time.monotonic()
        if self.checkpoint_interval > 0 and now - (self._last_upload or now) < self.checkpoint_interval:
            return
        self._last_upload = now
        self._checkpoint_epoch = int(trainer.epoch) + 1
        self.local_dir.mkdir(parents=True, exist_ok=True)
        snap = self.local_dir / f"last-{trainer.epoch + 1}.pt"
        shutil.copyfile(trainer.last, snap)
        self._submit(self._upload, snap)

    def on_fit_epoch_end(self, trainer: Any) -> None:
        """Log one JSON line and queue progress.json (after the epoch's last.pt upload)."""
        if _rank() > 0 or self._saved_epoch != int(trainer.epoch):
            return  # Ultralytics calls it once more after the final validation of best.pt (epoch + 1): skip that
        now = time.time()
        t0 = self._t0 or now
        done = int(trainer.epoch) + 1
        this_attempt = max(done - self.start_epoch, 1)
        per_epoch = (now - t0) / this_attempt
        epochs = int(getattr(trainer, "epochs", self.epochs) or self.epochs)
        progress = RunProgress(  # the record the operator reads: NaN losses are dropped, not written
            epoch=done,
            epochs=max(epochs, done),
            metrics=finite_metrics(epoch_metrics(trainer)),
            elapsed_seconds=round(self.elapsed_before + now - t0, 3),
            eta_seconds=round(per_epoch * max(epochs - done, 0), 3),
            checkpoint_epoch=self._checkpoint_epoch,
            updated_at=now_rfc3339(),
        )
        print(json.dumps({"event": "epoch", "runId": self.run_id, **progress.dump()}), file=sys.stderr, flush=True)
        self._submit(self._write_progress, progress)

    def on_train_end(self, trainer: Any) -> None:
        """Wait for queued uploads."""
        self.flush()

    def flush(self) -> None:
        """Wait for every queued upload/progress write; re-raise the first failure."""
        futures, self._futures = self._futures, []
        for f in futures:
            f.result()


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainOutcome:
    """What a training run produced."""

    save_dir: Path
    """Ultralytics run folder (weights/, results.csv)."""
    best: Path
    """Candidate weights (best.pt, stripped)."""
    last: Path
    """last.pt."""
    results_csv: Path
    """Per-epoch metrics."""
    epochs_completed: int
    """Epochs run in total (all attempts)."""
    best_epoch: int | None
    """Epoch (1-based) of the best fitness."""
    final_metrics: dict[str, float]
    """Validation metrics of best.pt at the end."""
    resumed_from_epoch: int | None
    """Epochs completed before this attempt (resume), else None."""
    train_seconds: float
    """Wall seconds of this attempt's training."""
    args: dict[str, Any]
    """Arguments used."""


def read_results(path: Path) -> list[dict[str, float]]:
    """results.csv as a list of rows (column names stripped)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = []
        for row in csv.DictReader(f):
            rows.append({k.strip(): float(v) for k, v in row.items() if k is not None and v not in (None, "")})
        return rows


def checkpoint_info(path: Path) -> dict[str, Any]:
    """Epoch (0-based, -1 when finished/stripped), train args and results of a local Ultralytics checkpoint."""
    from kretrain.trainer.modelfiles import load_checkpoint_dict

    try:
        ckpt = load_checkpoint_dict(path)  # sha256 verified by the caller; restricted unpickler on top
    except ModelFileError as exc:
        raise TrainingError(str(exc)) from exc
    return {
        "epoch": int(ckpt.get("epoch", -1)),
        "train_args": dict(ckpt.get("train_args") or {}),
        "train_results": dict(ckpt.get("train_results") or {}),
    }


def restore_results_csv(info: dict[str, Any], csv_path: Path) -> None:
    """Rewrite results.csv from a checkpoint's own copy (rows up to its epoch), so no epoch is lost or repeated."""
    results: dict[str, list[Any]] = info["train_results"]
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    if not results:
        csv_path.unlink(missing_ok=True)
        return
    keys = list(results)
    n = len(results[keys[0]])
    upto = info["epoch"] + 1
    with open(csv_path, "w", encoding="utf-8") as f:
        f.write(",".join(keys) + "\n")
        for i in range(n):
            row = [results[k][i] for k in keys]
            if "epoch" in results and int(results["epoch"][i]) > upto:
                continue
            f.write(",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row) + "\n")


def train(
    args: dict[str, Any],
    start: StartWeights | None,
    hooks: RunHooks | None = None,
    resume_from: Path | None = None,
) -> TrainOutcome:
    """Train (or resume from a mid-run last.pt) with Ultralytics; returns the outcome.

    `args` come from `build_train_args` and have been checked with `check_train_args`.
    """
    restrict_ultralytics()
    from ultralytics import YOLO

    save_dir = Path(args["project"]) / args["name"]
    resumed: int | None = None
    t0 = time.time()
    if resume_from is not None:
        info = checkpoint_info(resume_from)
        if info["epoch"] < 0 or info["epoch"] + 1 >= int(info["train_args"].get("epochs", 0)):
            raise TrainingError(f"checkpoint {resume_from} is a finished run and cannot be resumed")
        resumed = info["epoch"] + 1
        restore_results_csv(info, save_dir / "results.csv")
        local_last = save_dir / "weights" / "last.pt"
        local_last.parent.mkdir(parents=True, exist_ok=True)
        if resume_from.resolve() != local_last.resolve():
            shutil.copyfile(resume_from, local_last)
        yolo = YOLO(str(local_last))
        try:
            check_loaded_model(yolo, f"checkpoint {resume_from}")
        except ModelFileError as exc:
            raise TrainingError(str(exc)) from exc
        if hooks is not None:
            rows = read_results(save_dir / "results.csv")
            hooks.elapsed_before = rows[-1].get("time", 0.0) if rows else 0.0
            hooks.install(yolo)
        overrides = {
            k: args[k] for k in ("data", "device", "workers", "batch", "imgsz", "patience", "plots") if k in args
        }
        yolo.train(resume=str(local_last), save_dir=str(save_dir), **overrides, **train_kwargs())
    else:
        if start is None:
            raise TrainingError("no start weights")
        yolo = build_model(start)
        if hooks is not None:
            hooks.install(yolo)
        yolo.train(**args, **train_kwargs())  # torchrun: world size and ranks from the launcher
    if hooks is not None:
        hooks.flush()
    train_seconds = time.time() - t0
    trainer: Any = yolo.trainer
    save_dir = Path(trainer.save_dir)
    rows = read_results(save_dir / "results.csv")
    best_epoch = None
    if rows:
        fit = [0.1 * r.get("metrics/mAP50(B)", 0.0) + 0.9 * r.get("metrics/mAP50-95(B)", 0.0) for r in rows]
        best_epoch = int(rows[max(range(len(rows)), key=fit.__getitem__)]["epoch"])
    final = {METRIC_NAMES.get(k, k): float(v) for k, v in (trainer.metrics or {}).items() if k in METRIC_NAMES}
    best = Path(trainer.best) if Path(trainer.best).exists() else Path(trainer.last)
    return TrainOutcome(
        save_dir=save_dir,
        best=best,
        last=Path(trainer.last),
        results_csv=save_dir / "results.csv",
        epochs_completed=len(rows),
        best_epoch=best_epoch,
        final_metrics=final,
        resumed_from_epoch=resumed,
        train_seconds=train_seconds,
        args={k: (v if isinstance(v, (str, int, float, bool, list)) or v is None else str(v)) for k, v in args.items()},
    )
