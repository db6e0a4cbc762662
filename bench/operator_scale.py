"""Benchmark: N RetrainJobs created at once against the API emulator; how fast the real operator gives each its Job."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from emulator import Client, EmulatorServer, rtj_path  # noqa: E402
from emulator.operator import OperatorProcess  # noqa: E402
from kretrain.api import API_VERSION, KIND  # noqa: E402
from kretrain.operator import jobs  # noqa: E402
from kretrain.s3server import LocalS3Server  # noqa: E402


def peak_rss_mib(pid: int) -> float:
    """VmHWM (peak resident set) of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=500, help="RetrainJobs to create")
    parser.add_argument("--namespaces", type=int, default=5, help="spread them over this many namespaces")
    parser.add_argument("--poll-interval", type=float, default=15.0, help="KRETRAIN_POLL_INTERVAL of the operator")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "operator_scale.json")
    args = parser.parse_args()

    namespaces = [f"scale-{i}" for i in range(args.namespaces)]
    with tempfile.TemporaryDirectory() as tmp, LocalS3Server(Path(tmp) / "s3") as s3:
        boto3.client("s3", **{"endpoint_url": s3.endpoint, "aws_access_key_id": s3.access_key,
                              "aws_secret_access_key": s3.secret_key, "region_name": "us-east-1"}).create_bucket(
            Bucket="registry")  # fmt: skip
        server = EmulatorServer()
        url = server.start()
        client = Client(url)
        client.create(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            yaml.safe_load((ROOT / "crds" / "retrainjob.yaml").read_text()),
        )
        for ns in namespaces:
            client.ensure_namespace(ns)
        env = {
            **s3.env(),
            "KRETRAIN_REGISTRY": "s3://registry/models",
            "KRETRAIN_S3_ENDPOINT": s3.endpoint,
            "KRETRAIN_POLL_INTERVAL": str(args.poll_interval),
        }
        op = OperatorProcess(url, Path(tmp) / "operator.log", namespaces, env)
        op.env["KRETRAIN_POLL_INTERVAL"] = str(args.poll_interval)
        op.start().wait_ready(60)
        assert op.proc is not None
        pid = op.proc.pid

        rss_samples: list[float] = []
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.is_set():
                try:
                    rss_samples.append(peak_rss_mib(pid))
                except OSError:
                    return
                stop_sampling.wait(0.5)

        threading.Thread(target=sample, daemon=True).start()
        idle_rss = peak_rss_mib(pid)

        t0 = time.time()
        for i in range(args.count):
            ns = namespaces[i % len(namespaces)]
            client.create(
                rtj_path(ns),
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "metadata": {"name": f"rtj-{i:04d}", "namespace": ns},
                    "spec": {"model": f"model-{i % 50}", "dataset": {"uri": "s3://data/set", "eras": ["a", "b"]}},
                },
            )
        created_all = time.time() - t0

        def jobs_by_owner() -> dict[str, float]:
            emu = server.emulator
            out = {}
            for job in emu.store[("batch", "v1", "jobs")].values():
                owner = (job["metadata"].get("labels") or {}).get(jobs.LABEL_UID)
                if owner:
                    out[owner] = emu.created_at[job["metadata"]["uid"]]
            return out

        deadline = time.monotonic() + args.timeout
        done: dict[str, float] = {}
        while time.monotonic() < deadline:
            done = server.call(jobs_by_owner)
            if len(done) >= args.count:
                break
            time.sleep(0.2)
        all_jobs = time.time() - t0
        # Let the per-object timers run a few rounds before reading the peak.
        time.sleep(min(2 * args.poll_interval, 20))
        peak = peak_rss_mib(pid)
        stop_sampling.set()

        rtj_created = server.call(
            lambda: {
                o["metadata"]["uid"]: server.emulator.created_at[o["metadata"]["uid"]]
                for o in server.emulator.store[("kretrain.dev", "v1alpha1", "retrainjobs")].values()
            }
        )
        latencies = [done[uid] - born for uid, born in rtj_created.items() if uid in done]
        job_count = server.call(lambda: len(server.emulator.store[("batch", "v1", "jobs")]))
        op.stop()
        server.stop()

    result: dict[str, Any] = {
        "retrainjobs": args.count,
        "namespaces": args.namespaces,
        "poll_interval_s": args.poll_interval,
        "with_job": len(latencies),
        "jobs_total": job_count,
        "create_all_s": round(created_all, 2),
        "all_have_jobs_s": round(all_jobs, 2),
        "creation_to_job_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "creation_to_job_p99_s": round(percentile(latencies, 0.99), 3) if latencies else None,
        "creation_to_job_max_s": round(max(latencies), 3) if latencies else None,
        "operator_rss_idle_mib": round(idle_rss, 1),
        "operator_rss_peak_mib": round(max([peak, *rss_samples]), 1),
    }
    rows = [
        ("RetrainJobs created", f"{args.count} in {args.namespaces} namespaces"),
        ("time to create them (client)", f"{result['create_all_s']} s"),
        ("time until every one has its Job", f"{result['all_have_jobs_s']} s"),
        ("creation -> Job p50", f"{result['creation_to_job_p50_s']} s"),
        ("creation -> Job p99", f"{result['creation_to_job_p99_s']} s"),
        ("creation -> Job max", f"{result['creation_to_job_max_s']} s"),
        ("Jobs in the cluster", str(job_count)),
        ("operator RSS idle / peak", f"{result['operator_rss_idle_mib']} / {result['operator_rss_peak_mib']} MiB"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"{'metric':<{width}}  value")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0 if len(latencies) == args.count and job_count == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
