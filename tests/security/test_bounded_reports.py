"""One object cannot hurt the operator: progress.json and report.json are capped and validated (real SeaweedFS), a
bad one fails the run on the third try, and the status patch stays under 256 KiB whatever the report holds."""

from __future__ import annotations

import json
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import pytest

from emulator import sim
from kretrain.api import CheckResult, Metrics, RunReport
from kretrain.api.pod import STAGE_KEY_FILE
from kretrain.limits import MAX_PROGRESS_BYTES, MAX_REPORT_BYTES
from kretrain.operator import bounds, jobs, lifecycle
from kretrain.operator.settings import OperatorSettings
from kretrain.registry import InvalidRunRecord, Lineage, Registry
from kretrain.store import ObjectStore, join_uri

MODEL = "m"
NS, NAME, UID = "ns", "run", "12345678-aaaa"
RUN = jobs.run_id(NS, NAME, UID)
JOB = jobs.job_name(RUN)
NOW = "2026-01-01T00:00:00Z"
STATUS_LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def bucket(s3: Any) -> str:
    return str(s3.new_bucket("bounded"))


@pytest.fixture
def registry(s3: Any, bucket: str) -> Registry:
    store = ObjectStore(endpoint_url=s3.endpoint, access_key=s3.server.access_key, secret_key=s3.server.secret_key)
    return Registry(store, f"s3://{bucket}/{uuid.uuid4().hex[:8]}")


STAGE_KEY = bytes(range(32))
"""The run's stage key (its ConfigMap: SucceededJob): the run's own pod, any image, signs whatever it writes."""


def put(registry: Registry, name: str, data: bytes) -> str:
    """A record the run's own pod wrote (a report with its MAC, as the operator concludes only those)."""
    uri = join_uri(registry.run_uri(MODEL, RUN), name)
    registry.store.put_bytes(uri, data)
    if name == "report.json":
        sim.sign_report(registry, MODEL, RUN, data, STAGE_KEY)
    return uri


# ---- progress.json --------------------------------------------------------------------------------------
BAD_PROGRESS = [
    ("nan-eta", b'{"epoch": 1, "epochs": 2, "etaSeconds": NaN}', "etaSeconds"),
    ("infinity-metric", b'{"epoch": 1, "epochs": 2, "metrics": {"mAP50": Infinity}}', "metrics.mAP50"),
    ("minus-infinity-elapsed", b'{"epoch": 1, "epochs": 2, "elapsedSeconds": -Infinity}', "elapsedSeconds"),
    ("huge-epoch", b'{"epoch": 1000000000000, "epochs": 1000000000000}', "epoch"),
    ("huge-metric", b'{"epoch": 1, "epochs": 2, "metrics": {"loss": 1e300}}', "metrics.loss"),
    ("huge-eta", b'{"epoch": 1, "epochs": 2, "etaSeconds": 1e20}', "etaSeconds"),
    ("negative-epoch", b'{"epoch": -1, "epochs": 2}', "epoch"),
    ("negative-eta", b'{"epoch": 1, "epochs": 2, "etaSeconds": -5}', "etaSeconds"),
    ("epoch-past-the-plan", b'{"epoch": 5, "epochs": 2}', "epoch (5) is larger than epochs (2)"),
    ("string-metric", b'{"epoch": 1, "epochs": 2, "metrics": {"note": "x"}}', "metrics.note"),
    ("unknown-field", b'{"epoch": 1, "epochs": 2, "command": "rm -rf /"}', "command"),
    ("no-epochs", b"{}", "epoch"),
    ("not-json", b"\x00\xff garbage", "(document)"),
    ("json-array", b"[1, 2]", "(document)"),
    ("metric-name-with-newline", b'{"epoch": 1, "epochs": 2, "metrics": {"a\\nb": 1}}', "metrics"),
    ("too-many-metrics", json.dumps({"epoch": 1, "epochs": 2, "metrics": {f"m{i}": 0.1 for i in range(65)}}).encode(),
     "metrics"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "field"), [c[1:] for c in BAD_PROGRESS], ids=[c[0] for c in BAD_PROGRESS])
