"""Telling the serving side, end to end: the real operator, the API emulator with KServe's CRD, SeaweedFS and a local
HTTP receiver. A promotion delivers one signed notice and patches the InferenceService; a 500 is retried; a rejected
run (or a forged Promoted status) tells nobody; a failing webhook never changes the decision."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulator import path, rtj_path, sim
from emulator.operator import OperatorProcess
from emulator.scenario import Cluster, operator_for, running_cluster, settled, started, wait_for
from kretrain.api.conditions import Reason
from kretrain.operator import notify

ROOT = Path(__file__).resolve().parent.parent
KEY = b"an HMAC key of 32 bytes, shared!"
SECRET = "kretrain-webhook"
INCUMBENT = {"e1": 0.50, "e2": 0.50, "e3": 0.40}
BETTER = {"e1": 0.55, "e2": 0.56, "e3": 0.50}
FORGETS = {"e1": 0.40, "e2": 0.55, "e3": 0.70}  # e1 drops by 0.10: rejected
NAMESPACES = ["serve-ok", "serve-retry", "serve-reject", "serve-down"]
ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")


class Receiver:
    """A local webhook: records every POST by path and answers with the path's next queued status (else 200)."""

    def __init__(self) -> None:
        self.answers: dict[str, list[int]] = {}
        self.got: list[tuple[str, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.got.append((self.path, dict(self.headers), body))
                queue = receiver.answers.get(self.path) or []
                self.send_response(queue.pop(0) if queue else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def posts(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for p, h, b in self.got if p == path]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture(scope="module")
def cluster(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(s3, tmp_path_factory.mktemp("weights"), NAMESPACES) as c:
        c.client.create(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            yaml.safe_load((ROOT / "tests" / "data" / "kserve-inferenceservice-crd.yaml").read_text()),
        )
        for ns in NAMESPACES:
            secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": ns},
                      "data": {"hmacKey": base64.b64encode(KEY).decode()}}  # fmt: skip
            c.client.create(path("", "v1", "secrets", ns), secret)
        yield c


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, s3: Any, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    op = operator_for(cluster, s3, tmp_path_factory.mktemp("op") / "operator.log", NAMESPACES)
    op.env.update(
        KRETRAIN_ALLOWED_WEBHOOK_HOSTS=receiver.origin, KRETRAIN_ALLOWED_WEBHOOK_SECRETS=SECRET,
        KRETRAIN_NOTIFY_RETRY_DELAY="1",
    )  # fmt: skip
    op.start().wait_ready()
    yield op
    op.stop()
    assert "Traceback" not in op.log.read_text(), op.tail(200)


def inference_service(cluster: Cluster, ns: str) -> dict[str, Any]:
    body = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "detector", "namespace": ns},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "onnx"}, "storageUri": "s3://old/v0/"}}}}  # fmt: skip
    created: dict[str, Any] = cluster.client.create(path(*ISVC, ns), body)
    return created


def run(
    cluster: Cluster, op: OperatorProcess, ns: str, hook: str, scores: dict[str, float], isvc: bool = False
) -> tuple[str, dict[str, Any]]:
    """A RetrainJob telling `hook` (and the InferenceService) about its promotion, trained to `scores`."""
    model = f"m-{ns}"
    sim.seed_incumbent(cluster.registry, model, "seed-1", INCUMBENT, cluster.tmp)
    serving: dict[str, Any] = {"webhook": {"url": hook, "secretRef": {"name": SECRET}}}
    if isvc:
        serving["inferenceService"] = {"name": "detector"}
    cluster.create_rtj(ns, "run", model, serving=serving)
    run_id = started(cluster, op, ns, "run")["runId"]
    cluster.train(model, run_id, scores, INCUMBENT)
    sim.complete_job(cluster.client, ns, run_id)
    return run_id, settled(cluster, op, ns, "run")


def incumbent(cluster: Cluster, model: str) -> str | None:
    ref = cluster.registry.incumbent(model)
    return ref.version if ref else None


def records(cluster: Cluster, ns: str) -> dict[str, dict[str, Any]]:
    return {r["kind"]: r for r in cluster.status(ns, "run").get("notifications") or []}


def finished(cluster: Cluster, op: OperatorProcess, ns: str, kinds: set[str]) -> dict[str, dict[str, Any]]:
    def done() -> dict[str, dict[str, Any]] | None:
        got = records(cluster, ns)
        return got if kinds <= {k for k, r in got.items() if r.get("delivered") or r.get("givenUp")} else None

    result: dict[str, dict[str, Any]] = wait_for(f"{ns}: {sorted(kinds)} delivered or given up", done, op=op)
    return result


