"""`kretrain models list|show|promote|rollback|history`: operate a model registry by hand."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import sys
from typing import TYPE_CHECKING, Any

from kretrain.tables import render_table

if TYPE_CHECKING:
    from kretrain.registry import Registry

# Exit codes beyond argparse's 2.
EXIT_ERROR = 1
EXIT_INCUMBENT_CHANGED = 3


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `models` command group."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--registry",
        default=os.environ.get("KRETRAIN_REGISTRY"),
        metavar="S3_URI",
        help="registry root, s3://bucket/prefix (default: $KRETRAIN_REGISTRY)",
    )
    common.add_argument(
        "--endpoint",
        default=None,
        metavar="URL",
        help="S3 endpoint URL (default: $AWS_ENDPOINT_URL, else AWS); credentials come from AWS_* variables",
    )
    common.add_argument("--region", default=None, help="S3 region (default: $AWS_DEFAULT_REGION)")

    models = sub.add_parser("models", help="list, inspect, promote and roll back model versions in the registry")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    p = msub.add_parser("list", parents=[common], help="registered versions of a model line")
    p.add_argument("model", help="model line name")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_list)

    p = msub.add_parser("show", parents=[common], help="one version: sha256, lineage, metrics per era, checks")
    p.add_argument("model", help="model line name")
    p.add_argument("version", nargs="?", help="version (default: the incumbent)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_show)

    p = msub.add_parser(
        "promote",
        parents=[common],
        help="make a version the incumbent (conditional write: refused if the incumbent changed)",
    )
    p.add_argument("model", help="model line name")
    p.add_argument("version", help="version to promote")
    p.add_argument(
        "--expected",
        default=None,
        metavar="VERSION",
        help="the incumbent you expect to replace ('none' for the first model); default: whatever is "
        "incumbent when the command reads it",
    )
    p.add_argument("--reason", default="promoted by hand", help="why (recorded in the history)")
    p.add_argument("--actor", default=None, help="who (default: user@host)")
    p.set_defaults(func=cmd_promote)

    p = msub.add_parser("rollback", parents=[common], help="point the incumbent back at an earlier version")
    p.add_argument("model", help="model line name")
    p.add_argument("version", help="version to roll back to")
    p.add_argument("--reason", required=True, help="why (recorded in the history)")
    p.add_argument("--actor", default=None, help="who (default: user@host)")
    p.set_defaults(func=cmd_rollback)

    p = msub.add_parser(
        "history", parents=[common], help="every promotion and rollback, and every version's metrics, of a model line"
    )
    p.add_argument("model", help="model line name")
    p.add_argument("--json", action="store_true", help="print JSON (promotions and metric history) instead of tables")
    p.add_argument(
        "--metric", default="mAP50-95", choices=["mAP50-95", "mAP50", "precision", "recall"], help="metric shown"
    )
    p.set_defaults(func=cmd_history)

    from kretrain import line_report_cli  # `models report`: the line as one static HTML page (kretrain/line_report.py)

    p = msub.add_parser("report", parents=[common], help="write the line's report page (DIR/index.html, offline)")
    line_report_cli.configure(p, _run, _registry)

    from kretrain import alias_cli  # `models alias set|list|history` (kretrain/alias_cli.py, kretrain/aliases.py)

    p = msub.add_parser("alias", help="named pointers beside the incumbent (production, staging, ...)")
    alias_cli.configure(p, common, _run, _registry, _actor)


def _registry(args: argparse.Namespace) -> Registry:
    from kretrain.registry import Registry
    from kretrain.store import ObjectStore

    if not args.registry:
        raise _UsageError("no registry given: pass --registry s3://bucket/prefix or set KRETRAIN_REGISTRY")
    return Registry(ObjectStore(endpoint_url=args.endpoint, region=args.region), args.registry)


class _UsageError(Exception):
    pass


def _actor(args: argparse.Namespace) -> str:
    if args.actor:
        return str(args.actor)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} (kretrain models)"


def _run(fn: Any, args: argparse.Namespace) -> int:
    from kretrain.registry import IncumbentChanged, RegistryError
    from kretrain.store import StoreError

    try:
        code: int = fn(args)
        return code
    except IncumbentChanged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INCUMBENT_CHANGED
    except (RegistryError, StoreError, _UsageError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def cmd_list(args: argparse.Namespace) -> int:
    """Print the versions of a model line."""
    return _run(_list, args)


def _list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    versions = registry.versions(args.model)
    pointer = registry.incumbent_pointer(args.model)
    current = pointer.version if pointer else None
    if args.json:
        listed = [{**v.model_dump(mode="json", by_alias=True), "incumbent": v.version == current} for v in versions]
        print(json.dumps(listed, indent=2, sort_keys=True))
        return 0
    if not versions:
        print(f"no versions of {args.model!r} under {args.registry}")
        return 0
    rows = [
        [
            "*" if v.version == current else "",
            v.version,
            v.registered_at,
            v.lineage.strategy,
            v.lineage.parent,
            ",".join(v.lineage.eras),
            v.metrics.get("mAP50-95"),
            v.sha256[:12],
        ]
        for v in versions
    ]
    print(
        render_table(["", "version", "registered", "strategy", "parent", "eras", "mAP50-95", "sha256"], rows, digits=4)
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print one version with its lineage, per-era metrics and checks."""
    return _run(_show, args)


