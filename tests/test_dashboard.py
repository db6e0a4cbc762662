"""The Grafana dashboard (charts/kretrain/dashboards/kretrain.json) against a real operator process driving
RetrainJobs in the kube emulator: every PromQL query names only metrics and labels the operator exports on
/metrics and rates only counters and histograms; the training progress gauges; the chart ships the dashboard
as a sidecar ConfigMap behind a toggle. The same operator run checks the DataReady condition and the
DataWarning Events of a run whose report has data warnings (kretrain/operator/data_findings.py)."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from emulator import sim
from emulator.operator import OperatorProcess
from emulator.scenario import ERAS, Cluster, operator_for, running_cluster, settled, started, wait_for
from kretrain.api import RunProgress

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "kretrain"
DASHBOARD = CHART / "dashboards" / "kretrain.json"
NS = "dash"
# Labels Prometheus adds to every scraped series (target labels of the ServiceMonitor) and histogram buckets.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "endpoint", "container", "le"}
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum", "_created")}
PROMQL_WORDS = {"sum", "max", "min", "avg", "by", "without", "rate", "increase", "histogram_quantile", "count"}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every target; the job variable's query too."""
    found = [(p["title"], t["expr"]) for p in dashboard()["panels"] for t in p.get("targets", [])]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            found.append((f"${var['name']}", var["query"]["query"]))
    return found


@dataclass
class Observed:
    """What the module's operator did: its /metrics families (name -> (type, label names)), the promoted run's
    status and the namespace's Events."""

    families: dict[str, tuple[str, set[str]]]
    good: dict[str, Any]
    events: list[tuple[str, str, str]]
    text: str


@pytest.fixture(scope="module")
def observed(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    """A real operator after a promoted (with data warnings), a failed and a retried RetrainJob."""
    with running_cluster(s3, tmp_path_factory.mktemp("dash"), [NS]) as cluster:
        op = operator_for(cluster, s3, tmp_path_factory.mktemp("op") / "operator.log", [NS])
        op.start().wait_ready()
        try:
            yield drive_and_scrape(cluster, op)
        finally:
            op.stop()


@pytest.fixture(scope="module")
def scraped(observed: Observed) -> dict[str, tuple[str, set[str]]]:
    return observed.families


def drive_and_scrape(cluster: Cluster, op: OperatorProcess) -> Observed:
    # An unreadable incumbent pointer: the start handler waits and asks kopf to retry (the retries counter).
    cluster.registry.store.put_json(f"{cluster.registry_uri}/m-dash-wait/incumbent.json", {"version": 1})
    cluster.create_rtj(NS, "wait", "m-dash-wait")
    cluster.create_rtj(NS, "good", "m-dash")
    cluster.create_rtj(NS, "train", "m-dash-train")  # stays Training, at epoch 3 of 10 (the progress gauges)
    cluster.create_rtj(NS, "bad", "m-dash-bad", dataset={"uri": "s3://data/set", "eras": ERAS, "newEras": 4})
    run_id = started(cluster, op, NS, "good")["runId"]
    rep = cluster.train("m-dash", run_id, {"e1": 0.5, "e2": 0.5, "e3": 0.5}, None)
    # The trainer found data warnings (the operator's DataReady condition and Warning Events show them).
    data = rep.data.model_copy(
        update={
            "warnings": WARNINGS,
            "eras": {"e3": {"train": 8, "excluded": 2}},
            "finding_counts": {"error:undecodable_image": 2, "warning:class_new_in_era": 7},
        }
    )
    written = cluster.registry.write_run_report("m-dash", run_id, rep.model_copy(update={"data": data}))
    sim.sign_report(cluster.registry, "m-dash", run_id, written, sim.stage_key(cluster.client, run_id))
    sim.complete_job(cluster.client, NS, run_id)
    assert {n: settled(cluster, op, NS, n)["state"] for n in ("good", "bad")} == {"good": "Promoted", "bad": "Failed"}
    wait_for("the Pending run", lambda: cluster.status(NS, "wait").get("state") == "Pending", op=op)
    train_run = started(cluster, op, NS, "train")["runId"]
    cluster.registry.write_progress("m-dash-train", train_run, RunProgress(epoch=3, epochs=10, eta_seconds=120.0))
    wait_for("the progress", lambda: (cluster.status(NS, "train").get("progress") or {}).get("epoch") == 3, op=op)
    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    families: dict[str, tuple[str, set[str]]] = {}
    for fam in text_string_to_metric_families(text):
        # (the text format exposes each counter's and histogram's `_created` timestamp as a gauge family of its own)
        if fam.name.startswith("kretrain_") and not fam.name.endswith("_created"):
            labels = {k for s in fam.samples for k in s.labels}
            families[fam.name] = (fam.type, labels)
            assert fam.samples, f"{fam.name} exported no sample"
    good = cluster.status(NS, "good")

    def data_events() -> int:
        return sum(1 for e in cluster.events(NS) if e[1] == "DataWarning")

    wait_for("the 5 data warning Events", lambda: data_events() >= 5, op=op)
    return Observed(families, good, cluster.events(NS), text)


def series_names(families: dict[str, tuple[str, set[str]]]) -> dict[str, tuple[str, str, set[str]]]:
    """Every series name a family exposes -> (family, type, labels)."""
    out = {}
    for name, (kind, labels) in families.items():
        for suffix in SUFFIXES[kind]:
            out[name + suffix] = (name, kind, labels)
    return out


def used_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\bkretrain_[a-zA-Z0-9_:]+", expr))


def used_labels(expr: str) -> set[str]:
    grouped = {lab.strip() for g in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr) for lab in g.split(",")}
    matched = {
        m for sel in re.findall(r"\{([^}]*)\}", expr) for m in re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", sel)
    }
    called = set(re.findall(r"label_values\(\s*[a-zA-Z_:][\w:]*\s*,\s*(\w+)\s*\)", expr))
    return (grouped | matched | called) - {""}


