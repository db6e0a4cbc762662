"""The few Kubernetes API calls the operator makes itself (Kopf makes the rest), and the list of all of them."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kretrain.api import GROUP, PLURAL, SCHEDULE_PLURAL, VERSION
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
        ("get", "configmaps"),  # the run's stage key back, to check report.json's MAC before concluding a run
        ("create", "services"),  # resources.nodes > 1: the headless Service of the pods' rendezvous
        ("list", "pods"),  # the failed pod's termination message
        ("get", "secrets"),  # a webhook's HMAC key (RBAC: only the names in policy.allowedWebhookSecrets)
        ("patch", "inferenceservices.serving.kserve.io"),  # spec.serving.inferenceService's storageUri
        ("patch", "retrainjobs.kretrain.dev/status"),  # the timers' status (kretrain.operator.status_write)
        ("patch", "retrainschedules.kretrain.dev/status"),
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


RETRYABLE_STATUS = frozenset({0, 408, 429})
"""KubeError statuses worth trying again besides 5xx (0: the API server was not reached); and 409 Conflict."""
CONFLICT = "Conflict"
"""The reason of a 409 to a write that raced another ("the object has been modified ... try again"): retryable."""
ALREADY_EXISTS = "AlreadyExists"
"""The reason of a 409 to a create whose name is taken: the object is there (any other 409 is not that)."""
REQUEST_TIMEOUT = 30.0
"""Seconds one API call may take, connecting included."""
JSON_BODY = {"Content-Type": "application/json"}
"""Headers of a create: the generated create methods set no Content-Type of their own."""
MESSAGE_LIMIT = 500
"""Characters of an error answer's message kept in a KubeError."""


def retryable(status: int) -> bool:
    """Whether a call that failed with `status` can succeed when tried again unchanged (0, 408, 429, 5xx)."""
    return status in RETRYABLE_STATUS or status >= 500


