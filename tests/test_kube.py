"""kretrain.operator.kube on the official client's typed APIs: what goes on the wire, what comes back, and how each
failure becomes one KubeError (against the emulator, a recording server and a closed port)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulator.client import Client, job_path
from emulator.recorder import Recorder, recording_server
from emulator.server import EmulatorServer
from kretrain.api import API_VERSION, KIND
from kretrain.operator.kube import Kube, KubeError
from kretrain.operator.schedule_kube import RunsApi
from kretrain.operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[1]
NS = "team-a"


def job(name: str, namespace: str = NS, **labels: str) -> dict[str, Any]:
    """A minimal valid batch/v1 Job."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}], "restartPolicy": "Never"}}},
    }


def run(name: str, namespace: str = NS) -> dict[str, Any]:
    """A RetrainJob the CRD's schema accepts (it is never reconciled here)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": {"schedule": "s"}},
        "spec": {"model": "m", "dataset": {"uri": "s3://data/set", "eras": ["e1"]}},
    }


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[RunsApi, Client]]:
    """An emulator with the CRDs and two namespaces; the operator's client and a plain test client on it."""
    with EmulatorServer() as server:
        client = Client(server.url)
        for name in ("retrainjob.yaml", "retrainschedule.yaml"):
            client.create(
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                yaml.safe_load((ROOT / "crds" / name).read_text()),
            )
        for ns in (NS, "team-b"):
            client.ensure_namespace(ns)
        yield RunsApi(OperatorSettings(kube_url=server.url)), client


@pytest.fixture
def recorder() -> Iterator[tuple[Kube, Recorder]]:
    with recording_server() as rec:
        yield RunsApi(OperatorSettings(kube_url=rec.url)), rec


# ---- on the wire ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "segment"),
    [("a/b", "a%2Fb"), ("../x", "..%2Fx"), ("x?y=1", "x%3Fy%3D1"), ("x#y", "x%23y"), ("a b", "a%20b"),
     ("%2F", "%252F"), ("ns/pods/p", "ns%2Fpods%2Fp")],
    ids=["slash", "dot-dot", "query", "fragment", "space", "pre-encoded", "sub-path"],
)  # fmt: skip
def test_path_parameters_are_one_encoded_segment(recorder: tuple[Kube, Recorder], value: str, segment: str) -> None:
    """Behind the DNS-1123 checks, the client itself encodes every path parameter as one segment ('/' included)."""
    kube, rec = recorder
    kube._call(kube.batch.read_namespaced_job, value, NS)
    kube._call(kube.core.list_namespaced_pod, value)
    assert [s.raw_path for s in rec.sent] == [
        f"/apis/batch/v1/namespaces/{NS}/jobs/{segment}",
        f"/api/v1/namespaces/{segment}/pods",
    ]


def test_requests_as_sent(recorder: tuple[Kube, Recorder]) -> None:
    """Methods, media types, user agent, query and body of each call."""
    kube, rec = recorder
    assert isinstance(kube, RunsApi)
    kube.find_jobs(NS, "a=b,c in (x,y)")
    kube.create(job("j"))
    kube.patch_job(NS, "j", {"spec": {"suspend": True}})
    kube.delete_run(NS, "r")
    wire = [(s.method, s.raw_path, s.headers.get("Content-Type"), s.headers["User-Agent"]) for s in rec.sent]
    assert wire == [
        ("GET", f"/apis/batch/v1/namespaces/{NS}/jobs?labelSelector=a%3Db%2Cc%20in%20%28x%2Cy%29", None,
         "kretrain-operator/0.1"),
        ("POST", f"/apis/batch/v1/namespaces/{NS}/jobs", "application/json", "kretrain-operator/0.1"),
        ("PATCH", f"/apis/batch/v1/namespaces/{NS}/jobs/j", "application/merge-patch+json", "kretrain-operator/0.1"),
        ("DELETE", f"/apis/kretrain.dev/v1alpha1/namespaces/{NS}/retrainjobs/r?propagationPolicy=Background", None,
         "kretrain-operator/0.1"),
    ]  # fmt: skip
    assert json.loads(rec.sent[1].body) == job("j")  # the operator's dict, unchanged by the client's models
    assert json.loads(rec.sent[2].body) == {"spec": {"suspend": True}}
    assert rec.sent[3].body == b""