def test_bad_progress_is_refused_naming_the_object_and_field(registry: Registry, data: bytes, field: str) -> None:
    uri = put(registry, "progress.json", data)
    with pytest.raises(InvalidRunRecord) as err:
        registry.read_progress(MODEL, RUN)
    assert err.value.uri == uri and uri in str(err.value) and field in str(err.value)


def test_a_valid_progress_reads_back(registry: Registry) -> None:
    registry.write_progress(MODEL, RUN, {"epoch": 2, "epochs": 3, "etaSeconds": 5.0, "metrics": {"mAP50": 0.4}})
    progress = registry.read_progress(MODEL, RUN)
    assert progress is not None and (progress.epoch, progress.eta_seconds, progress.metrics) == (2, 5.0, {"mAP50": 0.4})


def test_the_writer_refuses_nan_too(registry: Registry) -> None:
    with pytest.raises(InvalidRunRecord, match="etaSeconds"):
        registry.write_progress(MODEL, RUN, {"epoch": 1, "epochs": 2, "etaSeconds": float("nan")})
    assert registry.read_progress(MODEL, RUN) is None  # nothing half-written


def test_oversized_progress_is_refused_without_reading_it(registry: Registry) -> None:
    size = MAX_PROGRESS_BYTES + 3 * 1024 * 1024
    put(registry, "progress.json", b'{"epoch": 1, "epochs": 2, "updatedAt": "' + b"x" * size + b'"}')
    tracemalloc.start()
    try:
        with pytest.raises(InvalidRunRecord, match="over the cap"):
            registry.read_progress(MODEL, RUN)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MAX_PROGRESS_BYTES, f"{peak} bytes allocated while refusing a {size}-byte object"


def test_oversized_report_is_refused_naming_it(registry: Registry) -> None:
    uri = put(registry, "report.json", b" " * (MAX_REPORT_BYTES + 2 * 1024 * 1024) + b"{}")
    with pytest.raises(InvalidRunRecord, match=f"{MAX_REPORT_BYTES} bytes") as err:
        registry.read_run_report(MODEL, RUN)
    assert err.value.uri == uri


# ---- a bad record fails the run on the third try, never loops ----------------------------------------
class SucceededJob:
    """The API's view of the run's Job: succeeded (or running)."""

    def __init__(self, phase: str = "Complete") -> None:
        self.job = {"status": {"conditions": [{"type": phase, "status": "True"}]} if phase else {}}
        self.job["metadata"] = {"name": JOB, "ownerReferences": [{"uid": UID, "controller": True}]}  # the operator's

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        assert (namespace, name) == (NS, JOB)
        return self.job

    def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        return []

    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        assert (namespace, name) == (NS, JOB)
        owner = {
            "apiVersion": "kretrain.dev/v1alpha1",
            "kind": "RetrainJob",
            "name": NAME,
            "uid": UID,
            "controller": True,
        }
        return {"metadata": {"name": JOB, "ownerReferences": [owner]}, "data": {STAGE_KEY_FILE: STAGE_KEY.hex()}}


def settings(s3: Any) -> OperatorSettings:
    return OperatorSettings(registry="s3://unused/reg", s3_endpoint=s3.endpoint, metrics_port=0)


def rtj(registry: Registry, eras: list[str], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": NAME, "namespace": NS, "uid": UID, "generation": 1},
        "spec": {"model": MODEL, "dataset": {"uri": "s3://data/x", "eras": eras},
                 "storage": {"registry": registry.uri}},
        "status": status or {"jobName": JOB, "runId": RUN, "state": "Training"},
    }  # fmt: skip


def deps(s3: Any, registry: Registry, kube: Any) -> lifecycle.Deps:
    allowed = settings(s3).model_copy(update={"allowed_registries": [registry.uri]})  # the policy names it
    return lifecycle.Deps(settings=allowed, kube=kube, registry_for=lambda spec: registry,
                          adopt=lambda objs: None, now=lambda: NOW)  # fmt: skip


def report_json(**changes: Any) -> bytes:
    rep = sim.report(RUN, MODEL, {}, {"a": 0.6}, None, None).dump()
    rep.update(changes)
    return json.dumps(rep).encode()


