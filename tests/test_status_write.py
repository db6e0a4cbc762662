"""Timers write their status themselves (kretrain.operator.status_write): a failed write is a retried handler.

Found by the chaos run: Kopf applies a timer's patch after the handler, and a write failing there past Kopf's
own retries ended that RetrainJob's timer until the operator restarted (the run was never decided).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from emulator.client import Client, rtj_path
from emulator.recorder import recording_server
from emulator.server import EmulatorServer
from kretrain.api import API_VERSION, KIND, PLURAL
from kretrain.operator.kube import Kube
from kretrain.operator.settings import OperatorSettings
from kretrain.operator.status_write import write_status

NS = "team-a"
BODY: dict[str, Any] = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "r", "namespace": NS, "uid": "u"}}


def patch_of(status: dict[str, Any]) -> kopf.Patch:
    patch = kopf.Patch()
    for key, value in status.items():
        patch.status[key] = value
    return patch


def test_the_status_is_one_merge_patch_of_the_subresource_and_kopfs_patch_is_left_empty() -> None:
    with recording_server() as rec:
        rec.reply = {}
        patch = patch_of({"state": "Running", "progress": {"epoch": 3}, "message": None})
        write_status(Kube(OperatorSettings(kube_url=rec.url)), PLURAL, kopf.Body(BODY), patch, 7.0)
    assert not patch  # nothing left for Kopf to apply after the handler
    [sent] = rec.sent
    assert sent.method == "PATCH" and sent.path == f"/apis/kretrain.dev/v1alpha1/namespaces/{NS}/retrainjobs/r/status"
    assert sent.headers["Content-Type"] == "application/merge-patch+json"
    assert json.loads(sent.body) == {"status": {"state": "Running", "progress": {"epoch": 3}, "message": None}}


@pytest.mark.parametrize(
    ("code", "reason", "raised"),
    [
        (503, "ServiceUnavailable", kopf.TemporaryError),
        (500, "InternalError", kopf.TemporaryError),
        (429, "TooManyRequests", kopf.TemporaryError),
        (409, "Conflict", kopf.TemporaryError),
        (403, "Forbidden", kopf.PermanentError),  # RBAC: trying again unchanged cannot help
        (422, "Invalid", kopf.PermanentError),  # a status the schema refuses
        (404, "NotFound", None),  # the object is gone: nothing to write
    ],
)
def test_a_failed_write_is_the_handlers_error(code: int, reason: str, raised: type[Exception] | None) -> None:
    with recording_server() as rec:
        rec.status = code
        rec.reply = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code,
                     "message": "m"}  # fmt: skip
        patch = patch_of({"state": "Succeeded"})
        kube = Kube(OperatorSettings(kube_url=rec.url))
        if raised is None:
            write_status(kube, PLURAL, kopf.Body(BODY), patch, 7.0)
        else:
            with pytest.raises(raised, match=rf"status of retrainjobs {NS}/r: {code} {reason}") as caught:
                write_status(kube, PLURAL, kopf.Body(BODY), patch, 7.0)
            if raised is kopf.TemporaryError:
                assert caught.value.delay == 7.0
    assert not patch and len(rec.sent) == 1  # one try: Kopf retries the handler, not this write


def test_no_status_no_request_and_other_fields_are_a_bug() -> None:
    with recording_server() as rec:
        kube = Kube(OperatorSettings(kube_url=rec.url))
        write_status(kube, PLURAL, kopf.Body(BODY), kopf.Patch(), 1.0)
        assert rec.sent == []
        patch = patch_of({"state": "Running"})
        patch.metadata.annotations["a"] = "b"
        with pytest.raises(RuntimeError, match="only status, not metadata"):
            write_status(kube, PLURAL, kopf.Body(BODY), patch, 1.0)
        assert rec.sent == [] and not patch
        with pytest.raises(ValueError, match="not 'jobs'"):
            kube.patch_status("jobs", NS, "r", {"state": "x"})


def test_the_emulator_keeps_spec_and_merges_the_status() -> None:
    with EmulatorServer() as server:
        client = Client(server.url)
        crd = yaml.safe_load((Path(__file__).resolve().parent.parent / "crds" / "retrainjob.yaml").read_text())
        client.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        client.ensure_namespace(NS)
        body = {
            **BODY,
            "metadata": {"name": "r"},
            "spec": {"model": "m", "dataset": {"uri": "s3://data/d", "eras": ["e1"]}},
        }
        created = client.create(rtj_path(NS), body)
        client.patch(rtj_path(NS, "r", "status"), {"status": {"state": "Training", "jobName": "j"}})
        kube = Kube(OperatorSettings(kube_url=server.url))
        write_status(kube, PLURAL, kopf.Body(created), patch_of({"state": "Promoted", "jobName": None}), 1.0)
        got = client.get(rtj_path(NS, "r"))
        assert got["status"] == {"state": "Promoted"} and got["spec"] == created["spec"]
