"""A stateful Kubernetes API emulator for tests, built on kmock's scaffold (discovery, HTTP plumbing)."""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import secrets
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp.test_utils
import aiohttp.web
import jsonschema
import kmock
from kmock._internal import rendering

from emulator.threaded import ThreadedLoop

RKey = tuple[str, str, str]  # (group, version, plural)
OKey = tuple[str | None, str]  # (namespace, name)
LOG_LIMIT = 20000  # watch events kept per resource for resourceVersion-based resumption


class ApiError(Exception):
    """An error answered as a Kubernetes Status object."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


@dataclass
class Resource:
    """What the emulator knows about one served resource."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    status_subresource: bool = False
    singular: str = ""
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    printer_columns: list[dict[str, Any]] = field(default_factory=list)
    schema: dict[str, Any] | None = None
    custom: bool = False

    @property
    def key(self) -> RKey:
        return (self.group, self.version, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


BUILTINS = [
    Resource("", "v1", "namespaces", "Namespace", False, True, short_names=["ns"]),
    Resource("", "v1", "pods", "Pod", True, True, short_names=["po"]),
    Resource("", "v1", "configmaps", "ConfigMap", True, short_names=["cm"]),
    Resource("", "v1", "services", "Service", True, short_names=["svc"]),
    Resource("", "v1", "secrets", "Secret", True),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", True, short_names=["sa"]),
    Resource("", "v1", "events", "Event", True, short_names=["ev"]),
    Resource("events.k8s.io", "v1", "events", "Event", True, short_names=["ev"]),
    Resource("batch", "v1", "jobs", "Job", True, True),
    Resource("coordination.k8s.io", "v1", "leases", "Lease", True),
    Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False, True,
             short_names=["crd", "crds"]),
]  # fmt: skip


STRATEGIC_MERGE = "application/strategic-merge-patch+json"
PATCH_TYPES = frozenset({"application/json-patch+json", "application/merge-patch+json", STRATEGIC_MERGE,
                         "application/apply-patch+yaml"})  # fmt: skip
"""What a PATCH may be; the API server refuses strategic merge on custom resources (415), as here."""
BODY_TYPES = frozenset({"", "application/json"})
"""What a POST or PUT body may be here (no Content-Type: the server's first media type, JSON)."""


def media_type(content_type: str) -> str:
    """`application/json; charset=utf-8` -> `application/json`."""
    return content_type.split(";", 1)[0].strip().lower()


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (strategic-merge patches are treated the same: lists are replaced)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):  # strategic-merge directives ($patch, $retainKeys...) are not emulated
            continue
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 JSON patch: add, replace, remove, test."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        kind = op["op"]
        if kind == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if current != op["value"]:
                raise ApiError(422, "Invalid", f"test operation failed at {op['path']}")
        elif isinstance(parent, list):
            idx = len(parent) if last == "-" else int(last)
            if kind == "add":
                parent.insert(idx, op["value"])
            elif kind == "replace":
                parent[idx] = op["value"]
            elif kind == "remove":
                del parent[idx]
        elif kind in ("add", "replace"):
            parent[last] = op["value"]
        elif kind == "remove":
            parent.pop(last, None)
    return doc


def label_matches(labels: dict[str, str], selector: str) -> bool:
    """Kubernetes label selector: k=v, k==v, k!=v, k in (a,b), k notin (a,b), k, !k (comma = and)."""
    terms, depth, cur = [], 0, ""
    for ch in selector:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    terms.append(cur)
    for raw in (t.strip() for t in terms):
        if not raw:
            continue
        if " notin " in raw or " in " in raw:
            neg = " notin " in raw
            key, values = raw.split(" notin " if neg else " in ", 1)
            options = {v.strip() for v in values.strip().strip("()").split(",")}
            present = key.strip() in labels and labels[key.strip()] in options
            if present == neg:
                return False
        elif "!=" in raw:
            key, value = raw.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in raw:
            key, value = raw.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif raw.startswith("!"):
            if raw[1:].strip() in labels:
                return False
        elif raw not in labels:
            return False
    return True


