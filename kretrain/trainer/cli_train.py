"""`kretrain train --spec FILE`: the training pod's entrypoint (also usable locally)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `train` command."""
    p = sub.add_parser(
        "train",
        help="run one training pod: pull data, train (resuming from the run's last.pt), check, evaluate, register",
        description=(
            "Environment (the pod contract, docs/internals.md): KRETRAIN_RUN_ID, KRETRAIN_INCUMBENT_VERSION, "
            "KRETRAIN_WORKDIR, KRETRAIN_CACHE_DIR, KRETRAIN_TERMINATION_LOG, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, YOLO_CONFIG_DIR."
        ),
    )
    p.add_argument("--spec", type=Path, required=True, help="the RetrainJob spec as JSON (camelCase)")
    p.add_argument("--run-id", help="run id (default: $KRETRAIN_RUN_ID)")
    p.add_argument("--workdir", type=Path, help="scratch folder (default: $KRETRAIN_WORKDIR or /scratch)")
    p.add_argument("--cache-dir", type=Path, help="dataset cache (default: $KRETRAIN_CACHE_DIR or /cache)")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    """Run the pod; exit code 0 on success, non-zero with the reason in the termination log."""
    import os
    import sys

    from kretrain.api.pod import PodContract, PodContractError
    from kretrain.trainer.entrypoint import main

    try:
        pod = PodContract.from_env(os.environ, run_id=args.run_id, workdir=args.workdir, cache_dir=args.cache_dir)
    except PodContractError as exc:
        print(f"kretrain train: {exc}", file=sys.stderr)
        return 2
    return main(args.spec, pod)
