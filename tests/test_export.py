"""spec.export: arguments checked like the train arguments, a real ONNX export proven equal, artifacts in the registry."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from _trainer_fixtures import tiny_dataset, tiny_model
from pydantic import ValidationError

from emulator.sim import minimal_report
from kretrain.api import RetrainJobSpec
from kretrain.api.ultralytics_args import EXPORT_PRECISION_ARGS, ULTRALYTICS_EXPORT_ARGS
from kretrain.artifacts import fetch_artifact, version_artifacts
from kretrain.registry import Lineage, Registry, TamperedWeights, VersionNotFound, sha256_file
from kretrain.store import ObjectStore
from kretrain.trainer import export as ex
from kretrain.trainer.parity import export_and_check, format_parity


def spec(export: dict[str, Any] | None = None, gpus: int = 0, imgsz: int = 64) -> RetrainJobSpec:
    doc: dict[str, Any] = {
        "model": "m",
        "dataset": {"uri": "s3://bucket/data", "eras": ["era1", "era2"]},
        "strategy": {"imgsz": imgsz},
        "resources": {"gpus": gpus},
    }
    if export is not None:
        doc["export"] = export
    return RetrainJobSpec.model_validate(doc)


def test_export_argument_names_are_ultralytics_ones() -> None:
    from ultralytics.utils import DEFAULT_CFG_DICT

    assert set(DEFAULT_CFG_DICT) >= ULTRALYTICS_EXPORT_ARGS
    assert ex.precision_key(frozenset(DEFAULT_CFG_DICT)) in EXPORT_PRECISION_ARGS


@pytest.mark.parametrize(
    ("export", "fmt", "precision", "expected"),
    [
        (None, "onnx", "quantize", {"format": "onnx", "imgsz": 64, "dynamic": False, "device": "cpu", "batch": 1}),
        ({"imgsz": 128, "opset": 12}, "onnx", "quantize", {"imgsz": 128, "opset": 12}),
        ({"half": True}, "onnx", "quantize", {"quantize": 16}),
        ({"half": True}, "onnx", "half", {"half": True}),  # Ultralytics before 8.4
        ({"dynamic": True, "formats": ["engine"]}, "engine", "quantize", {"dynamic": True, "device": 0}),
    ],
    ids=["defaults", "imgsz-opset", "half", "half-old-ultralytics", "engine-on-gpu"],
)
def test_build_export_args(export: dict | None, fmt: str, precision: str, expected: dict) -> None:
    args = ex.build_export_args(spec(export), fmt, precision)
    assert args.items() >= expected.items(), args
    assert set(args) <= ULTRALYTICS_EXPORT_ARGS | {precision}
    if not (export or {}).get("opset"):
        assert "opset" not in args  # Ultralytics picks the newest the installed torch and onnx support


@pytest.mark.parametrize(
    ("export", "field"),
    [
        ({"formats": ["tflite"]}, "export.formats.0"),
        ({"formats": ["onnx", "onnx"]}, "export.formats"),
        ({"opset": 5}, "export.opset"),
        ({"opset": 99}, "export.opset"),
        ({"imgsz": 100}, "export.imgsz"),
        ({"maxMetricDrop": 2}, "export.maxMetricDrop"),
        ({"maxOutputDiff": 0}, "export.maxOutputDiff"),
        ({"simplify": False}, "export.simplify"),  # only the documented options
    ],
    ids=[
        "unknown-format",
        "repeated-format",
        "opset-too-old",
        "opset-absurd",
        "imgsz-not-stride",
        "drop>1",
        "zero-tolerance",
        "unknown-option",
    ],
)
def test_bad_export_spec_is_refused_at_admission(export: dict, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        spec(export)
    locs = {".".join(str(p) for p in e["loc"]) for e in err.value.errors()}
    assert field in locs, locs


@pytest.mark.parametrize(
    ("export", "gpu", "error"),
    [
        ({"formats": ["engine"]}, False, "'engine' (TensorRT) needs a GPU in the trainer pod"),
        ({"formats": ["onnx", "engine"]}, False, "resources.gpus=0"),
        ({"opset": 29}, False, "spec.export.opset: 29 is newer than the installed onnx supports"),
        ({"formats": ["engine"]}, True, None),
        ({"formats": []}, False, None),
        ({"half": True, "dynamic": True, "opset": 17}, False, None),
    ],
    ids=["engine-no-gpu", "engine-among-others", "opset-newer-than-onnx", "engine-gpu", "nothing", "options"],
)
def test_check_export_args(export: dict, gpu: bool, error: str | None) -> None:
    s = spec(export)
    if error is None:
        assert len(ex.check_export_args(s, gpu)) == len(s.export.formats)
        return
    with pytest.raises(ex.ExportError) as err:
        ex.check_export_args(s, gpu)
    assert error in str(err.value)


# -- one real export ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny model exported to ONNX once, with the time it took and any pip/uv call Ultralytics tried."""
    import subprocess

    import ultralytics.utils.checks as uchecks

    base = tmp_path_factory.getbasetemp()
    d, best = tiny_dataset(base), tiny_model(base)
    installs: list[Any] = []

    class NoInstall:
        """Stands in for subprocess in Ultralytics' requirement checks: records and refuses any install."""

        def __getattr__(self, name: str) -> Any:
            return getattr(subprocess, name)

        def check_output(self, cmd: Any, *a: Any, **k: Any) -> Any:
            if "install" in (cmd if isinstance(cmd, list) else str(cmd).split()):
                installs.append(cmd)
                raise AssertionError(f"Ultralytics tried to run {cmd}")
            return subprocess.check_output(cmd, *a, **k)  # device probes (xpu-smi discovery) run as they would

    work = tmp_path_factory.mktemp("export")
    images = sorted(Path(p) for p in d["test_eras"])
    mp = pytest.MonkeyPatch()
    mp.setattr(uchecks, "subprocess", NoInstall())
    try:
        t0 = time.monotonic()
        artifacts, check = export_and_check(spec(), best, Path(d["yaml"]["test"]), images, work, False)
        seconds = time.monotonic() - t0
    finally:
        mp.undo()
    return dict(d=d, best=best, artifacts=artifacts, check=check, seconds=seconds, installs=installs, work=work)


