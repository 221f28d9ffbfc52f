"""A store in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, SeaweedFS, GCS) through boto3.

An object store applies each PUT whole, so a document or table is replaced atomically and readers
never see a torn checkpoint. A result is written once: the PUT carries ``If-None-Match: *``. A
server that rejects that header gets a HEAD check, then a plain PUT. There, two writers racing on
one key can both write, but each writes a complete result of the same candidate.
NOTE: a server that ignores the header without an error is not detected; the search itself
still never writes a result it found stored. Large files go
up in multipart uploads. Throttling, server errors and network failures are retried with bounded
exponential backoff for ``retry_timeout`` seconds, so a search waits out a storage outage.
Credentials come from boto3's standard chain and are never logged.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import boto3
import pandas as pd
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    ResponseStreamingError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from popnas.results import CandidateResult
from popnas.spec import StorageSpec
from popnas.spec.uris import S3Location, parse_s3
from popnas.storage.protocol import RESULTS, StorageError

logger = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY: Final = 0.5
"""Seconds before the first retry. Each later retry waits twice as long, up to MAX_DELAY."""
MAX_DELAY: Final = 8.0
RETRY_LOG_INTERVAL: Final = 60.0
"""Seconds between the warnings of one request that keeps failing."""

MULTIPART_SIZE: Final = 16 * 1024 * 1024
"""Files at least this large are uploaded in parts of this size."""

_RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "ConditionalRequestConflict",
    }
)
_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AllAccessDisabled",
    }
)

_DENIED_ADVICE = {
    "SignatureDoesNotMatch": "the secret access key does not match the access key id; fix the credentials",
    "InvalidAccessKeyId": "the server does not know this access key id; fix the credentials",
    "ExpiredToken": "the session token has expired; refresh the credentials",
    "InvalidToken": "the session token is invalid; refresh the credentials",
    "TokenRefreshRequired": "the session token has expired; refresh the credentials",
    "AccessDenied": (
        "check the credentials, and that this identity has s3:ListBucket on the bucket and "
        "s3:GetObject and s3:PutObject on the prefix"
    ),
}

_CREDENTIAL_SOURCES = {
    "env": "the environment variables AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    "shared-credentials-file": "the shared credentials file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials)",
    "config-file": "the AWS config file (AWS_CONFIG_FILE or ~/.aws/config)",
    "assume-role": "a role assumed through the AWS config file",
    "assume-role-with-web-identity": "a web identity token (AWS_WEB_IDENTITY_TOKEN_FILE, as IRSA sets it)",
    "sso": "AWS IAM Identity Center (SSO)",
    "custom-process": "a credential_process command in the AWS config file",
    "container-role": "the container credentials endpoint (ECS task role or EKS pod identity)",
    "iam-role": "the instance role (instance metadata)",
}


@dataclass(frozen=True)
class S3Settings:
    """Connection settings of an S3-compatible server: the manifest's ``spec.storage`` without the URI."""

    endpoint_url: str | None = None
    region: str | None = None
    path_style: bool = False
    retry_timeout: float = 300.0

    @classmethod
    def from_spec(cls, spec: StorageSpec) -> S3Settings:
        return cls(
            endpoint_url=spec.endpoint_url,
            region=spec.region,
            path_style=spec.path_style,
            retry_timeout=spec.retry_timeout,
        )


def _error_info(error: ClientError) -> tuple[str, int]:
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _is_missing(error: ClientError) -> bool:
    code, status = _error_info(error)
    return code in ("NoSuchKey", "404", "NotFound") or (status == 404 and code != "NoSuchBucket")


