"""Shared pytest fixtures: a real SeaweedFS S3 server for the session, and Ultralytics offline setup."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from kretrain.s3server import LocalS3Server


@dataclass
class S3:
    """A running SeaweedFS server and a helper to make fresh buckets on it."""

    server: LocalS3Server

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def env(self) -> dict[str, str]:
        return self.server.env()

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.server.access_key,
            aws_secret_access_key=self.server.secret_key,
            region_name="us-east-1",
        )

    def new_bucket(self, prefix: str = "t") -> str:
        """Create a uniquely named bucket and return its name."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    """A SeaweedFS S3 server on a free 127.0.0.1 port for the whole session, data in a temp dir."""
    server = LocalS3Server(tmp_path_factory.mktemp("seaweedfs"))
    with server:
        yield S3(server)


@pytest.fixture
def s3_env(s3: S3, monkeypatch: pytest.MonkeyPatch) -> S3:
    """Point boto3 (via AWS_* variables) at the session's SeaweedFS for one test."""
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    return s3


@pytest.fixture(scope="session", autouse=True)
def _offline_ultralytics(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Ultralytics must never reach the network in tests (fonts, weights, hub)."""
    os.environ.setdefault("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("yolo-config")))
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "false"
    os.environ.setdefault("MPLCONFIGDIR", str(Path(os.environ["YOLO_CONFIG_DIR"]) / "matplotlib"))
