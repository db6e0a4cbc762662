"""pointer_write.write_pointer against a real SeaweedFS: the write stands, loses to another writer, or was ours."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from kretrain.pointer_write import write_pointer
from kretrain.store import ObjectStore


@dataclass
class Ptr:
    """The two fields write_pointer reads of a pointer."""

    version: str
    txn: str


class Lost(Exception):
    """Raised through `lost`: another writer's pointer is there; `winner` is the version it names."""

    def __init__(self, winner: str | None) -> None:
        super().__init__(winner)
        self.winner = winner


def body(version: str, txn: str) -> bytes:
    return json.dumps({"version": version, "txn": txn}).encode()


# (what is at the key before the call, which etag the caller read, what the key holds when the condition is
# re-checked, the expected outcome: "written" (ours stands) or the version of the winner that is raised as Lost)
CASES = [
    ("nothing", "none", "unchanged", "written"),  # first pointer: If-None-Match succeeds
    ("other v1", "current", "unchanged", "written"),  # If-Match on the ETag we read succeeds
    ("other v1", "none", "unchanged", "v1"),  # someone created the pointer first
    ("other v1", "stale", "unchanged", "v1"),  # someone moved it after our read
    ("ours", "none", "unchanged", "written"),  # our first request won, its retry fails the condition
    ("ours", "stale", "unchanged", "written"),  # the same for If-Match
    ("other v1", "stale", "deleted", None),  # the pointer went away: the winner is nothing
]


@pytest.mark.parametrize(("before", "etag_read", "after", "outcome"), CASES)
def test_write_pointer(s3_env, before: str, etag_read: str, after: str, outcome: str | None) -> None:  # type: ignore[no-untyped-def]
    store = ObjectStore()
    uri = f"s3://{s3_env.new_bucket('ptr')}/line/incumbent.json"
    mine = body("v2", "txn-mine")
    stale = store.put_bytes(uri, body("v0", "txn-old")) if etag_read == "stale" else None
    current = None
    if before == "other v1":
        current = store.put_bytes(uri, body("v1", "txn-other"))
    elif before == "ours":
        current = store.put_bytes(uri, mine)

    def reread() -> tuple[Ptr, str] | None:
        if after == "deleted":
            store.delete(uri)
        got = store.get_json_with_etag(uri)
        return None if got is None else (Ptr(**got[0]), got[1])

    etag = {"none": None, "current": current, "stale": stale}[etag_read]
    if outcome == "written":
        write_pointer(store, uri, mine, etag, "txn-mine", reread, Lost)
        assert store.get_bytes(uri) == mine
    else:
        with pytest.raises(Lost) as err:
            write_pointer(store, uri, mine, etag, "txn-mine", reread, Lost)
        assert err.value.winner == outcome
        assert err.value.__cause__ is None and err.value.__suppress_context__
        left = store.get_json_with_etag(uri)
        assert left is None if outcome is None else left is not None and left[0]["version"] == outcome
