"""S3Store against SeaweedFS: error messages, retries through an outage, and the fallbacks."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from botocore.stub import Stubber

from popnas.results import CandidateResult, ResultStatus
from popnas.storage import S3Settings, S3Store, StorageError
from tests.s3server import BUCKET, SeaweedServer

pytestmark = pytest.mark.s3


def make_result(key: str = "k1") -> CandidateResult:
    return CandidateResult(key=key, cell="[]", status=ResultStatus.SUCCEEDED, accuracy=0.5, training_time=1.0)


def test_missing_bucket_named(s3_environment: dict[str, str]) -> None:
    store = S3Store("s3://popnas-absent/runs", S3Settings(retry_timeout=5))
    with pytest.raises(StorageError) as caught:
        store.read_json("state.json")
    message = str(caught.value)
    assert "bucket 'popnas-absent' does not exist" in message
    assert "needed for s3://popnas-absent/runs/state.json" in message
    assert s3_environment["AWS_ENDPOINT_URL"] in message


def test_wrong_secret_message(s3_environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    store = S3Store(f"s3://{BUCKET}/runs", S3Settings(retry_timeout=5))
    with pytest.raises(StorageError) as caught:
        store.write_json("state.json", {})
    message = str(caught.value)
    assert f"access denied when trying to reach s3://{BUCKET}/runs/state.json (SignatureDoesNotMatch)" in message
    assert "the environment variables AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in message
    assert "the secret access key does not match the access key id" in message
    assert "not-the-secret" not in message


def test_shared_credentials_file_named(
    s3_environment: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text("[default]\naws_access_key_id = popnas-test\naws_secret_access_key = wrong\n")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    store = S3Store(f"s3://{BUCKET}/runs", S3Settings(retry_timeout=5))
    with pytest.raises(StorageError, match=r"the shared credentials file"):
        store.read_json("state.json")


def test_no_credentials_explained(s3_environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = S3Store(f"s3://{BUCKET}/runs", S3Settings(retry_timeout=5))
    with pytest.raises(StorageError, match="no S3 credentials found; set AWS_ACCESS_KEY_ID"):
        store.read_json("state.json")


def test_write_waits_for_a_restarted_server(s3_server: SeaweedServer, s3_uri: str) -> None:
    store = S3Store(s3_uri, S3Settings(retry_timeout=120))
    store.write_json("state.json", {"step": 1})
    s3_server.stop()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            store.put_result(make_result())
            store.write_json("state.json", {"step": 2})
        except BaseException as error:
            errors.append(error)

    writer = threading.Thread(target=write)
    try:
        writer.start()
        time.sleep(5)
        assert writer.is_alive(), "the write gave up while the server was down"
    finally:
        s3_server.start()
    writer.join(timeout=120)
    assert not writer.is_alive()
    assert errors == []
    assert store.read_json("state.json") == {"step": 2}
    assert store.get_result("k1") == make_result()


def test_unreachable_storage_times_out(s3_environment: dict[str, str]) -> None:
    # Port 9 (discard) on the loopback address: nothing listens there.
    store = S3Store(f"s3://{BUCKET}/runs", S3Settings(endpoint_url="http://127.0.0.1:9", retry_timeout=2))
    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        store.write_json("state.json", {})
    assert time.monotonic() - started < 30
    message = str(caught.value)
    assert "kept failing for 2 s" in message
    assert "http://127.0.0.1:9" in message
    assert "rerun to continue" in message


# Failures SeaweedFS cannot be made to show on demand: throttling and servers without conditional writes.


def stubbed(store: S3Store) -> Stubber:
    """Stub the store's client after it has opened the bucket against the real server."""
    store.read_json("warm-up.json")
    return Stubber(store._client())


def test_throttling_retried(s3_uri: str) -> None:
    store = S3Store(s3_uri, S3Settings(retry_timeout=30))
    stubber = stubbed(store)
    for _ in range(3):
        stubber.add_client_error("put_object", service_error_code="SlowDown", http_status_code=503)
    stubber.add_response("put_object", {"ETag": '"1"'})
    with stubber:
        store.write_json("state.json", {"step": 1})
    stubber.assert_no_pending_responses()


def test_client_errors_not_retried(s3_uri: str) -> None:
    store = S3Store(s3_uri, S3Settings(retry_timeout=30))
    stubber = stubbed(store)
    stubber.add_client_error("put_object", service_error_code="InvalidArgument", http_status_code=400)
    started = time.monotonic()
    with stubber, pytest.raises(Exception, match="InvalidArgument"):
        store.write_json("state.json", {"step": 1})
    assert time.monotonic() - started < 1


def test_no_conditional_writes_fallback(s3_uri: str) -> None:
    store = S3Store(s3_uri, S3Settings(retry_timeout=30))
    stubber = stubbed(store)
    stubber.add_client_error("put_object", service_error_code="NotImplemented", http_status_code=501)
    stubber.add_client_error("head_object", service_error_code="404", http_status_code=404)
    stubber.add_response("put_object", {"ETag": '"1"'})
    # From now on: HEAD first, and no PUT when the result exists.
    stubber.add_response("head_object", {"ETag": '"1"', "ContentLength": 10})
    with stubber:
        assert store.put_result(make_result())
        assert not store.put_result(make_result())
    stubber.assert_no_pending_responses()
