"""The emulator answers request media types and DeleteOptions as a real API server does (the typed client and
kubectl rely on it): strategic merge only for built-in kinds, DeleteOptions from the body before the query."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulator.client import ApiStatusError, Client, job_path, rtj_path
from emulator.server import EmulatorServer
from kretrain.api import API_VERSION, KIND

ROOT = Path(__file__).resolve().parents[1]
NS = "media"


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with EmulatorServer() as server:
        c = Client(server.url)
        c.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                 yaml.safe_load((ROOT / "crds" / "retrainjob.yaml").read_text()))  # fmt: skip
        c.ensure_namespace(NS)
        yield c


def _job(name: str) -> dict[str, Any]:
    pod = {"containers": [{"name": "c", "image": "i"}], "restartPolicy": "Never"}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": {"template": {"spec": pod}}}


def _rtj(name: str) -> dict[str, Any]:
    spec = {"model": "m", "dataset": {"uri": "s3://data/set", "eras": ["e1"]}}
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name, "labels": {"a": "b"}}, "spec": spec}


PATCHES = [
    ("merge-on-job", "job", "application/merge-patch+json", None),
    ("strategic-on-job", "job", "application/strategic-merge-patch+json", None),
    ("merge-on-custom", "rtj", "application/merge-patch+json", None),
    ("strategic-on-custom", "rtj", "application/strategic-merge-patch+json", 415),
    ("plain-json", "job", "application/json", 415),
    ("form", "rtj", "application/x-www-form-urlencoded", 415),
]


@pytest.mark.parametrize(("name", "kind", "ctype", "refused"), PATCHES, ids=[p[0] for p in PATCHES])
def test_patch_media_types(client: Client, name: str, kind: str, ctype: str, refused: int | None) -> None:
    where = job_path(NS, name) if kind == "job" else rtj_path(NS, name)
    client.create(job_path(NS) if kind == "job" else rtj_path(NS), _job(name) if kind == "job" else _rtj(name))
    patch = {"metadata": {"labels": {"patched": "yes"}}}
    if refused is None:
        assert client.patch(where, patch, ctype)["metadata"]["labels"]["patched"] == "yes"
        return
    with pytest.raises(ApiStatusError) as caught:
        client.patch(where, patch, ctype)
    assert caught.value.code == refused and caught.value.status["reason"] == "UnsupportedMediaType"
    assert "patched" not in (client.get(where)["metadata"].get("labels") or {})


def test_create_refuses_a_body_that_is_not_json(client: Client) -> None:
    with pytest.raises(ApiStatusError) as caught:
        client.request("POST", job_path(NS), _job("yaml-body"), ctype="text/plain")
    assert caught.value.code == 415


DELETES = [
    ("default-background", "", None, False),
    ("query-orphan", "?propagationPolicy=Orphan", None, True),
    ("body-wins-over-query", "?propagationPolicy=Orphan", {"kind": "DeleteOptions", "propagationPolicy": "Background"},
     False),
    ("body-orphan", "", {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Orphan"}, True),
]  # fmt: skip


@pytest.mark.parametrize(("name", "query", "body", "orphaned"), DELETES, ids=[d[0] for d in DELETES])
def test_delete_options(client: Client, name: str, query: str, body: dict[str, Any] | None, orphaned: bool) -> None:
    """A dependent survives its owner's deletion only with propagationPolicy Orphan, read from the body if any."""
    owner = client.create(rtj_path(NS), _rtj(name))
    ref = {"apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": owner["metadata"]["uid"]}
    client.create(job_path(NS), {**_job(name), "metadata": {"name": name, "ownerReferences": [ref]}})
    client.request("DELETE", rtj_path(NS, name) + query, body)
    assert client.get_or_none(rtj_path(NS, name)) is None
    assert (client.get_or_none(job_path(NS, name)) is not None) == orphaned


def test_delete_refuses_an_unknown_propagation_policy(client: Client) -> None:
    client.create(rtj_path(NS), _rtj("policy"))
    with pytest.raises(ApiStatusError) as caught:
        client.request("DELETE", rtj_path(NS, "policy") + "?propagationPolicy=Sideways")
    assert caught.value.code == 422 and client.get_or_none(rtj_path(NS, "policy")) is not None
