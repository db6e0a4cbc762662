"""The chart's RBAC equals the API calls the operator makes: nothing missing, nothing extra, no wildcards, no Secrets."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import helm_python
import kopf
import pytest
import yaml

from emulator.recorder import Sent, recording_server
from kretrain.operator import kube as kube_mod
from kretrain.operator.settings import OperatorSettings
from kretrain.operator.trainjob_kube import TRAINJOB_API_CALLS

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "kretrain"
NAMESPACE = "kretrain-system"

Triple = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)

CLUSTER_SCOPED = {"namespaces", "customresourcedefinitions", "clusterkopfpeerings"}
CLUSTER_PEERING = "clusterkopfpeerings"
NAMESPACED_PEERING = "kopfpeerings"

# Permissions that are checked by the API server without being an API call of their own.
# kopf.append_owner_reference() gives the Job and ConfigMap an ownerReference with blockOwnerDeletion=true (checked in
# test_children_block_owner_deletion); with the OwnerReferencesPermissionEnforcement admission plugin
# (OpenShift and hardened clusters) only who may update the owner's finalizers may set it.
AUTHORIZATION_ONLY: set[Triple] = {
    ("kretrain.dev", "retrainjobs/finalizers", "update"),
    (
        "kretrain.dev",
        "retrainschedules/finalizers",
        "update",
    ),  # a schedule owns its RetrainJobs (kopf.append_owner_reference)
}


def parse_call(verb: str, resource: str) -> Triple:
    """`("patch", "retrainjobs.kretrain.dev/status")` -> `("kretrain.dev", "retrainjobs/status", "patch")`."""
    name, _, sub = resource.partition("/")
    plural, _, group = name.partition(".")
    return (group, f"{plural}/{sub}" if sub else plural, verb)


def operator_calls() -> set[Triple]:
    """Every call in the operator's own list, kretrain.operator.kube.API_CALLS."""
    return {parse_call(verb, res) for verb, res in kube_mod.API_CALLS}


SECRET_GET: Triple = ("", "secrets", "get")
"""Granted only for the Secrets policy.allowedWebhookSecrets names (resourceNames), and only when it names any."""


def expected(
    clusterwide: bool, peering: bool, webhook_secrets: bool = False, trainjobs: bool = False
) -> tuple[set[Triple], set[Triple]]:
    """(ClusterRole triples, per-namespace Role triples) for a deployment mode (trainjobs: config.multiNode is
    trainjob or auto, and the operator makes kretrain.operator.trainjob_kube's calls too)."""
    calls = operator_calls()
    if trainjobs:
        calls |= {parse_call(verb, res) for verb, res in TRAINJOB_API_CALLS}
    if not webhook_secrets:
        calls.discard(SECRET_GET)
    drop = {CLUSTER_PEERING, NAMESPACED_PEERING}
    if peering:
        drop.discard(CLUSTER_PEERING if clusterwide else NAMESPACED_PEERING)
    calls = {c for c in calls if c[1] not in drop} | AUTHORIZATION_ONLY
    cluster = {c for c in calls if c[1] in CLUSTER_SCOPED}
    namespaced = calls - cluster
    if clusterwide:
        return cluster | namespaced, set()
    return cluster, namespaced


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The rendered RBAC objects."""
    with helm_python.Chart.load(CHART) as chart:
        out = chart.render(values, name="kretrain", namespace=NAMESPACE)
    docs = [d for d in yaml.safe_load_all(out["kretrain/templates/rbac.yaml"]) if d]
    return docs


def triples(role: dict[str, Any]) -> set[Triple]:
    """A Role's rules, expanded to (group, resource, verb)."""
    found: list[Triple] = [
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    ]
    assert len(found) == len(set(found)), f"{role['kind']} grants something twice"
    return set(found)


