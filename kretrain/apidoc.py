"""Render the RetrainJob and RetrainSchedule field reference (docs/api.md) from the generated CRD schemas."""

from __future__ import annotations

from typing import Any

from kretrain.crd import build_crd, build_schedule_crd


def _type(node: dict[str, Any]) -> str:
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    kind = node.get("type", "object")
    if kind == "array":
        return f"list of {_type(node.get('items', {}))}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map of {_type(node['additionalProperties'])}"
    return str(kind)


def _constraints(node: dict[str, Any]) -> str:
    parts = []
    if "minimum" in node:
        parts.append(f"{'>' if node.get('exclusiveMinimum') else '≥'} {node['minimum']}")
    if "maximum" in node:
        parts.append(f"{'<' if node.get('exclusiveMaximum') else '≤'} {node['maximum']}")
    if "multipleOf" in node:
        parts.append(f"multiple of {node['multipleOf']}")
    if "minItems" in node:
        parts.append(f"at least {node['minItems']} item(s)")
    if "pattern" in node:
        parts.append(f"pattern `{node['pattern']}`")
    return ", ".join(parts)


def _rows(node: dict[str, Any], path: str, required: set[str]) -> list[str]:
    rows = []
    for name, sub in node.get("properties", {}).items():
        field = f"{path}.{name}"
        default = f"`{sub['default']}`" if "default" in sub else ("**required**" if name in required else "")
        desc = " ".join(str(sub.get("description", "")).split()).replace("|", "\\|")
        rows.append(f"| `{field}` | {_type(sub)} | {default} | {_constraints(sub)} | {desc} |")
        rows += _rows(sub, field, set(sub.get("required", [])))
        items = sub.get("items")
        if isinstance(items, dict) and "properties" in items:
            rows += _rows(items, f"{field}[]", set(items.get("required", [])))
    return rows


def render_reference() -> str:
    """Markdown reference of every spec field: type, default, constraints and description."""
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    lines = [
        "# RetrainJob reference (`kretrain.dev/v1alpha1`)",
        "",
        "Generated from the pydantic models in `kretrain/api/` by `kretrain crd --reference`; "
        "a test fails when this file drifts. The spec is immutable after creation except `spec.suspend`.",
        "",
        "| field | type | default | constraints | description |",
        "|---|---|---|---|---|",
        *_rows(spec, "spec", set(spec.get("required", []))),
        "",
    ]
    schedule = build_schedule_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    lines += [
        "# RetrainSchedule reference (`kretrain.dev/v1alpha1`, short name `rts`)",
        "",
        "A RetrainSchedule stamps out RetrainJobs from `spec.template` (a RetrainJob spec without `dataset.eras`, "
        "which the schedule fills). Its spec may change at any time; runs already started keep their own spec.",
        "",
        "| field | type | default | constraints | description |",
        "|---|---|---|---|---|",
        *_rows(schedule, "spec", set(schedule.get("required", []))),
        "",
    ]
    return "\n".join(lines)
