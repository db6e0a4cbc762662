"""Drive RetrainJobs against the emulator + registry in tests: a Cluster helper and waiting functions."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from emulator import sim
from emulator.client import Client, job_path, path, rtj_path
from emulator.operator import OperatorProcess
from emulator.server import EmulatorServer
from kretrain.api import API_VERSION, KIND, RunReport
from kretrain.operator import jobs
from kretrain.registry import Registry
from kretrain.store import ObjectStore

ROOT = Path(__file__).resolve().parent.parent.parent

ERAS = ["e1", "e2", "e3"]


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 20.0, op: OperatorProcess | None = None) -> Any:
    """Poll until fn() is truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n--- operator log ---\n{op.tail()}" if op else ""))


class Cluster:
    """The emulator, a registry bucket in SeaweedFS, and helpers to drive RetrainJobs."""

    def __init__(self, server: EmulatorServer, registry: Registry, registry_uri: str, tmp: Path) -> None:
        self.server, self.registry, self.registry_uri, self.tmp = server, registry, registry_uri, tmp
        self.client = Client(server.url)

    def create_rtj(self, ns: str, name: str, model: str, **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "model": model,
                "dataset": {"uri": "s3://data/set", "eras": ERAS},
                "resources": {"gpus": 1},
                "promotion": {"minImprovement": {"absolute": 0.01}, "maxEraRegression": 0.02},
                **spec,
            },
        }
        created: dict[str, Any] = self.client.create(rtj_path(ns), body)
        return created

    def train(
        self, model: str, run_id: str, candidate: dict[str, float], incumbent: dict[str, float] | None
    ) -> RunReport:
        """The trainer's part of run `run_id` (sim.train): its report signed with the run's stage key, read from the
        run's ConfigMap as the pod reads it."""
        return sim.train(
            self.registry, model, run_id, candidate, incumbent, self.tmp, key=sim.stage_key(self.client, run_id)
        )

    def rtj(self, ns: str, name: str) -> dict[str, Any] | None:
        obj: dict[str, Any] | None = self.client.get_or_none(rtj_path(ns, name))
        return obj

    def status(self, ns: str, name: str) -> dict[str, Any]:
        return (self.rtj(ns, name) or {}).get("status") or {}

    def jobs(self, ns: str) -> list[dict[str, Any]]:
        return self.client.list(job_path(ns), f"{jobs.LABEL_MANAGED_BY}={jobs.MANAGED_BY}")

    def jobs_ever_created(self, ns: str) -> int:
        """ADDED events of Jobs in `ns` since the emulator started (a re-created Job would count twice)."""

        def count() -> int:
            log = self.server.emulator.logs[("batch", "v1", "jobs")]
            return sum(1 for _, e in log if e["type"] == "ADDED" and e["object"]["metadata"]["namespace"] == ns)

        n: int = self.server.call(count)
        return n

    def events(self, ns: str) -> list[tuple[str, str, str]]:
        return [
            (e.get("type"), e["reason"], e.get("message", "")) for e in self.client.list(path("", "v1", "events", ns))
        ]

    def promotions(self, model: str, version: str) -> int:
        return sum(1 for h in self.registry.history(model) if h.version == version and h.action == "promote")

    def jobs_created_for(self, uid: str) -> int:
        """ADDED events of Jobs labelled with a RetrainJob's uid (a re-created Job would count twice)."""

        def count() -> int:
            log = self.server.emulator.logs[("batch", "v1", "jobs")]
            return sum(
                1
                for _, e in log
                if e["type"] == "ADDED" and (e["object"]["metadata"].get("labels") or {}).get(jobs.LABEL_UID) == uid
            )

        n: int = self.server.call(count)
        return n


def started(cluster: Cluster, op: OperatorProcess, ns: str, name: str) -> dict[str, Any]:
    """Wait until the operator created the Job and recorded it; return the status."""
    status: dict[str, Any] = wait_for(
        f"{ns}/{name} to have a Job", lambda: (s := cluster.status(ns, name)).get("jobName") and s, op=op
    )
    return status


def settled(cluster: Cluster, op: OperatorProcess, ns: str, name: str, timeout: float = 20) -> dict[str, Any]:
    status: dict[str, Any] = wait_for(
        f"{ns}/{name} to reach a terminal state",
        lambda: (s := cluster.status(ns, name)).get("state") in ("Promoted", "Rejected", "Failed") and s,
        timeout,
        op,
    )
    return status


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions", [])}


@contextlib.contextmanager
def running_cluster(s3: Any, tmp: Path, namespaces: list[str], crd: bool = True) -> Iterator[Cluster]:
    """An emulator with `namespaces` (and the RetrainJob and RetrainSchedule CRDs unless crd=False), and a fresh
    registry bucket."""
    server = EmulatorServer()
    server.start()
    client = Client(server.url)
    if crd:
        for name in ("retrainjob.yaml", "retrainschedule.yaml"):  # as the chart installs them
            client.create(
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                yaml.safe_load((ROOT / "crds" / name).read_text()),
            )
    for ns in namespaces:
        client.ensure_namespace(ns)
    bucket = s3.new_bucket("reg")
    store = ObjectStore(endpoint_url=s3.endpoint, access_key=s3.server.access_key, secret_key=s3.server.secret_key)
    uri = f"s3://{bucket}/registry"
    try:
        yield Cluster(server, Registry(store, uri), uri, tmp)
    finally:
        server.stop()


def create_s3_secret(cluster: Cluster, s3: Any, namespace: str, name: str = "s3-creds") -> None:
    """The Secret a RetrainJob's storage.credentialsSecret names: the local S3 server's keys."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {"AWS_ACCESS_KEY_ID": s3.server.access_key, "AWS_SECRET_ACCESS_KEY": s3.server.secret_key},
    }
    cluster.client.create(path("", "v1", "secrets", namespace), secret)


def operator_for(cluster: Cluster, s3: Any, log: Path, namespaces: list[str]) -> OperatorProcess:
    """An operator process (not started) wired to the cluster's emulator and registry."""
    env = {**s3.env(), "KRETRAIN_REGISTRY": cluster.registry_uri, "KRETRAIN_S3_ENDPOINT": s3.endpoint}
    return OperatorProcess(cluster.server.url, log, namespaces, env)
