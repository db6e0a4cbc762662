"""The API calls a RetrainSchedule makes itself: list, create and delete its RetrainJobs (SCHEDULE_API_CALLS)."""

from __future__ import annotations

from typing import Any

from kretrain.api import GROUP, PLURAL, VERSION
from kretrain.operator.kube import ALREADY_EXISTS, JSON_BODY, Kube, KubeError, checked_name, checked_namespace


class RunsApi(Kube):
    """Kube plus the RetrainJob calls of schedules (each listed in kretrain.operator.kube.SCHEDULE_API_CALLS),
    through the client's CustomObjectsApi (`self.custom`). Namespaces and names are checked as DNS-1123 before any request
    (kube.UnsafeName otherwise)."""

    def list_runs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """RetrainJobs in `namespace` matching a label selector."""
        found = self._call(
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            checked_namespace(namespace),
            PLURAL,
            label_selector=label_selector,
        )
        items: list[dict[str, Any]] = found["items"]
        return items

    def create_run(self, obj: dict[str, Any]) -> bool:
        """Create a RetrainJob; False when one of that name exists already (409 AlreadyExists: created before, never twice)."""
        checked_name(obj["metadata"]["name"])
        namespace = checked_namespace(obj["metadata"]["namespace"])
        try:
            self._call(
                self.custom.create_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                obj,
                _headers=JSON_BODY,
            )
        except KubeError as exc:
            if exc.status == 409 and exc.reason == ALREADY_EXISTS:  # a 409 Conflict created nothing: retryable
                return False
            raise
        return True

    def delete_run(self, namespace: str, name: str) -> None:
        """Delete a RetrainJob (its Job and ConfigMap follow by owner reference); gone already is fine."""
        namespace = checked_namespace(namespace)
        try:
            self._call(
                self.custom.delete_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                checked_name(name),
                propagation_policy="Background",
            )
        except KubeError as exc:
            if exc.status != 404:
                raise
