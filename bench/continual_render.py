"""Render a continual benchmark's results again from its JSON: advice, front, goal, Markdown and charts.

    .venv/bin/python bench/continual_render.py bench/results/continual.json [OUT_DIR]

The measured runs are kept as they are; what is derived from them (continual_summary.compare: ratios, the
Pareto front, the goal, one sentence per strategy) is computed again with the current code, so a change to
the analysis or the report does not need a new run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from continual_report import charts, markdown
from continual_summary import compare


def main(argv: list[str] | None = None) -> int:
    """Rewrite <stem>.json, <stem>.md and the charts beside the JSON (or in OUT_DIR)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        raise SystemExit("usage: continual_render.py RESULTS.json [OUT_DIR]")
    source = Path(args[0])
    doc = json.loads(source.read_text())
    out = Path(args[1]) if len(args) == 2 else source.parent
    out.mkdir(parents=True, exist_ok=True)
    doc.update(compare(doc["strategies"], doc["reference"]))
    stem = source.stem
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=2))
    (out / f"{stem}.md").write_text(markdown(doc) + "\n")
    for path in charts(doc, out, stem):
        print(path)
    print(out / f"{stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
