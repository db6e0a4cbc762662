"""The SeaweedFS fixture is a real S3 server with atomic conditional writes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import botocore.exceptions
import pytest


def test_put_get_and_conditional_write(s3) -> None:  # type: ignore[no-untyped-def]
    client = s3.client()
    bucket = s3.new_bucket()
    client.put_object(Bucket=bucket, Key="a.txt", Body=b"hello", IfNoneMatch="*")
    assert client.get_object(Bucket=bucket, Key="a.txt")["Body"].read() == b"hello"
    with pytest.raises(botocore.exceptions.ClientError) as err:
        client.put_object(Bucket=bucket, Key="a.txt", Body=b"again", IfNoneMatch="*")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


def test_two_servers_run_side_by_side(s3, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Every port of `weed mini` is chosen free, so a second server (a demo, a benchmark) never collides."""
    import boto3

    from kretrain.s3server import LocalS3Server

    with LocalS3Server(tmp_path / "second") as other:
        assert other.endpoint != s3.endpoint and not set(other.ports.values()) & set(s3.server.ports.values())
        client = boto3.client("s3", endpoint_url=other.endpoint, aws_access_key_id=other.access_key,
                              aws_secret_access_key=other.secret_key, region_name="us-east-1")  # fmt: skip
        client.create_bucket(Bucket="second")
        client.put_object(Bucket="second", Key="k", Body=b"v")
        assert client.get_object(Bucket="second", Key="k")["Body"].read() == b"v"
    s3.client().list_buckets()  # the session server is unaffected


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie waiting for its reaper is dead too


@pytest.mark.skipif(not (sys.platform.startswith("linux") and shutil.which("setpriv")), reason="needs Linux setpriv")
def test_server_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    # A test run killed with SIGKILL runs no cleanup; its SeaweedFS must not live on.
    code = (
        "import sys, time; from pathlib import Path; from kretrain.s3server import LocalS3Server; "
        "s = LocalS3Server(Path(sys.argv[1])).start(); print(s._proc.pid, flush=True); time.sleep(120)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-P", "-c", code, str(tmp_path / "s3")], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    weed = int(parent.stdout.readline())
    assert _alive(weed)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(weed) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(weed), "SeaweedFS outlived the process that started it"