@pytest.mark.parametrize(
    "over",
    [{}, {"resources": {"gpus": 1, "cache": {"ephemeral": {"size": "20Gi", "storageClassName": "fast"}}}}],
    ids=["default", "ephemeral-cache"],
)
def test_the_operators_job_and_configmap_go_out_unchanged(
    recorder: tuple[Kube, Recorder], over: dict[str, Any]
) -> None:
    """The typed create methods validate the body against the client's V1Job/V1ConfigMap models: the Job the
    operator builds passes, and what is sent is exactly the dict (nothing dropped, renamed or coerced)."""
    from test_jobs import SETTINGS, build, make_spec

    from kretrain.operator import jobs

    kube, rec = recorder
    spec = make_spec(**over)
    job = build(spec)
    configmap = jobs.build_configmap("ns-rtj-0123abcd", "ns", jobs.resolve_spec(spec, SETTINGS), {"a": "b"}, "0" * 64)
    kube.create(job)
    kube.create(configmap)
    assert [json.loads(s.body) for s in rec.sent] == [json.loads(json.dumps(job)), json.loads(json.dumps(configmap))]


def test_answers_are_the_servers_json(cluster: tuple[RunsApi, Client]) -> None:
    """Plain dicts with camelCase keys and every field the server sent, unknown ones included."""
    kube, client = cluster
    created, fresh = kube.create(job("plain", app="x"))
    assert fresh and created["metadata"]["creationTimestamp"].endswith("Z") and "resourceVersion" in created["metadata"]
    client.patch(job_path(NS, "plain", "status"), {"status": {"active": 1, "futureField": {"kept": True}}})
    got = kube.get_job(NS, "plain")
    assert got is not None and got["status"] == {"active": 1, "futureField": {"kept": True}}
    assert got["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    patched = kube.patch_job(NS, "plain", {"spec": {"suspend": True}})
    assert patched["spec"]["suspend"] is True and patched["metadata"]["generation"] == 2
    assert [j["metadata"]["name"] for j in kube.find_jobs(NS, "app=x")] == ["plain"]
    assert kube.find_jobs(NS, "app in (y,z)") == [] and kube.find_jobs("team-b", "app=x") == []


def test_schedule_runs_round_trip(cluster: tuple[RunsApi, Client]) -> None:
    kube, _ = cluster
    assert kube.create_run(run("nightly-1")) is True
    assert kube.create_run(run("nightly-1")) is False  # 409: created before, never twice
    assert [r["metadata"]["name"] for r in kube.list_runs(NS, "schedule=s")] == ["nightly-1"]
    kube.delete_run(NS, "nightly-1")
    kube.delete_run(NS, "nightly-1")  # gone already is fine
    assert kube.list_runs(NS, "schedule=s") == []


# ---- failures: one translation ------------------------------------------------------------------------------
def _emulator_failures(kube: RunsApi) -> dict[str, Any]:
    return {
        "patch-missing-job": lambda: kube.patch_job(NS, "nope", {"spec": {"suspend": True}}),
        "create-in-missing-namespace": lambda: kube.create(job("j", namespace="absent")),
        "run-against-the-schema": lambda: kube.create_run({**run("bad"), "spec": {"model": 3}}),
    }


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [("patch-missing-job", 404, "NotFound"), ("create-in-missing-namespace", 404, "NotFound"),
     ("run-against-the-schema", 422, "Invalid")],
    ids=["patch-missing-job", "create-in-missing-namespace", "run-against-the-schema"],
)  # fmt: skip
def test_emulator_errors_become_kube_errors(
    cluster: tuple[RunsApi, Client], case: str, status: int, reason: str
) -> None:
    kube, _ = cluster
    with pytest.raises(KubeError) as caught:
        _emulator_failures(kube)[case]()
    assert (caught.value.status, caught.value.reason, caught.value.retryable) == (status, reason, False)
    assert caught.value.message and str(status) in str(caught.value)


