"""`kretrain models alias set|list|history`: named pointers beside the incumbent, moved by hand."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kretrain.tables import render_table

if TYPE_CHECKING:  # pragma: no cover
    from kretrain.registry import Registry

Runner = Callable[[Callable[[argparse.Namespace], int], argparse.Namespace], int]


def configure(
    parser: argparse.ArgumentParser,
    common: argparse.ArgumentParser,
    run: Runner,
    registry: Callable[[argparse.Namespace], Registry],
    actor: Callable[[argparse.Namespace], str],
) -> None:
    """Add `set`, `list` and `history` under `parser` (the `models alias` command)."""
    sub = parser.add_subparsers(dest="alias_command", metavar="ACTION", required=True)

    p = sub.add_parser("set", parents=[common], help="point an alias at a registered version (conditional write)")
    p.add_argument("model", help="model line name")
    p.add_argument("alias", help="alias name, a DNS label (production, staging, canary-eu, ...)")
    p.add_argument("version", help="registered version the alias will name")
    p.add_argument(
        "--expected",
        default=None,
        metavar="VERSION",
        help="the version you expect the alias to name now ('none' for a new alias); default: whatever it "
        "names when the command reads it",
    )
    p.add_argument("--reason", default="set by hand", help="why (recorded in the alias's history)")
    p.add_argument("--actor", default=None, help="who (default: user@host)")
    p.set_defaults(func=lambda a: run(lambda x: _set(x, registry(x), actor(x)), a))

    p = sub.add_parser("list", parents=[common], help="the incumbent and every alias of a model line")
    p.add_argument("model", help="model line name")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=lambda a: run(lambda x: _list(x, registry(x)), a))

    p = sub.add_parser("history", parents=[common], help="every move of one alias")
    p.add_argument("model", help="model line name")
    p.add_argument("alias", help="alias name")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=lambda a: run(lambda x: _history(x, registry(x)), a))


def _set(args: argparse.Namespace, registry: Registry, actor: str) -> int:
    from kretrain.aliases import ANY, get_alias, set_alias

    expected: object = ANY
    if args.expected is not None:
        expected = None if args.expected.lower() == "none" else args.expected
    before = get_alias(registry, args.model, args.alias)
    ptr = set_alias(registry, args.model, args.alias, args.version, expected=expected, reason=args.reason, actor=actor)
    was = before.version if before else "nothing"
    print(f"alias {args.alias} of {args.model} -> {ptr.version} (was {was}); sha256 {ptr.sha256}, seq {ptr.seq}")
    return 0


def _list(args: argparse.Namespace, registry: Registry) -> int:
    from kretrain.aliases import list_aliases

    pointer = registry.incumbent_pointer(args.model)
    aliases = list_aliases(registry, args.model)
    rows: list[dict[str, Any]] = []
    if pointer is not None:
        rows.append({"alias": "incumbent", "version": pointer.version, "seq": pointer.seq, "at": pointer.promoted_at,
                     "sha256": pointer.sha256, "formats": []})  # fmt: skip
    for a in aliases:
        rows.append({"alias": a.alias, "version": a.version, "seq": a.seq, "at": a.at, "sha256": a.sha256,
                     "formats": [x.format for x in a.artifacts]})  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    if not rows:
        print(f"{args.model!r} has no incumbent and no aliases yet")
        return 0
    table = [[r["alias"], r["version"], r["seq"], r["at"], ",".join(r["formats"]), r["sha256"][:12]] for r in rows]
    print(render_table(["ALIAS", "VERSION", "SEQ", "SINCE", "ARTIFACTS", "SHA256"], table))
    return 0


def _history(args: argparse.Namespace, registry: Registry) -> int:
    from kretrain.aliases import alias_history

    entries = alias_history(registry, args.model, args.alias)
    if args.json:
        print(json.dumps([e.model_dump(mode="json", by_alias=True) for e in entries], indent=2, sort_keys=True))
        return 0
    if not entries:
        print(f"alias {args.alias!r} of {args.model!r} was never set")
        return 0
    table = [[e.seq, e.version, e.previous, e.at, e.actor, e.reason] for e in entries]
    print(render_table(["SEQ", "VERSION", "PREVIOUS", "AT", "ACTOR", "REASON"], table))
    return 0
