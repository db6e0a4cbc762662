"""Plain-text tables of per-era comparisons and registry history for terminals and logs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kretrain.api import Comparison, Decision, EraDelta


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 3) -> str:
    """A fixed-width text table; None is shown as `-`, floats with `digits` decimals."""

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.{digits}f}"
        return str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in text)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in text]
    return "\n".join(lines)


def comparison_table(comparison: Comparison) -> str:
    """Per-era and pooled metric of candidate and incumbent, with the delta."""
    metric = comparison.metric
    rows: list[list[Any]] = []
    eras = list(comparison.candidate.eras)
    if comparison.incumbent is not None:
        eras += [e for e in comparison.incumbent.eras if e not in eras]
    for era in eras:
        cand = comparison.candidate.eras.get(era)
        inc = comparison.incumbent.eras.get(era) if comparison.incumbent else None
        c = cand.get(metric) if cand else None
        i = inc.get(metric) if inc else None
        delta = f"{c - i:+.3f}" if c is not None and i is not None else "-"
        rows.append([era, cand.images if cand else 0, c, i, delta, _ci(comparison.eras.get(era))])
    c = comparison.candidate.pooled.get(metric)
    i = comparison.incumbent.pooled.get(metric) if comparison.incumbent else None
    delta = f"{c - i:+.3f}" if i is not None else "-"
    rows.append(["pooled", comparison.candidate.pooled.images, c, i, delta, _ci(comparison.pooled)])
    head = ["era", "test images", f"candidate {metric}", f"incumbent {metric}", "delta"]
    if comparison.confidence is None:
        return render_table(head, [r[:-1] for r in rows])
    return render_table([*head, f"{comparison.confidence * 100:g}% CI (paired bootstrap)"], rows)


def _ci(d: EraDelta | None) -> str:
    """`[-0.012, +0.034]`, or `-` without an interval."""
    return "-" if d is None or d.low is None or d.high is None else f"[{d.low:+.3f}, {d.high:+.3f}]"


def decision_text(decision: Decision) -> str:
    """The decision headline and every reason, one per line."""
    head = "PROMOTED" if decision.promoted else ("PASSED (not promoted)" if decision.passed else "REJECTED")
    return "\n".join([f"decision: {head} — {decision.summary}", *(f"  - {r}" for r in decision.reasons)])
