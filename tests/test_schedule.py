"""RetrainSchedule decisions (kretrain.operator.schedule), table-driven: eras, triggers, concurrency, names, pruning, cron."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from kretrain.api import RetrainScheduleSpec, RetrainScheduleStatus
from kretrain.api.spec import NAME_PATTERN
from kretrain.operator import schedule
from kretrain.operator.schedule import Child

UTC = datetime.UTC
T0 = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def make_spec(**over: Any) -> RetrainScheduleSpec:
    raw: dict[str, Any] = {
        "template": {"model": "m", "dataset": {"uri": "s3://data/set"}},
        "trigger": {"newEra": {}},
        **over,
    }
    return RetrainScheduleSpec.model_validate(raw)


@pytest.mark.parametrize(
    ("names", "eras", "invalid"),
    [
        (["e2", "e1", "e10"], ["e1", "e10", "e2"], []),
        (["2026-02", "2026-01"], ["2026-01", "2026-02"], []),
        (["_tmp", ".hidden", "ok"], ["ok"], [".hidden", "_tmp"]),
        (["a b", "x\ny", "é", "ok"], ["ok"], ["a b", "x\ny", "é"]),
        (["a" * 64, "a" * 63], ["a" * 63], ["a" * 64]),
        (["e1", "e1"], ["e1"], []),
    ],
    ids=["string-order", "dates", "leading-dot-underscore", "space-control-unicode", "too-long", "duplicates"],
)
def test_split_names(names: list[str], eras: list[str], invalid: list[str]) -> None:
    assert schedule.split_names(names) == (eras, sorted(invalid))


@pytest.mark.parametrize(
    ("previous", "prints", "age", "complete", "pending"),
    [
        ({}, {"e1": "aa"}, 0, [], ["e1"]),
        ({"e1": "aa@2026-05-01T11:00:00Z"}, {"e1": "aa"}, 0, ["e1"], []),
        ({"e1": "aa@2026-05-01T11:59:00Z"}, {"e1": "aa"}, 0, [], ["e1"]),
        ({"e1": "aa@2026-05-01T11:00:00Z"}, {"e1": "bb"}, 0, [], ["e1"]),
        ({"e1": "aa@garbage"}, {"e1": "aa"}, 0, [], ["e1"]),
        ({"e1": "aa@2099-01-01T00:00:00Z"}, {"e1": "aa"}, 0, [], ["e1"]),
    ],
    ids=["first-seen", "quiet-long-enough", "quiet-too-short", "changed", "malformed-status", "future-status"],
)
def test_settle(
    previous: dict[str, str], prints: dict[str, str], age: int, complete: list[str], pending: list[str]
) -> None:
    got_complete, got_pending, book = schedule.settle(previous, prints, T0, settle_seconds=600)
    assert (got_complete, got_pending) == (complete, pending)
    assert set(book) == set(prints) and all(v.startswith(prints[k] + "@") for k, v in book.items())


@pytest.mark.parametrize(
    ("schedule_name", "trigger", "key", "want"),
    [
        ("daily", "newEra", "e3", "daily-e3"),
        ("daily", "newEra", "2026-05", "daily-2026-05"),
        ("daily", "cron", "202605011200", "daily-cron-202605011200"),
    ],
    ids=["era", "date-era", "cron"],
)
def test_child_names(schedule_name: str, trigger: Any, key: str, want: str) -> None:
    assert schedule.child_name(schedule_name, trigger, key) == want


@pytest.mark.parametrize(
    ("schedule_name", "key"),
    [("daily", "E3"), ("daily", "e_3"), ("daily", "e.3"), ("s.with.dots", "e3"), ("x" * 60, "y" * 60)],
    ids=["uppercase", "underscore", "dot", "dotted-schedule", "too-long"],
)
def test_child_names_are_safe_and_distinct(schedule_name: str, key: str) -> None:
    import re

    name = schedule.child_name(schedule_name, "newEra", key)
    assert re.fullmatch(NAME_PATTERN, name) and len(name) <= 63, name
    assert name == schedule.child_name(schedule_name, "newEra", key)  # deterministic
    assert name != schedule.child_name(schedule_name, "newEra", key.lower() + "x")


def test_case_variants_do_not_collide() -> None:
    assert schedule.child_name("s", "newEra", "E1") != schedule.child_name("s", "newEra", "e1")


@pytest.mark.parametrize(
    ("children", "ok_limit", "failed_limit", "pruned"),
    [
        ([Child("a", "Promoted", "1"), Child("b", "Rejected", "2"), Child("c", "Promoted", "3")], 2, 1, ["a"]),
        ([Child("a", "Failed", "1"), Child("b", "Failed", "2"), Child("c", "Promoted", "3")], 3, 1, ["a"]),
        ([Child("a", None, "1"), Child("b", "Training", "2")], 0, 0, []),
        ([Child("a", "Promoted", "1"), Child("b", "Failed", "2")], 0, 0, ["a", "b"]),
        ([Child("a", "Promoted", "1")], 1, 0, []),
    ],
    ids=["successful-over-limit", "failed-over-limit", "active-never", "zero-limits", "within-limit"],
)
def test_prune(children: list[Child], ok_limit: int, failed_limit: int, pruned: list[str]) -> None:
    assert schedule.prune(children, ok_limit, failed_limit) == pruned


def status(**kw: Any) -> RetrainScheduleStatus:
    return RetrainScheduleStatus.model_validate(kw)


CASES: list[tuple[str, dict[str, Any], dict[str, Any], list[str], list[Child], bool, tuple[str, str, str | None]]] = [
    ("baseline", {}, {}, ["e1", "e2"], [], False, ("Waiting", schedule.BASELINE, None)),
    ("no-eras", {}, {}, [], [], False, ("Waiting", schedule.NO_ERAS, None)),
    ("up-to-date", {}, {"latestEra": "e2"}, ["e1", "e2"], [], False, ("Waiting", schedule.UP_TO_DATE, None)),
    ("first-era-after-empty-start", {}, {"latestEra": ""}, ["e1"], [], False, ("Started", schedule.NEW_ERA, "s-e1")),
    ("new-era", {}, {"latestEra": "e1"}, ["e1", "e2"], [], False, ("Started", schedule.NEW_ERA, "s-e2")),
    ("older-era-appears", {}, {"latestEra": "e2"}, ["e0", "e1", "e2"], [], False, ("Waiting", "UpToDate", None)),
    (
        "run-existing",
        {"trigger": {"newEra": {"runExisting": True}}},
        {},
        ["e1"],
        [],
        False,
        ("Started", schedule.NEW_ERA, "s-e1"),
    ),
    (
        "forbid-active",
        {},
        {"latestEra": "e1"},
        ["e1", "e2"],
        [Child("s-e1", "Training")],
        False,
        ("Skipped", schedule.FORBIDDEN, "s-e2"),
    ),
    (
        "forbid-finished",
        {},
        {"latestEra": "e1"},
        ["e1", "e2"],
        [Child("s-e1", "Promoted")],
        False,
        ("Started", schedule.NEW_ERA, "s-e2"),
    ),
    (
        "replace-active",
        {"concurrencyPolicy": "Replace"},
        {"latestEra": "e1"},
        ["e1", "e2"],
        [Child("s-e1", None)],
        False,
        ("Started", schedule.REPLACED, "s-e2"),
    ),
    (
        "allow-active",
        {"concurrencyPolicy": "Allow"},
        {"latestEra": "e1"},
        ["e1", "e2"],
        [Child("s-e1", "Training")],
        False,
        ("Started", schedule.NEW_ERA, "s-e2"),
    ),
    ("suspended", {"suspend": True}, {"latestEra": "e1"}, ["e1", "e2"], [], False, ("Skipped", "Suspended", "s-e2")),
    ("cron-due", {}, {"latestEra": "e2"}, ["e1", "e2"], [], True, ("Started", schedule.CRON, "s-cron-202605011200")),
    ("cron-no-eras", {}, {}, [], [], True, ("Skipped", schedule.NO_ERAS, "s-cron-202605011200")),
    (
        "cron-only-waiting",
        {"trigger": {"cron": {"schedule": "@daily"}}},
        {},
        ["e1"],
        [],
        False,
        ("Waiting", schedule.WAITING_FOR_CRON, None),
    ),
    (
        "cron-only-due",
        {"trigger": {"cron": {"schedule": "@daily"}}},
        {},
        ["e1"],
        [],
        True,
        ("Started", schedule.CRON, "s-cron-202605011200"),
    ),
    ("new-era-wins-over-cron", {}, {"latestEra": "e1"}, ["e1", "e2"], [], True, ("Started", "NewEra", "s-e2")),
    (
        "invalid-run",
        {"template": {"model": "m", "dataset": {"uri": "s3://data/set"}, "strategy": {"type": "incremental"}}},
        {"latestEra": "e0"},
        ["e1"],
        [],
        False,
        ("Error", schedule.INVALID_RUN, "s-e1"),
    ),
    (
        "too-many-eras",
        {},
        {"latestEra": "e000"},
        [f"e{i:03d}" for i in range(70)],
        [],
        False,
        ("Error", schedule.INVALID_RUN, "s-e069"),
    ),
]


@pytest.mark.parametrize(
    ("over", "st", "complete", "children", "cron", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_plan(
    over: dict[str, Any],
    st: dict[str, Any],
    complete: list[str],
    children: list[Child],
    cron: bool,
    want: tuple[str, str, str | None],
) -> None:
    p = schedule.plan("s", make_spec(**over), status(**st), complete, children, T0 if cron else None)
    assert (p.action, p.reason, p.run) == want, p.summary
    if p.action == "Started":
        assert p.spec is not None and p.spec.dataset.eras == complete
    else:
        assert p.spec is None


def test_plan_details() -> None:
    """What each outcome remembers: a skipped new era (Forbid) is retried, a suspended one is not; Replace deletes."""
    assert schedule.plan("s", make_spec(), status(), [], [], None).handled_era == ""  # empty baseline
    assert schedule.plan("s", make_spec(), status(latestEra="e1"), [], [], None).handled_era is None
    assert schedule.plan("s", make_spec(), status(), ["e1"], [], None).handled_era == "e1"  # baseline
    forbid = schedule.plan("s", make_spec(), status(latestEra="e1"), ["e1", "e2"], [Child("s-e1", "Training")], None)
    assert forbid.handled_era is None and "s-e1 is still active" in forbid.summary
    suspended = schedule.plan("s", make_spec(suspend=True), status(latestEra="e1"), ["e1", "e2"], [], None)
    assert suspended.handled_era == "e2"
    replace = schedule.plan(
        "s", make_spec(concurrencyPolicy="Replace"), status(latestEra="e1"), ["e1", "e2"], [Child("s-e1", None)], None
    )
    assert replace.delete == ["s-e1"] and "replacing s-e1" in replace.summary
    window = schedule.plan(
        "s",
        make_spec(template={"model": "m", "dataset": {"uri": "s3://data/set", "window": 2}}),
        status(latestEra="e2"),
        ["e1", "e2", "e3"],
        [],
        None,
    )
    assert window.eras == ["e2", "e3"] and window.summary.endswith("on 2 era(s) e2..e3")
    # A run that exists already (restart after create, before the status patch) is the same name, not a new one.
    again = schedule.plan("s", make_spec(), status(latestEra="e1"), ["e1", "e2"], [Child("s-e2", "Training")], None)
    assert again.action == "Started" and again.run == "s-e2"


@pytest.mark.parametrize(
    ("expr", "tz", "since", "now", "due", "nxt"),
    [
        ("0 * * * *", "UTC", "2026-05-01T10:30", "2026-05-01T12:10", "2026-05-01T12:00", "2026-05-01T13:00"),
        ("0 * * * *", "UTC", "2026-05-01T12:00", "2026-05-01T12:10", None, "2026-05-01T13:00"),
        ("0 * * * *", "UTC", "2026-05-01T11:59", "2026-05-01T12:00", "2026-05-01T12:00", "2026-05-01T13:00"),
        ("0 2 1 * *", "Europe/Berlin", "2026-04-01T00:00", "2026-05-01T00:30", "2026-05-01T00:00", "2026-06-01T00:00"),
        ("@monthly", "UTC", "2026-05-01T00:00", "2026-05-20T00:00", None, "2026-06-01T00:00"),
        (
            "0 0 * * *",
            "America/New_York",
            "2026-05-01T00:00",
            "2026-05-01T05:00",
            "2026-05-01T04:00",
            "2026-05-02T04:00",
        ),
    ],
    ids=[
        "missed-runs-latest-only",
        "already-handled",
        "exactly-on-slot",
        "berlin-monthly",
        "macro-none-due",
        "new-york",
    ],
)
def test_cron_slots(expr: str, tz: str, since: str, now: str, due: str | None, nxt: str) -> None:
    def t(s: str) -> datetime.datetime:
        return datetime.datetime.fromisoformat(s).replace(tzinfo=UTC)

    got_due, got_next = schedule.cron_slots(expr, tz, t(since), t(now))
    assert got_due == (t(due) if due else None)
    assert got_next == t(nxt)


@pytest.mark.parametrize(
    ("expr", "tz", "match"),
    [("61 * * * *", "UTC", "trigger.cron.schedule"), ("0 * * * *", "Mars/Olympus", "trigger.cron.timeZone")],
    ids=["bad-minute", "unknown-zone"],
)
def test_cron_errors_name_the_field(expr: str, tz: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        schedule.cron_slots(expr, tz, T0, T0)


@pytest.mark.parametrize(
    ("text", "want"),
    [("2026-05-01T12:00:00Z", T0), ("2026-05-01T14:00:00+02:00", T0), ("nonsense", None), ("", None), (None, None)],
    ids=["z", "offset", "garbage", "empty", "none"],
)
def test_parse_time(text: str | None, want: datetime.datetime | None) -> None:
    assert schedule.parse_time(text) == want


@pytest.mark.parametrize(
    ("strategy", "want"),
    [({}, None), ({"baseWeights": "yolo11n.yaml"}, "yolo11n.yaml"), ({"type": "incremental"}, None)],
    ids=["full-default", "template-names-weights", "incremental"],
)
def test_a_run_keeps_the_templates_start_weights(strategy: dict[str, Any], want: str | None) -> None:
    """The schedule does not choose start weights: an unset baseWeights stays unset, and the RetrainJob's own
    default applies (a full retrain from the incumbent once the line has one: kretrain.trainer.start_weights)."""
    spec = make_spec(template={"model": "m", "dataset": {"uri": "s3://data/set"}, "strategy": strategy})
    p = schedule.plan("s", spec, status(latestEra="e1"), ["e1", "e2"], [], None)
    assert p.spec is not None and p.spec.strategy.base_weights == want
    assert p.spec.strategy.effective_base_weights == (want or "incumbent")


@pytest.mark.parametrize(
    ("poll_seconds", "last", "cron", "want"),
    [
        (60, None, False, True),
        (60, T0 - datetime.timedelta(seconds=59), False, False),
        (60, T0 - datetime.timedelta(seconds=60), False, True),
        (60, T0 + datetime.timedelta(days=1), False, True),
        (60, T0, True, True),
        (None, None, False, False),
        (None, None, True, True),
    ],
    ids=["first-look", "too-soon", "due", "future-status", "cron-due", "cron-only-idle", "cron-only-due"],
)
def test_poll_due(poll_seconds: int | None, last: datetime.datetime | None, cron: bool, want: bool) -> None:
    assert schedule.poll_due(poll_seconds, last, T0, T0 if cron else None) is want


@pytest.mark.parametrize(
    ("last", "new", "want"),
    [
        ("Started", "Waiting", False),
        ("Skipped", "Waiting", False),
        ("Error", "Waiting", True),
        ("Waiting", "Waiting", True),
        ("Started", "Skipped", True),
        ("Skipped", "Started", True),
        ("Started", "Error", True),
    ],
    ids=["started-stays", "skipped-stays", "error-cleared", "wait-updated", "skip", "start", "error"],
)
def test_which_decision_status_shows(last: str, new: str, want: bool) -> None:
    assert schedule.replaces(last, new) is want
