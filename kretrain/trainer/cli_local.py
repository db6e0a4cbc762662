"""`kretrain run` (a RetrainJob manifest on this machine) and `kretrain demo`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `run` and `demo` commands."""
    run = sub.add_parser("run", help="run a RetrainJob manifest on this machine (no cluster): train, evaluate, decide")
    run.add_argument("-f", "--file", type=Path, required=True, help="RetrainJob manifest")
    run.add_argument("--workdir", type=Path, default=Path(".kretrain/runs"), help="local run folder")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="local S3 + synthetic eras: a rejected incremental run and a promoted full one")
    demo.add_argument("--workdir", type=Path, default=Path("kretrain-demo"), help="output folder (recreated)")
    demo.add_argument("--quick", action="store_true", help="smaller data and fewer epochs (about a minute)")
    demo.set_defaults(func=cmd_demo)


def cmd_run(args: argparse.Namespace) -> int:
    """Run every RetrainJob in the manifest; exit 1 when the trainer fails or the input is bad."""
    from kretrain.trainer.local import LocalRunError, run_manifest

    try:
        run_manifest(args.file, workdir=args.workdir.resolve())
    except (LocalRunError, ValueError, OSError) as exc:
        print(f"kretrain run: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo."""
    from kretrain.trainer.demo import QUICK, DemoSize, run_demo

    return run_demo(args.workdir.resolve(), QUICK if args.quick else DemoSize())
