"""Model cards: the typed record of one version (data, training, metrics with intervals, the decision), its
Markdown rendering, and both written into the version's folder when the operator decides on it."""

from __future__ import annotations

import json

from pydantic import Field, ValidationError

from kretrain.api.base import ApiModel
from kretrain.api.report import Compute, DataSummary, RunReport, TrainingSummary
from kretrain.api.spec import MetricName
from kretrain.api.status import CheckResult, Decision
from kretrain.registry import Registry
from kretrain.store import ObjectTooLarge, join_uri

CARD_JSON = "card.json"
"""The typed card in the version folder."""
CARD_MD = "card.md"
"""The card rendered as Markdown, beside it."""
MAX_ROWS = 65
"""Rows of a card: at most 64 eras (spec.dataset.eras' limit) and pooled; a report with more is cut."""
MAX_CLASSES = 4096
"""Class cells of a card; a report with more is cut."""


MAX_WARNINGS = 100
"""Data warnings a card keeps (the report has them all); the last one counts the rest."""
MAX_TEXT = 300
"""Characters kept of one warning, check name or check detail."""
MAX_ARGS = 128
"""Training arguments a card keeps."""
MAX_REASONS = 200
"""Decision reasons a card keeps."""
MAX_REASON_CHARS = 1000
"""Characters kept of one reason."""
MAX_CARD_BYTES = 4 * 1024 * 1024
"""Largest card.json read: the cards conclude() writes are bounded well below it (a bigger one is not ours)."""


def _card_data(data: DataSummary) -> DataSummary:
    """The report's data summary, bounded: a 16 MiB report (any trainer writes it) must not give a 16 MiB card,
    written again on every poll while the version awaits approval."""
    warnings = [w[:MAX_TEXT] for w in data.warnings[:MAX_WARNINGS]]
    if len(data.warnings) > MAX_WARNINGS:
        warnings.append(f"... {len(data.warnings) - MAX_WARNINGS} more warnings (see the run's report.json)")
    eras = {e[:128]: dict(list(c.items())[:8]) for e, c in list(data.eras.items())[: MAX_ROWS - 1]}
    hashes = {e[:128]: str(h)[:128] for e, h in data.era_hashes.items() if e[:128] in eras}
    classes = [c[:128] for c in data.classes[:MAX_CLASSES]]
    return data.model_copy(update={"warnings": warnings, "eras": eras, "era_hashes": hashes, "classes": classes})


def _card_decision(decision: Decision) -> Decision:
    """The decision with at most MAX_REASONS reasons, each cut (the gate writes one per new class cell)."""
    reasons = [r[:MAX_REASON_CHARS] for r in decision.reasons[:MAX_REASONS]]
    if len(decision.reasons) > MAX_REASONS:
        reasons.append(f"... {len(decision.reasons) - MAX_REASONS} more reasons")
    return decision.model_copy(update={"reasons": reasons})


class CardRow(ApiModel):
    """The gate metric of the version on one era's test split (or pooled), beside the incumbent it was compared with."""

    era: str = Field(max_length=128)
    """Era name, or `pooled` for all eras' test images together."""
    images: int = Field(ge=0)
    """Test images."""
    instances: int = Field(ge=0)
    """Labelled test boxes."""
    value: float = Field(ge=0, le=1)
    """The version's metric."""
    incumbent: float | None = Field(default=None, ge=0, le=1)
    """The incumbent's metric on the same images (unset for the first model of a line)."""
    low: float | None = Field(default=None, ge=-1, le=1)
    """Lower bound of the paired-bootstrap interval of version - incumbent."""
    high: float | None = Field(default=None, ge=-1, le=1)
    """Upper bound of that interval."""


class CardClass(ApiModel):
    """Per-class AP50-95 of the version on one era."""

    era: str = Field(max_length=128)
    """Era name."""
    name: str = Field(max_length=256)
    """Class name."""
    instances: int = Field(ge=0)
    """Labelled test boxes of the class in the era."""
    ap: float = Field(ge=0, le=1)
    """The version's AP50-95."""
    incumbent: float | None = Field(default=None, ge=0, le=1)
    """The incumbent's AP50-95 (unset without one)."""
    low: float | None = Field(default=None, ge=-1, le=1)
    """Lower bound of the interval of the delta."""
    high: float | None = Field(default=None, ge=-1, le=1)
    """Upper bound of the interval of the delta."""


