"""`kretrain operator`: run the Kopf operator (kopf is imported only when the command runs)."""

from __future__ import annotations

import argparse
import os
import random


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `operator` command."""
    p = sub.add_parser("operator", help="run the RetrainJob operator (Kopf)")
    p.add_argument("-n", "--namespace", action="append", default=[], help="namespace to watch (repeatable; "
                   "default: KRETRAIN_NAMESPACES, else the whole cluster)")  # fmt: skip
    p.add_argument("--standalone", action="store_true", help="no peering (a single replica)")
    p.add_argument(
        "--peering", metavar="NAME", help="Kopf peering object for several replicas (default: KRETRAIN_PEERING)"
    )
    p.add_argument("--liveness", metavar="URL", help="Kopf liveness endpoint, e.g. http://0.0.0.0:8081/healthz")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_operator)


def cmd_operator(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT."""
    import logging

    import kopf

    from kretrain.operator.settings import get_settings

    if args.namespace:
        os.environ["KRETRAIN_NAMESPACES"] = ",".join(args.namespace)
        get_settings.cache_clear()
    settings = get_settings()
    import kretrain.operator.handlers  # registers the RetrainJob handlers
    import kretrain.operator.schedule_handlers  # noqa: F401  (RetrainSchedule timers)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    peering = args.peering or settings.peering
    kopf.run(
        standalone=args.standalone or not peering,
        peering_name=peering,
        # Kopf pauses every replica whose peers share its priority: each replica draws its own, so exactly one
        # (the highest) acts and the others stand by until it leaves (tests/test_operator_peering.py).
        priority=random.SystemRandom().randint(1, 2**31 - 1),
        namespaces=settings.namespaces,
        clusterwide=not settings.namespaces,
        liveness_endpoint=args.liveness,
    )
    return 0