def _show(args: argparse.Namespace) -> int:
    registry = _registry(args)
    version = args.version
    incumbent = registry.incumbent(args.model)
    if version is None:
        if incumbent is None:
            raise _UsageError(f"{args.model!r} has no incumbent; name a version (see `kretrain models list`)")
        version = incumbent.version
    info = registry.version_info(args.model, version)
    report = registry.read_report(args.model, version)
    if args.json:
        record = info.model_dump(mode="json", by_alias=True)
        print(json.dumps({"version": record, "report": report.dump()}, indent=2, sort_keys=True))
        return 0
    lineage = info.lineage
    is_incumbent = incumbent is not None and incumbent.version == version
    print(f"model:      {args.model}")
    print(f"version:    {version}{'  (incumbent)' if is_incumbent else ''}")
    print(f"registered: {info.registered_at}")
    print(f"weights:    {info.uri}  ({info.size} bytes)")
    print(f"sha256:     {info.sha256}")
    print(f"strategy:   {lineage.strategy}   parent: {lineage.parent or '-'}")
    hashes = lineage.era_hashes
    print("eras:       " + ", ".join(f"{e} ({hashes.get(e, '-')[:12]})" for e in lineage.eras))
    if lineage.compute:
        print("compute:    " + ", ".join(f"{k}={v}" for k, v in sorted(lineage.compute.items())))
    ev = report.candidate_evaluation
    rows = [[era, m.images, m.map50_95, m.map50, m.precision, m.recall] for era, m in ev.eras.items()]
    p = ev.pooled
    rows.append(["pooled", p.images, p.map50_95, p.map50, p.precision, p.recall])
    print()
    print(render_table(["era", "images", "mAP50-95", "mAP50", "precision", "recall"], rows, digits=4))
    if report.checks:
        print()
        print(render_table(["check", "passed", "value", "threshold"], [[c.name, c.passed, c.value, c.threshold] for c in report.checks], digits=4))  # fmt: skip
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Promote a version with a conditional write of the incumbent pointer."""
    return _run(_promote, args)


def _promote(args: argparse.Namespace) -> int:
    registry = _registry(args)
    if args.expected is None:
        current = registry.incumbent(args.model)
        expected = current.version if current else None
    else:
        expected = None if args.expected.lower() == "none" else args.expected
    ref = registry.promote(args.model, args.version, expected=expected, reason=args.reason, actor=_actor(args))
    print(f"promoted {args.model} {ref.version} (was {expected or 'none'}); sha256 {ref.sha256}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Roll the incumbent back to an earlier version."""
    return _run(_rollback, args)


def _rollback(args: argparse.Namespace) -> int:
    registry = _registry(args)
    before = registry.incumbent(args.model)
    ref = registry.rollback(args.model, args.version, reason=args.reason, actor=_actor(args))
    print(f"rolled back {args.model} to {ref.version} (was {before.version if before else 'none'})")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """Print every promotion and rollback."""
    return _run(_history, args)


def _history(args: argparse.Namespace) -> int:
    from kretrain.line_history import history_table, metric_history

    registry = _registry(args)
    history = registry.history(args.model)
    metrics = metric_history(registry, args.model, args.metric)
    if args.json:
        promotions = [h.model_dump(mode="json", by_alias=True) for h in history]
        history_json = [m.model_dump(mode="json", by_alias=True) for m in metrics]
        print(json.dumps({"promotions": promotions, "metrics": history_json}, indent=2, sort_keys=True))
        return 0
    if not history:
        print(f"no promotions of {args.model!r} yet")
    else:
        rows = [[h.seq, h.action, h.version, h.previous, h.at, h.actor, h.reason] for h in history]
        print(render_table(["seq", "action", "version", "previous", "at", "actor", "reason"], rows, digits=4))
    if metrics:
        head, rows = history_table(metrics)
        print(f"\nmetric history ({args.metric} on each run's test set; delta and interval vs the incumbent compared):")
        print(render_table(head, rows, digits=4))
    return 0