class ModelCard(ApiModel):
    """versions/<v>/card.json: what a version was trained on, how it scored, and what the gate decided, and why."""

    model: str = Field(max_length=253)
    """Model line."""
    version: str = Field(max_length=128)
    """Version (= the run id)."""
    compared_with: str | None = Field(default=None, max_length=128)
    """The incumbent version it was evaluated against (unset for the first model)."""
    metric: MetricName
    """The gate metric of the rows."""
    confidence: float | None = None
    """Level of the intervals (unset without intervals)."""
    data: DataSummary
    """The data it was trained and tested on: per-era split counts, era hashes, classes, warnings."""
    training: TrainingSummary
    """Strategy, start weights, epochs, Ultralytics arguments."""
    compute: Compute
    """Compute spent."""
    checks: list[CheckResult] = Field(default_factory=list, max_length=64)
    """Post-training checks."""
    rows: list[CardRow] = Field(default_factory=list, max_length=MAX_ROWS)
    """The gate metric per era, then pooled."""
    classes: list[CardClass] = Field(default_factory=list, max_length=MAX_CLASSES)
    """Per-class AP50-95 per era."""
    decision: Decision
    """The gate's decision with every reason."""
    reason: str = Field(max_length=64)
    """The condition reason of the decision (Promoted, GateFailed, DryRun, IncumbentChanged, MissingEvaluation)."""


def _unit(x: float) -> float:
    """A per-class AP from the report (not range-checked there) clipped to [0, 1]; NaN reads as 0."""
    return min(1.0, max(0.0, x)) if x == x else 0.0


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_card(report: RunReport, decision: Decision, reason: str, metric: MetricName) -> ModelCard:
    """The card of the report's candidate, from the validated report and the operator's decision."""
    cand, inc, ci = report.candidate_evaluation, report.incumbent_evaluation, report.intervals
    usable = ci if ci is not None and inc is not None and ci.incumbent_version == inc.model_version else None
    rows: list[CardRow] = []
    for era, m in [*list(cand.eras.items())[: MAX_ROWS - 1], ("pooled", cand.pooled)]:
        other = (inc.pooled if era == "pooled" else inc.eras.get(era)) if inc is not None else None
        interval = (usable.pooled if era == "pooled" else usable.eras.get(era)) if usable is not None else None
        rows.append(
            CardRow(
                era=_cut(era, 128),
                images=m.images,
                instances=m.instances,
                value=m.get(metric),
                incumbent=other.get(metric) if other is not None else None,
                low=interval.low if interval is not None else None,
                high=interval.high if interval is not None else None,
            )
        )
    classes: list[CardClass] = []
    for era, m in cand.eras.items():
        other = inc.eras.get(era) if inc is not None else None
        cells = usable.eras[era].classes if usable is not None and era in usable.eras else {}
        for name, ap in m.per_class.items():
            cell = cells.get(name)
            if len(classes) >= MAX_CLASSES:
                break
            classes.append(
                CardClass(
                    era=_cut(era, 128),
                    name=_cut(name, 256),
                    instances=max(0, m.class_instances.get(name, 0)),
                    ap=_unit(ap),
                    incumbent=_unit(other.per_class[name]) if other is not None and name in other.per_class else None,
                    low=cell.low if cell is not None else None,
                    high=cell.high if cell is not None else None,
                )
            )
    return ModelCard(
        model=report.model,
        version=report.run_id,
        compared_with=inc.model_version if inc is not None else None,
        metric=metric,
        confidence=usable.confidence if usable is not None else None,
        data=_card_data(report.data),
        training=report.training.model_copy(update={"args": dict(list(report.training.args.items())[:MAX_ARGS])}),
        compute=report.compute,
        checks=[
            c.model_copy(update={"detail": c.detail[:MAX_TEXT], "name": c.name[:MAX_TEXT]}) for c in report.checks[:64]
        ],
        rows=rows,
        classes=classes,
        decision=_card_decision(decision),
        reason=reason,
    )


def _cell(text: object) -> str:
    """A Markdown table cell of report content: one line, pipes and HTML escaped, cut to 200 characters."""
    value = " ".join(str(text).split()).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")
    return value if len(value) <= 200 else value[:197] + "..."


