"""Resume at every stage after training: a pod killed after training, after evaluation and mid-register resumes
without training again (from the trained stage in the registry, not from a finished, unresumable last.pt) and,
once evaluated, without evaluating again (the evaluated stage); the last rerun finishes with one version, one
report and each epoch once in results.csv."""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from test_entrypoint import CLASSES, Pod, tiny_eras, tiny_spec

from kretrain.trainer import runkey, stages
from kretrain.trainer.synthetic import generate_dataset, upload_dataset

pytestmark = pytest.mark.slow

RUN = "stages-1"
EPOCHS = 2


@pytest.fixture(scope="module")
def pod(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Pod:
    root = tmp_path_factory.mktemp("stages")
    p = Pod(s3, root, s3.new_bucket("stages"), stage_key="5e" * 32)  # as the operator's ConfigMap gives it
    generate_dataset(root / "dataset", tiny_eras(images=24), CLASSES)
    upload_dataset(root / "dataset", p.store, f"s3://{p.bucket}/data")
    return p


def _events(pod: Pod) -> list[str]:
    events: list[str] = []
    log = pod.root / f"{RUN}.log"
    for line in (log.read_text(errors="replace") if log.exists() else "").splitlines():
        if line.startswith("{"):
            try:
                events.append(str(json.loads(line).get("event")))
            except ValueError:
                continue
    return events


def _kill_when(pod: Pod, spec: dict[str, Any], what: str, reached: Callable[[], bool]) -> None:
    """Start an attempt (a new pod: fresh scratch) and SIGKILL it as soon as `reached()`."""
    shutil.rmtree(pod.root / RUN / "scratch", ignore_errors=True)
    proc = pod.start(RUN, spec)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None and not reached():
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert reached(), f"the attempt ended before {what}: {pod.log(RUN)}"
    assert pod.registry.read_run_report("shapes", RUN) is None, f"killed {what}, yet it finished"


def test_killed_after_training_after_evaluation_and_mid_register_resumes_each_time(pod: Pod) -> None:
    spec = tiny_spec(pod.bucket, pod.s3.endpoint, epochs=EPOCHS, imgsz=32)
    spec["strategy"]["checkpointIntervalSeconds"] = 0  # last.pt after every epoch: a finished one is in S3
    version_prefix = pod.registry.version_uri("shapes", RUN).rstrip("/") + "/"
    mark = len(_events(pod))

    def event_since(name: str) -> Callable[[], bool]:
        start = len(_events(pod))
        return lambda: name in _events(pod)[start:]

    _kill_when(pod, spec, "after training", event_since("trained-saved"))
    _kill_when(pod, spec, "after evaluation", event_since("evaluated"))
    # Mid-register: this attempt has skipped evaluation and written to the version folder (the previous
    # attempt, killed right after evaluating, may have begun registering too: its objects do not count).
    start, before = len(_events(pod)), len(pod.store.list(version_prefix))
    _kill_when(
        pod, spec, "mid-register",
        lambda: "evaluation-skipped" in _events(pod)[start:] and len(pod.store.list(version_prefix)) > before,
    )  # fmt: skip
    shutil.rmtree(pod.root / RUN / "scratch", ignore_errors=True)
    assert pod.run(RUN, spec) == 0, pod.log(RUN)

    events = _events(pod)[mark:]
    assert events.count("trained-saved") == 1 and events.count("training-skipped") == 3, events
    assert events.count("evaluated") == 1 and events.count("evaluation-skipped") == 2, events  # evaluated once
    assert "resume" not in events and "epoch" in events  # trained once, never from last.pt
    assert [v.version for v in pod.registry.versions("shapes")] == [RUN]
    report = pod.registry.read_run_report("shapes", RUN)
    assert report is not None and report.candidate is not None and report.candidate.version == RUN
    assert report.training.epochs_completed == EPOCHS
    trained = stages.TrainedStage.model_validate_json(
        pod.store.get_bytes(pod.registry.run_uri("shapes", RUN).rstrip("/") + "/trained/trained.json")
    )
    epochs = [line.split(",")[0].strip() for line in trained.results_csv.splitlines()[1:] if line.strip()]
    assert epochs == [str(e) for e in range(1, EPOCHS + 1)], trained.results_csv
    assert report.candidate.sha256 == trained.best_sha256  # the registered weights are the trained stage's
    run_uri = pod.registry.run_uri("shapes", RUN).rstrip("/")
    for record in ("trained/trained.json", "evaluated/evaluated.json", "last.pt.sha256", "report.json"):  # signed
        assert pod.store.exists(f"{run_uri}/{record}{runkey.MAC_SUFFIX}"), record
    mark = len(_events(pod))
    assert pod.run(RUN, spec) == 0, pod.log(RUN)  # one more attempt: its own signed report says it is done
    assert _events(pod)[mark:].count("already-finished") == 1, _events(pod)[mark:]


def test_a_tampered_trained_stage_is_not_used(pod: Pod) -> None:
    """A trained.json whose best.pt does not match its sha256 is ignored: the run trains again (and finishes)."""
    run = "stages-tampered"
    spec = tiny_spec(pod.bucket, pod.s3.endpoint, epochs=1, imgsz=32)
    base = pod.registry.run_uri("shapes", run).rstrip("/") + "/trained/"
    record = stages.TrainedStage(
        best_sha256="0" * 64, base_weights="x", epochs_completed=1, train_seconds=1.0, results_csv="epoch\n1\n"
    )
    assert pod.stage_key is not None  # signed with the run's own key: what is checked here is best.pt's sha256
    runkey.put_record(
        pod.store, base + "trained.json", json.dumps(record.dump()).encode(), bytes.fromhex(pod.stage_key)
    )
    pod.store.put_bytes(base + "best.pt", b"not weights")
    assert pod.run(run, spec) == 0, pod.log(run)
    log = (pod.root / f"{run}.log").read_text(errors="replace")
    assert "trained-stage-ignored" in log and "training-skipped" not in log
