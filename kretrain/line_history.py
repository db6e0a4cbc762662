"""The metric history of a model line: every version's pooled and per-era metric, its interval and decision."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from kretrain.api.base import ApiModel
from kretrain.api.spec import MetricName
from kretrain.modelcard import read_card
from kretrain.registry import Registry, RegistryError, VersionNotFound
from kretrain.store import ObjectTooLarge


def _ci(low: float | None, high: float | None) -> str:
    return "-" if low is None or high is None else f"[{low:+.3f}, {high:+.3f}]"


class VersionMetrics(ApiModel):
    """One version of a line in its metric history (`kretrain models history --json`, the line report)."""

    version: str
    """The version."""
    registered_at: str
    """When it was registered (RFC 3339)."""
    strategy: str
    """`full` or `incremental`."""
    incumbent: bool
    """Whether it is the incumbent now."""
    metric: MetricName
    """The metric shown."""
    pooled: float | None = None
    """Its pooled value on its own run's test set (None: the report is unreadable)."""
    eras: dict[str, float] = Field(default_factory=dict)
    """Its value per era on its own run's test set."""
    compared_with: str | None = None
    """The incumbent its run was compared with (from the model card)."""
    delta: float | None = None
    """Pooled candidate - incumbent on the gate metric (from the model card)."""
    low: float | None = None
    """Lower bound of the delta's interval."""
    high: float | None = None
    """Upper bound of the delta's interval."""
    decision: str | None = None
    """The gate's decision (None for versions decided before cards, or not decided yet)."""


def metric_history(registry: Registry, model: str, metric: MetricName = "mAP50-95") -> list[VersionMetrics]:
    """One entry per registered version, oldest first: its metric pooled and per era on its own run's test set,
    the delta to the incumbent it was compared with and the interval of that delta, and the gate's decision
    (from the version's model card; `-` for versions decided before cards, or not decided yet)."""
    pointer = registry.incumbent_pointer(model)
    out = []
    for info in registry.versions(model):
        version = info.version
        try:
            report = registry.read_report(model, version)
        except (VersionNotFound, RegistryError, ObjectTooLarge, ValueError):  # ValueError: a malformed report
            report = None
        card = read_card(registry, model, version)
        pooled = next((r for r in card.rows if r.era == "pooled"), None) if card is not None else None
        out.append(
            VersionMetrics(
                version=version,
                registered_at=info.registered_at,
                strategy=info.lineage.strategy,
                incumbent=pointer is not None and pointer.version == version,
                metric=metric,
                pooled=report.candidate_evaluation.pooled.get(metric) if report is not None else None,
                eras={e: m.get(metric) for e, m in report.candidate_evaluation.eras.items()} if report else {},
                compared_with=card.compared_with if card is not None else None,
                delta=(pooled.value - pooled.incumbent)
                if pooled is not None and pooled.incumbent is not None
                else None,
                low=pooled.low if pooled is not None else None,
                high=pooled.high if pooled is not None else None,
                decision=card.reason if card is not None else None,
            )
        )
    return out


def history_table(entries: list[VersionMetrics]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the metric history for `render_table`."""
    eras = sorted({e for x in entries for e in x.eras})
    metric = entries[0].metric if entries else "mAP50-95"
    head = ["", "version", "registered", "strategy", f"pooled {metric}", *eras, "vs", "delta", "CI", "decision"]
    rows = [
        [
            "*" if x.incumbent else "",
            x.version,
            x.registered_at,
            x.strategy,
            x.pooled,
            *(x.eras.get(e) for e in eras),
            x.compared_with or "-",
            f"{x.delta:+.3f}" if x.delta is not None else "-",
            _ci(x.low, x.high),
            x.decision or "-",
        ]
        for x in entries
    ]
    return head, rows
