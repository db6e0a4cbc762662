"""notify_delivery.step on a real registry (SeaweedFS) with a recording stand-in for the two Kubernetes calls (the
real client is exercised end to end in tests/test_notify_e2e.py): superseded promotions, a missing InferenceService,
unusable keys, a tightened policy; each recorded, retried when due and never re-delivered."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator import sim
from kretrain.api.conditions import Reason
from kretrain.operator import jobs
from kretrain.operator.kube import KubeError
from kretrain.operator.notify_delivery import step
from kretrain.operator.settings import OperatorSettings
from kretrain.operator.steps import Deps
from kretrain.registry import Registry
from kretrain.store import ObjectStore

KEY = b"k" * 32
INCUMBENT = {"e1": 0.50, "e2": 0.50}
UID = "0f1e2d3c-aaaa-bbbb-cccc-000000000000"
RUN = jobs.run_id("ns", "rtj", UID)
T0, T1 = "2026-12-01T23:00:00Z", "2026-12-01T23:00:01Z"


class Serving:
    """Records the calls; answers from queues (a KubeError or a value), then the default."""

    def __init__(self, key: bytes | None = KEY) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.key, self.patch_errors = key, list[KubeError]()
        self.key_error: KubeError | None = None

    def secret_value(self, namespace: str, name: str, key: str) -> bytes | None:
        self.calls.append(("secret", (namespace, name, key)))
        if self.key_error:
            raise self.key_error
        return self.key

    def patch_inference_service(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch", (namespace, name, patch)))
        if self.patch_errors:
            raise self.patch_errors.pop(0)
        return {}


@pytest.fixture
def registry(s3: Any, tmp_path: Path) -> Iterator[tuple[Registry, Path]]:
    store = ObjectStore(endpoint_url=s3.endpoint, access_key=s3.server.access_key, secret_key=s3.server.secret_key)
    reg = Registry(store, f"s3://{s3.new_bucket('notify')}/reg")
    sim.seed_incumbent(reg, "m", "seed-1", INCUMBENT, tmp_path)
    sim.train(reg, "m", RUN, {"e1": 0.6, "e2": 0.6}, INCUMBENT, tmp_path)
    reg.promote("m", RUN, expected="seed-1", reason="gate", actor="tests")
    yield reg, tmp_path


def deps(reg: Registry, now: str, settings: OperatorSettings | None = None) -> Deps:
    settings = settings or OperatorSettings(
        registry=reg.uri, allowed_webhook_hosts=["http://127.0.0.1:9"], allowed_webhook_secrets=["hook"],
        notify_retry_delay=1,
    )  # fmt: skip
    return Deps(settings=settings, kube=None, registry_for=lambda s: reg, adopt=lambda o: None, now=lambda: now)  # type: ignore[arg-type]


def body(reg: Registry, serving: dict[str, Any], notifications: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"state": "Promoted"}
    if notifications is not None:
        status["notifications"] = notifications
    spec = {"model": "m", "dataset": {"uri": "s3://data/set", "eras": ["e1", "e2"]},
            "storage": {"registry": reg.uri}, "serving": serving}  # fmt: skip
    return {"metadata": {"namespace": "ns", "name": "rtj", "uid": UID, "generation": 1}, "spec": spec,
            "status": status}  # fmt: skip


HOOK = {"webhook": {"url": "http://127.0.0.1:9/hook", "secretRef": {"name": "hook"}}}
ISVC = {"inferenceService": {"name": "detector"}}


def by_kind(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["kind"]: r for r in status["notifications"]}


def test_a_superseded_promotion_is_given_up_and_nothing_is_called(registry: tuple[Registry, Path]) -> None:
    reg, tmp = registry
    sim.train(reg, "m", "newer", {"e1": 0.7, "e2": 0.7}, INCUMBENT, tmp)
    reg.promote("m", "newer", expected=RUN, reason="gate", actor="tests")
    kube = Serving()
    out = step(body(reg, {**HOOK, **ISVC}), deps(reg, T0), kube)
    got = by_kind(out.status)
    assert kube.calls == [] and set(got) == {"webhook", "inferenceService"}
    for rec in got.values():
        assert rec["givenUp"] and not rec["delivered"] and "'newer', not " + RUN in rec["lastError"]
    assert sorted(e.reason for e in out.events) == [Reason.INFERENCE_SERVICE_FAILED, Reason.WEBHOOK_FAILED]


def test_a_missing_inference_service_is_retried_when_due(registry: tuple[Registry, Path]) -> None:
    reg, _ = registry
    kube = Serving()
    kube.patch_errors = [KubeError(404, "NotFound", 'inferenceservices "detector" not found')]
    first = step(body(reg, ISVC), deps(reg, T0), kube)
    rec = by_kind(first.status)["inferenceService"]
    assert (rec["attempts"], rec["lastStatus"], rec["nextAttemptAt"]) == (1, 404, T1) and first.events == []
    again = body(reg, ISVC, first.status["notifications"])
    assert step(again, deps(reg, T0), kube).status == {} and len(kube.calls) == 1  # not due yet
    done = step(again, deps(reg, T1), kube)
    rec = by_kind(done.status)["inferenceService"]
    assert (
        rec["delivered"]
        and rec["attempts"] == 2
        and [e.reason for e in done.events] == [Reason.INFERENCE_SERVICE_PATCHED]
    )
    ns, name, patch = kube.calls[-1][1]
    assert (ns, name) == ("ns", "detector")
    assert patch["spec"]["predictor"]["model"]["storageUri"] == f"{reg.uri}/m/versions/{RUN}/"
    final = body(reg, ISVC, done.status["notifications"])
    assert step(final, deps(reg, T1), kube) == step(final, deps(reg, "2026-12-02T00:00:00Z"), kube)
    assert len(kube.calls) == 2  # delivered: never again


@pytest.mark.parametrize(
    ("key", "error", "why"),
    [
        (None, None, "has no key 'hmacKey'"),
        (b"short", None, "at least 16"),
        (KEY, KubeError(403, "Forbidden", 'secrets "hook" is forbidden'), "cannot read Secret hook"),
        (KEY, KubeError(404, "NotFound", 'secrets "hook" not found'), "cannot read Secret hook"),
    ],
    ids=["no-key", "short-key", "forbidden", "missing"],
)
def test_an_unusable_key_is_recorded_and_retried(
    registry: tuple[Registry, Path], key: bytes | None, error: KubeError | None, why: str
) -> None:
    reg, _ = registry
    kube = Serving(key)
    kube.key_error = error
    out = step(body(reg, HOOK), deps(reg, T0), kube)
    rec = by_kind(out.status)["webhook"]
    assert why in rec["lastError"] and rec["attempts"] == 1 and rec["nextAttemptAt"] == T1
    assert not rec["delivered"] and not rec.get("givenUp") and kube.calls == [("secret", ("ns", "hook", "hmacKey"))]


def test_a_tightened_policy_gives_the_delivery_up(registry: tuple[Registry, Path]) -> None:
    reg, _ = registry
    kube = Serving()
    out = step(body(reg, HOOK), deps(reg, T0, OperatorSettings(registry=reg.uri)), kube)
    rec = by_kind(out.status)["webhook"]
    assert rec["givenUp"] and "spec.serving.webhook.url" in rec["lastError"] and kube.calls == []
    assert [e.reason for e in out.events] == [Reason.WEBHOOK_FAILED]


def test_a_delivered_record_survives_a_later_supersession(registry: tuple[Registry, Path]) -> None:
    reg, tmp = registry
    kube = Serving()
    kube.patch_errors = [KubeError(503, "ServiceUnavailable", "try later")]
    first = step(body(reg, ISVC), deps(reg, T0), kube)
    assert by_kind(first.status)["inferenceService"]["lastStatus"] == 503
    sim.train(reg, "m", "newer", {"e1": 0.7, "e2": 0.7}, INCUMBENT, tmp)
    reg.promote("m", "newer", expected=RUN, reason="gate", actor="tests")
    later = step(body(reg, ISVC, first.status["notifications"]), deps(reg, T1), kube)
    rec = by_kind(later.status)["inferenceService"]
    assert rec["givenUp"] and rec["attempts"] == 2 and len(kube.calls) == 1  # the stale patch is never sent
