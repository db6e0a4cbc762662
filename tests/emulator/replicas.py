"""Peered `kretrain operator` replicas started as the chart's Deployment runs them (replicaCount > 1)."""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any

import yaml

from emulator.client import Client, path
from emulator.operator import OperatorProcess, free_port

ROOT = Path(__file__).resolve().parent.parent.parent
CHART = ROOT / "charts" / "kretrain"
RESUMED = "Resuming operations after the pause"
PAUSED = ("Pausing operations in favour of", "Pausing all operators, including self")
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
HOST_LOCAL = {"KRETRAIN_KUBE_URL", "KRETRAIN_METRICS_PORT"}
"""Env the test sets per process, not from the chart: the emulator's URL (no service account here) and a free
metrics port (every pod of the Deployment gets the same containerPort; the replicas here share one host)."""


def render_chart(values: dict[str, Any], namespace: str = "kretrain-system") -> list[dict[str, Any]]:
    """Every object the chart renders with `values` (as tests/test_chart.py renders it)."""
    import helm_python

    chart = helm_python.Chart.load(CHART)
    try:
        out = chart.render(values, name="kretrain", namespace=namespace)
    finally:
        chart.close()
    return [d for p, text in out.items() if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d]


def install_peering(client: Client, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Create the kopf peering CRDs (the chart's crds/) and the peering objects the chart rendered."""
    for crd in yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text()):
        if crd and client.get_or_none(f"{CRDS}/{crd['metadata']['name']}") is None:
            client.create(CRDS, crd)
    objs = [d for d in docs if d["kind"] in ("KopfPeering", "ClusterKopfPeering")]
    for obj in objs:
        ns = obj["metadata"].get("namespace")
        plural = "kopfpeerings" if obj["kind"] == "KopfPeering" else "clusterkopfpeerings"
        client.create(path("kopf.dev", "v1", plural, ns), obj)
    return objs


def deployment_command(docs: list[dict[str, Any]], pod: str) -> tuple[list[str], dict[str, str]]:
    """The operator container's args and env as the Deployment gives them to pod `pod`.

    fieldRef metadata.name (POD_ID, kopf's peering identity) becomes `pod`; secretKeyRef entries are left out
    (the test's environment has the S3 keys); any other valueFrom fails, so a chart change is noticed here.
    """
    [deploy] = [d for d in docs if d["kind"] == "Deployment"]
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        source = entry.get("valueFrom")
        if source is None:
            env[entry["name"]] = str(entry.get("value", ""))
        elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[entry["name"]] = pod
        elif "secretKeyRef" not in source:
            raise ValueError(f"the test cannot give {entry['name']} its value: {source}")
    args = list(container.get("command", [])[1:] or []) + list(container.get("args", []))
    return args, env


def replica(docs: list[dict[str, Any]], kube_url: str, log: Path, pod: str, env: dict[str, str]) -> OperatorProcess:
    """One replica (not started): the Deployment's args and env, `env` (S3 keys) under them; the liveness
    endpoint and the metrics port moved to free ports (one host, several pods)."""
    args, chart_env = deployment_command(docs, pod)
    for i, arg in enumerate(args):
        if arg.startswith("http://0.0.0.0:"):  # --liveness URL: same port in every pod
            args[i] = f"http://127.0.0.1:{free_port()}/{arg.split('/', 3)[3]}"
    namespaces = [ns for ns in chart_env.get("KRETRAIN_NAMESPACES", "").split(",") if ns]
    merged = {**env, **{k: v for k, v in chart_env.items() if k not in HOST_LOCAL}}
    return OperatorProcess(kube_url, log, namespaces, merged, args=args)


def log_since_start(op: OperatorProcess) -> str:
    """The replica's log since its latest start."""
    return op.log.read_text(errors="replace").rsplit("===== start #", 1)[-1] if op.log.exists() else ""


def is_active(op: OperatorProcess) -> bool:
    """Whether kopf lets the replica handle resources: it starts paused under peering and logs each change."""
    text = log_since_start(op)
    return op.alive and text.rfind(RESUMED) > max(text.rfind(p) for p in PAUSED)


def resumed_at(op: OperatorProcess) -> datetime.datetime | None:
    """When the replica last resumed since its start (kopf's log line; local time, ms)."""
    lines = [line for line in log_since_start(op).splitlines() if RESUMED in line]
    if not lines:
        return None
    local = datetime.datetime.strptime(lines[-1][:23], "%Y-%m-%d %H:%M:%S,%f")
    return local.astimezone(datetime.UTC)


def expires(record: dict[str, Any]) -> datetime.datetime:
    """When a peering record goes stale: its lastseen plus its lifetime."""
    return datetime.datetime.fromisoformat(record["lastseen"]) + datetime.timedelta(seconds=record["lifetime"])


def pod_of(op: OperatorProcess) -> str:
    return op.env["POD_ID"]


class Replicas:
    """Peered replicas in one namespace's peering object: start, see who is active, stop or kill."""

    def __init__(self, client: Client, ops: list[OperatorProcess], peering: str, namespace: str | None) -> None:
        self.client, self.ops, self.peering, self.namespace = client, ops, peering, namespace

    def status(self) -> dict[str, dict[str, Any]]:
        """The peering object's status: identity (POD_ID) -> priority, lifetime, lastseen (stale ones too)."""
        plural = "kopfpeerings" if self.namespace else "clusterkopfpeerings"
        obj = self.client.get_or_none(path("kopf.dev", "v1", plural, self.namespace, self.peering)) or {}
        status: dict[str, dict[str, Any]] = obj.get("status") or {}
        return status

    def records(self) -> dict[str, dict[str, Any]]:
        """The live records of the peering object's status."""
        now = datetime.datetime.now(datetime.UTC)
        return {pod: rec for pod, rec in self.status().items() if expires(rec) > now}

    def settled(self) -> OperatorProcess | None:
        """The active replica once the peering has settled: every running replica has a live record, exactly one
        is active and it holds the highest priority among them (stable: the others only resume once it goes)."""
        records, alive = self.records(), [op for op in self.ops if op.alive]
        if not alive or any(pod_of(op) not in records for op in alive):
            return None
        active = [op for op in alive if is_active(op)]
        top = max(alive, key=lambda op: records[pod_of(op)]["priority"])
        prios = [records[pod_of(op)]["priority"] for op in alive]
        return top if active == [top] and prios.count(max(prios)) == 1 else None

    def wait_settled(self, timeout: float = 30.0) -> OperatorProcess:
        """Until exactly one running replica acts (see `settled`); returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (op := self.settled()) is not None:
                return op
            time.sleep(0.1)
        raise AssertionError(f"the peering did not settle in {timeout}s: records {self.records()}\n"
                             + "\n".join(f"--- {pod_of(op)} ---\n{op.tail(30)}" for op in self.ops))  # fmt: skip

    def start(self, op: OperatorProcess, timeout: float = 90.0) -> None:
        """Start one replica and wait until its own record (written after this start: a replica restarted under
        the same POD_ID may find its old one) is in the peering object, so that a replica started after it
        lists the peering object with this record in it and never acts on a partial view."""
        began = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=0.01)
        op.start()
        op.wait_ready(timeout)
        deadline = time.monotonic() + timeout

        def fresh() -> bool:
            record = self.records().get(pod_of(op))
            return record is not None and datetime.datetime.fromisoformat(record["lastseen"]) >= began

        while not fresh():
            assert op.alive and time.monotonic() < deadline, op.tail()
            time.sleep(0.1)

    def start_all(self, timeout: float = 90.0) -> OperatorProcess:
        """Start the replicas that are not running, one after the other (each sees the running ones' records in
        its first list of the peering object); returns the active one once the peering settled. `timeout` is a
        ceiling for each start: the imports alone take half a minute on a machine loaded 8 processes per core."""
        for op in self.ops:
            if not op.alive:
                op.prestart()
        for op in self.ops:
            if not op.alive:
                self.start(op, timeout)
                if sum(o.alive for o in self.ops) == 1:
                    self.wait_settled(timeout)
        return self.wait_settled(timeout)

    def standbys(self) -> list[OperatorProcess]:
        return [op for op in self.ops if op.alive and not is_active(op)]

    def stop(self) -> None:
        for op in self.ops:
            op.stop()


def chart_replicas(client: Client, kube_url: str, tmp: Path, values: dict[str, Any], env: dict[str, str]) -> Replicas:
    """The chart rendered with `values` (replicaCount > 1): its peering objects created in the emulator and one
    (unstarted) replica per `replicaCount`, logs in tmp/operator-<i>.log, POD_ID kretrain-operator-<i>."""
    docs = render_chart(values)
    objs = install_peering(client, docs)
    [deploy] = [d for d in docs if d["kind"] == "Deployment"]
    n = int(deploy["spec"]["replicas"])
    ops = [replica(docs, kube_url, tmp / f"operator-{i}.log", f"kretrain-operator-{i}", env) for i in range(n)]
    assert objs, "the chart rendered no peering object"
    namespaces = {o["metadata"].get("namespace") for o in objs}
    peering = ops[0].env.get("KRETRAIN_PEERING", "")
    return Replicas(client, ops, peering, sorted(namespaces, key=str)[0])
