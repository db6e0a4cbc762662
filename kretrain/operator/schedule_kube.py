"""The API calls a RetrainSchedule makes itself: list, create and delete its RetrainJobs (SCHEDULE_API_CALLS)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from kretrain.api import GROUP, PLURAL, VERSION
from kretrain.operator.kube import Kube, KubeError, checked_name, checked_namespace


def _runs(namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{quote(checked_namespace(namespace), safe='')}/{PLURAL}"


class RunsApi(Kube):
    """Kube plus the RetrainJob calls of schedules (each listed in kretrain.operator.kube.SCHEDULE_API_CALLS).
    Namespaces and names are checked as DNS-1123 before any URL is built (kube.UnsafeName otherwise)."""

    def list_runs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """RetrainJobs in `namespace` matching a label selector."""
        items: list[dict[str, Any]] = self.call("GET", _runs(namespace), query={"labelSelector": label_selector})[
            "items"
        ]
        return items

    def create_run(self, obj: dict[str, Any]) -> bool:
        """Create a RetrainJob; False when one of that name exists already (409: created before, never twice)."""
        checked_name(obj["metadata"]["name"])
        try:
            self.call("POST", _runs(obj["metadata"]["namespace"]), body=obj)
        except KubeError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def delete_run(self, namespace: str, name: str) -> None:
        """Delete a RetrainJob (its Job and ConfigMap follow by owner reference); gone already is fine."""
        try:
            path = f"{_runs(namespace)}/{quote(checked_name(name), safe='')}"
            self.call("DELETE", path, query={"propagationPolicy": "Background"})
        except KubeError as exc:
            if exc.status != 404:
                raise