WEBHOOK_SECRETS = {"policy": {"allowedWebhookSecrets": ["kretrain-webhook", "team-hook"]}}
MODES = {
    "clusterwide": ({}, True, False),
    "clusterwide-peering": ({"replicaCount": 2}, True, True),
    "namespaced": ({"watchNamespaces": ["team-a", "team-b"]}, False, False),
    "namespaced-peering": ({"watchNamespaces": ["team-a", "team-b"], "replicaCount": 3}, False, True),
    "clusterwide-webhook": (WEBHOOK_SECRETS, True, False),
    "namespaced-webhook": ({"watchNamespaces": ["team-a"], **WEBHOOK_SECRETS}, False, False),
    "clusterwide-trainjob": ({"config": {"multiNode": "auto"}}, True, False),
    "namespaced-trainjob": ({"watchNamespaces": ["team-a"], "config": {"multiNode": "trainjob"}}, False, False),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_rbac_is_exactly_what_the_operator_calls(mode: str) -> None:
    values, clusterwide, peering = MODES[mode]
    docs = render(values)
    trainjobs = values.get("config", {}).get("multiNode", "indexedjob") != "indexedjob"
    want_cluster, want_namespaced = expected(clusterwide, peering, "policy" in values, trainjobs)
    cluster_roles = [d for d in docs if d["kind"] == "ClusterRole"]
    assert len(cluster_roles) == 1
    got = triples(cluster_roles[0])
    assert got - want_cluster == set(), f"extra in the ClusterRole: {sorted(got - want_cluster)}"
    assert want_cluster - got == set(), f"missing in the ClusterRole: {sorted(want_cluster - got)}"
    roles = [d for d in docs if d["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(values.get("watchNamespaces", []))
    for role in roles:
        got = triples(role)
        ns = role["metadata"]["namespace"]
        assert got - want_namespaced == set(), f"extra in the Role in {ns}: {sorted(got - want_namespaced)}"
        assert want_namespaced - got == set(), f"missing in the Role in {ns}: {sorted(want_namespaced - got)}"
    bound = {
        (b["roleRef"]["kind"], b["roleRef"]["name"], b["metadata"].get("namespace")) for b in docs if "roleRef" in b
    }
    granted = {(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")) for d in cluster_roles + roles}
    assert bound == granted, "every role is bound exactly once"
    for binding in (d for d in docs if "roleRef" in d):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kretrain", "namespace": NAMESPACE}]


@pytest.mark.parametrize("mode", list(MODES))
def test_no_wildcards_no_secrets(mode: str) -> None:
    allowed_keys = {"apiGroups", "resources", "verbs"}
    for role in (d for d in render(MODES[mode][0]) if d["kind"] in ("ClusterRole", "Role")):
        for rule in role["rules"]:
            if "secrets" in rule["resources"]:  # only get, only on the policy's webhook Secrets, nothing else
                names = MODES[mode][0].get("policy", {}).get("allowedWebhookSecrets")
                assert names and rule == {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                                          "resourceNames": names}, rule  # fmt: skip
                continue
            assert set(rule) == allowed_keys, f"unexpected rule keys {set(rule) - allowed_keys}"
            for key in allowed_keys:
                assert rule[key], f"empty {key}"
                assert not any("*" in item for item in rule[key]), f"wildcard in {key}: {rule[key]}"
            assert set(rule["verbs"]) <= {"get", "list", "watch", "create", "update", "patch", "delete"}


def test_operator_list_parses() -> None:
    """The operator's list uses `plural.group[/sub]` names this test understands."""
    calls = operator_calls()
    assert ("kretrain.dev", "retrainjobs", "watch") in calls
    assert ("", "events", "create") in calls
    assert ("batch", "jobs", "create") in calls
    for group, resource, verb in calls:
        assert re.fullmatch(r"[a-z]+(/[a-z]+)?", resource), resource
        assert group == "" or "." in group or group == "batch", group
        assert verb in {"get", "list", "watch", "create", "update", "patch", "delete"}


def test_children_block_owner_deletion_and_get_none_of_the_owners_labels() -> None:
    """Why retrainjobs/finalizers update is granted: the operator owns its Job and ConfigMap with
    kopf.append_owner_reference, which sets blockOwnerDeletion=true; not kopf.adopt, which would also copy the
    RetrainJob's labels (a Kueue priority-class label outside the policy) onto them."""
    source = (ROOT / "kretrain" / "operator" / "handlers.py").read_text()
    assert "kopf.append_owner_reference(" in source and "kopf.adopt(" not in source
    assert "kopf.adopt(" not in (ROOT / "kretrain" / "operator" / "schedule_handlers.py").read_text()
    assert (
        "block_owner_deletion" not in source
        and "blockOwnerDeletion" not in (ROOT / "kretrain" / "operator" / "jobs.py").read_text()
    )
    child: dict[str, Any] = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}}
    owner = kopf.Body(
        {
            "apiVersion": "kretrain.dev/v1alpha1",
            "kind": "RetrainJob",
            "metadata": {"name": "r", "namespace": "n", "uid": "u", "labels": {"kueue.x-k8s.io/priority-class": "p"}},
        }
    )
    kopf.append_owner_reference(child, owner=owner)
    assert child["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is True
    assert "labels" not in child["metadata"]


# ---- the operator's own client, recorded on the wire ----------------------------------------------------------


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[Sent]]]:
    """A local HTTP server that answers every request with an empty list and records it."""
    with recording_server() as server:
        yield server.url, server.sent


PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)/(?:namespaces/[^/]+/)?(?P<res>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$"
)
METHOD_VERB = {"POST": "create", "PATCH": "patch", "PUT": "update"}


def to_triple(method: str, url: str) -> Triple:
    """An HTTP request of the Kubernetes API as the RBAC (group, resource, verb) it needs."""
    parts = urlsplit(url)
    m = PATH.match(parts.path)
    assert m, f"not a resource path: {parts.path}"
    resource = m["res"] + (f"/{m['sub']}" if m["sub"] else "")
    if method == "GET":
        verb = "watch" if "watch=true" in parts.query else ("get" if m["name"] else "list")
    elif method == "DELETE":
        verb = "delete" if m["name"] else "deletecollection"
    else:
        verb = METHOD_VERB[method]
    return (m["group"] or "", resource, verb)


ARGUMENTS: dict[str, list[Any]] = {
    "namespace": ["ns"],
    "name": ["n"],
    "label_selector": ["a=b"],
    "job": ["j"],
    "key": ["hmacKey"],
    "patch": [{"spec": {"suspend": True}}],
    "plural": ["retrainjobs", "retrainschedules"],
    "status": [{"state": "Training"}],
    "obj": [
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "n", "namespace": "ns"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "n", "namespace": "ns"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "n", "namespace": "ns"}},
    ],
}