def rated_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\b(?:rate|increase|irate)\(\s*(kretrain_[a-zA-Z0-9_:]+)", expr))


def test_every_query_names_exported_metrics_and_labels(scraped: dict[str, tuple[str, set[str]]]) -> None:
    assert {"kretrain_retrainjobs", "kretrain_decisions", "kretrain_handler_seconds"} <= set(scraped)
    series = series_names(scraped)
    seen = set()
    for title, expr in queries():
        metrics = used_metrics(expr)
        assert metrics, f"{title}: {expr} names no kretrain metric"
        for metric in metrics:
            assert metric in series, f"{title}: {metric} is not exported (exported: {sorted(series)})"
            seen.add(series[metric][0])
        allowed = {lab for m in metrics for lab in series[m][2]} | TARGET_LABELS
        assert used_labels(expr) <= allowed, f"{title}: labels {used_labels(expr) - allowed} not on {metrics}"
        for metric in rated_metrics(expr):
            assert series[metric][1] in ("counter", "histogram"), f"{title}: rate() of gauge {metric}"
        if "histogram_quantile" in expr:
            assert "_bucket" in expr and re.search(r"by \([^)]*\ble\b", expr), f"{title}: quantile without le"
    assert seen == set(scraped), f"families without a panel: {set(scraped) - seen}"


def test_the_checks_catch_a_wrong_query(scraped: dict[str, tuple[str, set[str]]]) -> None:
    """The helpers the test relies on see a renamed metric, a foreign label and a rated gauge."""
    series = series_names(scraped)
    assert "kretrain_retrain_jobs" not in series and "kretrain_decisions" not in series
    assert used_labels('sum by (phase) (kretrain_retrainjobs{state="Failed", job=~"$job"})') == {
        "phase",
        "state",
        "job",
    }
    assert rated_metrics("rate(kretrain_retrainjobs[5m])") == {"kretrain_retrainjobs"}
    assert series["kretrain_retrainjobs"][1] == "gauge"


def test_dashboard_shape() -> None:
    dash = dashboard()
    assert dash["uid"] == "kretrain-operator" and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["description"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)) and refs, panel["title"]
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
    names = {v["name"] for v in dash["templating"]["list"]}
    assert names == {"datasource", "job"}
    text = DASHBOARD.read_text()
    assert "http://" not in text and "https://" not in text, "no external links or assets"


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm_python.Chart.load(CHART) as chart:
        out = chart.render(values, name="kretrain", namespace="kretrain-system")
    return [d for path, text in out.items() if not path.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d]


