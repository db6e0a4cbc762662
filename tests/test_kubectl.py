"""The machine's real kubectl against the emulator, with the real operator writing status: apply, get, describe."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulator import sim
from emulator.operator import OperatorProcess
from emulator.scenario import ERAS, ROOT, Cluster, operator_for, running_cluster, settled, started, wait_for

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")

NS = "kubectl-demo"
EXAMPLES_NS = "ml-training"  # the namespace the manifests in examples/ use


class Kubectl:
    def __init__(self, url: str, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": url}}],
            "users": [{"name": "tests", "user": {}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tests"}}],
            "current-context": "emulator",
        }
        (home / "kubeconfig").write_text(yaml.safe_dump(config))
        self.env = {**os.environ, "KUBECONFIG": str(home / "kubeconfig"), "HOME": str(home)}

    def __call__(self, *args: str) -> str:
        proc = subprocess.run(["kubectl", *args], env=self.env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc.stdout


@pytest.fixture(scope="module")
def cluster(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(s3, tmp_path_factory.mktemp("weights"), [], crd=False) as c:
        yield c


@pytest.fixture(scope="module")
def kubectl(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return Kubectl(cluster.server.url, tmp_path_factory.mktemp("kube-home"))


@pytest.fixture(scope="module")
def operator(cluster: Cluster, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    op = operator_for(cluster, s3, tmp_path_factory.mktemp("op") / "operator.log", [NS, EXAMPLES_NS])
    # The operator policy a cluster admin would set for examples/ (their endpoint, registry, priority class).
    op.env.update(
        KRETRAIN_ALLOWED_S3_ENDPOINTS="https://s3.eu-central-1.amazonaws.com",
        KRETRAIN_ALLOWED_REGISTRIES="s3://ml-models/registry",
        KRETRAIN_ALLOWED_PRIORITY_CLASSES="ml-batch",
    )
    op.start()
    yield op
    op.stop()


def table(text: str) -> list[dict[str, str]]:
    """Parse kubectl's column output (columns start where the header words start)."""
    lines = text.rstrip("\n").splitlines()
    header = lines[0]
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    names = [header[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]
    return [
        {n: line[s:e].strip() for n, s, e in zip(names, starts, [*starts[1:], None], strict=True)} for line in lines[1:]
    ]


def test_apply_crds_and_examples_then_get_shows_operator_status(
    cluster: Cluster, kubectl: Kubectl, operator: OperatorProcess, tmp_path: Path
) -> None:
    namespaces = tmp_path / "namespaces.yaml"
    namespaces.write_text(
        "".join(f"---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n" for ns in (NS, EXAMPLES_NS))
    )
    kubectl("apply", "--validate=false", "-f", str(namespaces))
    assert "created" in kubectl("apply", "--validate=false", "-f", str(ROOT / "crds"))
    out = kubectl("apply", "--validate=false", "-f", str(ROOT / "examples"))
    assert out.count("created") == len(list((ROOT / "examples").glob("*.yaml")))
    assert "unchanged" in kubectl("apply", "--validate=false", "-f", str(ROOT / "examples"))

    # A RetrainJob of our own, on the test registry, taken to a promotion.
    model = "kubectl-model"
    sim.seed_incumbent(cluster.registry, model, "seed", {"e1": 0.5, "e2": 0.5, "e3": 0.4}, cluster.tmp)
    manifest = {
        "apiVersion": "kretrain.dev/v1alpha1",
        "kind": "RetrainJob",
        "metadata": {"name": "demo", "namespace": NS},
        "spec": {
            "model": model,
            "dataset": {"uri": "s3://data/set", "eras": ERAS},
            "strategy": {"epochs": 3},  # type: defaulted to `full` by the CRD schema
            "resources": {"gpus": 0},
        },
    }
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(manifest))
    operator.wait_ready()
    kubectl("apply", "--validate=false", "-f", str(tmp_path / "demo.yaml"))
    run = started(cluster, operator, NS, "demo")["runId"]
    cluster.registry.write_progress(model, run, {"epoch": 7, "epochs": 10})
    wait_for("progress", lambda: "7/10" in kubectl("get", "retrainjobs", "-n", NS), op=operator)
    cluster.train(model, run, {"e1": 0.6, "e2": 0.6, "e3": 0.6}, {"e1": 0.5, "e2": 0.5, "e3": 0.4})
    sim.complete_job(cluster.client, NS, run)
    status = settled(cluster, operator, NS, "demo")

    [row] = table(kubectl("get", "retrainjobs", "-n", NS))
    assert list(row) == ["NAME", "MODEL", "STRATEGY", "STATE", "PROGRESS", "CANDIDATE", "INCUMBENT", "DECISION", "AGE"]
    assert (row["NAME"], row["MODEL"], row["STRATEGY"]) == ("demo", model, "full")
    assert (row["STATE"], row["PROGRESS"]) == ("Promoted", "7/10")
    assert (row["CANDIDATE"], row["INCUMBENT"]) == ("0.6000", "0.4667")
    assert row["DECISION"] == status["decision"]["summary"] != ""

    # The examples: the one naming an (unreachable) AWS registry waits, saying so; the others use
    # the operator's default registry (the test's SeaweedFS) and train.
    def example_states() -> dict[str, str]:
        return {r["NAME"]: r["STATE"] for r in table(kubectl("get", "rtj", "-n", EXAMPLES_NS))}

    states = wait_for(
        "the operator to act on every example",
        lambda: (st := example_states()) and all(v in ("Pending", "Training") for v in st.values()) and st,
        timeout=30,
        op=operator,
    )
    assert states.pop("traffic-detector-2026-11-full") == "Pending"
    assert set(states.values()) == {"Training"} and len(states) == 2
    waiting = cluster.status(EXAMPLES_NS, "traffic-detector-2026-11-full")["conditions"][0]
    assert waiting["reason"] == "WaitingForRegistry" and "s3://ml-models/registry" in waiting["message"]
    described = kubectl("describe", "retrainjob", "demo", "-n", NS)
    assert "Promoted" in described and "JobCreated" in described
    assert "batch/v1" in kubectl("get", "jobs", "-n", NS, "-o", "yaml")
