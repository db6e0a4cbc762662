"""Generate the RetrainJob and RetrainSchedule CustomResourceDefinitions from the pydantic API models."""

from __future__ import annotations

import copy
from typing import Any

import yaml
from pydantic import BaseModel

from kretrain.api import GROUP, KIND, PLURAL, VERSION, RetrainJobSpec, RetrainJobStatus
from kretrain.api.resource import SHORT_NAMES, SINGULAR
from kretrain.api.schedule import (
    SCHEDULE_KIND,
    SCHEDULE_PLURAL,
    SCHEDULE_SHORT_NAMES,
    SCHEDULE_SINGULAR,
    RetrainScheduleSpec,
    RetrainScheduleStatus,
)

MUTABLE_SPEC_FIELDS = ("suspend",)
"""Spec fields that may change after creation; everything else is immutable (a new run is a new object)."""

_DROP_KEYS = {"title", "$defs", "discriminator"}


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """Resolve $refs, fold `X | None` into X, and drop keys Kubernetes structural schemas reject."""
    if isinstance(schema, list):
        return [_inline(s, defs) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        target = copy.deepcopy(defs[schema["$ref"].rsplit("/", 1)[-1]])
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _inline(merged, defs)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP_KEYS:
            continue
        if key == "anyOf":
            branches = [b for b in value if b.get("type") != "null"]
            if len(branches) == 1:
                out.update(_inline(branches[0], defs))
                continue
            out[key] = _inline(branches, defs)
            continue
        if key == "properties":
            out[key] = {name: _inline(sub, defs) for name, sub in value.items()}
            continue
        if key == "default" and value is None:
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum"):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
            continue
        if key == "const":
            out["enum"] = [value]
            out.setdefault("type", "string")
            continue
        out[key] = _inline(value, defs)
    if out.get("type") == "object" and "properties" not in out:
        extra = out.get("additionalProperties")
        if extra is None or extra is True or extra == {}:
            out.pop("additionalProperties", None)
            out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("type") == "object" and out.get("additionalProperties") is False:
        out.pop("additionalProperties")
    if "items" in out and out["items"] == {}:
        out["items"] = {"x-kubernetes-preserve-unknown-fields": True}
    if "default" in out and isinstance(out["default"], (dict, list)) and not out["default"]:
        out.pop("default")
    return out


def _object_defaults(model: type[BaseModel], schema: dict[str, Any]) -> None:
    """`default: {}` on nested objects the models build by default, so the API server fills their defaults
    (a RetrainJob without `strategy` is stored with `strategy.type: full`, as the models read it)."""
    for name, info in model.model_fields.items():
        prop = schema.get("properties", {}).get(info.alias or name)
        sub = info.annotation
        if prop is None or not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            continue
        if info.default_factory is not None:
            prop["default"] = {}
        _object_defaults(sub, prop)


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a pydantic model, as Kubernetes accepts it."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    result: dict[str, Any] = _inline(raw, defs)
    _object_defaults(model, result)
    return result


def immutability_rule(spec_schema: dict[str, Any]) -> dict[str, str]:
    """CEL rule: every spec field except the mutable ones keeps its value (and presence) after creation."""
    parts = []
    for name in spec_schema["properties"]:
        if name in MUTABLE_SPEC_FIELDS:
            continue
        if name in spec_schema.get("required", []):
            parts.append(f"self.{name} == oldSelf.{name}")
        else:
            parts.append(
                f"has(self.{name}) == has(oldSelf.{name}) && (!has(self.{name}) || self.{name} == oldSelf.{name})"
            )
    return {
        "rule": " && ".join(parts),
        "message": "spec is immutable except spec.suspend; create a new RetrainJob for a new run",
    }


PRINTER_COLUMNS = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
    {"name": "Strategy", "type": "string", "jsonPath": ".spec.strategy.type"},
    {"name": "State", "type": "string", "jsonPath": ".status.state"},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress.display"},
    {"name": "Candidate", "type": "string", "jsonPath": ".status.candidateMetric"},
    {"name": "Incumbent", "type": "string", "jsonPath": ".status.incumbentMetric"},
    {"name": "Decision", "type": "string", "jsonPath": ".status.decision.summary"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


SCHEDULE_PRINTER_COLUMNS = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.template.model"},
    {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend"},
    {"name": "Latest Era", "type": "string", "jsonPath": ".status.latestEra"},
    {"name": "Last Run", "type": "string", "jsonPath": ".status.lastRun"},
    {"name": "Decision", "type": "string", "jsonPath": ".status.lastDecision.action"},
    {"name": "Summary", "type": "string", "jsonPath": ".status.summary"},
    {"name": "Next", "type": "date", "jsonPath": ".status.nextScheduleTime"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _crd(
    kind: str,
    plural: str,
    singular: str,
    short_names: list[str],
    description: str,
    spec: Any,
    status: Any,
    columns: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "kretrain", "app.kubernetes.io/part-of": "kretrain"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": short_names,
                "categories": ["kretrain"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def build_crd() -> dict[str, Any]:
    """The RetrainJob CustomResourceDefinition as a dict."""
    spec_schema = openapi_schema(RetrainJobSpec)
    spec_schema["x-kubernetes-validations"] = [immutability_rule(spec_schema)]
    return _crd(
        KIND,
        PLURAL,
        SINGULAR,
        SHORT_NAMES,
        "A RetrainJob retrains a YOLO model line on merged eras, evaluates the "
        "candidate against the incumbent on every era's test split, and promotes it only "
        "when it is better overall and has forgotten no era.",
        spec_schema,
        openapi_schema(RetrainJobStatus),
        PRINTER_COLUMNS,
    )


def build_schedule_crd() -> dict[str, Any]:
    """The RetrainSchedule CustomResourceDefinition as a dict (its spec may change, like a CronJob's)."""
    return _crd(
        SCHEDULE_KIND,
        SCHEDULE_PLURAL,
        SCHEDULE_SINGULAR,
        SCHEDULE_SHORT_NAMES,
        "A RetrainSchedule stamps out RetrainJobs from a template when a new complete era lands under "
        "the dataset URI or on a cron schedule, with a concurrency policy and history limits like a CronJob.",
        openapi_schema(RetrainScheduleSpec),
        openapi_schema(RetrainScheduleStatus),
        SCHEDULE_PRINTER_COLUMNS,
    )


def render_crd(schedule: bool = False) -> str:
    """The CRD (RetrainJob, or RetrainSchedule with `schedule`) as the YAML text committed in crds/ and the chart."""
    header = "# Generated by `kretrain crd` from kretrain/api; do not edit by hand.\n"
    return header + yaml.safe_dump(build_schedule_crd() if schedule else build_crd(), sort_keys=False, width=120)
