"""Benchmark: a cold pull of one dataset by kretrain (now, and its former fast path) and other S3 tools, interleaved."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from kretrain.s3server import LocalS3Server
from kretrain.storage import ObjectStore, join_uri, parallel_map

# The last commit with the hand-written SigV4 fast path (kretrain/store.py + kretrain/s3fast.py).
BEFORE_COMMIT = "c7b7332"
ROOT = Path(__file__).resolve().parent.parent


def load_before(commit: str, tmp: Path) -> ModuleType | None:
    """The store module as it was at `commit` (its fast path included), importable beside today's, or None."""
    sources = {}
    for name in ("store", "s3fast"):
        done = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{commit}:kretrain/{name}.py"], capture_output=True, text=True
        )
        if done.returncode != 0:
            return None
        sources[name] = done.stdout.replace("from kretrain.s3fast import", "from kretrain_before_s3fast import")
    modules: dict[str, ModuleType] = {}
    for name in ("s3fast", "store"):
        path = tmp / f"kretrain_before_{name}.py"
        path.write_text(sources[name])
        spec = importlib.util.spec_from_file_location(f"kretrain_before_{name}", path)
        assert spec is not None and spec.loader is not None
        modules[name] = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = modules[name]
        spec.loader.exec_module(modules[name])
    return modules["store"]


def count_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def obstore_pull(server: LocalS3Server, bucket: str, prefix: str, dest: Path, concurrency: int) -> None:
    """obstore used directly as its docs suggest: async list, then async gets `concurrency` at a time (no manifest)."""
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        bucket,
        endpoint=server.endpoint,
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
        region="us-east-1",
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )

    async def pull() -> None:
        objects = [m async for chunk in obstore.list(store, prefix=f"{prefix}/") for m in chunk]
        gate = asyncio.Semaphore(concurrency)

        async def one(meta: Any) -> None:
            async with gate:
                data = await (await obstore.get_async(store, meta["path"])).bytes_async()
            path = dest / meta["path"][len(prefix) + 1 :]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes(data))

        await asyncio.gather(*(one(m) for m in objects))

    asyncio.run(pull())