class S3Store:
    """A store under ``s3://bucket/prefix``. The boto3 client is made on first use, in each process."""

    def __init__(self, uri: str, settings: S3Settings | None = None) -> None:
        self.root: S3Location = parse_s3(uri)
        self.settings = settings or S3Settings()
        self._session: boto3.session.Session | None = None
        self._client_instance: Any = None
        self._conditional_puts = True

    def __repr__(self) -> str:
        return f"S3Store({str(self.root)!r})"

    def __getstate__(self) -> dict[str, Any]:
        # boto3 sessions and clients cannot be pickled, so each process makes its own.
        return {**self.__dict__, "_session": None, "_client_instance": None}

    @property
    def bucket(self) -> str:
        return self.root.bucket

    def location(self, path: str = "") -> str:
        return f"s3://{self.bucket}/{self._key(path)}".rstrip("/")

    def _key(self, path: str) -> str:
        parts = [part for part in path.split("/") if part]
        if path.startswith("/") or any(part in (".", "..") for part in parts):
            raise ValueError(f"store path {path!r} must be relative and stay inside {self.root}")
        return "/".join([self.root.key, *parts] if self.root.key else parts)

    # Connection, retries and error messages

    def _client(self, key: str = "") -> Any:
        """Return this process's client, made and checked against the bucket on first use (for ``key``)."""
        if self._client_instance is None:
            self._session = boto3.session.Session()
            config = Config(
                region_name=self.settings.region,
                s3={"addressing_style": "path" if self.settings.path_style else "auto"},
                retries={"mode": "standard", "max_attempts": 3},
                connect_timeout=5,
                read_timeout=60,
            )
            client = self._session.client("s3", endpoint_url=self.settings.endpoint_url, config=config)
            self._client_instance = client

            # A failed listing returns an error body (a failed HEAD does not), so errors carry an S3 code.
            def check() -> Any:
                return client.list_objects_v2(Bucket=self.bucket, Prefix=self.root.key, MaxKeys=1)

            try:
                self._call("reach", key, check)
            except BaseException:
                self._client_instance = None
                raise
        return self._client_instance

    def _credential_source(self) -> str:
        credentials = self._session.get_credentials() if self._session is not None else None
        if credentials is None:
            return "no credentials were found"
        method = getattr(credentials, "method", "")
        return f"credentials from {_CREDENTIAL_SOURCES.get(method, method or 'an unknown source')}"

    def _endpoint(self) -> str:
        if self._client_instance is not None:
            return str(self._client_instance.meta.endpoint_url)
        return self.settings.endpoint_url or "the default AWS endpoint"

    def _call(self, action: str, key: str, operation: Callable[[], T]) -> T:
        """Run one request, retrying what may pass later; raise StorageError for what never will."""
        deadline = time.monotonic() + self.settings.retry_timeout
        attempt = 0
        logged = -math.inf
        where = f"s3://{self.bucket}/{key}"
        while True:
            try:
                return operation()
            except NoCredentialsError as error:
                raise StorageError(
                    f"cannot {action} {where}: no S3 credentials found; set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a web identity (IRSA, workload identity)"
                ) from error
            except (ClientError, S3UploadFailedError) as error:
                cause = error if isinstance(error, ClientError) else error.__context__
                if not isinstance(cause, ClientError):
                    problem = str(error)
                else:
                    code, status = _error_info(cause)
                    if code == "NoSuchBucket" or (action == "reach" and status == 404):
                        raise StorageError(
                            f"bucket {self.bucket!r} does not exist at {self._endpoint()} (needed for {where}); "
                            "create it, or fix spec.storage.uri or --store"
                        ) from error
                    if code in _DENIED_CODES or status in (401, 403):
                        raise StorageError(
                            f"access denied when trying to {action} {where} ({code or status}), using "
                            f"{self._credential_source()}: {_DENIED_ADVICE.get(code, _DENIED_ADVICE['AccessDenied'])}"
                        ) from error
                    if not (status >= 500 or status == 429 or code in _RETRYABLE_CODES):
                        raise
                    problem = f"{code} (HTTP {status})"
            except (BotoConnectionError, HTTPClientError, ResponseStreamingError) as error:
                problem = str(error)
            delay = min(MAX_DELAY, FIRST_DELAY * 2**attempt)
            if time.monotonic() + delay > deadline:
                raise StorageError(
                    f"cannot {action} {where}: storage at {self._endpoint()} kept failing for "
                    f"{self.settings.retry_timeout:g} s ({problem}); when it is back, rerun to continue "
                    "(spec.storage.retryTimeout sets how long to wait)"
                )
            if time.monotonic() - logged >= RETRY_LOG_INTERVAL:
                logged = time.monotonic()
                left = deadline - logged
                logger.warning("cannot %s %s yet (%s); retrying for up to %.0f s more", action, where, problem, left)
            time.sleep(delay)
            attempt += 1

    # Store protocol

    def get_result(self, key: str, folder: str = RESULTS) -> CandidateResult | None:
        data = self.read_json(f"{folder}/{key}.json")
        return None if data is None else CandidateResult.from_json(data)

    def put_result(self, result: CandidateResult, folder: str = RESULTS) -> bool:
        key = self._key(f"{folder}/{result.key}.json")
        body = json.dumps(result.to_json(), indent=1, sort_keys=True).encode()
        written = self._call("write", key, lambda: self._put_once(key, body))
        if not written:
            logger.debug("result %s already stored; keeping the stored one", result.key)
        return written

    def _put_once(self, key: str, body: bytes) -> bool:
        client = self._client(key)
        if self._conditional_puts:
            try:
                client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*", ContentType="application/json"
                )
                return True
            except ClientError as error:
                code, status = _error_info(error)
                if status == 412 or code == "PreconditionFailed":
                    return False
                if status != 501 and code != "NotImplemented":
                    raise
                logger.warning(
                    "the server at %s does not support conditional writes; checking for an existing result "
                    "before each write instead",
                    self._endpoint(),
                )
                self._conditional_puts = False
        if self._exists(key):
            return False
        client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")
        return True

    def _exists(self, key: str) -> bool:
        client = self._client(key)

        def head() -> bool:
            try:
                client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as error:
                if _is_missing(error):
                    return False
                raise
            return True

        return self._call("check", key, head)

    def _get_bytes(self, path: str) -> bytes | None:
        key = self._key(path)
        client = self._client(key)

        def get() -> bytes | None:
            try:
                response = client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as error:
                if _is_missing(error):
                    return None
                raise
            return bytes(response["Body"].read())

        return self._call("read", key, get)

    def _put_bytes(self, path: str, body: bytes, content_type: str) -> None:
        key = self._key(path)
        client = self._client(key)
        self._call(
            "write",
            key,
            lambda: client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type),
        )

    def read_json(self, path: str) -> Any | None:
        body = self._get_bytes(path)
        return None if body is None else json.loads(body)

    def write_json(self, path: str, data: Any) -> None:
        self._put_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode(), "application/json")

    def write_frame(self, path: str, frame: pd.DataFrame) -> None:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        self._put_bytes(path, buffer.getvalue(), "application/vnd.apache.parquet")

    def read_frame(self, path: str) -> pd.DataFrame | None:
        body = self._get_bytes(path)
        return None if body is None else pd.read_parquet(io.BytesIO(body))

    def put_file(self, path: str, source: Path) -> None:
        key = self._key(path)
        client = self._client(key)
        transfer = TransferConfig(multipart_threshold=MULTIPART_SIZE, multipart_chunksize=MULTIPART_SIZE)
        self._call("upload", key, lambda: client.upload_file(str(source), self.bucket, key, Config=transfer))

    def get_file(self, path: str, target: Path) -> bool:
        key = self._key(path)
        client = self._client(key)
        target.parent.mkdir(parents=True, exist_ok=True)

        def download() -> bool:
            handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            os.close(handle)
            try:
                client.download_file(self.bucket, key, name)
                os.replace(name, target)
            except ClientError as error:
                if _is_missing(error):
                    return False
                raise
            finally:
                Path(name).unlink(missing_ok=True)
            return True

        return self._call("download", key, download)

    def head(self, path: str) -> dict[str, Any] | None:
        """Return the object's ETag and size, or None when there is none."""
        key = self._key(path)
        client = self._client(key)

        def head() -> dict[str, Any] | None:
            try:
                response = client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as error:
                if _is_missing(error):
                    return None
                raise
            return {"etag": str(response.get("ETag", "")), "size": int(response.get("ContentLength", 0))}

        return self._call("check", key, head)
