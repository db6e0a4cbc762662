"""RunHooks uploads last.pt at most every `checkpoint_interval` seconds; progress.json says which epoch is in S3."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kretrain.trainer import run_hooks
from kretrain.trainer.train import RunHooks


@pytest.mark.parametrize(
    ("interval", "epoch_seconds", "uploaded_epochs"),
    [
        (0, 1.0, [1, 2, 3, 4, 5, 6]),  # every epoch
        (60, 1.0, []),  # a short run never waits 60 s: no checkpoint traffic at all
        (2.5, 1.0, [3, 6]),  # an upload once 2.5 s have passed since the last one
        (1, 1.0, [1, 2, 3, 4, 5, 6]),  # epochs as long as the interval: every epoch
    ],
)
def test_checkpoint_uploads_are_throttled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interval: float, epoch_seconds: float, uploaded_epochs: list[int]
) -> None:
    clock = [100.0]
    monkeypatch.setattr(run_hooks.time, "monotonic", lambda: clock[0])
    hooks = RunHooks(
        model="m", run_id="r", epochs=6, local_dir=tmp_path, registry_uri="s3://reg/x", checkpoint_interval=interval
    )
    submitted: list[tuple[str, Any]] = []
    monkeypatch.setattr(hooks, "_submit", lambda fn, arg: submitted.append((fn.__name__, arg)))
    last = tmp_path / "last.pt"
    last.write_bytes(b"weights")
    trainer = SimpleNamespace(epoch=0, epochs=6, last=str(last), start_epoch=0, metrics={}, tloss=None)
    monkeypatch.setattr(run_hooks, "epoch_metrics", lambda _t: {})
    hooks.on_train_start(trainer)
    checkpoint_epochs = []
    for epoch in range(6):
        clock[0] += epoch_seconds
        trainer.epoch = epoch
        hooks.on_model_save(trainer)
        hooks.on_fit_epoch_end(trainer)
        checkpoint_epochs.append(submitted[-1][1].checkpoint_epoch)
    uploads = [Path(arg).name for name, arg in submitted if name == "_upload"]
    assert uploads == [f"last-{e}.pt" for e in uploaded_epochs]
    # progress.json after each epoch names the newest epoch whose last.pt was queued before it
    expected = [max([e for e in uploaded_epochs if e <= done], default=0) for done in range(1, 7)]
    assert checkpoint_epochs == expected