def _num(x: float | None, signed: bool = False) -> str:
    return "-" if x is None else (f"{x:+.4f}" if signed else f"{x:.4f}")


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def render_markdown(card: ModelCard) -> str:
    """The card as Markdown (every string from the report escaped)."""
    d = card.decision
    verdict = "promoted" if d.promoted else "passed, not promoted" if d.passed else "rejected"
    ci = f"{card.confidence * 100:g}% CI" if card.confidence is not None else "CI"
    lines = [
        f"# Model card: {_cell(card.model)} {_cell(card.version)}",
        "",
        f"**Decision:** {verdict} ({_cell(card.reason)}): {_cell(d.summary)}",
        f"Compared with: {_cell(card.compared_with or 'none (first model of the line)')}; decided at "
        f"{_cell(d.decided_at or '-')}.",
        "",
        "## Why",
        *(f"- {_cell(r)}" for r in d.reasons),
        "",
        "## Data",
        *_table(
            ["era", "train", "val", "test", "excluded", "hash"],
            [
                [
                    _cell(e),
                    *(str(c.get(k, 0)) for k in ("train", "val", "test", "excluded")),
                    _cell(card.data.era_hashes.get(e, "-"))[:16],
                ]
                for e, c in card.data.eras.items()
            ],
        ),
        f"Classes: {_cell(', '.join(card.data.classes) or '-')}; training images used: {card.data.train_images}.",
        *(f"- warning: {_cell(w)}" for w in card.data.warnings),
        "",
        "## Training",
        f"Strategy {_cell(card.training.strategy)} from {_cell(card.training.base_weights)}; epochs "
        f"{card.training.epochs_completed}/{card.training.epochs_planned} (best {card.training.best_epoch}); "
        f"wall {card.compute.wall_seconds:.0f} s, train {card.compute.train_seconds:.0f} s.",
        "",
        f"## {card.metric} per era (candidate - incumbent with its {ci})",
        *_table(
            ["era", "images", "instances", card.metric, "incumbent", "delta", ci],
            [
                [
                    _cell(r.era),
                    str(r.images),
                    str(r.instances),
                    _num(r.value),
                    _num(r.incumbent),
                    _num(r.value - r.incumbent if r.incumbent is not None else None, True),
                    f"[{_num(r.low, True)}, {_num(r.high, True)}]" if r.low is not None else "-",
                ]
                for r in card.rows
            ],
        ),
        "",
        "## AP50-95 per class and era",
        *_table(
            ["era", "class", "instances", "AP50-95", "incumbent", ci],
            [
                [
                    _cell(c.era),
                    _cell(c.name),
                    str(c.instances),
                    _num(c.ap),
                    _num(c.incumbent),
                    f"[{_num(c.low, True)}, {_num(c.high, True)}]" if c.low is not None else "-",
                ]
                for c in card.classes
            ],
        ),
        "",
        "## Checks",
        *_table(
            ["check", "passed", "value", "threshold"],
            [[_cell(c.name), str(c.passed), _num(c.value), _num(c.threshold)] for c in card.checks],
        ),
    ]
    return "\n".join(lines) + "\n"


def write_card(registry: Registry, card: ModelCard) -> str:
    """Write card.json and card.md into the version's folder (overwriting a card written before, by an earlier
    attempt or by anyone else); returns the card.json URI.

    A card that says the same as the one there (its decision time aside) is not written again: a run awaiting
    approval is concluded on every poll, and its card keeps the time it first reached that decision.
    """
    base = registry.version_uri(card.model, card.version)
    before = read_card(registry, card.model, card.version)
    if before is not None and _same_card(before, card):
        return join_uri(base, CARD_JSON)
    registry.store.put_bytes(join_uri(base, CARD_MD), render_markdown(card).encode())
    uri = join_uri(base, CARD_JSON)
    registry.store.put_bytes(uri, json.dumps(card.dump(), indent=2, sort_keys=True).encode())
    return uri


def _same_card(before: ModelCard, after: ModelCard) -> bool:
    stamp = {"decided_at": before.decision.decided_at}
    return before == after.model_copy(update={"decision": after.decision.model_copy(update=stamp)})


def read_card(registry: Registry, model: str, version: str) -> ModelCard | None:
    """The version's card, or None when it has none, is oversized or does not validate (a card is a record of
    the decision, never an input to one)."""
    uri = join_uri(registry.version_uri(model, version), CARD_JSON)
    try:
        card = ModelCard.model_validate_json(registry.store.get_bytes(uri, max_bytes=MAX_CARD_BYTES))
    except (FileNotFoundError, ObjectTooLarge, ValidationError):
        return None
    return card if (card.model, card.version) == (model, version) else None  # not another version's card
