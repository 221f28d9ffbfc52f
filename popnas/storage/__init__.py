"""Storage of results, search state, step tables and models: the ``Store`` protocol and its implementations."""

from __future__ import annotations

from pathlib import Path

from popnas.spec import NASSearch
from popnas.spec.uris import is_s3
from popnas.storage.local import LocalStore
from popnas.storage.protocol import RESULTS, StorageError, Store
from popnas.storage.s3 import S3Settings, S3Store

__all__ = ["RESULTS", "LocalStore", "S3Settings", "S3Store", "StorageError", "Store", "open_store", "store_uri"]


def store_uri(search: NASSearch, override: str | Path | None = None) -> str:
    """Return the store a search uses: ``override`` (--store), else spec.storage.uri, else popnas-results/NAME."""
    if override is not None:
        return str(override)
    return search.spec.storage.uri or str(Path("popnas-results") / search.metadata.name)


def open_store(uri: str | Path, settings: S3Settings | None = None) -> Store:
    """Open ``s3://bucket/prefix`` as an S3Store and anything else as a local folder."""
    uri = str(uri)
    if is_s3(uri):
        return S3Store(uri, settings)
    return LocalStore(uri)