class KubeError(Exception):
    """An API call failed; `status` is the HTTP code (0 when the server was not reached), `reason` the Status
    object's reason (e.g. NotFound, AlreadyExists, Invalid), `retryable` whether trying again can succeed."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message
        self.retryable = retryable(status) or (status == 409 and reason == CONFLICT)


def kube_error(exc: ApiException | urllib3.exceptions.HTTPError | OSError) -> KubeError:
    """The one translation of the client's failures: an error answer (its Status object's reason and message), or
    a server not reached (status 0, the exception's class as the reason)."""
    if not isinstance(exc, ApiException):
        return KubeError(0, type(exc).__name__, str(exc)[:MESSAGE_LIMIT])
    status = int(exc.status or 0)
    text = exc.body if isinstance(exc.body, str) else ""
    try:
        doc = json.loads(text) if text else {}
    except ValueError:
        doc = {}
    doc = doc if isinstance(doc, dict) else {}
    reason, message = doc.get("reason"), doc.get("message")
    return KubeError(
        status,
        reason if isinstance(reason, str) and reason else str(exc.reason or ""),
        (message if isinstance(message, str) else text)[:MESSAGE_LIMIT],
    )


def load_configuration(settings: OperatorSettings) -> client.Configuration:
    """The client's configuration: `settings.kube_url` (tests: plain, no auth), else the pod's service account
    (its token re-read by the client as it rotates), else the kubeconfig (exec and OIDC tokens refreshed)."""
    cfg = client.Configuration()
    if settings.kube_url:
        cfg.host = settings.kube_url
        cfg.verify_ssl = False
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException:
            config.load_kube_config(client_configuration=cfg)
    cfg.retries = False  # one try per call: the lifecycle and Kopf decide when to try again
    cfg.connection_pool_maxsize = 8
    return cfg


class Kube:
    """The operator's own calls, through the official client's typed APIs (BatchV1Api, CoreV1Api, CustomObjectsApi).

    Every namespace and name is checked to be DNS-1123 (UnsafeName otherwise) before any request; the client
    encodes each path parameter as one segment. Answers are the server's JSON as plain dicts (camelCase, unknown
    fields kept: read with `_preload_content=False`, never through the client's models). Failures raise
    KubeError, translated in one place (`_call`). A body the client's models refuse (pydantic's ValidationError
    before any request) is a bug in the Job builder and reaches Kopf untranslated."""

    def __init__(self, settings: OperatorSettings, configuration: client.Configuration | None = None) -> None:
        self.api_client = client.ApiClient(configuration or load_configuration(settings))
        self.api_client.user_agent = USER_AGENT
        self.batch = client.BatchV1Api(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one typed API method; its JSON answer, or KubeError."""
        try:
            resp: urllib3.BaseHTTPResponse = method(
                *args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs
            )
            data = resp.data
            resp.release_conn()
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:  # answered with an error, or not at all
            raise kube_error(exc) from exc
        try:
            return json.loads(data or b"null")
        except ValueError as exc:
            raise KubeError(resp.status, "InvalidResponse", f"not JSON: {data[:100]!r}") from exc

    # ---- Jobs -----------------------------------------------------------------------------------
    def find_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """Jobs in `namespace` matching a label selector."""
        found = self._call(self.batch.list_namespaced_job, checked_namespace(namespace), label_selector=label_selector)
        items: list[dict[str, Any]] = found["items"]
        return items

    def _read(self, method: Callable[..., Any], namespace: str, name: str) -> dict[str, Any] | None:
        """One namespaced object by name through a typed `read_namespaced_*` method; None when it does not exist."""
        namespace = checked_namespace(namespace)
        try:
            found: dict[str, Any] = self._call(method, checked_name(name), namespace)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Job, or None when it does not exist."""
        return self._read(self.batch.read_namespaced_job, namespace, name)

    def create(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create a Job, ConfigMap or Service; returns (object, created). 409 AlreadyExists: it is already there;
        any other 409 (a Conflict: nothing was created) is a KubeError like every other failure."""
        meta = obj["metadata"]
        namespace = checked_namespace(meta.get("namespace"))
        checked_name(meta.get("name"))
        if obj["kind"] not in ("Job", "ConfigMap", "Service"):
            raise ValueError(f"Kube.create makes Jobs, ConfigMaps and Services, not {obj['kind']!r}")
        try:
            if obj["kind"] == "Job":
                created: dict[str, Any] = self._call(
                    self.batch.create_namespaced_job, namespace, obj, _headers=JSON_BODY
                )
            elif obj["kind"] == "Service":
                created = self._call(self.core.create_namespaced_service, namespace, obj, _headers=JSON_BODY)
            else:
                created = self._call(self.core.create_namespaced_config_map, namespace, obj, _headers=JSON_BODY)
        except KubeError as exc:
            if exc.status == 409 and exc.reason == ALREADY_EXISTS:
                return obj, False
            raise
        return created, True

    def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch a Job (RFC 7386: the patch's lists replace the Job's)."""
        namespace = checked_namespace(namespace)
        job: dict[str, Any] = self._call(
            self.batch.patch_namespaced_job,
            checked_name(name),
            namespace,
            patch,
            _content_type="application/merge-patch+json",
        )
        return job

    # ---- ConfigMaps -------------------------------------------------------------------------------
    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ConfigMap, or None when it does not exist."""
        return self._read(self.core.read_namespaced_config_map, namespace, name)

    # ---- kretrain's own objects -------------------------------------------------------------------
    def patch_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the status subresource of a RetrainJob or RetrainSchedule (`plural`) in `namespace`."""
        if plural not in (PLURAL, SCHEDULE_PLURAL):
            raise ValueError(f"Kube.patch_status writes RetrainJobs and RetrainSchedules, not {plural!r}")
        self._call(
            self.custom.patch_namespaced_custom_object_status, GROUP, VERSION, checked_namespace(namespace), plural,
            checked_name(name, 253), {"status": status}, _content_type="application/merge-patch+json",
        )  # fmt: skip

    # ---- Pods -----------------------------------------------------------------------------------
    def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        """The pods of a Job (label `job-name`, set by the Job controller)."""
        namespace = checked_namespace(namespace)
        found = self._call(self.core.list_namespaced_pod, namespace, label_selector=f"job-name={checked_name(job)}")
        items: list[dict[str, Any]] = found["items"]
        return items

    # ---- Telling the serving side (kretrain.operator.notify_delivery) -------------------------------
    def secret_value(self, namespace: str, name: str, key: str) -> bytes | None:
        """One key of a Secret, decoded (None when the Secret has no such key)."""
        namespace = checked_namespace(namespace)
        secret = self._call(self.core.read_namespaced_secret, checked_name(name), namespace)
        value = ((secret or {}).get("data") or {}).get(key)
        if not isinstance(value, str):
            return None
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            return None

    def patch_inference_service(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch a KServe InferenceService (serving.kserve.io/v1beta1) in `namespace`."""
        group, version, plural = "serving.kserve.io", "v1beta1", "inferenceservices"
        namespace = checked_namespace(namespace)
        patched: dict[str, Any] = self._call(
            self.custom.patch_namespaced_custom_object, group, version, namespace, plural, checked_name(name, 253),
            patch, _content_type="application/merge-patch+json",
        )  # fmt: skip
        return patched
