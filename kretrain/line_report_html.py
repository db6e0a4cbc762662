"""The line report page: one self-contained HTML file (inline CSS and SVG, no script, no external asset)."""

from __future__ import annotations

from html import escape

from kretrain.line_report import Line, VersionView
from kretrain.registry import now_rfc3339

PALETTE = ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#aec7e8", "#ffbb78")
MAX_CHART_ERAS = len(PALETTE)
DASH = "\u2013"
MAX_CLASS_BARS = 60
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:0 auto;max-width:1180px;padding:16px 24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;margin:0 0 12px}table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}th{background:#f4f4f4}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}.tag{display:inline-block;padding:0 6px;border-radius:8px;font-size:12px}
.promoted{background:#d8f0d8}.rejected{background:#f8dcdc}.incumbent{background:#cfe3ff}.other{background:#eee}
.legend span{display:inline-block;margin-right:12px}.sw{display:inline-block;width:18px;height:3px;vertical-align:middle;margin-right:4px}
.up{color:#1a7f1a}.down{color:#b22222}.note{color:#666;font-size:12px}svg{max-width:100%;height:auto}
ul.reasons{margin:2px 0 2px 18px;padding:0}section{page-break-inside:avoid}
pre.card{white-space:pre-wrap;font-size:12px;background:#fafafa;border:1px solid #eee;padding:6px;max-height:480px;overflow:auto}
a{color:inherit}@media print{details{display:none}}
@media print{body{max-width:none;padding:0}h2{page-break-after:avoid}}
"""


def e(value: object) -> str:
    """Every string from the registry is untrusted: escaped for text and attribute context."""
    return escape(str(value), quote=True)


def num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return DASH
    return f"{value:+.4f}" if signed else f"{value:.4f}"


RECORDED = {
    "IncumbentChanged": ("other", "not applied (incumbent changed)"),
    "ReportMismatch": ("other", "refused"),
    "AwaitingApproval": ("other", "awaiting approval"),
    "ApprovalRejected": ("rejected", "rejected by a person"),
}
"""Status labels of recorded decision reasons that neither promote nor are a plain gate verdict."""


def status(view: VersionView) -> tuple[str, str]:
    """(css class, label) of a version: incumbent, promoted before, or the gate's verdict."""
    if view.incumbent:
        return "incumbent", "incumbent"
    if any(p.action == "promote" for p in view.promotions):
        return "promoted", "promoted (superseded)"
    if any(p.action == "rollback" for p in view.promotions):
        return "promoted", "rolled back to"
    if view.reason is not None and view.reason in RECORDED:
        return RECORDED[view.reason]
    if view.verdict is not None and view.verdict.passed:
        return "other", "passed, dry run" if view.reason == "DryRun" else "passed, not promoted"
    if view.verdict is not None:
        return "rejected", "rejected"
    return "other", "not promoted"


def timeline(line: Line) -> str:
    """SVG: the pooled and per-era metric of every version; promotions filled, rejections hollow, rollbacks ↺."""
    vs = line.versions
    values = [v.pooled for v in vs if v.pooled is not None] + [x for v in vs for x in v.eras.values()]
    if not values:
        return '<p class="note">No version has a readable report yet.</p>'
    width, height, left, right, top, bottom = 960, 340, 58, 16, 30, 92
    lo, hi = min(values), max(values)
    pad = max(0.02, (hi - lo) * 0.1)
    lo, hi = max(0.0, lo - pad), min(1.0, hi + pad)
    if hi - lo < 1e-6:
        hi = lo + 0.05
    step = (width - left - right) / len(vs)

    def x(i: int) -> float:
        return left + (i + 0.5) * step

    def y(v: float) -> float:
        return top + (hi - v) / (hi - lo) * (height - top - bottom)

    out = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="{e(line.metric)} per version" font-size="11">']  # fmt: skip
    for k in range(6):
        v = lo + (hi - lo) * k / 5
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" fill="#555">{v:.3f}</text>')
    for n, era in enumerate(line.eras[:MAX_CHART_ERAS]):
        out += _series([(i, v.eras.get(era)) for i, v in enumerate(vs)], x, y, PALETTE[n], 1.4, e(era))
    out += _series([(i, v.pooled) for i, v in enumerate(vs)], x, y, "#111", 2.6, "pooled")
    for i, view in enumerate(vs):
        label = view.name if len(view.name) <= 20 else view.name[:19] + "…"
        out.append(f'<text transform="translate({x(i):.1f},{height - bottom + 14}) rotate(-35)" text-anchor="end" '
                   f'fill="#333">{e(label)}</text>')  # fmt: skip
        if view.pooled is None:
            continue
        css, text = status(view)
        fill, stroke = {"incumbent": ("#2a62c9", "#2a62c9"), "promoted": ("#2ca02c", "#2ca02c"),
                        "rejected": ("#fff", "#d62728")}.get(css, ("#fff", "#888"))  # fmt: skip
        tip = f"{view.name}: {line.metric} {num(view.pooled)} ({text})"
        if view.interval and view.compared_pooled is not None:
            conf, low, high = view.interval
            y0, y1 = y(max(lo, view.compared_pooled + low)), y(min(hi, view.compared_pooled + high))
            out.append(f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{y0:.1f}" y2="{y1:.1f}" stroke="#555" stroke-width="1.5">'
                       f"<title>{conf:.0%} interval of the gain: {low:+.4f} to {high:+.4f}</title></line>")  # fmt: skip
            tip += f", gain {low:+.4f} to {high:+.4f} ({conf:.0%})"
        out.append(f'<circle cx="{x(i):.1f}" cy="{y(view.pooled):.1f}" r="6" fill="{fill}" stroke="{stroke}" '
                   f'stroke-width="2"><title>{e(tip)}</title></circle>')  # fmt: skip
        if view.incumbent:
            out.append(f'<circle cx="{x(i):.1f}" cy="{y(view.pooled):.1f}" r="10" fill="none" stroke="#2a62c9"/>')
        if any(p.action == "rollback" for p in view.promotions):
            out.append(f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{top}" y2="{height - bottom}" stroke="#b35c00" '
                       f'stroke-dasharray="4 3"/><text x="{x(i):.1f}" y="{top - 8}" text-anchor="middle" fill="#b35c00">'
                       f'↺ rolled back to<title>rolled back to {e(view.name)}</title></text>')  # fmt: skip
    out.append("</svg>")
    legend = ['<span><i class="sw" style="background:#111;height:4px"></i>pooled</span>']
    legend += [f'<span><i class="sw" style="background:{PALETTE[n]}"></i>{e(era)}</span>'
               for n, era in enumerate(line.eras[:MAX_CHART_ERAS])]  # fmt: skip
    more = len(line.eras) - MAX_CHART_ERAS
    if more > 0:
        legend.append(f'<span class="note">(+{more} eras in the matrix below)</span>')
    key = "● promoted/incumbent (blue ring: incumbent now) ○ rejected or not promoted ↺ rolled back to"
    return "".join(out) + f'<p class="legend">{"".join(legend)}</p><p class="note">{e(key)}</p>'


def _series(points: list[tuple[int, float | None]], x: object, y: object, color: str, w: float, name: str) -> list[str]:
    """Polylines through consecutive points (a version without the era breaks the line)."""
    runs: list[list[str]] = [[]]
    for i, v in points:
        if v is None:
            runs.append([])
        else:
            runs[-1].append(f"{x(i):.1f},{y(v):.1f}")  # type: ignore[operator]
    dots = [
        f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="{w + 1:.1f}" fill="{color}"/>'
        for r in runs
        for p in r
    ]
    return [f'<polyline points="{" ".join(r)}" fill="none" stroke="{color}" stroke-width="{w}"><title>{name}</title>'
            f"</polyline>" for r in runs if r] + dots  # fmt: skip


def versions_table(line: Line) -> str:
    rows = []
    for n, view in reversed(list(enumerate(line.versions))):
        css, text = status(view)
        lin = view.record.lineage
        delta = None if view.pooled is None or view.compared_pooled is None else view.pooled - view.compared_pooled
        ci = f" [{view.interval[1]:+.4f}, {view.interval[2]:+.4f}] {view.interval[0]:.0%}" if view.interval else ""
        summary = view.verdict.summary if view.verdict else (view.report_error or view.verdict_note)
        rows.append(f'<tr><td><a href="#v{n}">{e(view.name)}</a></td><td>{e(view.record.registered_at)}</td><td>{e(lin.strategy)}</td>'
                    f"<td>{e(lin.parent or DASH)}</td><td class=n>{num(view.pooled)}</td>"
                    f"<td>{e(view.compared_with or DASH)}</td><td class=n>{num(delta, signed=True)}{ci}</td>"
                    f'<td><span class="tag {css}">{e(text)}</span></td><td>{e(summary)}</td></tr>')  # fmt: skip
    head = ("<tr><th>version</th><th>registered</th><th>strategy</th><th>parent</th>"
            f"<th>{e(line.metric)}</th><th>compared with</th><th>Δ [interval]</th><th>status</th><th>gate</th></tr>")  # fmt: skip
    return f"<table>{head}{''.join(rows)}</table>"


def matrix(line: Line) -> str:
    cells = [c.value for c in line.matrix.values()]
    if not cells:
        return '<p class="note">No per-era metrics.</p>'
    lo, hi = min(cells), max(cells)
    head = "<tr><th>version</th>" + "".join(f"<th>{e(era)}</th>" for era in line.eras) + "</tr>"
    rows = []
    for view in reversed(line.versions):
        tds = []
        for era in line.eras:
            cell = line.matrix.get((view.name, era))
            if cell is None:
                tds.append(f'<td class="n note">{DASH}</td>')
                continue
            alpha = 0.08 + 0.6 * ((cell.value - lo) / (hi - lo) if hi > lo else 1.0)
            later = cell.measured_in != view.name
            tip = f' title="measured as the incumbent in run {e(cell.measured_in)}"' if later else ""
            mark = "*" if later else ""
            tds.append(f'<td class=n style="background:rgba(31,119,180,{alpha:.2f})"{tip}>{num(cell.value)}{mark}</td>')
        rows.append(f"<tr><td>{e(view.name)}</td>{''.join(tds)}</tr>")
    note = "* measured when a later candidate was compared with this version (that run's test split of the era)."
    return f'<table>{head}{"".join(rows)}</table><p class="note">{e(note)}</p>'


def classes(line: Line) -> str:
    if not line.classes:
        return '<p class="note">No per-class metrics in the newest report.</p>'
    shown = sorted(line.classes, key=lambda c: (c.delta is None, c.delta if c.delta is not None else 0))
    rows = []
    for c in shown:
        d = c.delta
        css = "" if d is None else ("up" if d > 0 else "down" if d < 0 else "")
        rows.append(f"<tr><td>{e(c.name)}</td><td class=n>{num(c.incumbent)}</td><td class=n>{num(c.candidate)}</td>"
                    f'<td class="n {css}">{num(d, signed=True)}</td></tr>')  # fmt: skip
    bars = [c for c in shown if c.delta is not None][:MAX_CLASS_BARS]
    svg = ""
    if bars:
        span = max(abs(c.delta or 0) for c in bars) or 1.0
        h, mid, half = 20 * len(bars) + 10, 420, 200
        parts = [f'<svg viewBox="0 0 640 {h}" width="640" height="{h}" font-size="11">',
                 f'<line x1="{mid}" x2="{mid}" y1="0" y2="{h}" stroke="#999"/>']  # fmt: skip
        for k, c in enumerate(bars):
            d = c.delta or 0.0
            w = abs(d) / span * half
            x0 = mid if d >= 0 else mid - w
            label = c.name if len(c.name) <= 40 else c.name[:39] + "…"
            parts.append(f'<text x="{mid - half - 8}" y="{20 * k + 19}" text-anchor="end">{e(label)}</text>'
                         f'<rect x="{x0:.1f}" y="{20 * k + 8}" width="{w:.1f}" height="14" '
                         f'fill="{"#2ca02c" if d >= 0 else "#d62728"}"><title>{e(c.name)} {num(d, True)}</title></rect>')  # fmt: skip
        svg = "".join(parts) + "</svg>"
    head = "<tr><th>class</th><th>incumbent</th><th>candidate</th><th>Δ mAP50-95</th></tr>"
    return f"{svg}<table>{head}{''.join(rows)}</table>"


def data_table(line: Line) -> str:
    rows = []
    for view in reversed(line.versions):
        d = view.data
        if d is None:
            rows.append(f'<tr><td>{e(view.name)}</td><td colspan=5 class="note">{e(view.report_error or "no report")}</td></tr>')  # fmt: skip
            continue
        eras = "; ".join(
            f"{era}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) for era, counts in d.eras.items()
        )
        hashes = view.record.lineage.era_hashes
        lin = ", ".join(f"{era} ({hashes.get(era, DASH)[:12]})" for era in view.record.lineage.eras)
        warn = "".join(f"<li>{e(w)}</li>" for w in d.warnings)
        rows.append(f"<tr><td>{e(view.name)}</td><td>{e(lin or DASH)}</td><td>{e(eras or DASH)}</td>"
                    f"<td class=n>{d.train_images}</td><td class=n>{d.errors}</td>"
                    f'<td>{f"<ul class=reasons>{warn}</ul>" if warn else DASH}</td></tr>')  # fmt: skip
    head = ("<tr><th>version</th><th>eras (content hash)</th><th>images per era and split</th><th>train images</th>"
            "<th>excluded</th><th>warnings</th></tr>")  # fmt: skip
    return f"<table>{head}{''.join(rows)}</table>"


def decisions(line: Line) -> str:
    parts = []
    for n, view in reversed(list(enumerate(line.versions))):
        css, text = status(view)
        lin = view.record.lineage
        compute = ", ".join(f"{k} {v}" for k, v in sorted(lin.compute.items()) if v is not None)
        reasons = "".join(f"<li>{e(r)}</li>" for r in (view.verdict.reasons if view.verdict else []))
        checks = ", ".join(f"{c.name} {'passed' if c.passed else 'FAILED'}" for c in view.checks)
        moves = "".join(f"<li>#{p.seq} {e(p.action)} at {e(p.at or '?')} by {e(p.actor or '?')}: {e(p.reason)}</li>"
                        for p in view.promotions)  # fmt: skip
        verdict = e(view.verdict.summary) if view.verdict else e(view.report_error or view.verdict_note)
        source = "recorded in the model card" if view.recorded else "re-applied to the stored report"
        card = (f'<details><summary>Model card</summary><pre class="card">{e(view.card)}</pre></details>'
                if view.card else '<p class="note">No model card (decided before cards, or not decided).</p>')  # fmt: skip
        parts.append(
            f'<section id="v{n}"><h3>{e(view.name)} <span class="tag {css}">{e(text)}</span></h3>'
            f"<p>Gate ({source if view.verdict else 'unavailable'}): {verdict}</p>"
            f"{f'<ul class=reasons>{reasons}</ul>' if reasons else ''}"
            f"<p class=note>strategy {e(lin.strategy)} · parent {e(lin.parent or 'none')} · sha256 "
            f"{e(view.record.sha256[:16])}… · {e(compute or 'no compute recorded')}"
            f"{' · checks: ' + e(checks) if checks else ''}</p>"
            f"{f'<ul class=reasons>{moves}</ul>' if moves else ''}{card}</section>"
        )
    return "".join(parts)


def render(line: Line) -> str:
    """The whole page."""
    incumbent = next((v.name for v in line.versions if v.incumbent), None)
    omitted = f" · the {line.omitted} oldest versions are not shown" if line.omitted else ""
    rollbacks = sum(1 for h in line.history if h.action == "rollback")
    meta = (f"{len(line.versions)} versions · incumbent {incumbent or 'none'} · {len(line.history)} promotions and "
            f"rollbacks ({rollbacks} rollback{'s' if rollbacks != 1 else ''}) · metric {line.metric} · registry {line.registry} · "
            f"generated {now_rfc3339()}{omitted}")  # fmt: skip
    latest = f" ({e(line.latest)} vs the incumbent it was compared with)" if line.latest else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(line.model)}: model line report</title><style>{CSS}</style></head><body>"
        f'<h1>Model line {e(line.model)}</h1><p class="meta">{e(meta)}</p>'
        f"<section><h2>Timeline: {e(line.metric)} per version</h2>{timeline(line)}</section>"
        f"<section><h2>Versions</h2>{versions_table(line)}</section>"
        f"<section><h2>Accuracy matrix (version &times; era, {e(line.metric)})</h2>{matrix(line)}</section>"
        f"<section><h2>Per-class changes of the newest candidate{latest}</h2>{classes(line)}</section>"
        f"<section><h2>Data seen per version</h2>{data_table(line)}</section>"
        f"<h2>Decisions and lineage</h2>{decisions(line)}"
        "</body></html>\n"
    )
