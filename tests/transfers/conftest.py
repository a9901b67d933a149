"""Fixtures of the transfer tests: S3 through moto (in process and as a server) and a scriptable file server.

The emulator (``emulator`` fixture) serves the real Seedance outputs; the file server of ``_support.py``
serves bodies with precisely scripted misbehaviour for the unit tests of the streaming core.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests._support import free_port
from tests.operators._dag_support import emulator, shared_emulator
from tests.transfers._support import BUCKET, file_server

# One emulator server per session, reset around every test (starting uvicorn per test is slow).
__all__ = ["emulator", "file_server", "shared_emulator"]


# ---------------------------------------------------------------------------------------------------------
# S3
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _moto_client() -> Iterator[Any]:
    """Start moto's in-process mock once per test module (starting it costs about a second)."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        yield boto3.client("s3", region_name="us-east-1")


@pytest.fixture
def s3(_moto_client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An in-process moto S3 with an empty bucket :data:`BUCKET`; operators use the client it yields."""
    from airflow_provider_seedance.transfers.seedance_to_s3 import SeedanceToS3Operator

    client = _moto_client
    # No aws_default connection: a real S3Hook falls back to boto3's chain (the fake keys of
    # tests/conftest.py).
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)
    client.create_bucket(Bucket=BUCKET)
    # Operators reuse this client (building one per run costs a second); the S3Hook path itself is
    # covered end to end against moto_server.
    monkeypatch.setattr(SeedanceToS3Operator, "_make_client", lambda self: client)
    yield client
    drop_bucket(client)


def drop_bucket(client: Any, bucket: str = BUCKET) -> None:
    """Delete ``bucket`` with every object version, delete marker and open multipart upload in it."""
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    listing = client.list_object_versions(Bucket=bucket)
    for entry in listing.get("Versions", []) + listing.get("DeleteMarkers", []):
        client.delete_object(Bucket=bucket, Key=entry["Key"], VersionId=entry["VersionId"])
    for entry in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        client.delete_object(Bucket=bucket, Key=entry["Key"])
    client.delete_bucket(Bucket=bucket)


@dataclass
class MotoServer:
    """A moto S3 server on 127.0.0.1 and a client on it."""

    endpoint_url: str
    client: Any


@pytest.fixture
def moto_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    """Run ``moto`` as a real HTTP server; point the ``aws_default`` connection at it (``endpoint_url``)."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        monkeypatch.setenv(
            "AIRFLOW_CONN_AWS_DEFAULT",
            json.dumps(
                {
                    "conn_type": "aws",
                    "login": os.environ["AWS_ACCESS_KEY_ID"],
                    "password": os.environ["AWS_SECRET_ACCESS_KEY"],
                    "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
                }
            ),
        )
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        # moto keeps its state per process, across servers: start from a fresh bucket.
        with contextlib.suppress(client.exceptions.NoSuchBucket):
            drop_bucket(client)
        client.create_bucket(Bucket=BUCKET)
        yield MotoServer(endpoint_url=endpoint, client=client)
        drop_bucket(client)
    finally:
        server.stop()
