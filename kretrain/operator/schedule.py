"""RetrainSchedule decisions as pure functions: complete eras, triggers, concurrency, child names, pruning, cron."""

from __future__ import annotations

import datetime
import hashlib
import re
import zoneinfo
from dataclasses import dataclass, field

from pydantic import ValidationError

from kretrain.api import TERMINAL_STATES, RetrainJobSpec, RetrainScheduleSpec, RetrainScheduleStatus
from kretrain.api.schedule import TriggerKind, stamp
from kretrain.api.spec import ERA_PATTERN

# Decision reasons (ScheduleDecision.reason and Event reasons).
NEW_ERA = "NewEra"
CRON = "CronSchedule"
REPLACED = "ReplacedActiveRun"
FORBIDDEN = "ConcurrencyForbid"
SUSPENDED = "Suspended"
BASELINE = "Baseline"
UP_TO_DATE = "UpToDate"
NO_ERAS = "NoCompleteEras"
WAITING_FOR_CRON = "WaitingForCron"
INVALID_RUN = "InvalidRun"
INVALID_SCHEDULE = "InvalidSchedule"
RUN_REFUSED = "RunRefused"
REFUSED_STATUSES = (400, 403, 404, 422)
"""API answers to creating a run that retrying does not fix (the decision says so instead)."""
EVENT_STARTED = "RunStarted"
EVENT_SKIPPED = "RunSkipped"
EVENT_PRUNED = "RunPruned"
EVENT_INVALID_NAMES = "InvalidEraNames"

MAX_NAME = 63
"""RetrainJob names stay DNS labels (their Job names derive from them)."""
SUCCEEDED_STATES = ("Promoted", "Rejected")
"""A run that decided (promoted or not) counts as successful for the history limits; `Failed` as failed."""
_ERA = re.compile(ERA_PATTERN)


def _digest(value: str, n: int = 6) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:n]


def slug(value: str) -> str:
    """A DNS-label-safe form of a name; a hash of the original is added when anything had to change."""
    out = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-") or "x"
    return out if out == value else f"{out}-{_digest(value)}"


def shorten(value: str, limit: int = MAX_NAME) -> str:
    """`value` if short enough, else a prefix plus 8 hex chars of its sha256 (deterministic, unique)."""
    if len(value) <= limit:
        return value
    return f"{value[: limit - 9].rstrip('-')}-{_digest(value, 8)}"


def child_name(schedule: str, trigger: TriggerKind, key: str) -> str:
    """Deterministic RetrainJob name: `<schedule>-<newest era>` for newEra, `<schedule>-cron-<slot UTC>` for cron."""
    tail = slug(key) if trigger == "newEra" else f"cron-{key}"
    return shorten(f"{slug(schedule)}-{tail}")


def cron_key(slot: datetime.datetime) -> str:
    """A cron slot as the name part: `YYYYMMDDhhmm` in UTC."""
    return slot.astimezone(datetime.UTC).strftime("%Y%m%d%H%M")


def split_names(names: list[str]) -> tuple[list[str], list[str]]:
    """(era names, oldest first by plain string order; names that break the era pattern, sorted)."""
    unique = sorted(set(names))
    return [n for n in unique if _ERA.fullmatch(n)], [n for n in unique if not _ERA.fullmatch(n)]


def settle(
    previous: dict[str, str], fingerprints: dict[str, str], now: datetime.datetime, settle_seconds: int
) -> tuple[list[str], list[str], dict[str, str]]:
    """`settled` mode: (complete, pending, bookkeeping). An era is complete once its fingerprint (keys, sizes,
    ETags) has not changed for `settle_seconds`; bookkeeping maps era -> `<fingerprint>@<since>`."""
    complete: list[str] = []
    pending: list[str] = []
    book: dict[str, str] = {}
    for era in sorted(fingerprints):
        fp = fingerprints[era]
        old_fp, _, since_text = previous.get(era, "").partition("@")
        since = parse_time(since_text) if old_fp == fp else None
        if since is None or since > now:
            since = now
        book[era] = f"{fp}@{format_time(since)}"
        (complete if (now - since).total_seconds() >= settle_seconds else pending).append(era)
    return complete, pending, book


def parse_time(text: str | None) -> datetime.datetime | None:
    """An RFC 3339 time (`Z` or offset), or None when absent or malformed."""
    if not text:
        return None
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def format_time(value: datetime.datetime) -> str:
    """RFC 3339 in UTC with a `Z`, to the second."""
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cron_slots(
    expression: str, time_zone: str, since: datetime.datetime, now: datetime.datetime
) -> tuple[datetime.datetime | None, datetime.datetime]:
    """(the latest slot in (since, now], or None; the next slot after now). Raises ValueError naming the field
    for a bad expression or time zone. Missed slots are not queued: only the latest one runs (like a CronJob)."""
    try:
        from croniter import croniter
    except ImportError as exc:  # the trainer image has no operator extra
        raise ValueError("trigger.cron: needs the croniter package (pip install 'kretrain[operator]')") from exc
    if not croniter.is_valid(expression):
        raise ValueError(f"trigger.cron.schedule: not a valid cron expression: {expression!r}")
    try:
        tz = zoneinfo.ZoneInfo(time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"trigger.cron.timeZone: unknown time zone {time_zone!r}") from exc
    local_now = now.astimezone(tz)
    nxt: datetime.datetime = croniter(expression, local_now).get_next(datetime.datetime)
    prev: datetime.datetime = croniter(expression, local_now + datetime.timedelta(microseconds=1)).get_prev(
        datetime.datetime
    )
    due = prev if since < prev <= now else None
    return due, nxt