def field_value(obj: Any, path: str) -> Any:
    """Value at a dotted path (`metadata.name`, `.status.decision.summary`, `items[0]`); None if absent."""
    for part in path.strip(".").split("."):
        index = None
        if part.endswith("]") and "[" in part:
            part, idx = part[:-1].split("[", 1)
            index = int(idx)
        obj = obj.get(part) if isinstance(obj, dict) else None
        if index is not None:
            obj = obj[index] if isinstance(obj, list) and -len(obj) <= index < len(obj) else None
        if obj is None:
            return None
    return obj


def field_matches(obj: dict[str, Any], selector: str) -> bool:
    """Field selector over dotted paths: a.b=v, a.b==v, a.b!=v (comma = and)."""
    for raw in (t.strip() for t in selector.split(",")):
        if not raw:
            continue
        neg = "!=" in raw
        key, value = raw.split("!=" if neg else "=", 1)
        actual = field_value(obj, key.strip())
        actual_s = "" if actual is None else str(actual).lower() if isinstance(actual, bool) else str(actual)
        if (actual_s == value.lstrip("=").strip()) == neg:
            return False
    return True


def prune(obj: Any, schema: dict[str, Any]) -> Any:
    """Drop fields the structural schema does not declare (as the API server does)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return obj
    if isinstance(obj, dict) and "properties" in schema:
        props = schema["properties"]
        return {k: prune(v, props[k]) for k, v in obj.items() if k in props}
    if isinstance(obj, dict) and isinstance(schema.get("additionalProperties"), dict):
        return {k: prune(v, schema["additionalProperties"]) for k, v in obj.items()}
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [prune(v, schema["items"]) for v in obj]
    return obj


def apply_defaults(obj: Any, schema: dict[str, Any]) -> None:
    """Fill `default`s of the structural schema into absent fields whose parent exists (as the API server does)."""
    if isinstance(obj, dict) and "properties" in schema:
        for key, sub in schema["properties"].items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                apply_defaults(obj[key], sub)
    elif isinstance(obj, dict) and isinstance(schema.get("additionalProperties"), dict):
        for value in obj.values():
            apply_defaults(value, schema["additionalProperties"])
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            apply_defaults(item, schema["items"])


def human_age(seconds: float) -> str:
    """Age the way kubectl prints it."""
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    if s < 600:
        return f"{s // 60}m{s % 60}s" if s % 60 else f"{s // 60}m"
    if s < 3 * 3600:
        return f"{s // 60}m"
    if s < 48 * 3600:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


class Emulator(kmock.KubernetesScaffold):  # type: ignore[misc]
    """Stateful Kubernetes API: uids, resourceVersions, generations, status subresources, selectors,
    watches with resumption, finalizers, owner-reference garbage collection, CRDs that register their
    resource and validate/prune against their schema, Table output for kubectl printer columns."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.types: dict[RKey, Resource] = {}
        self.store: dict[RKey, dict[OKey, dict[str, Any]]] = defaultdict(dict)
        self.logs: dict[RKey, deque[tuple[int, dict[str, Any]]]] = defaultdict(lambda: deque(maxlen=LOG_LIMIT))
        self.watchers: dict[RKey, set[asyncio.Queue[dict[str, Any] | None]]] = defaultdict(set)
        self.rv = 0
        self.created_at: dict[str, float] = {}  # uid -> wall-clock creation time (for benchmarks)
        self.calls: dict[str, set[tuple[str, str]]] = defaultdict(set)  # user agent -> {(verb, resource)}
        self.patches: deque[tuple[str, str, str, Any]] = deque(maxlen=LOG_LIMIT)  # (agent, resource, name, body)
        for res in BUILTINS:
            self.register(copy.deepcopy(res))

    # ---- registry of types -------------------------------------------------------------------------
    def register(self, res: Resource) -> None:
        """Serve a resource (discovery, CRUD, watch)."""
        self.types[res.key] = res
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        self.resources[f"{res.api_version}/{res.plural}"] = kmock.ResourceInfo(
            namespaced=res.namespaced,
            kind=res.kind,
            singular=res.singular or res.kind.lower(),
            verbs=verbs,
            shortnames=res.short_names,
            categories=res.categories,
            subresources=["status"] if res.status_subresource else [],
        )

    def _register_crd(self, crd: dict[str, Any]) -> None:
        spec, names = crd.get("spec", {}), crd.get("spec", {}).get("names", {})
        for ver in spec.get("versions", []):
            if not ver.get("served", True):
                continue
            self.register(
                Resource(
                    group=spec["group"],
                    version=ver["name"],
                    plural=names["plural"],
                    kind=names["kind"],
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    status_subresource="status" in (ver.get("subresources") or {}),
                    singular=names.get("singular", ""),
                    short_names=names.get("shortNames", []),
                    categories=names.get("categories", []),
                    printer_columns=ver.get("additionalPrinterColumns", []),
                    schema=(ver.get("schema") or {}).get("openAPIV3Schema"),
                    custom=True,
                )
            )
        crd["status"] = {
            "acceptedNames": names,
            "storedVersions": [v["name"] for v in spec.get("versions", []) if v.get("storage")],
            "conditions": [
                {"type": t, "status": "True", "reason": r, "lastTransitionTime": now_rfc3339()}
                for t, r in (("NamesAccepted", "NoConflicts"), ("Established", "InitialNamesAccepted"))
            ],
        }

    def _get_resources(self) -> list[Any]:
        return [kmock.resource(g, v, p) for (g, v, p) in self.types]

    async def _serve_version(self, request: rendering.Request) -> dict[str, Any]:
        group, version = request.resource.group, request.resource.version
        found = [r for r in self.types.values() if r.group == group and r.version == version]
        if not found:
            raise kmock.KubernetesResourceNotFoundError()
        resources = []
        for r in found:
            info = self.resources[f"{r.api_version}/{r.plural}"]
            entry = {
                "name": r.plural,
                "singularName": info.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": sorted(info.verbs),
                "shortNames": r.short_names,
                "categories": r.categories,
            }
            resources.append(entry)
            if r.status_subresource:
                status = {**entry, "name": f"{r.plural}/status", "verbs": ["get", "patch", "update"]}
                resources.append({**status, "shortNames": [], "categories": []})
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}

    # ---- plumbing ----------------------------------------------------------------------------------
    def _parse(self, path: str) -> tuple[Resource, str | None, str | None, str | None] | None:
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3 and (group, version, rest[2]) in self.types:
            ns, rest = rest[1], rest[2:]
        res = self.types.get((group, version, rest[0]))
        if res is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        name = rest[1] if len(rest) > 1 else None
        sub = "/".join(rest[2:]) or None
        return res, ns, name, sub

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """Serve resource paths here; discovery and everything else goes to kmock."""
        try:
            parsed = self._parse(raw.path)
        except ApiError as exc:
            return aiohttp.web.json_response(exc.status(), status=exc.code)
        if parsed is None:
            return await super().__call__(raw)
        try:
            return await self._serve(raw, *parsed)
        except ApiError as exc:
            return aiohttp.web.json_response(exc.status(), status=exc.code)

    async def _serve(
        self, raw: aiohttp.web.BaseRequest, res: Resource, ns: str | None, name: str | None, sub: str | None
    ) -> aiohttp.web.StreamResponse:
        method, params = raw.method, raw.query
        watch = method == "GET" and params.get("watch") in ("true", "1")
        verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, "")
        verb = "watch" if watch else ("delete" if name else "deletecollection") if method == "DELETE" else verb
        agent = raw.headers.get("User-Agent", "").split("/")[0].split(" ")[0]
        self.calls[agent].add((verb, f"{res.plural}.{res.group}".rstrip(".") + (f"/{sub}" if sub else "")))
        if watch:
            return await self._watch(raw, res, ns, name)
        media = media_type(raw.headers.get("Content-Type", ""))
        if "protobuf" in media:
            raise ApiError(415, "UnsupportedMediaType", "the emulator speaks JSON only, not protobuf")
        if method in ("POST", "PUT") and media not in BODY_TYPES:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {media}")
        text = await raw.text()
        try:
            body = json.loads(text) if text.strip() else None
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"the request body is not JSON: {exc}") from None
        if method == "GET" and name:
            return self._respond(raw, res, [self._get(res, ns, name)], single=True)
        if method == "GET":
            return self._respond(raw, res, self._list(res, ns, params), single=False)
        if method == "POST" and not name:
            return aiohttp.web.json_response(self.create(res, ns, body or {}), status=201)
        if method == "PUT" and name:
            return aiohttp.web.json_response(self._put(res, ns, name, sub, body or {}))
        if method == "PATCH" and name:
            self.patches.append((agent, f"{res.plural}{'/' + sub if sub else ''}", f"{ns}/{name}", body))
            accepted = PATCH_TYPES - ({STRATEGIC_MERGE} if res.custom else set())
            if media not in accepted:
                raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                            f"accepted media types include: {', '.join(sorted(accepted))}")  # fmt: skip
            return aiohttp.web.json_response(self._patch(res, ns, name, sub, body, media))
        if method == "DELETE" and name:
            # DeleteOptions come from the body when there is one, else from the query (as the API server reads them)
            options = body if isinstance(body, dict) else dict(params)
            policy = options.get("propagationPolicy") or "Background"
            if policy not in ("Orphan", "Background", "Foreground"):
                raise ApiError(422, "Invalid", f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: '
                                               f'Unsupported value: "{policy}"')  # fmt: skip
            return aiohttp.web.json_response(self.delete(res, ns, name, orphan=policy == "Orphan"))
        if method == "DELETE":
            for obj in self._list(res, ns, params):
                self.delete(res, obj["metadata"].get("namespace"), obj["metadata"]["name"])
            return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success"})
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {raw.path}")

    def _respond(
        self, raw: aiohttp.web.BaseRequest, res: Resource, objs: list[dict[str, Any]], single: bool
    ) -> aiohttp.web.Response:
        if "as=Table" in raw.headers.get("Accept", ""):
            return aiohttp.web.json_response(self._table(res, objs))
        if single:
            return aiohttp.web.json_response(objs[0])
        return aiohttp.web.json_response(
            {
                "kind": f"{res.kind}List",
                "apiVersion": res.api_version,
                "metadata": {"resourceVersion": str(self.rv)},
                "items": objs,
            }
        )

    def _table(self, res: Resource, objs: list[dict[str, Any]]) -> dict[str, Any]:
        cols = res.printer_columns or [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
        defs = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
        defs += [
            {"name": c["name"], "type": c.get("type", "string"), "format": "", "description": c.get("description", ""),
             "priority": c.get("priority", 0)}
            for c in cols
        ]  # fmt: skip
        rows = []
        for obj in objs:
            cells: list[Any] = [obj["metadata"]["name"]]
            for c in cols:
                value = field_value(obj, c["jsonPath"])
                if c.get("type") == "date" and isinstance(value, str):
                    born = datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
                    value = human_age((datetime.datetime.now(datetime.UTC) - born).total_seconds())
                cells.append("<none>" if value is None else value)
            meta = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}
            rows.append({"cells": cells, "object": meta})
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": str(self.rv)},
            "columnDefinitions": defs,
            "rows": rows,
        }

    # ---- state -------------------------------------------------------------------------------------
    def _key(self, res: Resource, ns: str | None, name: str) -> OKey:
        return (ns if res.namespaced else None, name)

    def _get(self, res: Resource, ns: str | None, name: str) -> dict[str, Any]:
        obj = self.store[res.key].get(self._key(res, ns, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{res.plural}.{res.group} "{name}" not found'.replace(". ", " "))
        return obj

    def _list(self, res: Resource, ns: str | None, params: Any) -> list[dict[str, Any]]:
        labels, fields = params.get("labelSelector", ""), params.get("fieldSelector", "")
        return [
            obj
            for (ons, _), obj in sorted(self.store[res.key].items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))
            if (ns is None or ons == ns)
            and (not labels or label_matches(obj["metadata"].get("labels") or {}, labels))
            and (not fields or field_matches(obj, fields))
        ]

    def _emit(self, res: Resource, kind: str, obj: dict[str, Any]) -> None:
        event = {"type": kind, "object": obj}
        self.logs[res.key].append((int(obj["metadata"]["resourceVersion"]), event))
        for queue in self.watchers[res.key]:
            queue.put_nowait(event)

    def _bump(self, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def _validate(self, res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        if not res.schema:
            return obj
        meta = obj.get("metadata")
        pruned = prune({k: v for k, v in obj.items() if k != "metadata"}, res.schema)
        apply_defaults(pruned, res.schema)
        pruned["metadata"] = meta
        errors = sorted(
            jsonschema.Draft4Validator({**res.schema, "properties": {**res.schema.get("properties", {}),
                                                                      "metadata": {"type": "object"}}}).iter_errors(pruned),
            key=lambda e: list(e.absolute_path),
        )  # fmt: skip
        if errors:
            detail = "; ".join(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors[:5])
            name = (meta or {}).get("name", "")
            raise ApiError(422, "Invalid", f'{res.kind}.{res.group} "{name}" is invalid: {detail}')
        return pruned

    def create(self, res: Resource, ns: str | None, body: dict[str, Any]) -> dict[str, Any]:
        """Create an object (the namespace comes from the URL when given there)."""
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            if ns and meta.get("namespace") not in (None, ns):
                raise ApiError(400, "BadRequest", "the namespace of the object does not match the URL")
            ns = ns or meta.get("namespace") or "default"
            meta["namespace"] = ns
            if (None, ns) not in self.store[("", "v1", "namespaces")]:
                raise ApiError(404, "NotFound", f'namespaces "{ns}" not found')
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        if not meta.get("name"):
            raise ApiError(422, "Invalid", f"{res.kind}: metadata.name: Required value")
        if len(meta["name"]) > 253:
            raise ApiError(422, "Invalid", f"{res.kind}: metadata.name: must be no more than 253 characters")
        key = self._key(res, ns, meta["name"])
        if key in self.store[res.key]:
            raise ApiError(409, "AlreadyExists", f'{res.plural} "{meta["name"]}" already exists')
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339(), generation=1)
        meta.pop("deletionTimestamp", None)
        if res.status_subresource and res.kind != "CustomResourceDefinition":
            obj.pop("status", None)
        obj = self._validate(res, obj)
        if res.key == ("apiextensions.k8s.io", "v1", "customresourcedefinitions"):
            self._register_crd(obj)
        self._bump(obj)
        self.store[res.key][key] = obj
        self.created_at[meta["uid"]] = time.time()
        self._emit(res, "ADDED", obj)
        return obj

    def _put(self, res: Resource, ns: str | None, name: str, sub: str | None, body: dict[str, Any]) -> dict[str, Any]:
        old = self._get(res, ns, name)
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.plural} "{name}": '
                                            "the object has been modified; please apply your changes to the latest version")  # fmt: skip
        return self.update(res, old, copy.deepcopy(body), sub)

    def _patch(
        self, res: Resource, ns: str | None, name: str, sub: str | None, patch: Any, ctype: str
    ) -> dict[str, Any]:
        old = self._get(res, ns, name)
        if "json-patch" in ctype:
            new = json_patch(old, patch if isinstance(patch, list) else [])
        elif "apply-patch" in ctype:
            raise ApiError(415, "UnsupportedMediaType", "server-side apply is not emulated")
        else:
            rv = ((patch or {}).get("metadata") or {}).get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.plural} "{name}"')
            new = merge_patch(old, patch or {})
        return self.update(res, old, new, sub)

    def update(self, res: Resource, old: dict[str, Any], new: dict[str, Any], sub: str | None) -> dict[str, Any]:
        """Apply a full new state (subresource rules, immutable metadata, generation, finalizers)."""
        if sub not in (None, "status"):
            raise ApiError(404, "NotFound", f"subresource {sub} is not served")
        if res.status_subresource and sub == "status":
            new = {**copy.deepcopy(old), "status": new.get("status")}
            if new["status"] is None:
                new.pop("status")
        elif res.status_subresource:
            new = {k: v for k, v in new.items() if k != "status"}
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
        meta = new.setdefault("metadata", {})
        for keep in ("uid", "creationTimestamp", "namespace", "name", "deletionTimestamp", "generation"):
            if keep in old["metadata"]:
                meta[keep] = old["metadata"][keep]
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        new["apiVersion"], new["kind"] = res.api_version, res.kind
        new = self._validate(res, new)
        if new == old:
            return old  # a no-op write changes nothing, not even the resourceVersion
        if {k: v for k, v in new.items() if k not in ("metadata", "status")} != {
            k: v for k, v in old.items() if k not in ("metadata", "status")
        }:
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        if res.key == ("apiextensions.k8s.io", "v1", "customresourcedefinitions"):
            self._register_crd(new)
        self._bump(new)
        key = self._key(res, old["metadata"].get("namespace"), old["metadata"]["name"])
        self.store[res.key][key] = new
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(res, new)
        else:
            self._emit(res, "MODIFIED", new)
        return new

    def delete(self, res: Resource, ns: str | None, name: str, orphan: bool = False) -> dict[str, Any]:
        """Delete (or mark for deletion while finalizers remain); dependents are garbage-collected."""
        obj = self._get(res, ns, name)
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj = copy.deepcopy(obj)
                obj["metadata"]["deletionTimestamp"] = now_rfc3339()
                obj["metadata"]["deletionGracePeriodSeconds"] = 0
                self._bump(obj)
                self.store[res.key][self._key(res, ns, name)] = obj
                self._emit(res, "MODIFIED", obj)
            return obj
        self._remove(res, obj, orphan=orphan)
        return obj

    def _remove(self, res: Resource, obj: dict[str, Any], orphan: bool = False) -> None:
        meta = obj["metadata"]
        self.store[res.key].pop(self._key(res, meta.get("namespace"), meta["name"]), None)
        gone = copy.deepcopy(obj)
        self._bump(gone)
        self._emit(res, "DELETED", gone)
        if orphan:
            return
        uid = meta["uid"]
        for other in list(self.types.values()):
            for (ons, oname), dep in list(self.store[other.key].items()):
                owned = any(ref.get("uid") == uid for ref in dep["metadata"].get("ownerReferences") or [])
                in_ns = res.key == ("", "v1", "namespaces") and ons == meta["name"]
                if (owned or in_ns) and (ons, oname) in self.store[other.key]:
                    self.delete(other, ons, oname)

    # ---- watch -------------------------------------------------------------------------------------
    async def _watch(
        self, raw: aiohttp.web.BaseRequest, res: Resource, ns: str | None, name: str | None
    ) -> aiohttp.web.StreamResponse:
        params = dict(raw.query)
        if name:
            params["fieldSelector"] = ",".join(filter(None, [params.get("fieldSelector"), f"metadata.name={name}"]))
        labels, fields = params.get("labelSelector", ""), params.get("fieldSelector", "")

        def visible(event: dict[str, Any]) -> bool:
            obj = event["object"]
            return (
                (ns is None or obj["metadata"].get("namespace") == ns)
                and (not labels or label_matches(obj["metadata"].get("labels") or {}, labels))
                and (not fields or field_matches(obj, fields))
            )

        since = params.get("resourceVersion", "")
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        backlog: list[dict[str, Any]]
        if since in ("", "0"):
            backlog = [{"type": "ADDED", "object": o} for o in self._list(res, ns, params)]
        else:
            log = self.logs[res.key]
            if log and log[0][0] > int(since) + 1 and int(since) < self.rv:
                expired = ApiError(410, "Expired", f"too old resource version: {since}").status()
                backlog = [{"type": "ERROR", "object": expired}]
            else:
                backlog = [event for rv, event in log if rv > int(since) and visible(event)]
        self.watchers[res.key].add(queue)
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        timeout = float(params.get("timeoutSeconds") or 1800)
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            await response.prepare(raw)
            for event in backlog:
                await response.write(json.dumps(event).encode() + b"\n")
            while (left := deadline - asyncio.get_running_loop().time()) > 0:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=left)
                except TimeoutError:
                    break
                if event is None:
                    break
                if visible(event):
                    await response.write(json.dumps(event).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watchers[res.key].discard(queue)
        return response

    def close_watches(self) -> None:
        """End every open watch stream (on shutdown)."""
        for queues in self.watchers.values():
            for queue in queues:
                queue.put_nowait(None)


class EmulatorServer(ThreadedLoop):
    """The emulator on a local port, served from its own thread: `start(port) -> URL`, `stop()`.

    Every state-changing method is also callable from the test thread through `call()`,
    which runs it on the server's event loop.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.emulator = Emulator()
        self.url = ""

    def start(self, port: int = 0) -> str:
        """Serve on `port` (0: a free one); returns the base URL."""

        async def serve(ready: Callable[[], None]) -> None:
            assert self._stop is not None
            server = aiohttp.test_utils.RawTestServer(self.emulator, host=self.host, port=port or None)
            async with self.emulator:
                await server.start_server()
                self.url = str(server.make_url("")).rstrip("/")
                ready()
                await self._stop.wait()
                self.emulator.close_watches()
                await asyncio.sleep(0.05)
                await server.close()

        return self._start_thread(serve, "k8s-emulator", "the Kubernetes emulator")

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run `fn(*args, **kwargs)` on the server's loop (thread-safe access to the state)."""
        assert self._loop is not None

        async def run() -> Any:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
