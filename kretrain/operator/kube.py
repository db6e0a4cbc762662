"""The few Kubernetes API calls the operator makes itself (Kopf makes the rest), and the list of all of them."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, urlencode

import urllib3

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
# Made by kretrain.operator.schedule_kube.RunsApi (tests/test_schedule_operator.py records them on the wire).
SCHEDULE_API_CALLS: frozenset[tuple[str, str]] = frozenset(
    {
        ("list", "retrainjobs.kretrain.dev"),  # a schedule's runs, by label
        ("create", "retrainjobs.kretrain.dev"),  # a run (deterministic name: never twice)
        ("delete", "retrainjobs.kretrain.dev"),  # history limits and concurrencyPolicy Replace
    }
)
KOPF_API_CALLS = KOPF_API_CALLS | {
    ("list", "retrainschedules.kretrain.dev"),
    ("watch", "retrainschedules.kretrain.dev"),
    ("patch", "retrainschedules.kretrain.dev"),  # finalizer, kopf's annotations
    ("patch", "retrainschedules.kretrain.dev/status"),  # status written by the schedule handlers
}
API_CALLS: frozenset[tuple[str, str]] = OWN_API_CALLS | KOPF_API_CALLS | SCHEDULE_API_CALLS
"""Every (verb, resource[/subresource]) the operator may call; resource is `plural.group` (core: `plural`)."""


_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL = re.compile(_LABEL)
"""A namespace: lowercase letters, digits and '-', starting and ending with a letter or digit (<= 63)."""
DNS1123_SUBDOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")
"""An object name: dot-separated DNS-1123 labels (<= 253; Job names <= 63, they become a pod label)."""


class UnsafeName(ValueError):
    """A namespace or object name that is not DNS-1123; refused before any URL or selector is built with it."""


def checked_namespace(namespace: object) -> str:
    """`namespace` if it is a DNS-1123 label, else UnsafeName."""
    if not isinstance(namespace, str) or len(namespace) > 63 or not DNS1123_LABEL.fullmatch(namespace):
        raise UnsafeName(f"refusing namespace {str(namespace)[:80]!r}: not a DNS-1123 label (a-z, 0-9, '-'; <= 63)")
    return namespace


def checked_name(name: object, limit: int = 63) -> str:
    """`name` if it is a DNS-1123 subdomain of at most `limit` characters, else UnsafeName."""
    if not isinstance(name, str) or len(name) > limit or not DNS1123_SUBDOMAIN.fullmatch(name):
        raise UnsafeName(
            f"refusing object name {str(name)[:80]!r}: not a DNS-1123 name (a-z, 0-9, '-', '.'; <= {limit})"
        )
    return name


def _seg(value: str) -> str:
    """One URL path segment: every reserved character encoded ('/' included)."""
    return quote(value, safe="")


def _jobs_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/batch/v1/namespaces/{_seg(checked_namespace(namespace))}/jobs"
    return base if name is None else f"{base}/{_seg(checked_name(name))}"


class KubeError(Exception):
    """An API call failed; `status` is the HTTP code (0 when the server was not reached)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


class Kube:
    """A thin JSON client (urllib3) using the official Kubernetes client's configuration loaders.

    Every namespace and name is checked to be DNS-1123 (UnsafeName otherwise) and encoded as one path segment
    before a URL is built with it: no value can reach another namespace or resource."""

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
        self._cfg = cfg
        self._base = cfg.host.rstrip("/")
        self._http = urllib3.PoolManager(
            maxsize=8,
            cert_reqs="CERT_REQUIRED" if cfg.verify_ssl else "CERT_NONE",
            ca_certs=cfg.ssl_ca_cert,
            cert_file=cfg.cert_file,
            key_file=cfg.key_file,
        )

    def _auth(self) -> dict[str, str]:
        # auth_settings() runs the refresh hook of in-cluster tokens (bound tokens rotate).
        auth: dict[str, Any] = dict(self._cfg.auth_settings())
        token = (auth.get("BearerToken") or {}).get("value")
        return {"Authorization": token} if token else {}

    def call(
        self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None, content_type: str = ""
    ) -> Any:
        """One request; returns the decoded JSON or raises KubeError."""
        headers = {
            "Accept": "application/json",
            "Content-Type": content_type or "application/json",
            "User-Agent": USER_AGENT,
            **self._auth(),
        }
        url = self._base + path + (("?" + urlencode(query)) if query else "")
        try:
            resp = self._http.request(
                method,
                url,
                body=None if body is None else json.dumps(body).encode(),
                headers=headers,
                timeout=30.0,
                retries=False,
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # the server was not reached or hung up
            raise KubeError(0, type(exc).__name__, str(exc)) from exc
        try:
            data = json.loads(resp.data or b"null")
        except ValueError:
            data = {"message": resp.data[:500].decode(errors="replace")}
        if resp.status >= 400:
            data = data if isinstance(data, dict) else {}
            raise KubeError(resp.status, data.get("reason") or str(resp.reason), data.get("message", ""))
        return data

    # ---- Jobs -----------------------------------------------------------------------------------
    def find_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """Jobs in `namespace` matching a label selector."""
        items: list[dict[str, Any]] = self.call("GET", _jobs_path(namespace), query={"labelSelector": label_selector})[
            "items"
        ]
        return items

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Job, or None when it does not exist."""
        try:
            job: dict[str, Any] = self.call("GET", _jobs_path(namespace, name))
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
        namespace = _seg(checked_namespace(meta.get("namespace")))
        checked_name(meta.get("name"))
        try:
            return self.call("POST", f"{base}/namespaces/{namespace}/{plural}", body=obj), True
        except KubeError as exc:
            if exc.status == 409:
                return obj, False
            raise

    def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch a Job."""
        job: dict[str, Any] = self.call(
            "PATCH",
            _jobs_path(namespace, name),
            body=patch,
            content_type="application/merge-patch+json",
        )
        return job

    # ---- Pods -----------------------------------------------------------------------------------
    def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        """The pods of a Job (label `job-name`, set by the Job controller)."""
        path = f"/api/v1/namespaces/{_seg(checked_namespace(namespace))}/pods"
        items: list[dict[str, Any]] = self.call("GET", path, query={"labelSelector": f"job-name={checked_name(job)}"})[
            "items"
        ]
        return items
