"""`kretrain data import`: bring an Ultralytics, COCO or Pascal VOC dataset into an era of a model line."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kretrain.store import ObjectStore
    from kretrain.trainer.data.split import Split
    from kretrain.trainer.data_import.plan import ImportPlan
    from kretrain.trainer.data_import.writer import ImportResult

SPLIT_ALIASES: dict[str, Split] = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
"""`SPLIT=` prefixes accepted on COCO sources (Roboflow calls validation `valid`)."""


def register(dsub: argparse._SubParsersAction) -> None:
    """Add `data import` to the `data` command group."""
    p = dsub.add_parser(
        "import",
        help="import an Ultralytics, COCO or Pascal VOC dataset as an era (classes mapped by name, _READY last)",
        description=(
            "Write SOURCE as era NAME of the line at --to (S3 era layout), mapping classes by name into the "
            "line's classes.yaml. SOURCE is local or s3://: the dataset YAML (ultralytics), one or more "
            "annotation JSONs, each optionally prefixed SPLIT= (coco), or the VOC folder (voc)."
        ),
    )
    p.add_argument("source", nargs="+", metavar="SOURCE")
    p.add_argument("--format", required=True, choices=["ultralytics", "coco", "voc"])
    p.add_argument("--era", required=True, help="era name (one path segment, e.g. 2024-06)")
    p.add_argument("--to", required=True, help="the line's dataset URI, s3://bucket/prefix (holds classes.yaml)")
    p.add_argument("--images", help="coco: folder (local or s3://) holding the images named by file_name")
    p.add_argument("--keep-splits", action="store_true", help="record the source's train/val/test split in the era")
    p.add_argument("--allow-new-classes", action="store_true", help="append class names the line does not have yet")
    p.add_argument("--replace", action="store_true", help="replace an era that already holds different content")
    p.add_argument("--include-difficult", action="store_true", help="voc: import objects marked difficult")
    p.add_argument("--endpoint", help="S3 endpoint URL (default: $AWS_ENDPOINT_URL)")
    p.add_argument("--workers", type=int, default=16, help="parallel image transfers (default 16)")
    p.set_defaults(func=cmd_import)


def build_plan(args: argparse.Namespace, store: ObjectStore) -> ImportPlan:
    """Read the source's annotations into a plan (ImportInputError on bad input)."""
    from kretrain.trainer.data_import.coco import plan_coco
    from kretrain.trainer.data_import.errors import ImportInputError
    from kretrain.trainer.data_import.source import open_source
    from kretrain.trainer.data_import.ultralytics import plan_ultralytics
    from kretrain.trainer.data_import.voc import plan_voc

    described = " ".join(args.source)
    if args.format != "coco" and len(args.source) != 1:
        raise ImportInputError(f"--format {args.format} takes one SOURCE, got {len(args.source)}")
    if args.format == "coco":
        sources = []
        for raw in args.source:
            split_name, sep, location = raw.partition("=")
            if not sep or raw.startswith("s3://"):
                split_name, location = "", raw
            elif split_name not in SPLIT_ALIASES:
                raise ImportInputError(f"{raw}: unknown split {split_name!r} (use {', '.join(SPLIT_ALIASES)})")
            tree, name = open_source(location, store)
            if not name:
                raise ImportInputError(f"{location}: expected a COCO annotation JSON file, not a folder")
            sources.append((tree, name, SPLIT_ALIASES.get(split_name)))
        images = open_source(args.images, store)[0] if args.images else None
        return plan_coco(sources, images, described)
    tree, name = open_source(args.source[0], store)
    if args.format == "ultralytics":
        if not name:
            raise ImportInputError(f"{args.source[0]}: expected the dataset YAML file, not a folder")
        return plan_ultralytics(tree, name, described)
    if name:
        raise ImportInputError(f"{args.source[0]}: expected the VOC folder (Annotations/, JPEGImages/), not a file")
    return plan_voc(tree, described, include_difficult=args.include_difficult)


def summary(result: ImportResult) -> str:
    """The summary table: boxes and skipped annotations per class, then totals."""
    from kretrain.tables import render_table

    reasons = sorted({r for r, _ in result.skipped})
    names = list(result.classes) + sorted({c for _, c in result.skipped} - set(result.classes))
    rows = [[n, result.boxes.get(n, 0), *(result.skipped.get((r, n), 0) for r in reasons)] for n in names]
    rows = [r for r in rows if any(r[1:])]
    lines = [render_table(["class", "boxes", *(f"skipped: {r}" for r in reasons)], rows)]
    lines.append(
        f"era {result.era} ({result.status}): {result.images} images ({result.backgrounds} background), "
        f"{sum(result.boxes.values())} boxes, {result.written} objects written, {result.deleted} deleted"
    )
    if result.splits:
        lines.append("kept split: " + ", ".join(f"{s} {result.splits[s]}" for s in ("train", "val", "test")))
    if result.added_classes:
        lines.append(f"new classes appended to classes.yaml: {', '.join(result.added_classes)}")
    if result.unused_classes:
        lines.append(f"source classes without boxes, not added: {', '.join(result.unused_classes)}")
    lines += [f"note: {n}" for n in result.notes]
    lines.append(f"era URI: {result.uri}")
    return "\n".join(lines)


def cmd_import(args: argparse.Namespace) -> int:
    """Run an import; exit 1 with the file and the problem named on bad input."""
    from botocore.exceptions import BotoCoreError, ClientError

    from kretrain.store import ObjectStore, StoreError
    from kretrain.trainer.data_import.errors import ImportInputError
    from kretrain.trainer.data_import.writer import import_dataset

    if not args.to.startswith("s3://"):
        print(f"--to must be an s3://bucket/prefix URI, got {args.to!r}", file=sys.stderr)
        return 2
    store = ObjectStore(endpoint_url=args.endpoint, max_workers=args.workers)
    try:
        plan = build_plan(args, store)
        result = import_dataset(
            plan,
            store,
            args.to,
            args.era,
            allow_new_classes=args.allow_new_classes,
            keep_splits=args.keep_splits,
            replace=args.replace,
            workers=args.workers,
        )
    except (ImportInputError, ValueError, StoreError, ClientError, BotoCoreError) as exc:
        print(f"import failed: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(summary(result))
    return 0
