"""Model files are data, not code: hostile baseWeights/architecture forms, YAML payloads and unverified pickles."""

from __future__ import annotations

import copy
import hashlib
import os
import pickle
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from kretrain.api import (
    Compute,
    DataSummary,
    Evaluation,
    Metrics,
    RetrainJobSpec,
    RunReport,
    StrategySpec,
    TrainingSummary,
)
from kretrain.operator.lifecycle import parse_spec
from kretrain.operator.settings import OperatorSettings
from kretrain.registry import Lineage, Registry, TamperedWeights
from kretrain.store import ObjectStore
from kretrain.trainer import offline
from kretrain.trainer.entrypoint import _checkpoint
from kretrain.trainer.modelfiles import (
    MAX_MODEL_YAML_BYTES,
    ModelFileError,
    check_activation,
    read_model_yaml,
    restrict_ultralytics,
)
from kretrain.trainer.train import StartWeights, TrainingError, build_model, resolve_start_weights
from kretrain.validate import validate_manifest

ARCH = Path(__file__).parent.parent / "data" / "yolov8n-extra2.yaml"
PIN = "@sha256:" + "ab" * 32
SETTINGS = OperatorSettings(registry="s3://models/reg", metrics_port=0)


class Marker:
    """A pickled object whose unpickling creates a file: proof that a load ran code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


def evil_pt(tmp_path: Path) -> tuple[bytes, Path]:
    """Bytes of a .pt whose unpickling touches a marker file (returned; it must never exist)."""
    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
    return pickle.dumps({"model": Marker(marker)}), marker


def manifest(**strategy: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kretrain.dev/v1alpha1",
        "kind": "RetrainJob",
        "metadata": {"name": "m", "namespace": "ns"},
        "spec": {
            "model": "shapes",
            "dataset": {"uri": "s3://datasets/shapes", "eras": ["e1", "e2"]},
            "strategy": {"type": "full", **strategy},
        },
    }


def spec(bucket: str, endpoint: str, **strategy: Any) -> RetrainJobSpec:
    return RetrainJobSpec.model_validate(
        {
            "model": "shapes",
            "dataset": {"uri": f"s3://{bucket}/data", "eras": ["e1", "e2"]},
            "strategy": {"type": "full", **strategy},
            "storage": {"endpoint": endpoint, "registry": f"s3://{bucket}/registry"},
        }
    )


@pytest.fixture(scope="module")
def store(s3: Any) -> ObjectStore:
    offline.configure()
    return ObjectStore(endpoint_url=s3.endpoint, access_key=s3.server.access_key,
                       secret_key=s3.server.secret_key, region="us-east-1")  # fmt: skip


@pytest.fixture(scope="module")
def bucket(s3: Any) -> str:
    return str(s3.new_bucket("modelfiles"))


# ------------------------------------------------------------------ admission: the forms the spec accepts

ADMISSION = [
    ("local-absolute-pt", "baseWeights", "/models/yolov8n.pt", "local paths are not allowed"),
    ("dotdot-pt", "baseWeights", "../../weights/evil.pt", "local paths are not allowed"),
    ("home-pt", "baseWeights", "~/evil.pt", "local paths are not allowed"),
    ("local-yaml-weights", "baseWeights", "./yolov8n.yaml", "local paths are not allowed"),
    ("local-arch", "architecture", "configs/evil.yaml", "local paths are not allowed"),
    ("dotdot-arch", "architecture", "../evil.yaml", "local paths are not allowed"),
    ("file-uri-arch", "architecture", "file:///tmp/evil.yaml", "file:// is not allowed"),
    ("file-uri-pt", "baseWeights", "file:///tmp/evil.pt", "file:// is not allowed"),
    ("https-pt", "baseWeights", "https://example.com/yolov8n.pt", "https:// is not allowed"),
    ("http-arch", "architecture", "http://example.com/evil.yaml", "http:// is not allowed"),
    ("s3-unpinned-pt", "baseWeights", "s3://ml-models/seed/yolov8n.pt", "must pin its content"),
    ("s3-unpinned-arch", "architecture", "s3://ml-models/arch/extra.yaml", "must pin its content"),
    ("s3-sidecar-only", "baseWeights", "s3://ml-models/seed/yolov8n.pt.sha256", "must pin its content"),
    ("sha256-too-short", "baseWeights", "s3://ml-models/seed/yolov8n.pt@sha256:1234", "malformed sha256 pin"),
    ("sha256-not-hex", "architecture", "s3://ml-models/a.yaml@sha256:" + "zz" * 32, "malformed sha256 pin"),
    ("s3-dotdot-pinned", "baseWeights", "s3://ml-models/x/../y.pt" + PIN, "malformed s3 URI"),
    ("pinned-yaml-as-weights", "baseWeights", "s3://ml-models/a.yaml" + PIN, "must name a .pt file"),
    ("pinned-pt-as-arch", "architecture", "s3://ml-models/a.pt" + PIN, "must name a model YAML file"),
    ("arch-not-yaml-name", "architecture", "yolov8n.pt", "built-in model YAML name"),
]


@pytest.mark.parametrize(("field", "value", "text"), [a[1:] for a in ADMISSION], ids=[a[0] for a in ADMISSION])
def test_model_file_form_refused_at_admission(field: str, value: str, text: str) -> None:
    with pytest.raises(ValidationError) as info:
        StrategySpec.model_validate({field: value})
    errors = info.value.errors()
    assert [e["loc"] for e in errors] == [(field,)] and text in errors[0]["msg"], errors
    # `kretrain validate` (and the operator's InvalidSpec, which uses the same models) name the field
    problems = validate_manifest(manifest(**{field: value}))
    assert any(p.path == f"spec.strategy.{field}" and text in p.message for p in problems), problems
    invalid = parse_spec({"spec": manifest(**{field: value})["spec"]}, SETTINGS)  # the operator's InvalidSpec reason
    assert isinstance(invalid, str) and f"spec.strategy.{field}: " in invalid and text in invalid, invalid


ACCEPTED = [
    ("incumbent", "baseWeights", "incumbent", "incumbent"),
    ("version", "baseWeights", "v-2026-11", "v-2026-11"),
    ("builtin", "baseWeights", "yolo11n.yaml", "yolo11n.yaml"),
    ("pinned-pt", "baseWeights", "s3://ml-models/a/b.pt" + PIN.upper().replace("@SHA256:", "@sha256:"),
     "s3://ml-models/a/b.pt" + PIN),
    ("builtin-arch", "architecture", "yolov8n-p2.yaml", "yolov8n-p2.yaml"),
    ("pinned-arch", "architecture", "s3://ml-models/a.yml" + PIN, "s3://ml-models/a.yml" + PIN),
]  # fmt: skip


@pytest.mark.parametrize(("field", "value", "stored"), [a[1:] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED])
def test_allowed_forms_pass_and_pins_are_normalised(field: str, value: str, stored: str) -> None:
    s = StrategySpec.model_validate({field: value})
    assert getattr(s, "base_weights" if field == "baseWeights" else "architecture") == stored
    assert validate_manifest(manifest(**{field: value})) == []


# ------------------------------------------------------------------ model YAMLs: no eval, only known layers


def arch_doc(**changes: Any) -> dict[str, Any]:
    doc = yaml.safe_load(ARCH.read_text())
    doc.update(changes)
    return copy.deepcopy(doc)


def payload(marker: Path) -> str:
    return f"__import__('os').system('touch {marker}')"


YAML_CASES = [
    ("activation-import-os", lambda m: arch_doc(activation=payload(m)), "activation"),
    ("activation-hidden-in-or", lambda m: arch_doc(activation=f"{payload(m)} or nn.SiLU()"), "activation"),
    ("activation-in-args", lambda m: arch_doc(activation=f"nn.ReLU({payload(m)})"), "activation"),
    ("activation-lambda", lambda m: arch_doc(activation=f"nn.SiLU() if {payload(m)} else nn.ReLU()"), "activation"),
    ("activation-not-allowlisted", lambda m: arch_doc(activation="nn.Module()"), "activation"),
    ("activation-deep-path", lambda m: arch_doc(activation="torch.nn.modules.activation.SiLU()"), "activation"),
    ("module-function-in-globals", lambda m: _row(arch_doc(), "yaml_model_load", [str(m)]), "yaml_model_load"),
    ("module-builtins", lambda m: _row(arch_doc(), "__builtins__", []), "__builtins__"),
    ("module-os-system", lambda m: _row(arch_doc(), "os.system", [f"touch {m}"]), "os.system"),
    ("module-torchvision-ops", lambda m: _row(arch_doc(), "torchvision.ops.nms", []), "torchvision.ops.nms"),
    ("module-nn-functional", lambda m: _row(arch_doc(), "nn.functional", []), "nn.functional"),
    ("module-unknown", lambda m: _row(arch_doc(), "NotALayer", []), "NotALayer"),
    ("args-mapping", lambda m: _row(arch_doc(), "Conv", [{"!!python": 1}]), "arguments"),
    ("not-a-mapping", lambda m: ["backbone"], "mapping"),
]


def _row(doc: dict[str, Any], module: str, args: list[Any]) -> dict[str, Any]:
    doc["backbone"][1] = [-1, 1, module, args]
    return doc


@pytest.mark.parametrize(("make", "named"), [c[1:] for c in YAML_CASES], ids=[c[0] for c in YAML_CASES])
def test_hostile_model_yaml_refused_from_s3_and_locally(
    make: Any, named: str, store: ObjectStore, bucket: str, s3: Any, tmp_path: Path
) -> None:
    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
    data = yaml.safe_dump(make(marker)).encode()
    key = f"arch/{uuid.uuid4().hex}.yaml"
    store.put_bytes(f"s3://{bucket}/{key}", data)
    pinned = f"s3://{bucket}/{key}@sha256:{hashlib.sha256(data).hexdigest()}"  # the pin matches: content is refused
    with pytest.raises(TrainingError) as info:
        resolve_start_weights(spec(bucket, s3.endpoint, architecture=pinned), tmp_path / "w", store=store)
    assert "strategy.architecture" in str(info.value) and named in str(info.value)
    local = tmp_path / "evil.yaml"
    local.write_bytes(data)
    with pytest.raises(TrainingError, match=named.replace(".", r"\.")):  # a local YAML handed to build_model
        build_model(StartWeights(description="local", yaml=str(local)))
    assert not marker.exists()


def test_allowlisted_activation_builds_the_model(tmp_path: Path) -> None:
    """The check refuses payloads, not architectures: a ReLU variant of the extended YAML builds."""
    path = tmp_path / "relu.yaml"
    path.write_text(yaml.safe_dump(arch_doc(activation="nn.LeakyReLU(0.1)")))
    yolo = build_model(StartWeights(description="relu", yaml=str(path)))
    assert len(yolo.model.model) == 25
    check_activation("torch.nn.Hardtanh(min_val=-1.0, max_val=1.0)", "t")


def test_oversized_model_yaml_refused() -> None:
    data = b"nc: 2\n" + b"# padding\n" * (MAX_MODEL_YAML_BYTES // 10 + 1)
    with pytest.raises(ModelFileError, match="at most"):
        read_model_yaml(data, "big.yaml")


def test_builtin_name_never_comes_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: ObjectStore, bucket: str, s3: Any
) -> None:
    """Ultralytics resolves a bare `yolov8n.yaml` from the current directory first; kretrain never does."""
    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
    (tmp_path / "yolov8n.yaml").write_text(yaml.safe_dump(arch_doc(activation=payload(marker))))
    monkeypatch.chdir(tmp_path)
    start = resolve_start_weights(spec(bucket, s3.endpoint, baseWeights="yolov8n.yaml"), tmp_path / "w", store=store)
    assert start.yaml and Path(start.yaml).parent == tmp_path / "w" / "base-yaml"
    build_model(start)
    assert not marker.exists()
    with pytest.raises(TrainingError, match="not an Ultralytics built-in"):
        resolve_start_weights(spec(bucket, s3.endpoint, baseWeights="evil-net.yaml"), tmp_path / "w2", store=store)


# ------------------------------------------------------------------ pickles: nothing is loaded before its hash matched


def test_pinned_pt_with_other_bytes_refused_before_load(
    tmp_path: Path, store: ObjectStore, bucket: str, s3: Any
) -> None:
    evil, marker = evil_pt(tmp_path)
    key = f"seed/{uuid.uuid4().hex}.pt"
    store.put_bytes(f"s3://{bucket}/{key}", evil)
    pinned_sha = hashlib.sha256(b"the weights the author meant").hexdigest()
    s = spec(bucket, s3.endpoint, baseWeights=f"s3://{bucket}/{key}@sha256:{pinned_sha}")
    with pytest.raises(TrainingError) as info:
        resolve_start_weights(s, tmp_path / "w", store=store)
    msg = str(info.value)
    assert "strategy.baseWeights" in msg and pinned_sha in msg and hashlib.sha256(evil).hexdigest() in msg
    assert not marker.exists() and not any((tmp_path / "w").rglob("*.pt*"))


def test_sidecar_agreeing_with_a_tampered_pt_proves_nothing(
    tmp_path: Path, store: ObjectStore, bucket: str, s3: Any
) -> None:
    """Whoever can replace the .pt can replace its .sha256: only the spec's pin counts."""
    evil, marker = evil_pt(tmp_path)
    uri = f"s3://{bucket}/seed/{uuid.uuid4().hex}.pt"
    store.put_bytes(uri, evil)
    store.put_bytes(uri + ".sha256", f"{hashlib.sha256(evil).hexdigest()}  x.pt\n".encode())
    s = spec(bucket, s3.endpoint, baseWeights=f"{uri}@sha256:{'0' * 64}")
    with pytest.raises(TrainingError, match=r"pins sha256 0{64}"):
        resolve_start_weights(s, tmp_path / "w", store=store)
    assert not marker.exists()