def status_doc(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message,
            "code": code}  # fmt: skip


ANSWERS = [
    ("forbidden", 403, status_doc(403, "Forbidden", 'jobs.batch is forbidden: User "x"'), "Forbidden", False),
    ("not-found", 404, status_doc(404, "NotFound", 'jobs.batch "j" not found'), "NotFound", False),
    ("conflict", 409, status_doc(409, "Conflict", "the object has been modified"), "Conflict", True),
    ("invalid", 422, status_doc(422, "Invalid", "spec.template: Required value"), "Invalid", False),
    ("throttled", 429, status_doc(429, "TooManyRequests", "too many requests"), "TooManyRequests", True),
    ("timeout", 408, status_doc(408, "Timeout", "request timed out"), "Timeout", True),
    ("internal", 500, status_doc(500, "InternalError", "etcdserver: leader changed"), "InternalError", True),
    ("unavailable", 503, status_doc(503, "ServiceUnavailable", "apiserver is shutting down"), "ServiceUnavailable",
     True),
    ("proxy-not-json", 502, "<html>bad gateway</html>", "Bad Gateway", True),
    ("status-without-reason", 500, {"kind": "Status", "message": "m"}, "Internal Server Error", True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "body", "reason", "retryable"), [a[1:] for a in ANSWERS], ids=[a[0] for a in ANSWERS]
)
def test_error_answers_are_translated_once(
    recorder: tuple[Kube, Recorder], status: int, body: Any, reason: str, retryable: bool
) -> None:
    """Every public call fails the same way for the same answer: KubeError(status, reason, message, retryable)."""
    kube, rec = recorder
    rec.status, rec.reply = status, body
    message = body["message"] if isinstance(body, dict) else json.dumps(body)
    calls = {
        "find_jobs": lambda: kube.find_jobs(NS, "a=b"),
        "create": lambda: kube.create(job("j")),
        "patch_job": lambda: kube.patch_job(NS, "j", {}),
        "job_pods": lambda: kube.job_pods(NS, "j"),
    }
    if status != 404:  # get_job answers None to 404 (create answers (obj, False) to 409 AlreadyExists only)
        calls["get_job"] = lambda: kube.get_job(NS, "j")
    for name, call in calls.items():
        with pytest.raises(KubeError) as caught:
            call()
        got = caught.value
        assert (got.status, got.reason, got.message, got.retryable) == (status, reason, message, retryable), name


def test_404_and_409_are_answers_not_errors(recorder: tuple[Kube, Recorder]) -> None:
    kube, rec = recorder
    rec.status, rec.reply = 404, status_doc(404, "NotFound", "gone")
    assert kube.get_job(NS, "j") is None
    rec.status, rec.reply = 409, status_doc(409, "AlreadyExists", "exists")
    assert kube.create(job("j")) == (job("j"), False)


def test_an_oversized_error_message_is_cut() -> None:
    with recording_server() as rec:
        rec.status, rec.reply = 500, status_doc(500, "InternalError", "x" * 10_000)
        with pytest.raises(KubeError) as caught:
            Kube(OperatorSettings(kube_url=rec.url)).find_jobs(NS, "a=b")
    assert len(caught.value.message) == 500


def test_an_unreachable_server_is_status_0_and_retryable() -> None:
    with socket.socket() as sock:  # a port nobody listens on (bound, never listening)
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        kube = Kube(OperatorSettings(kube_url=url))
        for call in (lambda: kube.get_job(NS, "j"), lambda: kube.create(job("j")), lambda: kube.job_pods(NS, "j")):
            with pytest.raises(KubeError) as caught:
                call()
            assert caught.value.status == 0 and caught.value.retryable
            assert "Connection refused" in caught.value.message or "Errno 111" in caught.value.message
