"""Per-epoch Ultralytics callbacks of a run: progress.json, one JSON log line, throttled last.pt upload."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kretrain.api import RunProgress
from kretrain.api.progress import finite_metrics
from kretrain.registry import now_rfc3339
from kretrain.trainer.modelfiles import sha256_file
from kretrain.trainer.runkey import put_record

if TYPE_CHECKING:  # pragma: no cover
    from kretrain.registry import Registry
    from kretrain.store import ObjectStore

# Progress metric names: Ultralytics' result keys -> the names in progress.json and the report.
METRIC_NAMES = {
    "metrics/precision(B)": "precision",
    "metrics/recall(B)": "recall",
    "metrics/mAP50(B)": "mAP50",
    "metrics/mAP50-95(B)": "mAP50-95",
}


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
    stage_key: bytes | None = field(default=None, repr=False)
    """The run's stage key (kretrain.trainer.runkey): the `last.pt.sha256` record is signed with it."""
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
        record = f"{digest}  last.pt\n".encode()  # a resume verifies against it
        put_record(store, uri + ".sha256", record, self.stage_key)
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