def test_own_client_calls_are_in_the_operator_list(recorder: tuple[str, list[Sent]]) -> None:
    """Call every public method of kretrain.operator.kube.Kube against a recording server: each request it sends
    is in OWN_API_CALLS (so the list, and with it the chart, cannot miss a call the client makes)."""
    url, calls = recorder
    client = kube_mod.Kube(OperatorSettings(kube_url=url))
    methods = [(n, f) for n, f in inspect.getmembers(kube_mod.Kube, inspect.isfunction) if not n.startswith("_")]
    assert methods, "Kube has no public methods"
    for name, func in methods:
        params = [p for p in inspect.signature(func).parameters if p != "self"]
        unknown = [p for p in params if p not in ARGUMENTS]
        assert not unknown, f"Kube.{name} takes {unknown}: teach tests/test_rbac.py ARGUMENTS about them"
        variants = max(len(ARGUMENTS[p]) for p in params) if params else 1
        for i in range(variants):
            kwargs = {p: ARGUMENTS[p][min(i, len(ARGUMENTS[p]) - 1)] for p in params}
            before = len(calls)
            getattr(client, name)(**kwargs)
            assert len(calls) > before, f"Kube.{name} made no request"
    recorded = {to_triple(s.method, s.raw_path) for s in calls}
    own = {parse_call(verb, res) for verb, res in kube_mod.OWN_API_CALLS}
    assert recorded - own == set(), f"calls missing from OWN_API_CALLS: {sorted(recorded - own)}"
    assert own - recorded == set(), f"OWN_API_CALLS lists calls the client never makes: {sorted(own - recorded)}"


@pytest.mark.parametrize(
    ("method", "url", "triple"),
    [
        ("GET", "/apis/batch/v1/namespaces/ns/jobs?labelSelector=a%3Db", ("batch", "jobs", "list")),
        ("GET", "/apis/batch/v1/namespaces/ns/jobs/n", ("batch", "jobs", "get")),
        ("GET", "/api/v1/namespaces?watch=true", ("", "namespaces", "watch")),
        ("POST", "/api/v1/namespaces/ns/configmaps", ("", "configmaps", "create")),
        (
            "PATCH",
            "/apis/kretrain.dev/v1alpha1/namespaces/ns/retrainjobs/r/status",
            ("kretrain.dev", "retrainjobs/status", "patch"),
        ),
        ("DELETE", "/api/v1/namespaces/ns/pods", ("", "pods", "deletecollection")),
        ("PUT", "/apis/kopf.dev/v1/clusterkopfpeerings/p", ("kopf.dev", "clusterkopfpeerings", "update")),
    ],
)
def test_request_to_rbac_mapping(method: str, url: str, triple: Triple) -> None:
    assert to_triple(method, url) == triple