def test_pinned_pickle_that_runs_code_is_refused_by_the_restricted_loader(tmp_path: Path) -> None:
    """Even a pt whose pin matches (the author pinned a hostile file) is unpickled with weights_only."""
    evil, marker = evil_pt(tmp_path)
    path = tmp_path / "pinned.pt"
    path.write_bytes(evil)
    restrict_ultralytics()
    with pytest.raises(TypeError, match="outside the supported Ultralytics checkpoint format"):
        build_model(StartWeights(description="pinned", weights=path))
    assert not marker.exists()


def test_tampered_registry_version_refused_before_load(
    tmp_path: Path, store: ObjectStore, bucket: str, s3: Any
) -> None:
    registry = Registry(store, f"s3://{bucket}/registry-{uuid.uuid4().hex[:6]}")
    good = tmp_path / "good.pt"
    good.write_bytes(b"registered weights (never loaded here)")
    report = RunReport(
        run_id="v1",
        model="shapes",
        spec={"model": "shapes"},
        data=DataSummary(),
        training=TrainingSummary(strategy="full", base_weights="yolov8n.yaml", epochs_planned=1, epochs_completed=1),
        compute=Compute(wall_seconds=1.0),
        candidate_evaluation=Evaluation(pooled=Metrics(map50_95=0.5, map50=0.5, precision=0.5, recall=0.5)),
    )
    registry.register("shapes", "v1", good, report, {}, Lineage(parent=None))
    evil, marker = evil_pt(tmp_path)
    store.put_bytes(str(registry.version_info("shapes", "v1").uri), evil)  # overwrite the registered weights
    with pytest.raises(TamperedWeights):
        resolve_start_weights(spec(bucket, s3.endpoint, baseWeights="v1"), tmp_path / "w", registry=registry)
    assert not marker.exists() and not (tmp_path / "w" / "v1" / "weights.pt").exists()


