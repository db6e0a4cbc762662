"""spec.serving against the operator policy (webhook origins and Secrets), the settings that hold it, and when the
serving timer has work (notify_delivery.pending): table-driven, no cluster."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from pydantic import ValidationError

from kretrain.api import RetrainJobSpec
from kretrain.operator import policy
from kretrain.operator.notify_delivery import pending
from kretrain.operator.settings import OperatorSettings

SETTINGS = OperatorSettings(
    allowed_webhook_hosts=["https://deployer.example.com", "http://hooks.serving.svc:8080"],
    allowed_webhook_secrets=["kretrain-webhook"],
)


def spec(url: str, secret: str = "kretrain-webhook") -> RetrainJobSpec:
    return RetrainJobSpec.model_validate(
        {"model": "m", "dataset": {"uri": "s3://data/set", "eras": ["e1", "e2"]},
         "serving": {"webhook": {"url": url, "secretRef": {"name": secret}}}}
    )  # fmt: skip


@pytest.mark.parametrize(
    ("url", "secret", "fields"),
    [
        ("https://deployer.example.com/hooks/kretrain", "kretrain-webhook", []),
        ("https://DEPLOYER.example.com:443/x?team=a", "kretrain-webhook", []),  # case, default port, query
        ("http://hooks.serving.svc:8080/", "kretrain-webhook", []),
        ("http://deployer.example.com/hooks", "kretrain-webhook", ["url"]),  # another scheme
        ("https://deployer.example.com:8443/hooks", "kretrain-webhook", ["url"]),  # another port
        ("https://deployer.example.com.evil.io/hooks", "kretrain-webhook", ["url"]),  # suffix trick
        ("https://evil.io/deployer.example.com", "kretrain-webhook", ["url"]),  # host in the path
        ("http://hooks.serving.svc/", "kretrain-webhook", ["url"]),  # port 80 is not 8080
        ("https://169.254.169.254/latest", "kretrain-webhook", ["url"]),  # metadata endpoint
        ("https://deployer.example.com/hooks", "other-secret", ["secretRef.name"]),
        ("https://evil.io/x", "kube-admin-token", ["url", "secretRef.name"]),
    ],
    ids=["allowed", "normalised", "allowed-port", "scheme", "port", "suffix", "path-host", "default-port",
         "metadata", "secret", "both"],
)  # fmt: skip
def test_webhook_policy(url: str, secret: str, fields: list[str]) -> None:
    found = policy.violations(spec(url, secret), SETTINGS)
    assert [v.field for v in found] == [f"spec.serving.webhook.{f}" for f in fields]
    with pytest.raises(policy.PolicyError) if fields else contextlib.nullcontext():
        policy.check(spec(url, secret), SETTINGS)


def test_no_policy_means_no_webhook() -> None:
    found = policy.violations(spec("https://deployer.example.com/h"), OperatorSettings())
    assert [v.field for v in found] == ["spec.serving.webhook.url", "spec.serving.webhook.secretRef.name"]
    assert "allowed: none" in str(found[0]) and "allowed: none" in str(found[1])


@pytest.mark.parametrize(
    "url",
    ["http://user:pw@deployer.example.com/h", "https://deployer.example.com/h#frag", "ftp://deployer.example.com/h",
     "https://deployer.example.com\\@evil.io/h", "https://deployer.example.com/ h"],
    ids=["userinfo", "fragment", "scheme", "backslash", "space"],
)  # fmt: skip
def test_malformed_webhook_urls_fail_admission(url: str) -> None:
    with pytest.raises(ValidationError, match=r"serving\.webhook\.url"):
        spec(url)


@pytest.mark.parametrize(
    "entry",
    ["https://deployer.example.com/hooks", "deployer.example.com", "https://u@deployer.example.com", "gopher://h"],
    ids=["path", "no-scheme", "userinfo", "scheme"],
)
def test_bad_policy_entries_fail_at_start(entry: str) -> None:
    with pytest.raises(ValidationError, match="allowed_webhook_hosts"):
        OperatorSettings(allowed_webhook_hosts=[entry])


def test_policy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRETRAIN_ALLOWED_WEBHOOK_HOSTS", "https://a.example.com, http://b:8080")
    monkeypatch.setenv("KRETRAIN_ALLOWED_WEBHOOK_SECRETS", "hook-a,hook-b")
    s = OperatorSettings()
    assert s.allowed_webhook_hosts == ["https://a.example.com", "http://b:8080"]
    assert s.allowed_webhook_secrets == ["hook-a", "hook-b"] and s.notify_retry_delay == 10.0


HOOK = {"webhook": {"url": "https://h/x", "secretRef": {"name": "s"}}}
BOTH = {**HOOK, "inferenceService": {"name": "d"}}


def body(state: str | None, serving: dict[str, Any] | None, notifications: Any = None) -> dict[str, Any]:
    status: dict[str, Any] = {"state": state} if state else {}
    if notifications is not None:
        status["notifications"] = notifications
    return {"spec": {"serving": serving} if serving is not None else {}, "status": status}


@pytest.mark.parametrize(
    ("state", "serving", "notifications", "due"),
    [
        ("Promoted", HOOK, None, True),
        ("Promoted", BOTH, [{"kind": "webhook", "delivered": True}], True),
        ("Promoted", BOTH, [{"kind": "webhook", "delivered": True}, {"kind": "inferenceService", "givenUp": True}],
         False),
        ("Promoted", HOOK, [{"kind": "webhook", "attempts": 3}], True),
        ("Promoted", None, None, False),
        ("Promoted", {}, None, False),
        ("Rejected", HOOK, None, False),
        ("Training", HOOK, None, False),
        (None, HOOK, None, False),
        ("Promoted", HOOK, "not a list", True),
        ("Promoted", HOOK, ["junk", 3, {"kind": "webhook"}], True),
    ],
    ids=["fresh", "half-done", "all-final", "retrying", "no-serving", "empty-serving", "rejected", "training",
         "no-state", "garbage-records", "junk-entries"],
)  # fmt: skip
def test_pending(state: str | None, serving: dict[str, Any] | None, notifications: Any, due: bool) -> None:
    assert pending(body(state, serving, notifications)) is due
