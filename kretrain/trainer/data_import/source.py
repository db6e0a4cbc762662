"""Where a dataset is read from: a local folder or an S3 prefix, with sizes bounded and names checked."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from kretrain.trainer.data_import.errors import ImportInputError
from kretrain.trainer.data_import.names import name_problem

if TYPE_CHECKING:
    from kretrain.store import ObjectStore


def parent_of(rel: str) -> str:
    """The folder part of a relative name (`""` at the top)."""
    parent = str(PurePosixPath(rel).parent)
    return "" if parent == "." else parent


def join(*parts: str) -> str:
    """Relative names joined with single slashes (empty parts dropped)."""
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


@dataclass
class Source:
    """A read-only tree of files addressed by relative POSIX names (local folder or S3 prefix)."""

    root: str
    """Local folder (absolute) or `s3://bucket/prefix`."""
    store: ObjectStore | None = None
    _listed: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def is_s3(self) -> bool:
        """Whether the tree is an S3 prefix."""
        return self.root.startswith("s3://")

    def describe(self, rel: str) -> str:
        """The full path or URI of `rel`, for messages."""
        return f"{self.root.rstrip('/')}/{rel}" if rel else self.root

    def _uri(self, rel: str) -> str:
        from kretrain.store import join_uri

        return join_uri(self.root, rel)

    def files(self, folder: str = "") -> dict[str, int]:
        """Every file under `folder` (recursive): name relative to the root -> size. Cached per folder.

        Entries whose names are unsafe (control characters, `..`) are kept out; symlinks and other
        non-regular files of a local tree are skipped.
        """
        if folder in self._listed:
            return self._listed[folder]
        out: dict[str, int] = {}
        if self.is_s3:
            assert self.store is not None
            for obj in self.store.list(self._uri(folder)):
                rel = join(folder, obj.key)
                if name_problem(rel) is None:
                    out[rel] = obj.size
        else:
            base = Path(self.root, folder) if folder else Path(self.root)
            for dirpath, _dirs, names in os.walk(base):
                for name in names:
                    path = Path(dirpath, name)
                    st = os.lstat(path)
                    rel = path.relative_to(self.root).as_posix()
                    if stat.S_ISREG(st.st_mode) and name_problem(rel) is None:
                        out[rel] = st.st_size
        self._listed[folder] = out
        return out

    def size(self, rel: str) -> int | None:
        """The size of one file, or None if it is missing (a listed folder answers from its listing)."""
        parent = parent_of(rel)
        for folder, listing in self._listed.items():
            if folder == "" or parent == folder or parent.startswith(folder + "/"):
                return listing.get(rel)
        if self.is_s3:
            assert self.store is not None
            info = self.store.head(self._uri(rel))
            return info.size if info else None
        path = Path(self.root, rel)
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode) or not path.resolve().is_relative_to(Path(self.root).resolve()):
            return None  # a symlink, or a path through a symlinked folder that leads outside the tree
        return st.st_size

    def read(self, rel: str, limit: int, what: str = "file") -> bytes:
        """The file's bytes; ImportInputError naming it if it is missing or larger than `limit`."""
        problem = name_problem(rel)
        if problem is not None:
            raise ImportInputError(f"{what} {rel!r} {problem}")
        size = self.size(rel)
        if size is None:
            raise ImportInputError(f"{self.describe(rel)}: {what} not found")
        if size > limit:
            raise ImportInputError(f"{self.describe(rel)}: {what} is {size} bytes, more than the limit of {limit}")
        if self.is_s3:
            assert self.store is not None
            try:
                data = self.store.get_bytes(self._uri(rel))
            except FileNotFoundError as exc:
                raise ImportInputError(f"{self.describe(rel)}: {what} not found") from exc
        else:
            try:
                with open(Path(self.root, rel), "rb") as fh:
                    data = fh.read(limit + 1)
            except OSError as exc:
                raise ImportInputError(f"{self.describe(rel)}: cannot read the {what}: {exc}") from exc
        if len(data) > limit:
            raise ImportInputError(f"{self.describe(rel)}: {what} is larger than the limit of {limit} bytes")
        return data


def open_source(location: str, store: ObjectStore | None) -> tuple[Source, str]:
    """The tree holding `location` (a file or folder, local or s3://) and the name of `location` in it.

    A file's tree is its folder; a folder's tree is itself (name `""`).
    """
    if location.startswith("s3://"):
        if store is None:
            raise ImportInputError(f"{location}: reading from S3 needs an object store")
        from kretrain.store import parse_s3_uri

        bucket, key = parse_s3_uri(location)
        if store.head(location) is not None and key:
            parent = parent_of(key)
            return Source(f"s3://{bucket}/{parent}".rstrip("/"), store), PurePosixPath(key).name
        return Source(f"s3://{bucket}/{key}".rstrip("/"), store), ""
    path = Path(location).resolve()
    if path.is_dir():
        return Source(str(path)), ""
    if not path.exists():
        raise ImportInputError(f"{location}: not found")
    return Source(str(path.parent)), path.name


def subtree(source: Source, folder: str) -> Source:
    """The tree rooted at `folder` of `source`."""
    if not folder:
        return source
    root = f"{source.root.rstrip('/')}/{folder}" if source.is_s3 else str(Path(source.root, folder))
    return Source(root, source.store)
