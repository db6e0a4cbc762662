"""`kretrain data prepare` and `kretrain data synth`: run the data pipeline alone, make synthetic data."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `data` command group (`prepare`, `synth`, `import`)."""
    data = sub.add_parser("data", help="prepare a dataset for training, or generate a synthetic one")
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    prep = dsub.add_parser(
        "prepare",
        help="pull, validate, split and describe the spec's dataset; write the data report and data YAMLs",
    )
    prep.add_argument("--spec", type=Path, required=True, help="RetrainJob manifest or spec (YAML or JSON)")
    prep.add_argument(
        "--workdir",
        type=Path,
        default=Path(os.environ.get("KRETRAIN_WORKDIR", "kretrain-work")),
        help="outputs go to WORKDIR/data/ (default: $KRETRAIN_WORKDIR or ./kretrain-work)",
    )
    prep.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("KRETRAIN_CACHE_DIR", "kretrain-cache")),
        help="local mirror of the dataset (default: $KRETRAIN_CACHE_DIR or ./kretrain-cache)",
    )
    prep.add_argument(
        "--local",
        type=Path,
        help="use this local directory (S3 era layout) instead of pulling dataset.uri",
    )
    prep.set_defaults(func=cmd_prepare)

    synth = dsub.add_parser("synth", help="generate a two-era synthetic shapes dataset (locally or to s3://)")
    synth.add_argument("--out", required=True, help="local directory or s3://bucket/prefix")
    synth.add_argument("--images", type=int, default=200, help="images per era (default 200)")
    synth.add_argument("--imgsz", type=int, default=64, help="image side in pixels (default 64)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--era-names", default="era1,era2", help="two comma-separated era names")
    synth.add_argument("--format", choices=["png", "jpg"], default="png")
    synth.add_argument("--endpoint", help="S3 endpoint URL (default: $AWS_ENDPOINT_URL)")
    for flag, what in (
        ("corrupt", "undecodable images"),
        ("bad-lines", "images with a malformed label line"),
        ("bad-ids", "images with an out-of-range class id"),
        ("bad-boxes", "images with a box outside [0, 1] or of zero area"),
        ("orphans", "label files without an image"),
        ("background", "background images without labels"),
    ):
        synth.add_argument(f"--{flag}", type=int, default=0, help=f"{what} injected into the last era")
    synth.set_defaults(func=cmd_synth)

    from kretrain.trainer.data_import.cli import register as register_import

    register_import(dsub)


def load_spec_document(path: Path) -> dict[str, Any]:
    """The spec dict from a RetrainJob manifest (its `spec`) or a bare spec, YAML or JSON."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"{path}: cannot read the spec: {exc}") from exc
    if not isinstance(doc, dict):
        raise SystemExit(f"{path}: expected a mapping (a RetrainJob or its spec)")
    if "kind" in doc and "spec" in doc:
        spec = doc["spec"]
        if not isinstance(spec, dict):
            raise SystemExit(f"{path}: `spec` must be a mapping")
        return spec
    return doc


def cmd_prepare(args: argparse.Namespace) -> int:
    """Run the data pipeline and print a summary; exit 1 with the reason if the data is unusable."""
    from pydantic import ValidationError

    from kretrain.api import RetrainJobSpec
    from kretrain.trainer.data import DataValidationError, prepare, prepare_pulled, scan_local

    try:
        spec = RetrainJobSpec.model_validate(load_spec_document(args.spec))
    except ValidationError as exc:
        print(f"{args.spec}: invalid spec:\n{exc}", file=sys.stderr)
        return 1
    try:
        if args.local:
            prepared = prepare_pulled(spec, scan_local(args.local, list(spec.dataset.eras)), args.workdir)
        else:
            from kretrain.store import ObjectStore

            store = ObjectStore(endpoint_url=spec.storage.endpoint, region=spec.storage.region)
            prepared = prepare(spec, store, args.workdir, args.cache_dir)
    except DataValidationError as exc:
        print(f"data preparation failed: {exc}", file=sys.stderr)
        return 1
    s = prepared.summary
    print(f"{'era':<20} {'train':>7} {'val':>7} {'test':>7} {'excluded':>9} {'background':>11}")
    for era, c in s.eras.items():
        print(f"{era:<20} {c['train']:>7} {c['val']:>7} {c['test']:>7} {c['excluded']:>9} {c.get('background', 0):>11}")
    print(f"classes: {', '.join(s.classes)}")
    print(f"training images ({spec.strategy.type}): {s.train_images}")
    for w in s.warnings:
        print(f"warning: {w}")
    print(f"data yaml:   {prepared.data_yaml}")
    print(f"test yaml:   {prepared.test_yaml}")
    print(f"report:      {prepared.report_path}")
    if prepared.chart_path:
        print(f"chart:       {prepared.chart_path}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    """Generate the demo eras (with optional defects in the last era) locally or upload them to S3."""
    from kretrain.trainer.synthetic import DEFAULT_CLASSES, Defects, demo_eras, generate_dataset, upload_dataset

    names = [n.strip() for n in args.era_names.split(",") if n.strip()]
    if len(names) != 2:
        print("--era-names needs exactly two names", file=sys.stderr)
        return 2
    eras = demo_eras(images=args.images, seed=args.seed, names=(names[0], names[1]), image_format=args.format)
    eras[-1].defects = Defects(
        corrupt_images=args.corrupt,
        bad_label_lines=args.bad_lines,
        out_of_range_ids=args.bad_ids,
        bad_boxes=args.bad_boxes,
        orphan_labels=args.orphans,
        background_images=args.background,
    )
    out: str = args.out
    if out.startswith("s3://"):
        from kretrain.store import ObjectStore

        with tempfile.TemporaryDirectory(prefix="kretrain-synth-") as tmp:
            generate_dataset(Path(tmp), eras, DEFAULT_CLASSES, args.imgsz)
            count = upload_dataset(Path(tmp), ObjectStore(endpoint_url=args.endpoint), out)
        print(json.dumps({"uri": out, "objects": count, "eras": names, "classes": DEFAULT_CLASSES}))
    else:
        generate_dataset(Path(out), eras, DEFAULT_CLASSES, args.imgsz)
        print(json.dumps({"path": str(Path(out).resolve()), "eras": names, "classes": DEFAULT_CLASSES}))
    return 0
