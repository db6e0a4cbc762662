"""List a RetrainSchedule's dataset prefix for era folders (bounded, every key untrusted) and tell which are complete."""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass, field
from typing import Any

from kretrain.api import NewEraTrigger, RetrainScheduleStatus
from kretrain.operator import policy, schedule
from kretrain.operator.settings import OperatorSettings
from kretrain.store import ObjectStore, join_uri, parse_s3_uri

MAX_FOLDERS = 1000
"""Most folders read under a dataset prefix per poll; more are reported, not used."""
MAX_SHOWN_NAME = 80


class ScanError(Exception):
    """The prefix cannot be polled (the message says why; the schedule reports it)."""


@dataclass
class Scan:
    """What one listing found."""

    complete: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    settle: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def shown(name: str) -> str:
    """An untrusted name as it may appear in status and Events: ASCII-escaped and shortened."""
    text = ascii(name)[1:-1]
    return text if len(text) <= MAX_SHOWN_NAME else text[: MAX_SHOWN_NAME - 3] + "..."


def poll_dataset(uri: str, settings: OperatorSettings) -> None:
    """ScanError unless the operator policy lets a schedule list `uri` with the operator's credentials."""
    why = policy.dataset_violation(uri, settings)
    if why is not None:
        raise ScanError(
            f"spec.template.dataset.uri {shown(uri)!r} {why}; the operator lists the dataset with its own "
            "credentials, so only datasets in its policy are polled"
        )


def poll_endpoint(template_endpoint: str | None, settings: OperatorSettings) -> str | None:
    """The endpoint polled with the operator's own credentials: the template's, when the operator policy allows
    the operator to sign for it (kretrain.operator.policy), else ScanError; unset: the operator's own."""
    why = policy.endpoint_violation(template_endpoint, settings)
    if why is not None:
        raise ScanError(
            f"spec.template.storage.endpoint {shown(template_endpoint or '')!r} {why}; the operator lists the dataset "
            "with its own credentials, so only endpoints in its policy are polled"
        )
    return template_endpoint or settings.s3_endpoint


def list_folders(client: Any, uri: str, limit: int | None = None) -> tuple[list[str], bool]:
    """First-level folder names under `uri` (untrusted, unsorted) and whether there were more than `limit`
    (default MAX_FOLDERS)."""
    limit = MAX_FOLDERS if limit is None else limit
    bucket, prefix = parse_s3_uri(uri)
    pfx = f"{prefix}/" if prefix else ""
    names: list[str] = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=pfx, Delimiter="/", PaginationConfig={"PageSize": 1000}):
        for cp in page.get("CommonPrefixes", []):
            raw = str(cp.get("Prefix", ""))
            if raw.startswith(pfx) and raw.endswith("/") and len(raw) > len(pfx) + 1:
                names.append(raw[len(pfx) : -1])
            if len(names) > limit:
                return names[:limit], True
    return names, False


def fingerprint(client: Any, uri: str, limit: int) -> str | None:
    """A digest of every (key, size, ETag) under `uri`, or None when it holds more than `limit` objects."""
    bucket, prefix = parse_s3_uri(uri)
    digest, count = hashlib.sha256(), 0
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/", PaginationConfig={"PageSize": 1000}):
        for obj in page.get("Contents", []):
            count += 1
            if count > limit:
                return None
            digest.update(f"{obj.get('Key')}\0{obj.get('Size')}\0{obj.get('ETag')}\n".encode())
    return digest.hexdigest()[:16]


def scan(
    store: ObjectStore,
    uri: str,
    trigger: NewEraTrigger,
    status: RetrainScheduleStatus,
    now: datetime.datetime,
) -> Scan:
    """Which era folders under `uri` are complete (marker object present, or unchanged for settleSeconds)."""
    names, truncated = list_folders(store.client, uri)
    eras, invalid = schedule.split_names(names)
    out = Scan(invalid=[shown(n) for n in invalid])
    if truncated:
        out.problems.append(f"more than {MAX_FOLDERS} folders under {uri}; only the first {MAX_FOLDERS} were read")
    if trigger.complete_when == "marker":
        for era in eras:
            if store.head(join_uri(uri, era, trigger.marker)) is not None:
                out.complete.append(era)
            else:
                out.pending.append(era)
        return out
    prints: dict[str, str] = {}
    for era in eras:
        fp = fingerprint(store.client, join_uri(uri, era), trigger.max_objects_per_era)
        if fp is None:
            out.problems.append(f"era {era} has more than {trigger.max_objects_per_era} objects; not used")
            continue
        prints[era] = fp
    out.complete, out.pending, out.settle = schedule.settle(status.settle, prints, now, trigger.settle_seconds)
    return out
