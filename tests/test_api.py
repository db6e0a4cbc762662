"""The RetrainJob API: malformed manifests are rejected by the CRD schema and the models, naming the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kretrain.api import RetrainJob, RetrainJobSpec
from kretrain.api.ultralytics_args import RESERVED_TRAIN_ARGS, ULTRALYTICS_TRAIN_ARGS
from kretrain.validate import model_problems, schema_problems, validate_manifest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

VALID: dict[str, Any] = {
    "apiVersion": "kretrain.dev/v1alpha1",
    "kind": "RetrainJob",
    "metadata": {"name": "good", "namespace": "default"},
    "spec": {
        "model": "traffic-detector",
        "dataset": {"uri": "s3://datasets/traffic", "eras": ["q1", "q2"]},
        "strategy": {"type": "incremental", "replay": {"fraction": 0.3}, "epochs": 10},
        "storage": {"credentialsSecret": "kretrain-s3"},
    },
}


def mutate(path: str, value: Any) -> dict[str, Any]:
    """VALID with the dotted `path` set to `value` (or deleted when value is DELETE)."""
    doc = copy.deepcopy(VALID)
    *parents, leaf = path.split(".")
    node = doc
    for p in parents:
        node = node.setdefault(p, {})
    if value is DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return doc


DELETE = object()

# (case id, mutated manifest, field path the error must name, does the CRD schema catch it too?)
MALFORMED: list[tuple[str, dict[str, Any], str, bool]] = [
    ("epochs-string", mutate("spec.strategy.epochs", "ten"), "spec.strategy.epochs", True),
    ("epochs-zero", mutate("spec.strategy.epochs", 0), "spec.strategy.epochs", True),
    ("epochs-negative", mutate("spec.strategy.epochs", -5), "spec.strategy.epochs", True),
    ("unknown-spec-field", mutate("spec.epochs", 10), "spec.epochs", True),
    ("unknown-nested-field", mutate("spec.dataset.era", ["q1"]), "spec.dataset.era", True),
    ("replay-zero", mutate("spec.strategy.replay", {"fraction": 0}), "spec.strategy.replay.fraction", True),
    ("replay-above-one", mutate("spec.strategy.replay", {"fraction": 1.5}), "spec.strategy.replay.fraction", True),
    ("replay-on-full", mutate("spec.strategy", {"type": "full", "replay": {"fraction": 0.2}}), "spec.strategy", False),
    ("incremental-one-era", mutate("spec.dataset.eras", ["q2"]), "spec", False),
    (
        "incremental-all-new",
        mutate("spec.dataset", {"uri": "s3://data/t", "eras": ["a", "b"], "newEras": 2}),
        "spec",
        False,
    ),
    ("empty-eras", mutate("spec.dataset.eras", []), "spec.dataset.eras", True),
    ("duplicate-eras", mutate("spec.dataset.eras", ["q1", "q1"]), "spec.dataset.eras", False),
    ("bad-era-name", mutate("spec.dataset.eras", ["q1", "../etc"]), "spec.dataset.eras[1]", True),
    ("new-eras-too-many", mutate("spec.dataset.newEras", 5), "spec.dataset", False),
    ("uri-not-s3", mutate("spec.dataset.uri", "http://bucket/data"), "spec.dataset.uri", True),
    ("uri-no-bucket", mutate("spec.dataset.uri", "s3://"), "spec.dataset.uri", True),
    ("uri-uppercase-bucket", mutate("spec.dataset.uri", "s3://My_Bucket/x"), "spec.dataset.uri", True),
    (
        "inline-access-key",
        mutate("spec.storage", {"accessKeyId": "AKIA", "secretAccessKey": "x"}),
        "spec.storage",
        True,
    ),
    ("inline-password", mutate("spec.storage", {"credentialsSecret": "s", "password": "p"}), "spec.storage", True),
    ("gpus-negative", mutate("spec.resources", {"gpus": -1}), "spec.resources.gpus", True),
    ("gpus-float", mutate("spec.resources", {"gpus": 1.5}), "spec.resources.gpus", True),
    ("missing-model", mutate("spec.model", DELETE), "spec.model", True),
    ("missing-dataset", mutate("spec.dataset", DELETE), "spec.dataset", True),
    ("model-uppercase", mutate("spec.model", "Traffic_Detector"), "spec.model", True),
    ("strategy-unknown", mutate("spec.strategy.type", "partial"), "spec.strategy.type", True),
    ("imgsz-not-multiple-32", mutate("spec.strategy.imgsz", 100), "spec.strategy.imgsz", True),
    (
        "lr0-with-auto",
        mutate("spec.strategy", {"type": "full", "optimizer": "auto", "lr0": 0.01}),
        "spec.strategy",
        False,
    ),
    (
        "hyperparameter-unknown",
        mutate("spec.strategy.hyperparameters", {"learning_rate": 0.1}),
        "spec.strategy.hyperparameters",
        False,
    ),
    (
        "hyperparameter-reserved",
        mutate("spec.strategy.hyperparameters", {"epochs": 3}),
        "spec.strategy.hyperparameters",
        False,
    ),
    ("metric-unknown", mutate("spec.promotion", {"metric": "accuracy"}), "spec.promotion.metric", True),
    (
        "regression-negative",
        mutate("spec.promotion", {"maxEraRegression": -0.1}),
        "spec.promotion.maxEraRegression",
        True,
    ),
    ("mode-unknown", mutate("spec.promotion", {"mode": "yolo"}), "spec.promotion.mode", True),
    (
        "required-check-unknown",
        mutate("spec.promotion", {"requiredChecks": ["vibes"]}),
        "spec.promotion.requiredChecks",
        False,
    ),
    ("shm-not-quantity", mutate("spec.resources", {"shmSize": "lots"}), "spec.resources.shmSize", True),
    ("deadline-zero", mutate("spec.activeDeadlineSeconds", 0), "spec.activeDeadlineSeconds", True),
    ("backoff-negative", mutate("spec.backoffLimit", -1), "spec.backoffLimit", True),
    ("base-weights-http", mutate("spec.strategy.baseWeights", "http://x/y.pt"), "spec.strategy.baseWeights", False),
    (
        "architecture-not-yaml",
        mutate("spec.strategy.architecture", "s3://models/arch.json@sha256:" + "0" * 64),
        "spec.strategy.architecture",
        False,
    ),
    ("split-too-large", mutate("spec.dataset.split", {"val": 0.45, "test": 0.45}), "spec.dataset", False),
    (
        "toleration-bad-effect",
        mutate("spec.resources", {"tolerations": [{"key": "k", "effect": "Sometimes"}]}),
        "spec.resources.tolerations[0].effect",
        True,
    ),
]


@pytest.mark.parametrize(("case", "manifest", "field", "schema_catches"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_manifest_rejected_naming_the_field(
    case: str, manifest: dict[str, Any], field: str, schema_catches: bool
) -> None:
    model = model_problems(manifest)
    assert model, f"{case}: the models accepted it"
    assert any(p.path == field for p in model), f"{case}: no model problem names {field}: {[str(p) for p in model]}"
    schema = schema_problems(manifest)
    if schema_catches:
        assert any(p.path.startswith(field) for p in schema), f"{case}: CRD schema missed it: {schema}"
    assert validate_manifest(manifest), case


def test_table_has_at_least_20_cases() -> None:
    assert len(MALFORMED) >= 20


def test_valid_manifest_has_no_problems() -> None:
    assert validate_manifest(VALID) == []


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_validate(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        assert validate_manifest(doc) == [], path


def test_at_least_three_examples() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"full-retrain.yaml", "incremental-replay.yaml", "extended-architecture.yaml"} <= names


def test_inline_credentials_message_points_to_secret() -> None:
    problems = model_problems(mutate("spec.storage", {"accessKeyId": "AKIA"}))
    assert any("Secret" in p.message and "accessKeyId" in p.message for p in problems)


def test_defaults_follow_strategy() -> None:
    spec = RetrainJob.from_manifest(VALID).spec
    assert spec.strategy.effective_optimizer == "SGD"
    assert spec.strategy.effective_base_weights == "incumbent"
    assert spec.strategy.effective_replay is not None
    assert spec.dataset.old_eras == ["q1"] and spec.dataset.latest_eras == ["q2"]
    naive = RetrainJob.from_manifest(mutate("spec.strategy.replay", {"enabled": False})).spec
    assert naive.strategy.effective_replay is None
    full = RetrainJobSpec.model_validate({"model": "m", "dataset": {"uri": "s3://data/x", "eras": ["a"]}})
    assert full.strategy.effective_optimizer == "auto"
    assert full.strategy.effective_replay is None


def test_spec_round_trips_through_camel_case_json() -> None:
    spec = RetrainJob.from_manifest(VALID).spec
    again = RetrainJobSpec.model_validate_json(spec.model_dump_json(by_alias=True))
    assert again == spec
    assert "newEras" in spec.dump()["dataset"]


def test_ultralytics_arg_list_matches_installed_ultralytics() -> None:
    pytest.importorskip("ultralytics")
    from ultralytics.cfg import DEFAULT_CFG_DICT

    assert set(ULTRALYTICS_TRAIN_ARGS) <= set(DEFAULT_CFG_DICT), set(ULTRALYTICS_TRAIN_ARGS) - set(DEFAULT_CFG_DICT)
    assert set(RESERVED_TRAIN_ARGS) <= set(ULTRALYTICS_TRAIN_ARGS)


def test_every_field_has_a_description() -> None:
    from kretrain.crd import build_crd

    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    def walk(node: dict[str, Any], path: str) -> list[str]:
        missing = []
        for name, sub in node.get("properties", {}).items():
            if "description" not in sub:
                missing.append(f"{path}.{name}")
            missing += walk(sub, f"{path}.{name}")
            if isinstance(sub.get("additionalProperties"), dict):
                missing += walk(sub["additionalProperties"], f"{path}.{name}.*")
            if isinstance(sub.get("items"), dict):
                missing += walk(sub["items"], f"{path}.{name}[]")
        return missing

    assert walk(schema["properties"]["spec"], "spec") == []
    assert walk(schema["properties"]["status"], "status") == []


def test_storage_fields_can_be_assigned_by_name() -> None:
    """validate_assignment re-runs the inline-credentials guard with field names, not aliases."""
    spec = RetrainJob.from_manifest(VALID).spec
    spec.storage.registry = "s3://models/registry"
    spec.storage.credentials_secret = "other-secret"
    assert spec.storage.dump()["credentialsSecret"] == "other-secret"
