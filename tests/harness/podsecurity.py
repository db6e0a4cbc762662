"""The pod's securityContext for the kubelet harness: run as runAsUser/runAsGroup with only the writable volumes
writable, and find anything the pod's user wrote elsewhere.

How: the pod's folders live in a fresh tree owned by root (`kubelet-pods-*` under the system temp folder, mode 0711),
the writable volumes (emptyDir, PVC, ephemeral) chowned to the pod's user, ConfigMap/Secret volumes root-owned and
read-only; the command runs under `setpriv --reuid --regid` (no new privileges, no capabilities) from the read-only
pod folder. The root filesystem is read-only to that user except for the world-writable folders, so after the pod
ends those are scanned for entries the user created: any is a write outside the pod's volumes (a real pod, with a
read-only root filesystem, would have failed there). Only folders the user may write to are walked: a writable
folder below one it may not write to (which only root could have made) is not looked for.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TREE_PREFIX = "kubelet-pods-"
"""Name prefix of the harness's pod trees (their volumes are the pods' own: never scanned as writes elsewhere)."""
WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
"""Where a non-root user can write on this machine's root filesystem (`find / -xdev -perm -0002 -type d`)."""
READ_ONLY_VOLUMES = ("configMap", "secret", "downwardAPI", "projected")
"""Volume sources a pod cannot write to."""
MAX_SCANNED = 200_000
"""Entries looked at per scan, at most (a runaway folder must not stall the harness)."""


@dataclass(frozen=True)
class Identity:
    """Who the container runs as: its securityContext over the pod's."""

    uid: int
    gid: int
    fs_group: int | None


def identity(pod_spec: dict[str, Any], container: dict[str, Any]) -> Identity | None:
    """The container's runAsUser/runAsGroup (the container's securityContext wins), or None when it sets no user."""
    pod_ctx, ctx = pod_spec.get("securityContext") or {}, container.get("securityContext") or {}
    uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    if uid is None:
        return None
    gid = ctx.get("runAsGroup", pod_ctx.get("runAsGroup", uid))
    return Identity(int(uid), int(gid), pod_ctx.get("fsGroup"))


def can_enforce() -> bool:
    """Whether this process can run commands as another user (root, Linux, setpriv installed)."""
    return sys.platform.startswith("linux") and os.geteuid() == 0 and shutil.which("setpriv") is not None


def new_tree() -> Path:
    """A fresh root-owned tree for pod folders that any user may traverse but not list or write."""
    tree = Path(tempfile.mkdtemp(prefix=TREE_PREFIX))
    tree.chmod(0o711)
    return tree


def writable(volume: dict[str, Any]) -> bool:
    """Whether the pod may write to this volume."""
    return not any(key in volume for key in READ_ONLY_VOLUMES)


def own(folder: Path, who: Identity) -> None:
    """A writable volume: owned by the pod's user (and fsGroup, group-writable, as the kubelet does)."""
    group = who.fs_group if who.fs_group is not None else who.gid
    os.chown(folder, who.uid, group)
    folder.chmod(0o2770 if who.fs_group is not None else 0o700)


def read_only(folder: Path) -> None:
    """A read-only volume or pod folder: root-owned, readable by all."""
    for entry in [folder, *folder.rglob("*")]:
        entry.chmod(0o755 if entry.is_dir() else 0o644)


def wrap(command: list[str], who: Identity) -> list[str]:
    """`command` run as the pod's user: no supplementary groups but fsGroup, no new privileges, no capabilities."""
    groups = [f"--groups={who.fs_group}"] if who.fs_group is not None else ["--clear-groups"]
    ids = [f"--reuid={who.uid}", f"--regid={who.gid}"]
    return ["setpriv", *ids, *groups, "--no-new-privs", "--inh-caps=-all", "--", *command]


def _writable_by(st: os.stat_result, who: Identity) -> bool:
    """Whether the pod's user may create entries in a folder with this stat."""
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == who.uid:
        return bool(mode & stat.S_IWUSR)
    if st.st_gid in (who.gid, who.fs_group):
        return bool(mode & stat.S_IWGRP)
    return bool(mode & stat.S_IWOTH)


def _entries(top: Path, who: Identity) -> Iterator[os.DirEntry[str]]:
    """Every entry in `top` and in the folders under it that the pod's user may write to (only there can it
    create anything; a writable folder below a read-only one is not looked for), pod trees left out."""
    stack = [str(top)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    yield entry
                    folder = entry.is_dir(follow_symlinks=False) and not entry.name.startswith(TREE_PREFIX)
                    if folder and _writable_by(entry.stat(follow_symlinks=False), who):
                        stack.append(entry.path)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue


def written_elsewhere(who: Identity, since: float, tops: tuple[str, ...] = WORLD_WRITABLE) -> list[str]:
    """Entries the pod's user created or changed since `since` in the world-writable folders (outside pod trees)."""
    found: list[str] = []
    seen = 0
    for top in tops:
        for entry in _entries(Path(top), who):
            seen += 1
            if seen > MAX_SCANNED:
                return [*found, f"(stopped after {MAX_SCANNED} entries)"]
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if st.st_uid == who.uid and max(st.st_ctime, st.st_mtime) >= since:
                found.append(entry.path)
    return found


def written_in_pod_folder(root: Path, volumes: list[Path], who: Identity) -> list[str]:
    """Entries owned by the pod's user in its pod folder outside its writable volumes (the folder is read-only)."""
    allowed = [str(v) for v in volumes]
    found = []
    for entry in root.rglob("*"):
        text = str(entry)
        if any(text == a or text.startswith(a + "/") for a in allowed):
            continue
        if entry.lstat().st_uid == who.uid and entry.name != "termination-log":
            found.append(text)
    return found
