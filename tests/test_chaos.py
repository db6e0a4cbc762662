"""Chaos: RetrainJobs through a fault-injecting API proxy while the operator is killed; one Job, one decision each.

The proxy's own tests come first (what it passes through is unchanged, watch streams included; each fault is
what its kind says). KRETRAIN_CHAOS_JOBS / KRETRAIN_CHAOS_SEED change the run (bench/chaos.py for longer ones).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from emulator.client import ApiStatusError, Client, path
from emulator.scenario import running_cluster
from emulator.server import EmulatorServer
from harness.chaos import ChaosConfig, run_chaos, table
from harness.faultproxy import FaultProxy, FaultRates

JOBS = int(os.environ.get("KRETRAIN_CHAOS_JOBS", "50"))
SEED = int(os.environ.get("KRETRAIN_CHAOS_SEED", "21"))
NS = "px"
CM = path("", "v1", "configmaps", NS)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer() as server:
        Client(server.url).ensure_namespace(NS)
        yield server


def watch_lines(url: str, seconds: float, during: Any = None) -> tuple[list[dict[str, Any]], str | None]:
    """The events of a watch through `url` (aiohttp, as Kopf reads them) and how the stream ended (None: cleanly)."""

    async def main() -> tuple[list[dict[str, Any]], str | None]:
        events: list[dict[str, Any]] = []
        query = f"{url}{CM}?watch=true&timeoutSeconds={seconds}"
        async with aiohttp.ClientSession() as session, session.get(query) as resp:
            assert resp.status == 200 and resp.headers.get("Transfer-Encoding") == "chunked"
            if during:
                threading.Timer(0.2, during).start()
            try:
                async for line in resp.content:
                    events.append(json.loads(line))
            except aiohttp.ClientPayloadError as exc:
                return events, type(exc).__name__
        return events, None

    return asyncio.run(main())


def test_what_passes_through_is_unchanged(emulator: EmulatorServer) -> None:
    direct = Client(emulator.url)
    with FaultProxy(emulator.url, FaultRates(), seed=1) as proxy:
        client = Client(proxy.url)
        created = client.create(CM, {"metadata": {"name": "a"}, "data": {"k": "v" * 100_000}})
        assert client.get(f"{CM}/a") == direct.get(f"{CM}/a") == created
        patched = client.patch(f"{CM}/a", {"data": {"k": "w"}})
        assert patched["data"] == {"k": "w"} and direct.get(f"{CM}/a") == patched
        with pytest.raises(ApiStatusError) as missing:
            client.get(f"{CM}/nope")
        assert missing.value.code == 404 and missing.value.status["reason"] == "NotFound"

        def more() -> None:
            for name in ("b", "c"):
                direct.create(CM, {"metadata": {"name": name}})

        events, end = watch_lines(proxy.url, 1.5, during=more)  # the server ends it after 1.5 s
        assert end is None
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
            ("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c")]  # fmt: skip
        assert events[0]["object"]["data"]["k"] == "w"
    assert set(proxy.counts().values()) == {0}


def test_faults_are_what_their_kind_says(emulator: EmulatorServer) -> None:
    direct = Client(emulator.url)
    with FaultProxy(emulator.url, FaultRates(conflict_409=1.0), seed=2) as proxy:
        client = Client(proxy.url)
        with pytest.raises(ApiStatusError) as conflict:
            client.create(CM, {"metadata": {"name": "never"}})
        assert (conflict.value.code, conflict.value.status["reason"]) == (409, "Conflict")
        assert direct.get_or_none(f"{CM}/never") is None  # never applied
        direct.create(CM, {"metadata": {"name": "p"}})
        client.patch(f"{CM}/p", {"data": {"x": "1"}})  # no precondition: an API server never answers 409
        rv = direct.get(f"{CM}/p")["metadata"]["resourceVersion"]
        with pytest.raises(ApiStatusError):
            client.patch(f"{CM}/p", {"metadata": {"resourceVersion": rv}, "data": {"x": "2"}})
        assert direct.get(f"{CM}/p")["data"] == {"x": "1"}
        assert proxy.counts()["409"] == 2
    with FaultProxy(emulator.url, FaultRates(throttle_429=1.0, retry_after=3), seed=3) as proxy:
        with pytest.raises(ApiStatusError) as throttled:
            Client(proxy.url).get(CM)
        assert throttled.value.code == 429 and throttled.value.status["details"]["retryAfterSeconds"] == 3
    with FaultProxy(emulator.url, FaultRates(lost_500=1.0), seed=4) as proxy:
        with pytest.raises(ApiStatusError) as lost:
            Client(proxy.url).create(CM, {"metadata": {"name": "applied"}})
        assert lost.value.code == 500 and direct.get_or_none(f"{CM}/applied") is not None  # applied, answer lost
        with proxy.paused():
            Client(proxy.url).create(CM, {"metadata": {"name": "paused"}})
        assert proxy.counts()["lost"] == 1
    with FaultProxy(emulator.url, FaultRates(watch_cut=1.0, cut_after=(0.6, 0.6)), seed=5) as proxy:
        t0 = time.monotonic()
        events, end = watch_lines(proxy.url, 30, during=lambda: direct.create(CM, {"metadata": {"name": "w"}}))
        assert end == "ClientPayloadError" and time.monotonic() - t0 < 5  # cut mid-stream, not ended
        assert ("ADDED", "w") in [(e["type"], e["object"]["metadata"]["name"]) for e in events]
        assert proxy.counts()["watch-cut"] == 1
    with FaultProxy(emulator.url, FaultRates(), seed=6) as proxy:
        proxy.outage(0.5)
        with pytest.raises(ApiStatusError) as down:
            Client(proxy.url).get(CM)
        assert down.value.code == 503
        time.sleep(0.6)
        assert Client(proxy.url).get(CM)["items"]  # over
        assert proxy.counts()["outage"] == 1


def test_chaos_run_keeps_one_job_and_one_decision_each(s3: Any, tmp_path: Path) -> None:
    config = ChaosConfig(jobs=JOBS, seed=SEED, fault_rate=0.05, kills=4)
    t0 = time.monotonic()
    with running_cluster(s3, tmp_path, []) as cluster:
        result = run_chaos(cluster, s3, config, tmp_path)
    print(table(result))
    print(f"test wall time {time.monotonic() - t0:.1f} s")
    assert not result.problems, table(result)
    assert len(result.kills) >= 2, table(result)  # the run lasted long enough to be interrupted
    assert sum(result.faults.values()) > 0 and all(k.ready_s is not None for k in result.kills)
