"""The committed CRD is exactly the generated one, valid for Kubernetes, with CEL immutability and printer columns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from kretrain.crd import build_crd, render_crd

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = [ROOT / "crds" / "retrainjob.yaml", ROOT / "charts" / "kretrain" / "crds" / "retrainjob.yaml"]


@pytest.mark.parametrize("path", COMMITTED, ids=["crds", "chart"])
def test_committed_crd_matches_generated(path: Path) -> None:
    assert path.read_text() == render_crd(), f"{path} drifted from the models: run `make crd`"


@pytest.mark.parametrize("version", ["1.28.0", "1.33.0"])
def test_crd_validates_against_kubernetes(version: str) -> None:
    kubernetes_validate.validate(build_crd(), version, strict=True)


def test_crd_identity_and_columns() -> None:
    crd = build_crd()
    names = crd["spec"]["names"]
    assert (crd["spec"]["group"], names["kind"], names["plural"], names["shortNames"]) == (
        "kretrain.dev",
        "RetrainJob",
        "retrainjobs",
        ["rtj"],
    )
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"State", "Progress", "Candidate", "Incumbent", "Decision", "Age"} <= columns


def test_cel_rule_freezes_everything_but_suspend() -> None:
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rule = spec["x-kubernetes-validations"][0]["rule"]
    for field in spec["properties"]:
        if field == "suspend":
            assert "self.suspend" not in rule
        else:
            assert f"self.{field} == oldSelf.{field}" in rule, field


def test_schema_is_structural() -> None:
    """No $ref, anyOf or nulls anywhere: Kubernetes requires structural schemas."""
    text = yaml.safe_dump(build_crd())
    for forbidden in ("$ref", "anyOf", "oneOf", "'null'", "title:"):
        assert forbidden not in text, forbidden


def test_cli_writes_the_same_crd(tmp_path: Path) -> None:
    out = tmp_path / "crd.yaml"
    # The installed console script of the interpreter running the tests (not a hard-coded venv path).
    kretrain = Path(sys.executable).parent / "kretrain"
    subprocess.run([str(kretrain), "crd", "-o", str(out)], check=True)
    assert out.read_text() == render_crd()


def test_api_reference_matches_models() -> None:
    from kretrain.apidoc import render_reference

    assert (ROOT / "docs" / "api.md").read_text() == render_reference(), "docs/api.md drifted: run `make crd`"
