"""The real operator against the emulator: a RetrainJob outside the policy fails, and no S3 call leaves for it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from emulator.client import ApiStatusError
from emulator.operator import OperatorProcess
from emulator.scenario import Cluster, conditions, operator_for, running_cluster, settled, started

NS = "policy"
NO_SUCH_KEY = b'<?xml version="1.0"?><Error><Code>NoSuchKey</Code><Message>none</Message></Error>'


class CaptureS3:
    """An HTTP server on 127.0.0.1 that records every request (an attacker's 'S3 endpoint') and answers 404."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                capture.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(404)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(NO_SUCH_KEY)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(NO_SUCH_KEY)

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _answer

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def captures() -> Iterator[tuple[CaptureS3, CaptureS3]]:
    """(an endpoint the admin allowed, an endpoint nobody allowed)."""
    allowed, hostile = CaptureS3(), CaptureS3()
    yield allowed, hostile
    allowed.close()
    hostile.close()


@pytest.fixture(scope="module")
def stack(
    s3: Any, tmp_path_factory: pytest.TempPathFactory, captures: tuple[CaptureS3, CaptureS3]
) -> Iterator[tuple[Cluster, OperatorProcess]]:
    with running_cluster(s3, tmp_path_factory.mktemp("policy"), [NS]) as cluster:
        op = operator_for(cluster, s3, tmp_path_factory.mktemp("op") / "operator.log", [NS])
        op.env["KRETRAIN_ALLOWED_S3_ENDPOINTS"] = captures[0].url  # the admin's policy: one extra endpoint
        op.start().wait_ready()
        yield cluster, op
        op.stop()
        assert "Traceback" not in op.log.read_text(), op.tail(200)


def hostile_specs(hostile: str) -> dict[str, tuple[dict[str, Any], str]]:
    """RetrainJob name -> (spec fields, the field the Failed condition must name)."""
    cases = [
        ("ssrf-endpoint", {"storage": {"endpoint": hostile}}, "spec.storage.endpoint"),
        ("ssrf-imds", {"storage": {"endpoint": "http://169.254.169.254"}}, "spec.storage.endpoint"),
        ("foreign-image", {"resources": {"gpus": 1, "image": "evil.io/miner:1"}}, "spec.resources.image"),
        ("foreign-secret", {"storage": {"credentialsSecret": "payments-db"}}, "spec.storage.credentialsSecret"),
        ("critical-priority", {"resources": {"gpus": 1, "priorityClassName": "system-cluster-critical"}}, "spec.resources.priorityClassName"),
        (
            "control-plane",
            {"resources": {"gpus": 1, "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}},
            "spec.resources.tolerations[0].key",
        ),
    ]  # fmt: skip
    return {name: (spec, field) for name, spec, field in cases}


HOSTILE = list(hostile_specs("http://b:2"))


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_retrainjob_fails_without_job_or_s3_call(
    stack: tuple[Cluster, OperatorProcess], captures: tuple[CaptureS3, CaptureS3], name: str
) -> None:
    cluster, op = stack
    allowed, hostile = captures
    spec, field = hostile_specs(hostile.url)[name]
    before = len(allowed.requests)
    obj = cluster.create_rtj(NS, name, f"m-{name}", **spec)
    status = settled(cluster, op, NS, name)
    assert status["state"] == "Failed"
    failed = conditions(status)["Failed"]
    assert failed["reason"] == "InvalidSpec"
    assert (
        failed["message"].startswith("invalid spec: outside the operator policy: ")
        and f"{field}: " in failed["message"]
    )
    assert cluster.jobs_created_for(obj["metadata"]["uid"]) == 0
    assert hostile.requests == [], "the operator sent a request to an endpoint outside the policy"
    assert len(allowed.requests) == before, "a refused spec must not reach any endpoint"


def test_allowed_endpoint_is_used_with_the_operators_credentials(
    s3: Any, stack: tuple[Cluster, OperatorProcess], captures: tuple[CaptureS3, CaptureS3]
) -> None:
    """The capture is not vacuous: an endpoint in the policy does get the operator's signed registry reads."""
    cluster, op = stack
    allowed, hostile = captures
    cluster.create_rtj(NS, "allowed-endpoint", "m-allowed", storage={"endpoint": allowed.url})
    status = started(cluster, op, NS, "allowed-endpoint")
    assert status["state"] == "Training"
    [job] = [j for j in cluster.jobs(NS) if j["metadata"]["name"] == status["jobName"]]
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_ENDPOINT_URL"] == allowed.url
    signed = [h.get("authorization", "") for _, _, h in allowed.requests]  # names are case-insensitive
    assert signed and all(f"Credential={s3.server.access_key}/" in a for a in signed)
    assert hostile.requests == []


def test_userinfo_endpoint_is_refused_at_admission(
    stack: tuple[Cluster, OperatorProcess], captures: tuple[CaptureS3, CaptureS3]
) -> None:
    """`http://<allowed>@<hostile>` connects to the hostile host: the CRD's schema refuses it on create."""
    cluster, _ = stack
    allowed, hostile = captures
    trick = f"{allowed.url}@{hostile.url.removeprefix('http://')}"
    with pytest.raises(ApiStatusError) as exc:
        cluster.create_rtj(NS, "ssrf-userinfo", "m-userinfo", storage={"endpoint": trick})
    assert exc.value.code == 422 and "storage.endpoint" in str(exc.value)
    assert cluster.rtj(NS, "ssrf-userinfo") is None
    assert hostile.requests == []