CHECKPOINT_CASES = [
    ("no-sidecar", None),
    ("sidecar-of-other-bytes", "0" * 64),
    ("sidecar-garbage", "not a digest"),
    ("sidecar-empty", ""),
]


@pytest.mark.parametrize("sidecar", [c[1] for c in CHECKPOINT_CASES], ids=[c[0] for c in CHECKPOINT_CASES])
def test_resume_checkpoint_not_matching_its_sidecar_is_never_loaded(
    sidecar: str | None, tmp_path: Path, store: ObjectStore, bucket: str
) -> None:
    evil, marker = evil_pt(tmp_path)
    uri = f"s3://{bucket}/registry/shapes/runs/{uuid.uuid4().hex[:8]}/last.pt"
    store.put_bytes(uri, evil)
    if sidecar is not None:
        store.put_bytes(uri + ".sha256", f"{sidecar}  last.pt\n".encode())
    dest = tmp_path / "resume" / "last.pt"
    assert _checkpoint(store, uri, dest) is None
    assert not dest.exists() and not list(dest.parent.iterdir()) and not marker.exists()
    store.put_bytes(uri + ".sha256", f"{hashlib.sha256(evil).hexdigest()}  last.pt\n".encode())
    assert _checkpoint(store, uri, dest) == dest  # the matching sidecar (the trainer's own) is accepted
    assert not marker.exists()  # downloading and hashing never unpickles


def test_yaml_python_tags_refused(tmp_path: Path, store: ObjectStore, bucket: str, s3: Any) -> None:
    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
    data = f"nc: 2\nbackbone: !!python/object/apply:os.system ['touch {marker}']\nhead: []\n".encode()
    key = f"arch/{uuid.uuid4().hex}.yaml"
    store.put_bytes(f"s3://{bucket}/{key}", data)
    pinned = f"s3://{bucket}/{key}@sha256:{hashlib.sha256(data).hexdigest()}"
    with pytest.raises(TrainingError, match="not valid YAML"):
        resolve_start_weights(spec(bucket, s3.endpoint, architecture=pinned), tmp_path / "w", store=store)
    assert not marker.exists()