def replaces(last_action: str, new_action: str) -> bool:
    """Whether a new decision replaces the last one in status: waiting (nothing due) keeps the last run started
    or skipped on show; everything else, and waiting after an error or a wait, replaces it."""
    return not (new_action == "Waiting" and last_action in ("Started", "Skipped"))


def poll_due(
    poll_seconds: int | None, last_poll: datetime.datetime | None, now: datetime.datetime, cron_due: object
) -> bool:
    """Whether to list the dataset now: every `poll_seconds` with a newEra trigger (and at once the first time);
    without one (`poll_seconds` None), only when a cron slot is due."""
    if cron_due is not None:
        return True
    if poll_seconds is None:
        return False
    return last_poll is None or last_poll > now or (now - last_poll).total_seconds() >= poll_seconds


@dataclass(frozen=True)
class Child:
    """A RetrainJob of this schedule, as far as the decisions need it."""

    name: str
    state: str | None
    created: str = ""

    @property
    def active(self) -> bool:
        """Still running (no terminal state yet)."""
        return self.state not in TERMINAL_STATES


def prune(children: list[Child], successful_limit: int, failed_limit: int) -> list[str]:
    """Names of finished runs beyond the history limits, oldest first (active runs are never pruned)."""
    out: list[str] = []
    for states, limit in ((SUCCEEDED_STATES, successful_limit), (("Failed",), failed_limit)):
        done = sorted((c for c in children if c.state in states), key=lambda c: (c.created, c.name), reverse=True)
        out += [c.name for c in reversed(done[limit:])]
    return out


@dataclass
class Plan:
    """What one tick decided: the run to create (if any), runs to delete, and the status fields that change."""

    action: str
    reason: str
    summary: str
    trigger: TriggerKind | None = None
    run: str | None = None
    spec: RetrainJobSpec | None = None
    eras: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    handled_era: str | None = None
    handled_cron: datetime.datetime | None = None
    why: str = ""
    """What asked for the run (`new era e3`, `cron slot ...`), when something did."""


def plan(
    name: str,
    spec: RetrainScheduleSpec,
    status: RetrainScheduleStatus,
    complete: list[str],
    children: list[Child],
    cron_due: datetime.datetime | None,
) -> Plan:
    """Decide one tick: start a run (newEra wins over cron when both are due), skip it, or wait."""
    newest = complete[-1] if complete else None
    new_era = spec.trigger.new_era
    trigger: TriggerKind | None = None
    handled_era: str | None = None
    if new_era is not None and newest is not None and (status.latest_era is None or newest > status.latest_era):
        if status.latest_era is None and not new_era.run_existing:
            return Plan(
                "Waiting",
                BASELINE,
                f"{len(complete)} complete era(s) found, newest {newest}; the next new era starts a run",
                handled_era=newest,
            )
        trigger, handled_era = "newEra", newest
    if trigger is None and cron_due is not None:
        trigger = "cron"
    if trigger is None:
        if new_era is None:
            return Plan("Waiting", WAITING_FOR_CRON, "waiting for the next cron slot")
        if not complete:
            # An empty first look is a baseline too (`""`): the first era to complete later starts a run.
            baseline = "" if status.latest_era is None else None
            return Plan("Waiting", NO_ERAS, "no complete era under the dataset URI yet", handled_era=baseline)
        return Plan("Waiting", UP_TO_DATE, f"no new era since {status.latest_era or newest}")
    if handled_era is not None:
        run, why = child_name(name, "newEra", handled_era), f"new era {handled_era}"
    else:
        assert cron_due is not None
        run, why = child_name(name, "cron", cron_key(cron_due)), f"cron slot {format_time(cron_due)}"
    base = Plan("Skipped", "", "", trigger, run, handled_era=handled_era, handled_cron=cron_due, why=why)
    if spec.suspend:
        base.reason, base.summary = SUSPENDED, f"{why}: the schedule is suspended, no run started"
        return base
    if not complete:
        base.reason, base.summary = NO_ERAS, f"{why}: no complete era to train on"
        return base
    active = [c.name for c in children if c.active and c.name != run]
    if active and spec.concurrency_policy == "Forbid":
        base.reason = FORBIDDEN
        base.summary = f"{why}: run {', '.join(active)} is still active (concurrencyPolicy Forbid)"
        if trigger == "newEra":  # a new era is not lost: it starts a run once the active one is done
            base.summary += "; it starts once that run is done"
            base.handled_era = None
        return base
    try:
        job = stamp(spec.template, complete)
    except ValidationError as exc:
        base.action, base.reason = "Error", INVALID_RUN
        base.summary = f"{why}: the template gives no valid RetrainJob: " + "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        base.handled_era = None
        return base
    replaced = active if spec.concurrency_policy == "Replace" else []
    eras = job.dataset.eras
    summary = f"{why}: started {run} on {len(eras)} era(s) {eras[0]}..{eras[-1]}"
    if replaced:
        summary += f", replacing {', '.join(replaced)}"
    reason = REPLACED if replaced else (NEW_ERA if trigger == "newEra" else CRON)
    return Plan("Started", reason, summary, trigger, run, job, list(eras), replaced, handled_era, cron_due, why)