def test_promotion_delivers_one_signed_notice_and_patches_the_inference_service(
    cluster: Cluster, operator: OperatorProcess, receiver: Receiver
) -> None:
    inference_service(cluster, "serve-ok")
    run_id, status = run(cluster, operator, "serve-ok", f"{receiver.origin}/ok?team=a", BETTER, isvc=True)
    assert status["state"] == "Promoted"
    got = finished(cluster, operator, "serve-ok", {"webhook", "inferenceService"})
    hook, isvc = got["webhook"], got["inferenceService"]
    assert hook["delivered"] and hook["attempts"] == 1 and hook["lastStatus"] == 200
    assert hook["target"] == receiver.origin.removeprefix("http://") and "nextAttemptAt" not in hook
    assert hook["noticeId"] == f"serve-ok/run/{run_id}/incumbent" == isvc["noticeId"]
    assert isvc["delivered"] and isvc["target"] == "detector"
    time.sleep(1.5)  # three more timer ticks: nothing is delivered twice
    [(headers, body)] = receiver.posts("/ok?team=a")
    assert notify.verify(body, headers[notify.SIGNATURE_HEADER], KEY, int(time.time()))
    assert not notify.verify(body, headers[notify.SIGNATURE_HEADER], b"x" * 32, int(time.time()))
    notice = notify.PromotionNotice.model_validate_json(body)
    assert (notice.id, notice.model, notice.version, notice.previous) == (hook["noticeId"], "m-serve-ok", run_id,
                                                                         "seed-1")  # fmt: skip
    assert headers[notify.ID_HEADER] == notice.id
    info = cluster.registry.version_info("m-serve-ok", run_id)
    assert notice.weights.uri == info.uri and notice.weights.sha256 == info.sha256
    patched = cluster.client.get(path(*ISVC, "serve-ok", "detector"))
    folder = f"{cluster.registry_uri}/m-serve-ok/versions/{run_id}/"
    assert patched["spec"]["predictor"]["model"] == {"modelFormat": {"name": "onnx"}, "storageUri": folder}
    assert patched["metadata"]["annotations"]["kretrain.dev/notice-id"] == notice.id
    reasons = [r for _, r, _ in cluster.events("serve-ok")]
    assert {Reason.PROMOTED, Reason.WEBHOOK_DELIVERED, Reason.INFERENCE_SERVICE_PATCHED} <= set(reasons)
    assert reasons.count(Reason.WEBHOOK_DELIVERED) == 1


def test_a_failing_webhook_is_retried_and_recorded_and_the_promotion_stands(
    cluster: Cluster, operator: OperatorProcess, receiver: Receiver
) -> None:
    receiver.answers["/retry"] = [500]
    run_id, status = run(cluster, operator, "serve-retry", f"{receiver.origin}/retry", BETTER)
    assert status["state"] == "Promoted" and incumbent(cluster, "m-serve-retry") == run_id
    first = wait_for("the first attempt", lambda: records(cluster, "serve-retry").get("webhook"), op=operator)
    if not first["delivered"]:  # recorded between the attempts: the failure and when the next one is due
        assert first["attempts"] == 1 and first["lastStatus"] == 500 and first["nextAttemptAt"]
    hook = finished(cluster, operator, "serve-retry", {"webhook"})["webhook"]
    assert hook["delivered"] and hook["attempts"] == 2 and hook["lastStatus"] == 200
    posts = receiver.posts("/retry")
    assert len(posts) == 2 and posts[0][1] == posts[1][1]  # the same body (same id) on the retry
    for headers, body in posts:
        assert notify.verify(body, headers[notify.SIGNATURE_HEADER], KEY, int(time.time()))
    final = cluster.status("serve-retry", "run")
    assert final["state"] == "Promoted" and final["decision"]["promoted"] is True
    assert incumbent(cluster, "m-serve-retry") == run_id and cluster.promotions("m-serve-retry",
                                                                                              run_id) == 1  # fmt: skip


def test_an_unreachable_webhook_never_blocks_or_undoes_the_promotion(
    cluster: Cluster, operator: OperatorProcess, receiver: Receiver
) -> None:
    receiver.answers["/down"] = [503, 503, 503, 503]
    run_id, status = run(cluster, operator, "serve-down", f"{receiver.origin}/down", BETTER)
    assert status["state"] == "Promoted"
    hook = wait_for("two failed attempts", lambda: (r := records(cluster, "serve-down").get("webhook")) and
                    r["attempts"] >= 2 and r, op=operator)  # fmt: skip
    assert not hook["delivered"] and hook["lastStatus"] == 503 and "HTTP 503" in hook["lastError"]
    assert hook["nextAttemptAt"] and not hook.get("givenUp")
    assert cluster.status("serve-down", "run")["state"] == "Promoted"
    assert incumbent(cluster, "m-serve-down") == run_id


def test_a_rejected_run_tells_nobody_even_with_a_forged_promoted_status(
    cluster: Cluster, operator: OperatorProcess, receiver: Receiver
) -> None:
    run_id, status = run(cluster, operator, "serve-reject", f"{receiver.origin}/reject", FORGETS)
    assert status["state"] == "Rejected"
    time.sleep(1.5)
    assert receiver.posts("/reject") == [] and "notifications" not in cluster.status("serve-reject", "run")
    # Anyone allowed to patch the status says Promoted: the registry's incumbent is still seed-1, so nothing is sent.
    cluster.client.patch(rtj_path("serve-reject", "run", "status"), {"status": {"state": "Promoted"}})
    hook = finished(cluster, operator, "serve-reject", {"webhook"})["webhook"]
    assert hook["givenUp"] and not hook["delivered"] and "no longer current" in hook["lastError"]
    assert receiver.posts("/reject") == []
    assert ("Warning", Reason.WEBHOOK_FAILED) in [(t, r) for t, r, _ in cluster.events("serve-reject")]
    assert incumbent(cluster, "m-serve-reject") == "seed-1"
    assert json.dumps(cluster.status("serve-reject", "run")).count(run_id) >= 1