@pytest.mark.slow
def test_onnx_export_passes_parity_offline(exported: dict[str, Any]) -> None:
    check, artifacts = exported["check"], exported["artifacts"]
    assert check.passed, check.detail
    assert check.value is not None and check.value < 1e-4 and check.threshold == 1e-3
    assert "onnx: max relative output difference" in check.detail and "mAP50-95" in check.detail
    assert [a.format for a in artifacts] == ["onnx"] and artifacts[0].path.name == "model.onnx"
    assert artifacts[0].sha256 == sha256_file(artifacts[0].path)
    assert exported["installs"] == [] and uchecks_autoinstall_is_off()
    assert exported["seconds"] < 60, exported["seconds"]  # measured about 4 s here


def uchecks_autoinstall_is_off() -> bool:
    import ultralytics.utils.checks as uchecks

    return uchecks.AUTOINSTALL is False


def _tamper(src: Path, dest: Path, factor: float) -> Path:
    """A copy of an ONNX file whose first convolution's weights are scaled: loads and runs, computes something else."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    first_conv = next(n for n in model.graph.node if n.op_type == "Conv")
    init = next(t for t in model.graph.initializer if t.name == first_conv.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * factor, init.name))
    onnx.save(model, str(dest))
    return dest


@pytest.mark.slow
def test_tampered_onnx_fails_parity(exported: dict[str, Any], tmp_path: Path) -> None:
    good = exported["artifacts"][0]
    bad_path = _tamper(good.path, tmp_path / "model.onnx", 0.5)
    bad = ex.ExportedArtifact("onnx", bad_path, sha256_file(bad_path), bad_path.stat().st_size, dict(good.args))
    d = exported["d"]
    images = sorted(Path(p) for p in d["test_eras"])
    r = format_parity(bad, exported["best"], images, Path(d["yaml"]["test"]), "mAP50-95", tmp_path, 0.5)
    from kretrain.trainer.checks import export_parity_decision

    check = export_parity_decision([r], 1e-3, 0.01)
    assert not check.passed and "over by" in check.detail, check.detail
    assert r.max_rel_diff > 1e-2, r


def test_failed_export_is_a_failed_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The exporter failing (here: weights that are not a model) gives a failed check naming it, no artifact."""
    junk = tmp_path / "best.pt"
    junk.write_bytes(b"not a checkpoint")
    artifacts, check = export_and_check(spec(), junk, tmp_path / "test.yaml", [], tmp_path / "w", False)
    assert artifacts == [] and not check.passed
    assert check.detail.startswith("onnx: export to onnx with") and "failed" in check.detail


