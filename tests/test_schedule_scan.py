"""Era listing of RetrainSchedules against SeaweedFS: markers, settling, hostile folder names, bounds."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from kretrain.api import NewEraTrigger, RetrainScheduleStatus
from kretrain.operator import schedule_scan
from kretrain.operator.schedule_scan import list_folders, scan, shown
from kretrain.store import ObjectStore

T0 = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def store(s3: Any) -> ObjectStore:
    return ObjectStore(endpoint_url=s3.endpoint, access_key=s3.server.access_key, secret_key=s3.server.secret_key)


def fill(s3: Any, *keys: str) -> str:
    bucket = s3.new_bucket("scan")
    client = s3.client()
    for key in keys:
        client.put_object(Bucket=bucket, Key=f"set/{key}", Body=b"x")
    return f"s3://{bucket}/set"


def test_marker_mode_sorts_eras_and_reports_hostile_names(s3: Any, store: ObjectStore) -> None:
    uri = fill(
        s3,
        "classes.yaml",
        "e2/_READY",
        "e10/_READY",
        "e1/images/a.jpg",
        "e3/_READY.tmp",
        "bad name/_READY",
        "tab\there/_READY",
        "é/_READY",
        "_staging/_READY",
        "x" * 100 + "/_READY",
    )
    found = scan(store, uri, NewEraTrigger(), RetrainScheduleStatus(), T0)
    assert found.complete == ["e10", "e2"]  # plain string order, as documented
    assert found.pending == ["e1", "e3"]  # no marker (a look-alike is not one)
    assert sorted(found.invalid) == sorted(["bad name", "tab\\there", "\\xe9", "_staging", "x" * 77 + "..."])
    assert all(len(n) <= 80 and n.isascii() and n.isprintable() for n in found.invalid)


def test_custom_marker(s3: Any, store: ObjectStore) -> None:
    uri = fill(s3, "e1/DONE", "e2/_READY")
    found = scan(store, uri, NewEraTrigger(marker="DONE"), RetrainScheduleStatus(), T0)
    assert (found.complete, found.pending) == (["e1"], ["e2"])


def test_settled_mode_needs_quiet_time_and_notices_changes(s3: Any, store: ObjectStore) -> None:
    uri = fill(s3, "e1/images/a.jpg", "e2/images/a.jpg")
    trigger = NewEraTrigger(complete_when="settled", settle_seconds=60)
    first = scan(store, uri, trigger, RetrainScheduleStatus(), T0)
    assert (first.complete, first.pending) == ([], ["e1", "e2"])
    later = T0 + datetime.timedelta(seconds=61)
    bucket = uri.removeprefix("s3://").split("/")[0]
    s3.client().put_object(Bucket=bucket, Key="set/e2/images/b.jpg", Body=b"y")  # e2 is still being uploaded
    second = scan(store, uri, trigger, RetrainScheduleStatus(settle=first.settle), later)
    assert (second.complete, second.pending) == (["e1"], ["e2"])
    assert second.settle["e1"] == first.settle["e1"] and second.settle["e2"] != first.settle["e2"]


def test_settled_mode_bounds_objects_per_era(s3: Any, store: ObjectStore) -> None:
    uri = fill(s3, "e1/a", "e1/b", "e1/c", "e2/a")
    found = scan(store, uri, NewEraTrigger(complete_when="settled", max_objects_per_era=2), RetrainScheduleStatus(), T0)
    assert "e1" not in found.complete + found.pending and found.pending == ["e2"]
    assert found.problems == ["era e1 has more than 2 objects; not used"]


def test_folder_listing_is_bounded(s3: Any, store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = fill(s3, *(f"e{i}/_READY" for i in range(5)))
    names, truncated = list_folders(store.client, uri, limit=3)
    assert len(names) == 3 and truncated
    monkeypatch.setattr(schedule_scan, "MAX_FOLDERS", 3)
    found = scan(store, uri, NewEraTrigger(), RetrainScheduleStatus(), T0)
    assert len(found.complete) == 3 and "more than 3 folders" in found.problems[0]


@pytest.mark.parametrize(
    ("name", "want"),
    [("e1", "e1"), ("a\nb", "a\\nb"), ("\x1b[31mred", "\\x1b[31mred"), ("z" * 100, "z" * 77 + "...")],
    ids=["plain", "newline", "ansi-escape", "long"],
)
def test_shown_names_are_safe(name: str, want: str) -> None:
    assert shown(name) == want
