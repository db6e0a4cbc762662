"""`kretrain schedule check -f SCHEDULE.yaml`: which eras are complete and what the next run would be, without a cluster."""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import yaml
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from kretrain.api import RetrainSchedule, RetrainScheduleStatus
from kretrain.operator import schedule
from kretrain.operator.schedule_scan import scan
from kretrain.store import ObjectStore, StoreError

MAX_MANIFEST_BYTES = 1 << 20


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `schedule` command group."""
    p = sub.add_parser("schedule", help="RetrainSchedule tools")
    inner = p.add_subparsers(dest="schedule_command", metavar="SUBCOMMAND", required=True)
    check = inner.add_parser(
        "check",
        help="list the complete eras under the schedule's dataset URI and the run the operator would start "
        "(S3 credentials and endpoint from AWS_* variables unless the template names an endpoint)",
    )
    check.add_argument("-f", "--file", type=Path, required=True, help="RetrainSchedule manifest (one document)")
    check.set_defaults(func=cmd_check)


def _load(path: Path) -> RetrainSchedule | str:
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            return f"{path}: larger than {MAX_MANIFEST_BYTES} bytes"
        manifest = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        return f"{path}: {exc}"
    if not isinstance(manifest, dict):
        return f"{path}: not a YAML mapping"
    try:
        return RetrainSchedule.from_manifest(manifest)
    except ValidationError as exc:
        return "\n".join(f"{path}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def cmd_check(args: argparse.Namespace) -> int:
    """Print eras and the next run; exit 1 when the manifest is invalid or the prefix cannot be listed."""
    loaded = _load(args.file)
    if isinstance(loaded, str):
        print(loaded, file=sys.stderr)
        return 1
    spec, name = loaded.spec, loaded.metadata.name
    template, now = spec.template, datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    trigger = spec.trigger.new_era
    print(f"schedule {name}: dataset {template.dataset.uri}, concurrencyPolicy {spec.concurrency_policy}")
    complete: list[str] = []
    if trigger is not None:
        store = ObjectStore(endpoint_url=template.storage.endpoint, region=template.storage.region, max_attempts=3)
        # settled mode needs two looks settleSeconds apart; one look counts every era found as complete.
        look = trigger.model_copy(update={"settle_seconds": 0}) if trigger.complete_when == "settled" else trigger
        try:
            found = scan(store, template.dataset.uri, look, RetrainScheduleStatus(), now)
        except (StoreError, ClientError, BotoCoreError) as exc:
            print(f"cannot list {template.dataset.uri}: {exc}", file=sys.stderr)
            return 1
        complete = found.complete
        rule = f"marker {trigger.marker}" if trigger.complete_when == "marker" else "settled (not re-checked here)"
        print(f"complete eras ({rule}): {', '.join(complete) or 'none'}")
        print(f"incomplete eras: {', '.join(found.pending) or 'none'}")
        if found.invalid:
            print(f"not era names (ignored): {', '.join(found.invalid)}")
        for problem in found.problems:
            print(f"warning: {problem}")
    if spec.trigger.cron is not None:
        try:
            _, nxt = schedule.cron_slots(spec.trigger.cron.schedule, spec.trigger.cron.time_zone, now, now)
        except ValueError as exc:
            print(str(exc), file=sys.stderr)
            return 1
        print(
            f"next cron slot: {schedule.format_time(nxt)} ({spec.trigger.cron.schedule} in {spec.trigger.cron.time_zone})"
        )
    plan = schedule.plan(name, spec, RetrainScheduleStatus(latest_era=""), complete, [], None)
    if plan.spec is not None:
        print(f"next run: {plan.run} on {', '.join(plan.spec.dataset.eras)} (strategy {plan.spec.strategy.type})")
    else:
        print(f"next run: none ({plan.summary})")
    return 0