def test_nothing_to_export_passes_and_says_so(tmp_path: Path) -> None:
    artifacts, check = export_and_check(
        spec({"formats": []}), tmp_path / "x.pt", tmp_path / "t.yaml", [], tmp_path, False
    )
    assert artifacts == [] and check.passed and "nothing was exported" in check.detail


# -- artifacts in the registry (real SeaweedFS) ------------------------------------------------------


@pytest.fixture
def registry(s3_env) -> Registry:  # type: ignore[no-untyped-def]
    return Registry(ObjectStore(), f"s3://{s3_env.new_bucket('export')}/models")


def test_artifacts_are_registered_with_sha256_and_fetched_verified(registry: Registry, tmp_path: Path) -> None:
    weights, onnx_file = tmp_path / "best.pt", tmp_path / "model.onnx"
    weights.write_bytes(b"weights" * 100)
    onnx_file.write_bytes(b"onnx bytes" * 1000)
    registry.register("m", "v1", weights, minimal_report("v1", "m"), {}, Lineage(parent=None), {"onnx": onnx_file})
    info = registry.version_info("m", "v1")
    [art] = info.artifacts
    assert art.format == "onnx" and art.sha256 == sha256_file(onnx_file) and art.size == 10000
    assert art.uri.startswith(registry.version_uri("m", "v1") + "/model-") and art.uri.endswith(".onnx")
    got = fetch_artifact(registry, "m", "v1", "onnx", tmp_path / "out")
    assert got.read_bytes() == onnx_file.read_bytes()
    with pytest.raises(VersionNotFound, match="no 'engine' artifact"):
        fetch_artifact(registry, "m", "v1", "engine", tmp_path / "out")
    # A version registered without exports has none (older records too).
    registry.register("m", "v0", weights, minimal_report("v0", "m"), {}, Lineage(parent=None))
    assert version_artifacts(registry, "m", "v0") == [] and registry.version_info("m", "v0").artifacts == []


@pytest.mark.parametrize(
    "tamper",
    [b"onnx bytez" * 1000, b"onnx bytes" * 1001, b""],
    ids=["same-size-other-bytes", "larger", "emptied"],
)
def test_tampered_artifact_is_refused(registry: Registry, tmp_path: Path, tamper: bytes) -> None:
    weights, onnx_file = tmp_path / "best.pt", tmp_path / "model.onnx"
    weights.write_bytes(b"weights" * 100)
    onnx_file.write_bytes(b"onnx bytes" * 1000)
    registry.register("m", "v1", weights, minimal_report("v1", "m"), {}, Lineage(parent=None), {"onnx": onnx_file})
    uri = registry.version_info("m", "v1").artifacts[0].uri
    registry.store.put_bytes(uri, tamper)
    with pytest.raises(TamperedWeights, match="changed after registration"):
        fetch_artifact(registry, "m", "v1", "onnx", tmp_path / "out")
    assert not (tmp_path / "out" / "model.onnx").exists()
