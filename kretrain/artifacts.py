"""A version's serving artifacts (ONNX, TensorRT): uploaded beside the weights, fetched only when their sha256 holds."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from kretrain.registry_errors import RegistryError, TamperedWeights, VersionNotFound
from kretrain.registry_records import VersionArtifact
from kretrain.store import ObjectTooLarge, join_uri
from kretrain.verified import HashMismatch, fetch_verified, sha256_file

if TYPE_CHECKING:  # pragma: no cover
    from kretrain.registry import Registry
    from kretrain.store import ObjectStore

_FORMAT = re.compile(r"^[a-z0-9]{1,32}$")
_SUFFIX = re.compile(r"^\.[a-z0-9]{1,16}$")


def upload_artifacts(
    store: ObjectStore, base: str, writer: str, artifacts: Mapping[str, Path], uploaded: list[str]
) -> list[VersionArtifact]:
    """Upload each `format -> local file` as `<base>/model-<writer><suffix>`; returns the records for version.json.

    Every URI is appended to `uploaded` before its upload starts (the caller discards them if the commit fails).
    """
    records = []
    for fmt, path in artifacts.items():
        path = Path(path)
        if not _FORMAT.fullmatch(fmt) or not _SUFFIX.fullmatch(path.suffix):
            raise ValueError(f"artifact {fmt!r} ({path.name!r}): format and suffix must be short lowercase words")
        uri = join_uri(base, f"model-{writer}{path.suffix}")
        digest, size = sha256_file(path), path.stat().st_size
        uploaded.append(uri)
        store.upload_file(path, uri)
        records.append(VersionArtifact(format=fmt, uri=uri, sha256=digest, size=size))
    return records


def version_artifacts(registry: Registry, model: str, version: str) -> list[VersionArtifact]:
    """The artifacts a version's record lists, each checked to name an object in the version's own folder."""
    info = registry.version_info(model, version)
    base = registry.version_uri(model, version)
    out = []
    for art in info.artifacts:
        name = art.uri[len(base) + 1 :] if art.uri.startswith(base + "/") else ""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}", name):
            raise RegistryError(
                f"version.json of {version!r} of {model!r} names artifact {art.uri[:200]!r} outside {base}/"
            )
        out.append(art)
    return out


def fetch_artifact(registry: Registry, model: str, version: str, fmt: str, dest_dir: Path) -> Path:
    """Download the version's `fmt` artifact to `dest_dir/model.<suffix>` and verify it against version.json.

    TamperedWeights (nothing left at the path) when the bytes differ from the registered sha256 or size;
    VersionNotFound when the version has no artifact of that format.
    """
    found = [a for a in version_artifacts(registry, model, version) if a.format == fmt]
    if not found:
        raise VersionNotFound(f"version {version!r} of {model!r} has no {fmt!r} artifact")
    art = found[0]
    dest = Path(dest_dir) / ("model" + Path(art.uri).suffix)
    try:
        return fetch_verified(registry.store, art.uri, dest, sha256=art.sha256, max_bytes=art.size, reuse=True)
    except ObjectTooLarge as exc:
        raise TamperedWeights(
            f"{fmt} artifact of version {version!r} of {model!r} ({art.uri}) is {exc.size} bytes, but {art.size} "
            "were registered; it was changed after registration and will not be served"
        ) from None
    except HashMismatch as exc:
        raise TamperedWeights(
            f"{fmt} artifact of version {version!r} of {model!r} ({art.uri}) has sha256 {exc.actual}, but "
            f"{art.sha256} was registered; it was changed after registration and will not be served"
        ) from None
