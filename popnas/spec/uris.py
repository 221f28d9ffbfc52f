"""Parse the storage and dataset URIs a manifest may name: local paths and ``s3://bucket/key``."""

from __future__ import annotations

import re
from typing import NamedTuple

S3_SCHEME = "s3://"

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class S3Location(NamedTuple):
    bucket: str
    key: str
    """Key or key prefix inside the bucket, without leading or trailing '/'; may be empty."""

    def __str__(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.key}" if self.key else f"{S3_SCHEME}{self.bucket}"


def is_s3(uri: str) -> bool:
    return uri.startswith(S3_SCHEME)


def has_scheme(uri: str) -> bool:
    """True for 'scheme://...' and 'scheme:...' forms such as gs://, http:// or builtin:; false for paths."""
    head = uri.split("/", 1)[0]
    return ":" in head and len(head.split(":", 1)[0]) > 1


def parse_s3(uri: str) -> S3Location:
    """Split ``s3://bucket/key`` into bucket and key; raise ValueError naming what is wrong."""
    if not is_s3(uri):
        raise ValueError(f"{uri!r} does not start with {S3_SCHEME}")
    bucket, _, key = uri.removeprefix(S3_SCHEME).partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(
            f"{bucket!r} is not a valid bucket name: use 3 to 63 lowercase letters, digits, '.' and '-', "
            "starting and ending with a letter or digit"
        )
    key = key.strip("/")
    if any(part in ("", ".", "..") for part in key.split("/")) and key:
        raise ValueError(f"key {key!r} has an empty, '.' or '..' part")
    return S3Location(bucket, key)
