"""The data-stage benchmark (bench/data_stage.py) run --quick: run n decodes only the new era, the table adds up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_decodes_only_the_new_era(tmp_path: Path) -> None:
    out = tmp_path / "stage.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "data_stage.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    per_era = doc["imagesPerEra"]
    (alone,), (warm,), (nov,), (empty,) = (doc["runs"][k] for k in ("alone", "warm", "noValidationCache", "emptyDir"))
    assert alone["images"] == per_era and warm["images"] == nov["images"] == doc["eras"] * per_era
    assert alone["validationCache"]["misses"] == per_era
    assert (warm["validationCache"]["misses"], warm["validationCache"]["hits"]) == (per_era, 2 * per_era)
    assert warm["downloaded"] == alone["downloaded"] == 2 * per_era  # the new era's images and labels only
    assert nov["validationCache"] is None and empty["downloaded"] == doc["eras"] * 2 * per_era
    assert doc["ratioWarmToAlone"] == round(warm["stageSeconds"] / alone["stageSeconds"], 3)
    assert doc["goalMet"] == (doc["ratioWarmToAlone"] <= doc["goal"])
    assert "new era alone" in proc.stdout and "run n, warm cache" in proc.stdout
