"""Benchmark: pulling a dataset with ObjectStore.sync_down vs `aws s3 sync`, and the incremental re-pull."""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kretrain.s3server import LocalS3Server
from kretrain.store import ObjectStore, join_uri


def aws_binary() -> str:
    local = Path(sys.executable).parent / "aws"
    found = str(local) if local.exists() else shutil.which("aws")
    if not found:
        raise SystemExit("awscli (`aws`) not found; install the dev extra")
    return found


def seed(store: ObjectStore, uri: str, era: str, count: int, size: int) -> None:
    """Upload `count` objects of `size` random bytes under `<uri>/<era>/images/`."""
    store._parallel(
        range(count),
        lambda i: store.put_bytes(join_uri(uri, f"{era}/images/{i:05d}.jpg"), os.urandom(size)),
        lambda *_: None,
    )


def count_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


CPU: dict[str, list[float]] = {"store": [], "aws": []}


def time_store(store: ObjectStore, uri: str, dest: Path) -> tuple[float, int]:
    """Wall seconds of one sync_down and the objects it downloaded; its client CPU goes to CPU["store"]."""
    c0, t0 = time.process_time(), time.perf_counter()
    result = store.sync_down(uri, dest)
    CPU["store"].append(time.process_time() - c0)
    return time.perf_counter() - t0, result.downloaded


