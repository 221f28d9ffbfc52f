"""A local cache of objects fetched from S3 (datasets), checked by checksum before each use.

Each trainer process reads a dataset from this cache, so the object is downloaded once per
machine. It is downloaded again only when it changes in the bucket (a different ETag or size), or
when the cached file no longer matches the SHA-256 recorded at download.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path

from popnas.spec.uris import parse_s3
from popnas.storage.s3 import S3Settings, S3Store

logger = logging.getLogger(__name__)


def cache_root() -> Path:
    """Return the cache folder: ``$POPNAS_CACHE``, else ``$XDG_CACHE_HOME/popnas``, else ``~/.cache/popnas``."""
    explicit = os.environ.get("POPNAS_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "popnas"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(uri: str, settings: S3Settings | None = None) -> Path:
    """Return a local copy of the S3 object ``uri``, downloading it only when the cached copy is stale.

    Raises FileNotFoundError when the object does not exist and StorageError when the bucket
    cannot be used.
    """
    settings = settings or S3Settings()
    location = parse_s3(uri)
    identity = hashlib.sha256(f"{settings.endpoint_url}|{uri}".encode()).hexdigest()[:16]
    folder = cache_root() / "objects" / identity
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / Path(location.key).name
    record_file = folder / "object.json"
    store = S3Store(f"s3://{location.bucket}", settings)
    # One process downloads while the others wait, then find the fresh copy.
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stored = store.head(location.key)
        if stored is None:
            raise FileNotFoundError(f"{uri} does not exist")
        record = json.loads(record_file.read_text()) if record_file.is_file() else None
        if (
            record is not None
            and target.is_file()
            and record.get("etag") == stored["etag"]
            and record.get("size") == stored["size"]
            and file_sha256(target) == record.get("sha256")
        ):
            return target
        logger.info("downloading %s (%d bytes) to %s", uri, stored["size"], target)
        record_file.unlink(missing_ok=True)
        if not store.get_file(location.key, target):
            raise FileNotFoundError(f"{uri} does not exist")
        record_file.write_text(json.dumps({**stored, "uri": uri, "sha256": file_sha256(target)}))
    return target
