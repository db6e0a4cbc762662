"""`kretrain validate` prints every problem with its field path and exits 1."""

from __future__ import annotations

from pathlib import Path

from kretrain.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_validate_examples_exit_zero(capsys) -> None:  # type: ignore[no-untyped-def]
    files = [str(p) for p in sorted((ROOT / "examples").glob("*.yaml"))]
    argv = ["validate"] + [x for f in files for x in ("-f", f)]
    assert main(argv) == 0
    assert capsys.readouterr().out.count(": ok") == len(files)


def test_validate_bad_manifest_lists_every_problem(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """
apiVersion: kretrain.dev/v1alpha1
kind: RetrainJob
metadata: {name: bad}
spec:
  model: m
  dataset: {uri: "s3://data/x", eras: []}
  strategy: {epochs: 0, type: incremental}
  storage: {secretAccessKey: hunter2}
---
apiVersion: kretrain.dev/v1alpha1
kind: RetrainJob
metadata: {name: also-bad}
spec:
  dataset: {uri: "s3://data/x", eras: [a]}
"""
    )
    assert main(["validate", "-f", str(bad)]) == 1
    out = capsys.readouterr().out
    for fragment in (
        "bad: spec.dataset.eras",
        "bad: spec.strategy.epochs",
        "bad: spec.storage",
        "also-bad: spec.model",
    ):
        assert fragment in out, (fragment, out)
    assert "[crd]" in out and "[model]" in out


def test_validate_unreadable_yaml(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "broken.yaml"
    bad.write_text("spec: [unclosed\n")
    assert main(["validate", "-f", str(bad)]) == 1
    assert "not valid YAML" in capsys.readouterr().out


def test_validate_refuses_model_files_that_are_not_data(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Local paths, https:// and unpinned s3:// model files used to pass `kretrain validate`."""
    bad = tmp_path / "models.yaml"
    docs = []
    for i, (field, value) in enumerate(
        [
            ("architecture", "/opt/models/evil.yaml"),
            ("architecture", "https://example.com/evil.yaml"),
            ("baseWeights", "s3://ml-models/seed.pt"),
        ]
    ):
        docs.append(
            "apiVersion: kretrain.dev/v1alpha1\nkind: RetrainJob\n"
            f"metadata: {{name: m{i}}}\nspec:\n  model: m\n  dataset: {{uri: 's3://data/x', eras: [a]}}\n"
            f"  strategy: {{{field}: '{value}'}}\n"
        )
    bad.write_text("---\n".join(docs))
    assert main(["validate", "-f", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "m0: spec.strategy.architecture: local paths are not allowed" in out, out
    assert "m1: spec.strategy.architecture: https:// is not allowed" in out, out
    assert "m2: spec.strategy.baseWeights: an s3:// model file must pin its content" in out, out
