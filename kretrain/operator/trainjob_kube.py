"""The operator's Kubernetes calls for Kubeflow Trainer TrainJobs (only with KRETRAIN_MULTINODE trainjob or auto)."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from kretrain.operator import trainjob
from kretrain.operator.kube import ALREADY_EXISTS, Kube, KubeError, checked_name, checked_namespace

TRAINJOB_API_CALLS: frozenset[tuple[str, str]] = frozenset(
    {
        ("list", "trainjobs.trainer.kubeflow.org"),  # find a RetrainJob's TrainJob by label before creating one
        ("get", "trainjobs.trainer.kubeflow.org"),  # poll its conditions
        ("create", "trainjobs.trainer.kubeflow.org"),
        ("patch", "trainjobs.trainer.kubeflow.org"),  # spec.suspend
        ("list", "customresourcedefinitions.apiextensions.k8s.io"),  # auto: is the TrainJob CRD installed?
    }
)
"""What these calls need: the chart grants them when multiNode.engine is trainjob or auto (kopf already lists CRDs)."""


class TrainJobs:
    """TrainJob calls through the operator's client (errors translated by Kube, names checked as DNS-1123)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.extensions = client.ApiextensionsV1Api(kube.api_client)

    def _custom(self, method: str, *args: Any, **kwargs: Any) -> Any:
        api = self.kube.custom
        return self.kube._call(getattr(api, method), trainjob.GROUP, trainjob.VERSION, *args, **kwargs)

    def crd_exists(self) -> bool:
        """Whether the API server serves TrainJobs (their CRD is installed)."""
        found = self.kube._call(
            self.extensions.list_custom_resource_definition, field_selector=f"metadata.name={trainjob.CRD_NAME}"
        )
        return any((item.get("metadata") or {}).get("name") == trainjob.CRD_NAME for item in found.get("items") or [])

    def find(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """TrainJobs in `namespace` matching a label selector ([] when the CRD is not installed)."""
        try:
            found = self._custom(
                "list_namespaced_custom_object", checked_namespace(namespace), trainjob.PLURAL,
                label_selector=label_selector,
            )  # fmt: skip
        except KubeError as exc:
            if exc.status == 404:
                return []
            raise
        items: list[dict[str, Any]] = found.get("items") or []
        return items

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The TrainJob, or None when it (or its CRD) does not exist."""
        try:
            tj: dict[str, Any] = self._custom(
                "get_namespaced_custom_object", checked_namespace(namespace), trainjob.PLURAL, checked_name(name)
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return tj

    def create(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create a TrainJob; (object, created). 409 AlreadyExists: already there. 404 (no CRD) is raised as KubeError."""
        if obj.get("kind") != trainjob.KIND:
            raise ValueError(f"TrainJobs.create makes TrainJobs, not {obj.get('kind')!r}")
        namespace = checked_namespace(obj["metadata"].get("namespace"))
        checked_name(obj["metadata"].get("name"))
        try:
            created: dict[str, Any] = self._custom("create_namespaced_custom_object", namespace, trainjob.PLURAL, obj)
        except KubeError as exc:
            if exc.status == 409 and exc.reason == ALREADY_EXISTS:  # a 409 Conflict created nothing: retryable
                return obj, False
            raise
        return created, True

    def patch(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch a TrainJob (spec.suspend)."""
        patched: dict[str, Any] = self._custom(
            "patch_namespaced_custom_object", checked_namespace(namespace), trainjob.PLURAL, checked_name(name),
            patch, _content_type="application/merge-patch+json",
        )  # fmt: skip
        return patched
