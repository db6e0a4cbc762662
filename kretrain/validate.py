"""Offline validation of RetrainJob and RetrainSchedule manifests against the generated CRD schemas and the models."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from pydantic import ValidationError

from kretrain.api import API_VERSION, KIND, SCHEDULE_KIND, RetrainJob, RetrainSchedule
from kretrain.crd import build_crd, build_schedule_crd


@dataclass(frozen=True)
class Problem:
    """One problem with a manifest: where, what, and which check found it."""

    source: str
    """`crd` (the CRD's openAPIV3Schema) or `model` (the pydantic models)."""
    path: str
    """Dotted field path, e.g. `spec.strategy.epochs`."""
    message: str
    """What is wrong."""

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.message} [{self.source}]"


def _closed(schema: Any) -> Any:
    """Close every object schema that lists its properties, as the API server's strict field validation
    (kubectl's default) does: an unknown field is an error, not silently pruned."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed(v) for k, v in schema.items()}
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@lru_cache(maxsize=2)
def _crd_validator(kind: str = KIND) -> jsonschema.Draft4Validator:
    crd = build_schedule_crd() if kind == SCHEDULE_KIND else build_crd()
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    closed = _closed(schema)
    closed["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft4Validator(closed)


def _dotted(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def schema_problems(manifest: dict[str, Any]) -> list[Problem]:
    """Problems the CRD schema itself reports (what the API server would reject)."""
    problems = []
    validator = _crd_validator(SCHEDULE_KIND if manifest.get("kind") == SCHEDULE_KIND else KIND)
    for err in sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path)):
        path = _dotted(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            allowed = set(err.schema.get("properties", {}))
            extra = sorted(k for k in err.instance if k not in allowed)
            for key in extra:
                problems.append(Problem("crd", f"{path}.{key}" if path else key, "unknown field"))
            continue
        if err.validator == "required":
            missing = str(err.message).split("'")[1] if "'" in str(err.message) else str(err.message)
            problems.append(Problem("crd", f"{path}.{missing}" if path else missing, "required field is missing"))
            continue
        problems.append(Problem("crd", path, err.message))
    return problems


def model_problems(manifest: dict[str, Any]) -> list[Problem]:
    """Problems the pydantic models report (everything, including cross-field rules)."""
    try:
        if manifest.get("kind") == SCHEDULE_KIND:
            RetrainSchedule.from_manifest(manifest)
        else:
            RetrainJob.from_manifest(manifest)
    except ValidationError as exc:
        return [
            Problem("model", _dotted(e["loc"]), e["msg"].removeprefix("Value error, "))
            for e in exc.errors(include_url=False)
        ]
    return []


def validate_manifest(manifest: Any) -> list[Problem]:
    """Every problem of one manifest document, from both the CRD schema and the models."""
    if not isinstance(manifest, dict):
        return [Problem("model", "", f"a manifest must be a mapping, got {type(manifest).__name__}")]
    if manifest.get("apiVersion") != API_VERSION or manifest.get("kind") not in (KIND, SCHEDULE_KIND):
        return [
            Problem(
                "model",
                "apiVersion/kind",
                f"expected {API_VERSION} {KIND} or {SCHEDULE_KIND}, "
                f"got {manifest.get('apiVersion')} {manifest.get('kind')}",
            )
        ]
    return schema_problems(manifest) + model_problems(manifest)


def load_documents(path: Path) -> list[Any]:
    """The YAML documents of a file (empty documents skipped); raises ValueError on unparsable YAML."""
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc


def validate_file(path: Path) -> list[str]:
    """Human-readable problems of every RetrainJob and RetrainSchedule in a file, prefixed with file and object."""
    lines: list[str] = []
    try:
        docs = load_documents(path)
    except (OSError, ValueError) as exc:
        return [str(exc)]
    if not docs:
        return [f"{path}: no YAML documents"]
    for i, doc in enumerate(docs):
        name = doc.get("metadata", {}).get("name", f"document {i}") if isinstance(doc, dict) else f"document {i}"
        lines += [f"{path}: {name}: {p}" for p in validate_manifest(doc)]
    return lines
