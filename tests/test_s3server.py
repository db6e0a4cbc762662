"""The SeaweedFS fixture is a real S3 server with atomic conditional writes."""

from __future__ import annotations

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
