"""examples/gitops: the kustomization builds, its RetrainJobs validate, the Argo CD Applications point at real things."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from kretrain.validate import validate_manifest

ROOT = Path(__file__).resolve().parents[1]
GITOPS = ROOT / "examples" / "gitops"


@pytest.fixture(scope="module")
def built() -> list[dict[str, Any]]:
    """`kubectl kustomize examples/gitops` (kubectl's built-in kustomize, offline)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with built-in kustomize) is not installed")
    out = subprocess.run([kubectl, "kustomize", str(GITOPS)], capture_output=True, text=True, timeout=60, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def applications() -> dict[str, dict[str, Any]]:
    """The Argo CD Applications by name."""
    apps = [yaml.safe_load(p.read_text()) for p in sorted((GITOPS / "argocd").glob("*.yaml"))]
    return {a["metadata"]["name"]: a for a in apps}


def test_kustomization_builds_valid_retrainjobs(built: list[dict[str, Any]]) -> None:
    kinds = sorted(d["kind"] for d in built)
    assert kinds == ["Namespace", "RetrainJob", "RetrainJob"]
    for doc in built:
        if doc["kind"] == "Namespace":
            kubernetes_validate.validate(doc, "1.33", strict=True)
            continue
        assert doc["metadata"]["namespace"] == "ml-training"
        assert validate_manifest(doc) == [], doc["metadata"]["name"]
        options = doc["metadata"]["annotations"]["argocd.argoproj.io/sync-options"].split(",")
        assert "Prune=false" in options and "Replace=false" in options
        assert "Replace=true" not in options and "Force=true" not in options
    names = [d["metadata"]["name"] for d in built if d["kind"] == "RetrainJob"]
    assert len(set(names)) == len(names), "one run, one name"


def test_every_retrainjob_file_is_in_the_kustomization() -> None:
    resources = yaml.safe_load((GITOPS / "kustomization.yaml").read_text())["resources"]
    files = {f"retrainjobs/{p.name}" for p in (GITOPS / "retrainjobs").glob("*.yaml")}
    assert files <= set(resources)


def test_argocd_applications() -> None:
    apps = applications()
    assert set(apps) == {"kretrain-operator", "kretrain-retrainjobs"}
    for app in apps.values():
        assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
        assert (ROOT / app["spec"]["source"]["path"]).is_dir(), app["spec"]["source"]["path"]
    operator = apps["kretrain-operator"]
    assert operator["spec"]["source"]["path"] == "charts/kretrain"
    jobs = apps["kretrain-retrainjobs"]
    assert jobs["spec"]["source"]["path"] == "examples/gitops"
    assert jobs["spec"]["syncPolicy"]["automated"]["prune"] is False
    assert not any(o.startswith(("Replace=true", "Force=true")) for o in jobs["spec"]["syncPolicy"]["syncOptions"])
    waves = {name: int(app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) for name, app in apps.items()}
    assert waves["kretrain-operator"] < waves["kretrain-retrainjobs"], "the CRD and operator come first"


def test_argocd_chart_values_pass_the_chart_schema() -> None:
    """The values in the operator Application are accepted by values.schema.json and render."""
    values = applications()["kretrain-operator"]["spec"]["source"]["helm"]["valuesObject"]
    with helm_python.Chart.load(ROOT / "charts" / "kretrain") as chart:
        out = chart.render(values, name="kretrain", namespace="kretrain-system")
    docs = [d for path, text in out.items() if not path.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d]
    assert [d["kind"] for d in docs if d["kind"].endswith("KopfPeering")] == ["ClusterKopfPeering"]
    assert all(d["metadata"].get("namespace") in (None, "kretrain-system") for d in docs), "only the release namespace"