def cli_tools(server: LocalS3Server, uri: str, workers: int) -> dict[str, list[str] | None]:
    """Command lines of the CLI tools (None where the tool is not installed); `{dest}` is filled in."""
    aws = Path(sys.executable).parent / "aws"
    aws_bin = str(aws) if aws.exists() else shutil.which("aws")
    rclone, s5cmd = shutil.which("rclone"), shutil.which("s5cmd")
    remote = uri.replace("s3://", ":s3:")
    return {
        "awscli": [aws_bin, "s3", "sync", uri, "{dest}", "--endpoint-url", server.endpoint, "--only-show-errors"]
        if aws_bin
        else None,
        "rclone": [
            rclone,
            "copy",
            remote,
            "{dest}",
            "--s3-provider=Other",
            f"--s3-endpoint={server.endpoint}",
            f"--s3-access-key-id={server.access_key}",
            f"--s3-secret-access-key={server.secret_key}",
            f"--transfers={workers}",
            "--checkers=16",
        ]
        if rclone
        else None,
        "s5cmd": [s5cmd, "--endpoint-url", server.endpoint, "cp", f"{uri}/*", "{dest}/"] if s5cmd else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--objects", type=int, default=2000, help="objects in the dataset")
    ap.add_argument("--eras", type=int, default=10, help="eras (first-level folders) they are spread over")
    ap.add_argument("--size", type=int, default=20 * 1024, help="bytes per object")
    ap.add_argument("--workers", type=int, default=16, help="parallel downloads of every tool")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    ap.add_argument("--before", default=BEFORE_COMMIT, help="git commit of the store measured as 'before'")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "s3_pull.json")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="s3pull-") as tmp_name:
        tmp = Path(tmp_name)
        before = load_before(args.before, tmp)
        with LocalS3Server(tmp / "weed") as server:
            creds = {"access_key": server.access_key, "secret_key": server.secret_key, "region": "us-east-1"}
            store = ObjectStore(endpoint_url=server.endpoint, max_workers=args.workers, **creds)  # type: ignore[arg-type]
            store.client.create_bucket(Bucket="bench")
            uri = "s3://bench/dataset"
            per_era = args.objects // args.eras
            total = per_era * args.eras
            parallel_map(
                range(total),
                lambda i: store.put_bytes(
                    join_uri(uri, f"era{i % args.eras:02d}/images/{i:05d}.jpg"), os.urandom(args.size)
                ),
                max_workers=args.workers,
            )
            env = {**os.environ, **server.env()}
            boto = ObjectStore(endpoint_url=server.endpoint, max_workers=args.workers, transport="boto3", **creds)  # type: ignore[arg-type]
            tools: dict[str, Callable[[Path], object] | None] = {
                "kretrain (obstore transport)": lambda d: store.sync_down(uri, d),
                "kretrain (boto3 transport)": lambda d: boto.sync_down(uri, d),
                f"kretrain before ({args.before}, fast path)": None,
                "obstore (async, direct)": lambda d: obstore_pull(server, "bench", "dataset", d, args.workers),
            }
            if before is not None:
                old = before.ObjectStore(endpoint_url=server.endpoint, max_workers=args.workers, **creds)
                tools[f"kretrain before ({args.before}, fast path)"] = lambda d: old.sync_down(uri, d)
            for name, cmd in cli_tools(server, uri, args.workers).items():
                tools[name] = (
                    None
                    if cmd is None
                    else (
                        lambda d, c=cmd: subprocess.run([a.replace("{dest}", str(d)) for a in c], check=True, env=env)
                    )
                )
            available = [name for name, fn in tools.items() if fn is not None]
            times: dict[str, list[float]] = {name: [] for name in available}
            cpu: dict[str, list[float]] = {name: [] for name in available}
            for r in range(args.repeats):
                order = available[r % len(available) :] + available[: r % len(available)]  # rotate the order
                for i, name in enumerate(order):
                    dest = tmp / f"pull{r}-{i}"
                    os.sync()
                    r0, c0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.process_time(), time.perf_counter()
                    tools[name](dest)  # type: ignore[misc]
                    times[name].append(time.perf_counter() - t0)
                    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    child = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
                    cpu[name].append(time.process_time() - c0 + child)  # this process, or the CLI tool's
                    assert count_files(dest) == total, f"{name} pulled {count_files(dest)} of {total}"
                    if r < args.repeats - 1 or "kretrain" not in name:
                        shutil.rmtree(dest)
            # The manifest skip: a re-pull of an unchanged dataset into the last kretrain copy downloads nothing.
            last = next(tmp / f"pull{args.repeats - 1}-{i}" for i, n in enumerate(order) if n == available[0])
            t0 = time.perf_counter()
            noop = store.sync_down(uri, last)
            noop_s = time.perf_counter() - t0
            assert noop.downloaded == 0 and noop.skipped == total

    med = {name: statistics.median(ts) for name, ts in times.items()}
    ours = med["kretrain (obstore transport)"]
    peers = [med[n] for n in ("obstore (async, direct)", "rclone", "s5cmd") if n in med]
    result: dict[str, Any] = {
        "objects": total,
        "object_bytes": args.size,
        "workers": args.workers,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "loadavg_1m": os.getloadavg()[0],
        "seconds": times,
        "median_seconds": med,
        "client_cpu_seconds": cpu,
        "relative_to_kretrain": {name: m / ours for name, m in med.items()},
        "unavailable": [name for name, fn in tools.items() if fn is None],
        "noop_repull_seconds": noop_s,
        "target_met": ours <= min(peers) if peers else None,
    }
    w0 = max(len(n) for n in tools)
    print(
        f"{total} objects x {args.size // 1024} KiB in {args.eras} eras, {args.workers} workers, median of "
        f"{args.repeats} interleaved rounds, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    print(f"{'tool'.ljust(w0)}  {'median':>8}  {'obj/s':>6}  {'vs kretrain':>11}  client CPU")
    for name in tools:
        if name in med:
            rate, rel, c = total / med[name], med[name] / ours, statistics.median(cpu[name])
            print(f"{name.ljust(w0)}  {med[name]:7.2f}s  {rate:6.0f}  {rel:10.2f}x  {c:6.2f}s")
        else:
            print(f"{name.ljust(w0)}  {'unavailable (not installed)':>8}")
    print(f"no-op re-pull (manifest skip, {total} skipped): {noop_s:.2f}s")
    print(f"target (kretrain <= fastest of obstore, rclone, s5cmd measured): {result['target_met']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
