"""The data findings of a finished run for the cluster: the DataReady condition's message and Warning Events."""

from __future__ import annotations

from kretrain.api.conditions import Reason
from kretrain.api.report import DataSummary
from kretrain.operator import bounds
from kretrain.operator.status_patch import Event
from kretrain.trainer.data_summary import finding_line

DATA_VALIDATED = Reason.DATA_VALIDATED
DATA_WARNINGS = Reason.DATA_WARNINGS
DATA_WARNING_EVENT = Reason.DATA_WARNING
MAX_DATA_EVENTS = 5
"""Warning Events posted per run; the last one counts the rest (all are in the report and the message)."""
MAX_EVENT_MESSAGE = 1024
"""Characters of one Event message."""
MAX_ERAS_IN_MESSAGE = 64
"""Eras listed in the condition message (a run has at most 64)."""


def _era_line(era: str, counts: dict[str, int]) -> str:
    used = sum(counts.get(k, 0) for k in ("train", "val", "test"))
    return (
        f"{era}: {used} used ({counts.get('train', 0)} train, {counts.get('val', 0)} val, {counts.get('test', 0)} test), "
        f"{counts.get('excluded', 0)} excluded, {counts.get('background', 0)} background"
    )


def data_ready(summary: DataSummary) -> tuple[str, str, list[Event]]:
    """(reason, message, events) for the DataReady condition of a run whose report holds `summary`.

    The summary comes from report.json (untrusted: any trainer image writes it), so every text is made
    printable and cut: the message to bounds.MAX_CONDITION_MESSAGE, each Event to MAX_EVENT_MESSAGE, and at
    most MAX_DATA_EVENTS Events are posted however many warnings the report lists.
    """
    eras = list(summary.eras.items())
    parts = [_era_line(bounds.short(e, bounds.MAX_NAME), c) for e, c in eras[:MAX_ERAS_IN_MESSAGE]]
    head = f"{summary.train_images} training images; {summary.errors} bad items excluded"
    if summary.finding_counts:
        head += "; " + finding_line(dict(list(summary.finding_counts.items())[:64]))
    warnings = summary.warnings
    if warnings:
        head += f"; {len(warnings)} warning{'s' if len(warnings) != 1 else ''}: " + " | ".join(
            bounds.short(w, 300) for w in warnings[:10]
        )
    message = bounds.short(head + (". " + "; ".join(parts) if parts else ""), bounds.MAX_CONDITION_MESSAGE)
    events = [
        Event("Warning", DATA_WARNING_EVENT, bounds.short(w, MAX_EVENT_MESSAGE))
        for w in warnings[: MAX_DATA_EVENTS - 1]
    ]
    rest = len(warnings) - len(events)
    if rest == 1:
        events.append(Event("Warning", DATA_WARNING_EVENT, bounds.short(warnings[-1], MAX_EVENT_MESSAGE)))
    elif rest > 1:
        events.append(Event("Warning", DATA_WARNING_EVENT, f"{rest} more data warnings: see the run's report.json"))
    return (DATA_WARNINGS if warnings else DATA_VALIDATED), message, events
