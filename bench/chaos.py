"""Benchmark: the chaos run (tests/harness/chaos.py) for longer: faults by kind, kills and the recovery after each.

    .venv/bin/python bench/chaos.py --jobs 200 --seed 7 --fault-rate 0.05 --kills 10 [--replicas 2]

RetrainJobs with simulated training go through a fault-injecting proxy in front of the API emulator while the
operator is SIGKILLed and restarted at random moments; at the end every RetrainJob must have exactly one Job,
the terminal state its simulated result implies and at most one promotion. Prints a table, writes JSON; exit
status 1 when any of that did not hold.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import S3  # noqa: E402

from emulator.scenario import running_cluster  # noqa: E402
from harness.chaos import ChaosConfig, run_chaos, table  # noqa: E402
from kretrain.s3server import LocalS3Server  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100, help="RetrainJobs to create")
    parser.add_argument("--seed", type=int, default=0, help="seed of the plan, the kills and the faults")
    parser.add_argument("--fault-rate", type=float, default=0.05, help="share of requests answered 500/409/429 each")
    parser.add_argument("--kills", type=int, default=8, help="SIGKILLs of the operator (at most)")
    parser.add_argument("--replicas", type=int, default=1, choices=(1, 2), help="2: peered replicas, the leader killed")
    parser.add_argument("--namespaces", type=int, default=3)
    parser.add_argument("--outage", type=float, default=0.0, help="seconds of API outage (all 503) once all exist")
    parser.add_argument(
        "--conflict-any-patch",
        action="store_true",
        help="also answer merge patches 409 (no API server does; shows that a Kopf timer dies of it)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds until every RetrainJob must settle")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "chaos.json")
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy the operators' logs to this folder")
    args = parser.parse_args()

    config = ChaosConfig(
        jobs=args.jobs,
        seed=args.seed,
        fault_rate=args.fault_rate,
        kills=args.kills,
        replicas=args.replicas,
        namespaces=args.namespaces,
        timeout=args.timeout,
        conflict_any_patch=args.conflict_any_patch,
        outage_seconds=args.outage,
    )
    with tempfile.TemporaryDirectory() as tmp, LocalS3Server(Path(tmp) / "s3") as server:
        work = Path(tmp) / "run"
        work.mkdir()
        s3 = S3(server)
        with running_cluster(s3, work, []) as cluster:
            result = run_chaos(cluster, s3, config, work)
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in work.glob("operator-*.log"):
                (args.keep_logs / log.name).write_bytes(log.read_bytes())
    print(table(result))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    print(f"wrote {args.output}")
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
