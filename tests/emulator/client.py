"""A small synchronous HTTP client for the emulator (tests, harnesses and benchmarks)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from kretrain.api import GROUP, PLURAL, VERSION


class ApiStatusError(Exception):
    """The API answered with an error Status."""

    def __init__(self, code: int, status: dict[str, Any]) -> None:
        super().__init__(f"{code} {status.get('reason')}: {status.get('message')}")
        self.code, self.status = code, status


def path(group: str, version: str, plural: str, namespace: str | None = None, name: str | None = None,
         sub: str | None = None) -> str:  # fmt: skip
    """URL path of a collection or object."""
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    if namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{plural}"
    if name:
        base += f"/{name}"
    if sub:
        base += f"/{sub}"
    return base


def rtj_path(namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
    """Path of RetrainJobs."""
    return path(GROUP, VERSION, PLURAL, namespace, name, sub)


def job_path(namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
    """Path of batch/v1 Jobs."""
    return path("batch", "v1", "jobs", namespace, name, sub)


class Client:
    """JSON over HTTP to the emulator (or any API server that needs no auth)."""

    def __init__(self, url: str, user_agent: str = "kretrain-tests") -> None:
        self.url = url.rstrip("/")
        self.user_agent = user_agent

    def request(self, method: str, path: str, body: Any = None, ctype: str = "application/json") -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", ctype)
        req.add_header("User-Agent", self.user_agent)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                status = json.loads(payload)
            except ValueError:
                status = {"message": payload.decode(errors="replace")}
            raise ApiStatusError(exc.code, status) from None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def get_or_none(self, path: str) -> Any:
        try:
            return self.get(path)
        except ApiStatusError as exc:
            if exc.code == 404:
                return None
            raise

    def list(self, path: str, label_selector: str = "") -> list[dict[str, Any]]:
        query = f"?labelSelector={urllib.request.quote(label_selector)}" if label_selector else ""
        items: list[dict[str, Any]] = self.get(path + query)["items"]
        return items

    def create(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, body)

    def patch(self, path: str, body: Any, ctype: str = "application/merge-patch+json") -> Any:
        return self.request("PATCH", path, body, ctype)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def ensure_namespace(self, name: str) -> None:
        try:
            self.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        except ApiStatusError as exc:
            if exc.code != 409:
                raise