BAD_RECORDS = [
    ("report-not-json", "report.json", b"{not json", "Complete", "InvalidReport", "(document)"),
    ("report-missing-candidate-evaluation", "report.json",
     json.dumps({k: v for k, v in json.loads(report_json()).items() if k != "candidateEvaluation"}).encode(),
     "Complete", "InvalidReport", "candidateEvaluation"),
    ("report-nan-metric", "report.json",
     report_json(candidateEvaluation={"pooled": {"mAP50-95": "NaN", "mAP50": 0.5, "precision": 0.5, "recall": 0.5}}),
     "Complete", "InvalidReport", "candidateEvaluation.pooled.mAP50-95"),
    ("report-unknown-field", "report.json", report_json(promoteVersion="v5"), "Complete", "InvalidReport",
     "promoteVersion"),
    ("progress-nan-while-training", "progress.json", b'{"epoch": 1, "epochs": 2, "etaSeconds": NaN}', "",
     "InvalidProgress", "etaSeconds"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "data", "phase", "reason", "field"), [c[1:] for c in BAD_RECORDS],
                         ids=[c[0] for c in BAD_RECORDS])  # fmt: skip
def test_a_bad_record_fails_the_run_on_the_third_try(
    s3: Any, registry: Registry, name: str, data: bytes, phase: str, reason: str, field: str
) -> None:
    put(registry, name, data)
    d = deps(s3, registry, SucceededJob(phase))
    body = rtj(registry, ["a"])
    for retry in (0, 1):  # Kopf's count of failed tries in a row; status cannot reset it
        outcome = lifecycle.poll(body, d, retry=retry)
        assert outcome.retry and name in outcome.retry and outcome.state is None
    outcome = lifecycle.poll(body, d, retry=2)
    failed = outcome.status["conditions"][-1]
    assert outcome.state == "Failed" and outcome.retry is None
    assert failed["reason"] == reason and name in failed["message"] and field in failed["message"]


# ---- the status patch stays bounded ---------------------------------------------------------------------
ERAS = [f"era-{i:02d}" for i in range(64)]
CLASSES = [f"class-{i:03d}-" + "x" * 50 for i in range(80)]


def per_class_metrics(value: float) -> Metrics:
    return sim.metrics(value).model_copy(update={"per_class": {c: value for c in CLASSES}})


def huge_report(registry: Registry, tmp: Path) -> RunReport:
    """64 eras x 80 classes for both models, 500 eras the spec does not name, 200 checks with 10 KB details."""
    incumbent_scores = {e: 0.5 for e in ERAS}
    sim.seed_incumbent(registry, MODEL, "v1", incumbent_scores, tmp)
    rep = sim.report(RUN, MODEL, {}, {e: 0.6 for e in ERAS}, incumbent_scores, registry.incumbent(MODEL))
    extra = {f"extra-{i:03d}": per_class_metrics(0.6) for i in range(500)}
    cand = rep.candidate_evaluation.model_copy(
        update={"eras": {**{e: per_class_metrics(0.6) for e in ERAS}, **extra},
                "pooled": per_class_metrics(0.6)}
    )  # fmt: skip
    assert rep.incumbent_evaluation is not None
    inc = rep.incumbent_evaluation.model_copy(update={"eras": {e: per_class_metrics(0.5) for e in ERAS}})
    checks = [*rep.checks] + [
        CheckResult(name=f"custom-{i}" + "y" * 500, passed=False, value=float("nan"), detail="z" * 10_000)
        for i in range(200)
    ]
    rep = rep.model_copy(update={"candidate_evaluation": cand, "incumbent_evaluation": inc, "checks": checks})
    ref = registry.register(MODEL, RUN, sim.weights_file(tmp, RUN), rep, {}, Lineage(parent="v1"))
    rep = rep.model_copy(update={"candidate": ref})
    sim.sign_report(registry, MODEL, RUN, registry.write_run_report(MODEL, RUN, rep), STAGE_KEY)
    return rep


