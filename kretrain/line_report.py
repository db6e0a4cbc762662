"""`kretrain models report MODEL --out DIR`: a model line's versions, data, metrics and decisions as one HTML page."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, get_args

from pydantic import ValidationError

from kretrain.api.evaluation import Evaluation
from kretrain.api.intervals import PairedBootstrap
from kretrain.api.report import DataSummary, RunReport
from kretrain.api.spec import MetricName, RetrainJobSpec
from kretrain.api.status import CheckResult, Decision
from kretrain.policy import decide_report
from kretrain.registry_records import HistoryEntry, VersionRecord

if TYPE_CHECKING:
    from kretrain.registry import Registry

MAX_VERSIONS = 200
"""The page shows the newest this many versions of a line (older ones are counted, not shown)."""
METRICS: tuple[str, ...] = get_args(MetricName)
MAX_CARD_CHARS = 32 * 1024
"""Characters of one model card shown on the page (card.md in the version's folder has it all)."""


@dataclass
class Cell:
    """One model's metric on one era, and the run whose test split measured it."""

    value: float
    measured_in: str


@dataclass
class VersionView:
    """What the page shows of one version: its record, the numbers of its report, the gate's verdict."""

    record: VersionRecord
    incumbent: bool = False
    report_error: str | None = None
    pooled: float | None = None
    eras: dict[str, float] = field(default_factory=dict)
    compared_with: str | None = None
    compared_pooled: float | None = None
    interval: tuple[float, float, float] | None = None
    """(confidence, low, high) of the pooled delta's paired-bootstrap interval, when the run computed one."""
    data: DataSummary | None = None
    checks: list[CheckResult] = field(default_factory=list)
    verdict: Decision | None = None
    verdict_note: str = ""
    recorded: bool = False
    """The verdict is the decision recorded in the version's model card (else: the gate re-applied to its report)."""
    reason: str | None = None
    """The recorded decision's reason (`Promoted`, `GateFailed`, `DryRun`, `IncumbentChanged`, ...)."""
    card: str | None = None
    """The model card as Markdown (cut to MAX_CARD_CHARS), when the version has one."""
    promotions: list[HistoryEntry] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The version's name."""
        return self.record.version


@dataclass
class ClassChange:
    """One class's metric in the latest candidate's run: candidate, incumbent, difference."""

    name: str
    candidate: float | None
    incumbent: float | None

    @property
    def delta(self) -> float | None:
        """candidate - incumbent (None when either is missing)."""
        if self.candidate is None or self.incumbent is None:
            return None
        return self.candidate - self.incumbent


@dataclass
class Line:
    """A model line as the report shows it."""

    model: str
    registry: str
    metric: str
    versions: list[VersionView]
    history: list[HistoryEntry]
    omitted: int = 0
    eras: list[str] = field(default_factory=list)
    matrix: dict[tuple[str, str], Cell] = field(default_factory=dict)
    latest: str | None = None
    classes: list[ClassChange] = field(default_factory=list)


def _verdict(report: RunReport) -> tuple[Decision | None, str]:
    """The promotion gate re-applied to the stored report with the run's own spec (pure: kretrain.policy)."""
    try:
        spec = RetrainJobSpec.model_validate(report.spec)
    except ValidationError:
        return None, "the report's spec is not a complete RetrainJob spec; the gate cannot be re-applied"
    decision = decide_report(report, spec)
    return decision, ""


MAX_SHOWN = 50
"""Warnings, checks, eras and reasons of one version shown on the page (a report may hold 16 MiB of them)."""
MAX_SHOWN_CHARS = 300
"""Characters of one warning or check name shown."""


def _bounded_data(data: DataSummary) -> DataSummary:
    """The part of a report's data summary the page shows: MAX_SHOWN warnings and eras, each warning cut."""
    warnings = [w[:MAX_SHOWN_CHARS] for w in data.warnings[:MAX_SHOWN]]
    if len(data.warnings) > MAX_SHOWN:
        warnings.append(f"... {len(data.warnings) - MAX_SHOWN} more warnings (see the run's report.json)")
    eras = {e[:MAX_SHOWN_CHARS]: dict(list(c.items())[:8]) for e, c in list(data.eras.items())[:MAX_SHOWN]}
    return data.model_copy(update={"warnings": warnings, "eras": eras, "classes": [], "era_hashes": {}})


def _bounded_checks(checks: list[CheckResult]) -> list[CheckResult]:
    """The first MAX_SHOWN checks, names cut (only name and verdict are shown)."""
    return [c.model_copy(update={"name": c.name[:MAX_SHOWN_CHARS], "detail": ""}) for c in checks[:MAX_SHOWN]]


@dataclass
class _Read:
    """What is kept of one version's report (not the whole report: a line may have hundreds)."""

    candidate: Evaluation
    incumbent: Evaluation | None
    metric: object
    classes: list[str]
    intervals: PairedBootstrap | None = None


def _view(registry: Registry, model: str, info: VersionRecord, incumbent: bool) -> tuple[VersionView, _Read | None]:
    from kretrain.modelcard import read_card, render_markdown
    from kretrain.registry import RegistryError
    from kretrain.store import ObjectTooLarge

    view = VersionView(record=info, incumbent=incumbent)
    try:
        report = registry.read_report(model, view.name)
    except (RegistryError, ObjectTooLarge, ValidationError, ValueError) as exc:  # shown on the page, per version
        view.report_error = str(exc)[:500]
        return view, None
    if report.incumbent_evaluation is not None:
        view.compared_with = report.incumbent_evaluation.model_version
    view.data, view.checks = _bounded_data(report.data), _bounded_checks(report.checks)
    card = read_card(registry, model, view.name)
    if card is not None:  # the decision as it was made (a race or a dry run included), not a re-computation
        view.verdict, view.recorded, view.reason = card.decision, True, card.reason
        text = render_markdown(card)
        view.card = text if len(text) <= MAX_CARD_CHARS else text[:MAX_CARD_CHARS] + "\n... (cut: card.md has it all)"
    else:
        view.verdict, view.verdict_note = _verdict(report)
    if view.verdict is not None and len(view.verdict.reasons) > MAX_SHOWN:
        rest = len(view.verdict.reasons) - MAX_SHOWN
        reasons = [*view.verdict.reasons[:MAX_SHOWN], f"... {rest} more reasons (see the model card)"]
        view.verdict = view.verdict.model_copy(update={"reasons": reasons})
    metric = (report.spec.get("promotion") or {}).get("metric")
    read = _Read(
        report.candidate_evaluation, report.incumbent_evaluation, metric, report.data.classes, report.intervals
    )
    return view, read


def _line_metric(requested: str | None, reads: list[_Read]) -> MetricName:
    if requested:
        if requested not in METRICS:
            raise ValueError(f"--metric must be one of {', '.join(METRICS)}, not {requested!r}")
        return requested  # type: ignore[return-value]
    for read in reversed(reads):
        if isinstance(read.metric, str) and read.metric in METRICS:
            return read.metric  # type: ignore[return-value]
    return "mAP50-95"


def load_line(registry: Registry, model: str, metric: str | None = None) -> Line:
    """Read the line through the registry's validated API: version records, each version's report, history."""
    infos = registry.versions(model)
    pointer = registry.incumbent_pointer(model)
    history = registry.history(model)
    shown = infos[-MAX_VERSIONS:]
    pairs = [_view(registry, model, info, pointer is not None and info.version == pointer.version) for info in shown]
    chosen = _line_metric(metric, [r for _, r in pairs if r is not None])
    line = Line(model, registry.uri, chosen, [v for v, _ in pairs], history, omitted=len(infos) - len(shown))
    by_name = {v.name: v for v in line.versions}
    for entry in history:
        if entry.version in by_name:
            by_name[entry.version].promotions.append(entry)
    for view, read in pairs:
        for era in view.record.lineage.eras:
            if era not in line.eras:
                line.eras.append(era)
        if read is None:
            continue
        view.pooled = read.candidate.pooled.get(chosen)
        view.eras = {e: m.get(chosen) for e, m in read.candidate.eras.items()}
        if read.incumbent is not None:
            view.compared_pooled = read.incumbent.pooled.get(chosen)
        boot = read.intervals
        if boot is not None and boot.metric == chosen:
            view.interval = (boot.confidence, boot.pooled.low, boot.pooled.high)
        for era, value in view.eras.items():
            line.matrix[(view.name, era)] = Cell(value, view.name)
            if era not in line.eras:
                line.eras.append(era)
    # An incumbent evaluated in a later run fills the eras it never saw in its own run.
    for view, read in pairs:
        inc = read.incumbent if read is not None else None
        if inc is not None and inc.model_version in by_name:
            for era, m in inc.eras.items():
                line.matrix.setdefault((inc.model_version, era), Cell(m.get(chosen), view.name))
                if era not in line.eras:
                    line.eras.append(era)
    line.latest, line.classes = _latest_classes(pairs)
    return line


def _latest_classes(pairs: list[tuple[VersionView, _Read | None]]) -> tuple[str | None, list[ClassChange]]:
    """Per-class mAP50-95 of the newest version with a report, against the incumbent it was compared with."""
    for view, read in reversed(pairs):
        if read is None:
            continue
        cand = read.candidate.pooled.per_class
        inc = read.incumbent.pooled.per_class if read.incumbent else {}
        names = list(dict.fromkeys([*read.classes, *cand, *inc]))
        return view.name, [ClassChange(n, cand.get(n), inc.get(n)) for n in names if n in cand or n in inc]
    return None, []
