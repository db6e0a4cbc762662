"""The `kretrain` command line: each command group lives in its own module with a `register` function."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that add sub-commands. They must import nothing heavy at import time (no torch, kopf,
# ultralytics): the trainer image has no kopf and the operator image has no torch.
COMMAND_MODULES = (
    "kretrain.cli_core",  # crd, validate
    "kretrain.registry_cli",  # models list|show|promote|rollback|history
    "kretrain.trainer.cli_data",  # data prepare, data synth
    "kretrain.trainer.cli_train",  # train
    "kretrain.trainer.cli_local",  # run, demo
    "kretrain.operator.cli",  # operator
    "kretrain.operator.schedule_cli",  # schedule check
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available command group registered."""
    parser = argparse.ArgumentParser(
        prog="kretrain",
        description="Continual training of Ultralytics YOLO detectors: retrain, evaluate per era, promote.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that command group is not part of this installation
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `kretrain` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
