"""Estimate the continual benchmark's runtime from a measured partial run (the full retrain, one seed).

    .venv/bin/python bench/continual.py --strategies full --seeds 1 --out /tmp/partial   # measure
    .venv/bin/python bench/continual_estimate.py /tmp/partial/continual.json              # project

Model: every run costs a + b x its image-epochs, fitted (least squares) on the measured runs (the era-1
model and the full retrain's steps) on the CPU seconds of the trainer subprocess, which change far less
with the machine's load than wall seconds do (a partial run on a shared machine still measures them);
wall seconds on a quiet 2-core machine lie between CPU / 2 (both cores busy all the time) and CPU / 1
(one core busy), so the projection gives that range. Image-epochs per run: the full
retrain's measured stopping epoch at each step; the other converged strategies are assumed to stop at
the same epoch on their own (smaller) training sets, the random-init reference at the era-1 model's
stopping epoch; budgeted strategies by their formula (exact).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from continual_data import FULL, Size
from continual_strategies import Strategy, step_epochs, strategies, train_images


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares (a, b) of y = a + b x; b = 0 and a = mean y when every x is equal."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx > 0 else 0.0
    return my - b * mx, b


def estimate(
    size: Size, chosen: list[Strategy], full_steps: list[dict[str, Any]], first: dict[str, Any]
) -> dict[str, Any]:
    """Projected runs, image-epochs, CPU and wall seconds of a whole benchmark from one seed of the full retrain."""
    runs = [first, *full_steps]
    cpu_a, cpu_b = fit([(float(r["image_epochs"]), float(r["cpu_seconds"])) for r in runs])
    scratch_epochs = first["epochs_completed"]
    rows = []
    for st in chosen:
        per_step = []
        for step in full_steps:
            new = step["eras"][-1]
            images = train_images(st, step["era_train"], new)
            if st.budget is not None:
                epochs, _ = step_epochs(
                    st, size, [step["epochs_completed"]], step["train_images"], step["era_train"], new
                )
            else:
                epochs = scratch_epochs if st.scratch else step["epochs_completed"]
            per_step.append(images * epochs)
        cpu = size.seeds * sum(cpu_a + cpu_b * ie for ie in per_step)
        rows.append({"strategy": st.name, "image_epochs_per_seed": sum(per_step), "cpu": round(cpu)})
    cpu_total = first["cpu_seconds"] + sum(r["cpu"] for r in rows)
    return {
        "cpu_fit": {"a": round(cpu_a, 2), "b": round(cpu_b, 5)},
        "runs": 1 + size.seeds * len(full_steps) * len(chosen),
        "strategies": rows,
        "cpu_seconds": round(cpu_total),
        "quiet_wall_seconds": [round(cpu_total / 2), round(cpu_total)],
    }


def main(argv: list[str] | None = None) -> int:
    """Print the projection for the full mode's size from a partial run's JSON."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        raise SystemExit(
            "usage: continual_estimate.py PARTIAL.json [FIRST.json]  (PARTIAL from continual.py --strategies full "
            "--seeds 1; FIRST: another partial run whose era-1 model is used instead, e.g. one trained longer)"
        )
    doc = json.loads(Path(args[0]).read_text())
    first = json.loads(Path(args[-1]).read_text())["first_model"]
    full = next(s for s in doc["strategies"] if s["name"] == "full")
    size = Size(**doc["size"])
    if (size.images, size.imgsz, size.epochs, size.patience) != (FULL.images, FULL.imgsz, FULL.epochs, FULL.patience):
        print(f"note: the partial run's size {size} differs from full mode's {FULL}", file=sys.stderr)
    size = Size(**{**doc["size"], "seeds": FULL.seeds})
    out = estimate(size, strategies(), full["seeds"][0]["steps"], first)
    for r in out["strategies"]:
        print(f"{r['strategy']:>24}: {r['image_epochs_per_seed']:>7} image-epochs per seed, {r['cpu']:>6} CPU s")
    lo, hi = out["quiet_wall_seconds"]
    print(
        f"{out['runs']} runs; CPU s per run = {out['cpu_fit']['a']} + {out['cpu_fit']['b']} x image-epochs; "
        f"{out['cpu_seconds']} CPU s in all: {lo / 60:.0f}-{hi / 60:.0f} min on a quiet 2-core machine "
        f"(the partial run's load average: {doc.get('load_average')})"
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
