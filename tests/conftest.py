"""Shared fixtures: a local S3 endpoint (moto server) for storage tests."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

# Dummy credentials: the endpoint is a local moto server that accepts anything.
_DUMMY_KEY = "testing"
_DUMMY_SECRET = "testing"
_REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    """A running local S3 endpoint with one empty bucket."""

    endpoint_url: str
    bucket: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def url(self, key: str) -> str:
        """``s3://`` URL of ``key`` in the bucket."""
        return f"s3://{self.bucket}/{key.lstrip('/')}"

    def unique_url(self, suffix: str = ".fits") -> str:
        """A fresh key, so tests sharing the server never see each other's objects."""
        return self.url(f"{uuid.uuid4().hex}{suffix}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's threaded S3 server on 127.0.0.1 (free port), with a bucket; stopped at the end."""
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")

    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as mp:
        # Only for this fixture's lifetime, so nothing reaches for real credentials.
        mp.setenv("AWS_ACCESS_KEY_ID", _DUMMY_KEY)
        mp.setenv("AWS_SECRET_ACCESS_KEY", _DUMMY_SECRET)
        mp.setenv("AWS_DEFAULT_REGION", _REGION)
        mp.delenv("AWS_PROFILE", raising=False)
        mp.delenv("AWS_SESSION_TOKEN", raising=False)
        try:
            bucket = "coadd-test"
            client = boto3.client(
                "s3",
                endpoint_url=endpoint,
                aws_access_key_id=_DUMMY_KEY,
                aws_secret_access_key=_DUMMY_SECRET,
                region_name=_REGION,
            )
            client.create_bucket(Bucket=bucket)
            storage_options = {
                "key": _DUMMY_KEY,
                "secret": _DUMMY_SECRET,
                "client_kwargs": {"endpoint_url": endpoint, "region_name": _REGION},
                # the server is shared by many tests; never trust a stale listing
                "use_listings_cache": False,
            }
            yield S3Server(endpoint_url=endpoint, bucket=bucket, storage_options=storage_options)
        finally:
            server.stop()