def test_the_status_of_a_64_era_report_with_per_class_metrics_stays_under_256_kib(
    s3: Any, registry: Registry, tmp_path: Path
) -> None:
    rep = huge_report(registry, tmp_path)
    unbounded = len(json.dumps(rep.model_dump(mode="json", by_alias=True)))
    assert unbounded > 4 * STATUS_LIMIT  # what main copied into the status (per-class x eras, every check)
    outcome = lifecycle.poll(rtj(registry, ERAS), deps(s3, registry, SucceededJob()))
    status = outcome.status
    assert outcome.state == "Promoted", status.get("decision")
    size = bounds.size(status)
    assert size < STATUS_LIMIT, f"status patch is {size} bytes"
    text = json.dumps(status)
    assert "perClass" not in text and "extra-000" not in text and "NaN" not in text
    assert sorted(status["evaluation"]["eras"]) == ERAS
    assert sorted(status["evaluation"]["candidate"]["eras"]) == ERAS
    assert len(status["checks"]) == bounds.MAX_CHECKS
    assert all(len(c.get("detail", "")) <= bounds.MAX_TEXT for c in status["checks"])
    assert all(len(r) <= bounds.MAX_TEXT for r in status["decision"]["reasons"])
    assert len(outcome.events[0].message) <= bounds.MAX_TEXT
    assert status["candidate"]["version"] == RUN


def test_huge_integers_in_every_era_still_leave_the_status_under_256_kib(
    s3: Any, registry: Registry, tmp_path: Path
) -> None:
    """Counts are unbounded ints in the report (JSON allows ~4300 digits): the status keeps the pooled figures."""
    huge = 10**4000
    sim.seed_incumbent(registry, MODEL, "v1", {e: 0.5 for e in ERAS}, tmp_path)
    rep = sim.report(RUN, MODEL, {}, {e: 0.6 for e in ERAS}, {e: 0.5 for e in ERAS}, registry.incumbent(MODEL))

    def inflate(evaluation: Any) -> Any:
        eras = {e: m.model_copy(update={"images": huge, "instances": huge}) for e, m in evaluation.eras.items()}
        return evaluation.model_copy(update={"eras": eras})

    assert rep.incumbent_evaluation is not None
    rep = rep.model_copy(
        update={"candidate_evaluation": inflate(rep.candidate_evaluation),
                "incumbent_evaluation": inflate(rep.incumbent_evaluation)}
    )  # fmt: skip
    ref = registry.register(MODEL, RUN, sim.weights_file(tmp_path, RUN), rep, {}, Lineage(parent="v1"))
    written = registry.write_run_report(MODEL, RUN, rep.model_copy(update={"candidate": ref}))
    sim.sign_report(registry, MODEL, RUN, written, STAGE_KEY)
    outcome = lifecycle.poll(rtj(registry, ERAS), deps(s3, registry, SucceededJob()))
    assert outcome.state == "Promoted"
    assert bounds.size(outcome.status) < STATUS_LIMIT
    assert sorted(outcome.status["evaluation"]["eras"]) == []  # per-era figures dropped, pooled kept
    assert outcome.status["evaluation"]["pooled"]["delta"] == pytest.approx(0.1)


def test_the_trainer_writes_progress_without_nan_losses(s3_env: Any, registry: Registry, tmp_path: Path) -> None:
    """The trainer's real per-epoch hooks, driven by a stand-in Ultralytics trainer whose losses diverged."""
    from types import SimpleNamespace

    from kretrain.trainer.train import RunHooks

    last = tmp_path / "last.pt"
    last.write_bytes(b"checkpoint")
    trainer = SimpleNamespace(
        epoch=0, epochs=2, last=last, start_epoch=0, fitness=None, tloss=None,
        metrics={"metrics/mAP50(B)": 0.5, "val/box_loss": float("nan")},
        label_loss_items=lambda tloss, prefix: {f"{prefix}/box_loss": float("inf"), f"{prefix}/cls_loss": 1.5},
    )  # fmt: skip
    hooks = RunHooks(MODEL, RUN, 2, tmp_path / "hooks", registry_uri=registry.uri, endpoint=s3_env.endpoint)
    hooks.on_train_start(trainer)
    hooks.on_model_save(trainer)
    hooks.on_fit_epoch_end(trainer)
    hooks.flush()
    progress = registry.read_progress(MODEL, RUN)
    assert progress is not None and (progress.epoch, progress.epochs) == (1, 2)
    assert progress.metrics == {"mAP50": 0.5, "train/cls_loss": 1.5}  # NaN and Infinity left out, not written
