"""The data findings of a run as text for the person running it: per era used/excluded/background, codes, warnings."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kretrain.api.report import DataSummary
from kretrain.tables import render_table

MAX_DATA_REPORT_BYTES = 64 * 1024 * 1024
"""A larger data_report.json is not read (the summary then comes from report.json alone)."""
MAX_WARNINGS = 100
"""Warnings printed; the rest are counted (all of them are in data_report.json)."""
MAX_LINE = 400
"""Characters of one printed warning or fatal error."""
SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


class DataReportCounts(BaseModel):
    """The counting fields of the trainer's data_report.json (kretrain.trainer.data.prepare), read by the local
    runner from the run's scratch folder. The file is a free-form diagnostic document with many more fields
    (every finding, drift, timings), so unknown fields are ignored here; the fields read are validated."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    counts: dict[str, dict[str, int]] = Field(default_factory=dict, max_length=4096)
    """Per era: kept images per split (`train`, `val`, `test`), `excluded`, `background`, `orphanLabels`."""
    finding_counts: dict[str, int] = Field(default_factory=dict, alias="findingCounts", max_length=4096)
    """Findings by `<severity>:<code>` (e.g. `error:corrupt_image`)."""
    warnings: list[str] = Field(default_factory=list, max_length=100_000)
    """Every warning (set when validation passed)."""
    fatal: list[str] = Field(default_factory=list, max_length=10_000)
    """Why the data cannot be trained on (set when validation failed)."""
    bad_items: int = Field(default=0, alias="badItems", ge=0)
    """Excluded images, orphan label files and unsafe keys."""


def read_data_report(path: Path) -> DataReportCounts | None:
    """The counting fields of a data_report.json, or None when it is missing, too large or not valid."""
    try:
        if path.stat().st_size > MAX_DATA_REPORT_BYTES:
            return None
        return DataReportCounts.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None


def _short(text: str) -> str:
    """One printable line: control and format characters (a class name from the dataset could hold terminal
    escape sequences) are shown as `\\xNN`/`\\uNNNN`, and the line is cut to MAX_LINE characters."""
    clean = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    return clean if len(clean) <= MAX_LINE else clean[: MAX_LINE - 3] + "..."


def finding_line(finding_counts: dict[str, int]) -> str:
    """`findings: error corrupt_image 5, ...`: errors first, then warnings, then info, most frequent first."""
    parts = []
    for key, n in finding_counts.items():
        severity, _, code = key.partition(":")
        parts.append((SEVERITY_ORDER.get(severity, 3), -n, code or severity, severity if code else "", n))
    parts.sort()
    text = ", ".join(f"{sev} {code} {n}".strip() for _, _, code, sev, n in parts)
    return "findings: " + (_short(text) if text else "none")


def summary_text(summary: DataSummary | None, report: DataReportCounts | None, report_path: Path | None = None) -> str:
    """The data summary printed by `kretrain run`: from report.json's DataSummary and, when the local
    data_report.json could be read, its finding counts (and, for a run that failed validation, why)."""
    if summary is None and report is None:
        return "data: no data summary (the trainer wrote neither report.json nor a readable data_report.json)"
    eras = summary.eras if summary is not None and summary.eras else (report.counts if report else {})
    rows = []
    total = {"train": 0, "val": 0, "test": 0, "excluded": 0, "background": 0}
    for era, c in eras.items():
        rows.append([_short(era), *(c.get(k, 0) for k in total)])
        for k in total:
            total[k] += c.get(k, 0)
    if len(rows) > 1:
        rows.append(["total", *total.values()])
    used = total["train"] + total["val"] + total["test"]
    excluded = summary.errors if summary is not None else (report.bad_items if report else total["excluded"])
    head = f"data: {len(eras)} era{'s' if len(eras) != 1 else ''}, {used} images used"
    if summary is not None and summary.train_images:
        head += f" ({summary.train_images} in the training set)"
    head += f", {excluded} bad item{'s' if excluded != 1 else ''} excluded"
    if report_path is not None:
        head += f" (details: {report_path})"
    lines = [head, render_table(["era", "train", "val", "test", "excluded", "background"], rows)]
    counts = summary.finding_counts if summary is not None and summary.finding_counts else None
    if counts is None and report is not None:
        counts = report.finding_counts
    if counts is not None:
        lines.append(finding_line(counts))
    warnings = summary.warnings if summary is not None else (report.warnings if report else [])
    lines += [f"warning: {_short(w)}" for w in warnings[:MAX_WARNINGS]]
    if len(warnings) > MAX_WARNINGS:
        lines.append(f"(+{len(warnings) - MAX_WARNINGS} more warnings in the data report)")
    if report is not None:
        lines += [f"data error: {_short(f)}" for f in report.fatal[:MAX_WARNINGS]]
    return "\n".join(lines)


DATA_REPORT = Path("data") / "data_report.json"
"""Where the trainer writes its data report, relative to its workdir (kretrain.trainer.data.prepare.REPORT_NAME)."""


def print_data_summary(out: TextIO, summary: DataSummary | None, scratch: Path) -> None:
    """Write the summary of a local run whose trainer worked in `scratch` (nothing when there is no data yet)."""
    path = scratch / DATA_REPORT
    report = read_data_report(path)
    if summary is None and report is None:
        return
    out.write(summary_text(summary, report, path if report is not None else None) + "\n")
    out.flush()