def test_chart_has_no_dashboard_by_default() -> None:
    assert not [d for d in render({}) if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]


def test_chart_ships_the_dashboard_when_enabled() -> None:
    values = {
        "metrics": {
            "grafanaDashboard": {"enabled": True, "namespace": "monitoring", "annotations": {"grafana_folder": "MLOps"}}
        }
    }
    maps = [d for d in render(values) if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "kretrain-dashboard"]
    assert len(maps) == 1
    cm = maps[0]
    kubernetes_validate.validate(cm, "1.33", strict=True)
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "MLOps"}
    assert json.loads(cm["data"]["kretrain-operator.json"]) == dashboard()


@pytest.mark.parametrize(
    ("values", "where"),
    [
        pytest.param({"metrics": {"grafanaDashboard": {"enabled": "yes"}}}, "enabled", id="enabled-not-bool"),
        pytest.param({"metrics": {"grafanaDashboard": {"enable": True}}}, "enable", id="typo"),
        pytest.param({"metrics": {"grafanaDashboard": {"namespace": "Bad_NS"}}}, "namespace", id="bad-namespace"),
        pytest.param(
            {"metrics": {"grafanaDashboard": {"labels": {"grafana_dashboard": 1}}}},
            "grafana_dashboard",
            id="label-not-string",
        ),
    ],
)
def test_chart_schema_refuses_bad_dashboard_values(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=where):
        render(values)


def test_lint_strict_with_the_dashboard_on() -> None:
    report = helm_python.lint(
        CHART, {"metrics": {"grafanaDashboard": {"enabled": True}}}, strict=True, namespace="kretrain-system"
    )
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


WARNINGS = [f"class 'c{i}' (id {i}) is first labelled in new era 'e3'" for i in range(7)]


def test_the_operator_shows_the_data_findings(observed: Observed) -> None:
    """DataReady names the counts and warnings; at most 5 DataWarning Events, the last counting the rest."""
    ready = next(c for c in observed.good["conditions"] if c["type"] == "DataReady")
    assert (ready["status"], ready["reason"]) == ("True", "DataWarnings")
    assert "findings: error undecodable_image 2, warning class_new_in_era 7" in ready["message"]
    assert (
        "7 warnings: class 'c0'" in ready["message"]
        and "e3: 8 used (8 train, 0 val, 0 test), 2 excluded" in ready["message"]
    )
    got = sorted(m for t, r, m in observed.events if r == "DataWarning" and t == "Warning")
    assert got == sorted([*WARNINGS[:4], "3 more data warnings: see the run's report.json"])


def test_training_progress_is_exported_while_training(observed: Observed) -> None:
    """The training run's status.progress as gauges; finished runs export none (they left the Training state)."""
    labels = f'retrainjob="train",retrainjob_namespace="{NS}"'
    values = {
        name: float(line.rsplit(" ", 1)[1])
        for line in observed.text.splitlines()
        for name in ("kretrain_training_epoch", "kretrain_training_epochs", "kretrain_training_eta_seconds")
        if line.startswith(f"{name}{{{labels}}} ")
    }
    assert values == {
        "kretrain_training_epoch": 3.0,
        "kretrain_training_epochs": 10.0,
        "kretrain_training_eta_seconds": 120.0,
    }
    assert 'retrainjob="good"' not in observed.text and 'retrainjob="wait"' not in observed.text
