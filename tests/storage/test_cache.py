"""Datasets from S3: fetched once into the local cache, checked by checksum, fingerprinted by content."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from popnas.spec import Task
from popnas.storage import S3Settings, open_store
from popnas.storage.cache import fetch
from popnas.train.datasets import load_dataset

pytestmark = pytest.mark.s3


@pytest.fixture
def gunpoint_npz(tmp_path: Path) -> Path:
    """The shipped GunPoint series as an .npz file, as a user would upload it."""
    dataset = load_dataset("builtin:gunpoint")
    path = tmp_path / "gunpoint.npz"
    np.savez(path, x_train=dataset.x_train, y_train=dataset.y_train, x_test=dataset.x_test, y_test=dataset.y_test)
    return path


def upload(s3_uri: str, source: Path, name: str = "gunpoint.npz") -> str:
    open_store(s3_uri).put_file(f"data/{name}", source)
    return f"{s3_uri}/data/{name}"


def downloads(caplog: pytest.LogCaptureFixture) -> int:
    return sum(record.getMessage().startswith("downloading") for record in caplog.records)


def test_fetched_once_then_served_from_cache(
    s3_uri: str, gunpoint_npz: Path, cache_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="popnas.storage.cache")
    uri = upload(s3_uri, gunpoint_npz)
    first = fetch(uri)
    assert first.is_relative_to(cache_folder)
    assert first.read_bytes() == gunpoint_npz.read_bytes()
    assert fetch(uri) == first
    assert downloads(caplog) == 1


def test_corrupt_cached_copy_downloaded_again(
    s3_uri: str, gunpoint_npz: Path, cache_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="popnas.storage.cache")
    uri = upload(s3_uri, gunpoint_npz)
    cached = fetch(uri)
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cached.write_bytes(bytes(data))
    assert fetch(uri).read_bytes() == gunpoint_npz.read_bytes()
    assert downloads(caplog) == 2


def test_changed_object_downloaded_again(s3_uri: str, gunpoint_npz: Path, cache_folder: Path, tmp_path: Path) -> None:
    uri = upload(s3_uri, gunpoint_npz)
    fetch(uri)
    replacement = tmp_path / "other.npz"
    np.savez(
        replacement, x_train=np.zeros((4, 8, 1)), y_train=np.arange(4) % 2, x_test=np.zeros((2, 8, 1)), y_test=[0, 1]
    )
    upload(s3_uri, replacement)
    assert fetch(uri).read_bytes() == replacement.read_bytes()


def test_missing_object_reported(s3_uri: str, cache_folder: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"absent\.npz does not exist"):
        fetch(f"{s3_uri}/data/absent.npz")


def test_s3_dataset_fingerprint_matches_file(s3_uri: str, gunpoint_npz: Path, cache_folder: Path) -> None:
    uri = upload(s3_uri, gunpoint_npz)
    local = load_dataset(str(gunpoint_npz), task=Task.TIME_SERIES_CLASSIFICATION)
    remote = load_dataset(uri, task=Task.TIME_SERIES_CLASSIFICATION, storage=S3Settings())
    assert remote.fingerprint == local.fingerprint
    assert remote.input_shape == local.input_shape == (150, 1)
    np.testing.assert_array_equal(remote.y_train, local.y_train)
