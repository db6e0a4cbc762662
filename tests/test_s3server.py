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
