"""The few Kubernetes API calls the operator makes itself (Kopf makes the rest), and the list of all of them."""

from __future__ import annotations

import json
import threading
from typing import Any
from urllib.parse import quote

from kretrain.operator.settings import OperatorSettings

USER_AGENT = "kretrain-operator/0.1"

# Every (verb, resource) the operator's process calls, by who calls it: the chart's RBAC must grant
# at least these. tests/test_operator_lifecycle.py records the calls the real operator makes
# against the emulator and fails if one is missing here.
OWN_API_CALLS: frozenset[tuple[str, str]] = frozenset(
    {
        ("list", "jobs.batch"),  # find a RetrainJob's Job by label before creating one
        ("get", "jobs.batch"),  # poll the Job's state
        ("create", "jobs.batch"),
        ("patch", "jobs.batch"),  # spec.suspend
        ("create", "configmaps"),  # the spec mounted into the pod
        ("list", "pods"),  # the failed pod's termination message
    }
)
KOPF_API_CALLS: frozenset[tuple[str, str]] = frozenset(
    {
        ("list", "retrainjobs.kretrain.dev"),
        ("watch", "retrainjobs.kretrain.dev"),
        ("patch", "retrainjobs.kretrain.dev"),  # finalizer, progress annotations
        ("patch", "retrainjobs.kretrain.dev/status"),  # status written by handlers
        ("create", "events"),  # kopf.event/info/warn (core v1 Events)
        ("list", "namespaces"),  # namespace scanning (namespaced mode)
        ("watch", "namespaces"),
        ("list", "customresourcedefinitions.apiextensions.k8s.io"),  # resource scanning
        ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
        # peering (only with --peering; cluster-wide or namespaced peering objects)
        ("list", "clusterkopfpeerings.kopf.dev"),
        ("watch", "clusterkopfpeerings.kopf.dev"),
        ("patch", "clusterkopfpeerings.kopf.dev"),
        ("list", "kopfpeerings.kopf.dev"),
        ("watch", "kopfpeerings.kopf.dev"),
        ("patch", "kopfpeerings.kopf.dev"),
    }
)
API_CALLS: frozenset[tuple[str, str]] = OWN_API_CALLS | KOPF_API_CALLS
"""Every (verb, resource[/subresource]) the operator may call; resource is `plural.group` (core: `plural`)."""


class KubeError(Exception):
    """An API call failed; `status` is the HTTP code (0 when the server was not reached)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


class Kube:
    """A thin JSON client on top of the official Kubernetes client's configuration and connection pool."""

    def __init__(self, settings: OperatorSettings) -> None:
        from kubernetes import client, config

        cfg = client.Configuration()
        if settings.kube_url:
            cfg.host = settings.kube_url
            cfg.verify_ssl = False
        else:
            try:
                config.load_incluster_config(client_configuration=cfg)
            except config.ConfigException:
                config.load_kube_config(client_configuration=cfg)
        self._api = client.ApiClient(cfg)
        self._api.user_agent = USER_AGENT
        self._lock = threading.Lock()

    def call(
        self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None, content_type: str = ""
    ) -> Any:
        """One request; returns the decoded JSON or raises KubeError."""
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": "application/json", "Content-Type": content_type or "application/json"}
        try:
            resp = self._api.call_api(
                path,
                method,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=30,
            )
        except ApiException as exc:
            try:
                status = json.loads(exc.body or b"{}")
            except ValueError:
                status = {}
            raise KubeError(
                exc.status or 0, status.get("reason") or str(exc.reason), status.get("message", "")
            ) from None
        except Exception as exc:  # connection errors: urllib3 raises its own hierarchy
            raise KubeError(0, type(exc).__name__, str(exc)) from exc
        return json.loads(resp.data or b"null")

    # ---- Jobs -----------------------------------------------------------------------------------
    def find_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """Jobs in `namespace` matching a label selector."""
        items: list[dict[str, Any]] = self.call(
            "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs", query={"labelSelector": label_selector}
        )["items"]
        return items

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Job, or None when it does not exist."""
        try:
            job: dict[str, Any] = self.call("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{quote(name)}")
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return job

    def create(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create a Job or ConfigMap; returns (object, created). 409 AlreadyExists means it is already there."""
        meta = obj["metadata"]
        plural = {"Job": "jobs", "ConfigMap": "configmaps"}[obj["kind"]]
        base = "/apis/batch/v1" if obj["kind"] == "Job" else "/api/v1"
        try:
            return self.call("POST", f"{base}/namespaces/{meta['namespace']}/{plural}", body=obj), True
        except KubeError as exc:
            if exc.status == 409:
                return obj, False
            raise

    def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch a Job."""
        job: dict[str, Any] = self.call(
            "PATCH",
            f"/apis/batch/v1/namespaces/{namespace}/jobs/{quote(name)}",
            body=patch,
            content_type="application/merge-patch+json",
        )
        return job

    # ---- Pods -----------------------------------------------------------------------------------
    def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        """The pods of a Job (label `job-name`, set by the Job controller)."""
        items: list[dict[str, Any]] = self.call(
            "GET", f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": f"job-name={job}"}
        )["items"]
        return items