def time_aws(uri: str, dest: Path, env: dict[str, str], endpoint: str) -> float:
    """Wall seconds of one `aws s3 sync`; its CPU (user+sys of the child) goes to CPU["aws"]."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(
        [aws_binary(), "s3", "sync", uri, str(dest), "--endpoint-url", endpoint, "--only-show-errors"],
        check=True,
        env=env,
    )
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU["aws"].append((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--objects", type=int, default=2000, help="objects in the base dataset")
    ap.add_argument("--eras", type=int, default=10, help="eras the base objects are spread over")
    ap.add_argument("--new-era", type=int, default=200, help="objects in the era added afterwards")
    ap.add_argument("--size", type=int, default=20 * 1024, help="bytes per object")
    ap.add_argument("--workers", type=int, default=16, help="ObjectStore max_workers")
    ap.add_argument(
        "--repeats", type=int, default=5, help="cold pulls per tool and re-pulls (interleaved); medians are reported"
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "s3_pull.json")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="s3pull-") as tmp_name:
        tmp = Path(tmp_name)
        with LocalS3Server(tmp / "weed") as server:
            env = {**os.environ, **server.env()}
            store = ObjectStore(
                endpoint_url=server.endpoint,
                access_key=server.access_key,
                secret_key=server.secret_key,
                region="us-east-1",
                max_workers=args.workers,
            )
            store.client.create_bucket(Bucket="bench")
            uri = "s3://bench/dataset"
            per_era = args.objects // args.eras
            for e in range(args.eras):
                seed(store, uri, f"era{e:02d}", per_era, args.size)
            total = per_era * args.eras

            store_times: list[float] = []
            aws_times: list[float] = []
            CPU["store"].clear()
            CPU["aws"].clear()
            pair_ratios: list[float] = []
            for r in range(args.repeats):
                # Each pair runs back to back, in alternating order, after the disk has settled, so drift
                # on this shared machine hits both tools alike; the median of the per-pair ratios is
                # the speedup.
                for tool in ("aws", "store") if r % 2 == 0 else ("store", "aws"):
                    dest = tmp / f"{tool}{r}"
                    os.sync()
                    if tool == "aws":
                        aws_times.append(time_aws(uri, dest, env, server.endpoint))
                        assert count_files(dest) == total, f"awscli pulled {count_files(dest)} of {total}"
                    else:
                        seconds, n = time_store(store, uri, dest)
                        assert n == total == count_files(dest), f"store pulled {n} of {total}"
                        store_times.append(seconds)
                    if tool == "aws" or r < args.repeats - 1:
                        shutil.rmtree(dest)
                pair_ratios.append(aws_times[-1] / store_times[-1])
            cold_cpu_store = statistics.median(CPU["store"])
            cold_cpu_aws = statistics.median(CPU["aws"])
            synced = tmp / f"store{args.repeats - 1}"
            aws_synced = tmp / "aws-synced"
            time_aws(uri, aws_synced, env, server.endpoint)

            # Nothing changed: what does a no-op re-pull cost?
            noop_store, noop_n = time_store(store, uri, synced)
            noop_aws = time_aws(uri, aws_synced, env, server.endpoint)
            assert noop_n == 0

            # One new era arrives. Each re-pull starts from its own copy of the synced base (manifest
            # included), paired with a pull of the new era alone; the median of the per-pair ratios counts.
            bases = []
            for r in range(args.repeats):
                bases.append(tmp / f"base{r}")
                shutil.copytree(synced, bases[-1])
            seed(store, uri, "era-new", args.new_era, args.size)
            repull_times: list[float] = []
            alone_times: list[float] = []
            repull_ratios: list[float] = []
            for r in range(args.repeats):
                for what in ("repull", "alone") if r % 2 == 0 else ("alone", "repull"):
                    os.sync()
                    if what == "repull":
                        seconds, repull_n = time_store(store, uri, bases[r])
                        assert repull_n == args.new_era, repull_n
                        repull_times.append(seconds)
                    else:
                        seconds, alone_n = time_store(store, join_uri(uri, "era-new"), tmp / f"alone{r}")
                        assert alone_n == args.new_era
                        alone_times.append(seconds)
                repull_ratios.append(repull_times[-1] / alone_times[-1])
            repull_aws = time_aws(uri, aws_synced, env, server.endpoint)
            repull_store = statistics.median(repull_times)
            alone = statistics.median(alone_times)

    s_med, a_med = statistics.median(store_times), statistics.median(aws_times)
    speedup = statistics.median(pair_ratios)
    repull_ratio = statistics.median(repull_ratios)
    result: dict[str, Any] = {
        "objects": total,
        "object_bytes": args.size,
        "new_era_objects": args.new_era,
        "workers": args.workers,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "loadavg_1m": os.getloadavg()[0],
        "store_seconds": store_times,
        "aws_seconds": aws_times,
        "store_objects_per_s": total / s_med,
        "aws_objects_per_s": total / a_med,
        "pair_speedups": pair_ratios,
        "speedup": speedup,
        "cold_client_cpu_store_s": cold_cpu_store,
        "cold_client_cpu_aws_s": cold_cpu_aws,
        "client_cpu_ratio": cold_cpu_aws / cold_cpu_store,
        "noop_repull_store_s": noop_store,
        "noop_repull_aws_s": noop_aws,
        "repull_after_new_era_store_s": repull_times,
        "repull_after_new_era_aws_s": repull_aws,
        "new_era_alone_store_s": alone_times,
        "repull_pair_ratios": repull_ratios,
        "repull_ratio": repull_ratio,
        "targets": {"speedup>=2": speedup >= 2.0, "repull_ratio<=1.3": repull_ratio <= 1.3},
    }
    rows = [
        ("cold pull, kretrain ObjectStore", f"{s_med:.2f} s", f"{total / s_med:.0f} obj/s"),
        ("cold pull, aws s3 sync", f"{a_med:.2f} s", f"{total / a_med:.0f} obj/s"),
        (
            "speedup, median of pairs (target >= 2x)",
            f"{speedup:.2f}x",
            f"{min(pair_ratios):.2f}x .. {max(pair_ratios):.2f}x",
        ),
        (
            "client CPU of a cold pull, ObjectStore",
            f"{cold_cpu_store:.2f} s",
            f"{1000 * cold_cpu_store / total:.2f} ms/obj",
        ),
        (
            "client CPU of a cold pull, aws s3 sync",
            f"{cold_cpu_aws:.2f} s",
            f"{1000 * cold_cpu_aws / total:.2f} ms/obj",
        ),
        ("no-op re-pull, ObjectStore", f"{noop_store:.2f} s", f"{total} skipped"),
        ("no-op re-pull, aws s3 sync", f"{noop_aws:.2f} s", ""),
        (f"re-pull after +{args.new_era} new era, ObjectStore", f"{repull_store:.2f} s", f"{repull_n} downloaded"),
        (f"re-pull after +{args.new_era} new era, aws s3 sync", f"{repull_aws:.2f} s", ""),
        ("pull of the new era alone, ObjectStore", f"{alone:.2f} s", f"{args.new_era} downloaded"),
        (
            "re-pull / new-era-alone, median of pairs (target <= 1.3)",
            f"{repull_ratio:.2f}x",
            f"{min(repull_ratios):.2f}x .. {max(repull_ratios):.2f}x",
        ),
    ]
    w0 = max(len(r[0]) for r in rows)
    print(
        f"{total} objects x {args.size // 1024} KiB, ObjectStore max_workers={args.workers}, "
        f"medians of {args.repeats} interleaved runs, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    print(f"{'measurement'.ljust(w0)}  {'time':>9}  rate")
    print(f"{'-' * w0}  {'-' * 9}  {'-' * 16}")
    for name, t, rate in rows:
        print(f"{name.ljust(w0)}  {t:>9}  {rate}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
