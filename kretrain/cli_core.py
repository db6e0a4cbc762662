"""`kretrain crd` and `kretrain validate`: the API as a CRD, and offline manifest checks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kretrain.apidoc import render_reference
from kretrain.crd import render_crd
from kretrain.validate import validate_file


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `crd` and `validate` commands."""
    crd = sub.add_parser("crd", help="print or write the RetrainJob CRD generated from the API models")
    crd.add_argument("--schedule", action="store_true", help="the RetrainSchedule CRD instead of the RetrainJob one")
    crd.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout")
    crd.add_argument("--reference", action="store_true", help="the Markdown field reference instead of the CRD")
    crd.set_defaults(func=cmd_crd)

    val = sub.add_parser(
        "validate", help="check RetrainJob and RetrainSchedule manifests offline (CRD schema and models)"
    )
    val.add_argument(
        "-f",
        "--file",
        dest="files",
        type=Path,
        action="append",
        required=True,
        help="manifest file (repeatable); multi-document YAML is fine",
    )
    val.set_defaults(func=cmd_validate)


def cmd_crd(args: argparse.Namespace) -> int:
    """Write the CRD YAML."""
    text = render_reference() if args.reference else render_crd(schedule=args.schedule)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Print every problem of every manifest; exit 1 if there is any."""
    problems = [line for path in args.files for line in validate_file(path)]
    for line in problems:
        print(line)
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    for path in args.files:
        print(f"{path}: ok")
    return 0
