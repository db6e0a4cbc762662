"""`kretrain models report MODEL --out DIR`: the line read (line_report), rendered (line_report_html), written."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kretrain.line_report import METRICS, load_line
from kretrain.line_report_html import render
from kretrain.storage.localfs import atomic_write

if TYPE_CHECKING:
    from kretrain.registry import Registry


def write_report(registry: Registry, model: str, out: Path, metric: str | None = None) -> Path:
    """Render the line and write `out/index.html` atomically (a temporary file renamed into place)."""
    page = render(load_line(registry, model, metric))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "index.html", page.encode("utf-8"))
    return out / "index.html"


def configure(
    parser: argparse.ArgumentParser,
    run: Callable[[Callable[[argparse.Namespace], int], argparse.Namespace], int],
    registry_of: Callable[[argparse.Namespace], Registry],
) -> None:
    """Arguments and handler of `kretrain models report` (run: registry_cli's error handling)."""
    parser.add_argument("model", help="model line name")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write index.html into")
    parser.add_argument("--metric", default=None, choices=METRICS, help="metric (default: the line's gate metric)")

    def _report(args: argparse.Namespace) -> int:
        path = write_report(registry_of(args), args.model, args.out, args.metric)
        print(f"wrote {path}")
        return 0

    parser.set_defaults(func=lambda args: run(_report, args))
