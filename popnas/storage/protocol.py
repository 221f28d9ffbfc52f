"""The small interface the search and the trainers use to read and write stored data.

Paths are relative, '/'-separated keys under the store root (see the storage layout in
docs/design.md), so the same code runs over a local folder or an object store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Protocol

import pandas as pd

from popnas.results import CandidateResult

RESULTS: Final = "results"
"""Folder of the immutable candidate results that every search on a store shares."""


class StorageError(RuntimeError):
    """Storage that cannot be used: a missing bucket, denied access, or a server unreachable for too long."""


class Store(Protocol):
    """Storage for one store root. Implementations must make every write atomic."""

    def get_result(self, key: str, folder: str = RESULTS) -> CandidateResult | None:
        """Return the stored result for a candidate key in ``folder``, or None."""
        ...

    def put_result(self, result: CandidateResult, folder: str = RESULTS) -> bool:
        """Write a result once; return False, leaving the stored one, when the key already exists."""
        ...

    def read_json(self, path: str) -> Any | None:
        """Return the JSON document at ``path``, or None when there is none."""
        ...

    def write_json(self, path: str, data: Any) -> None:
        """Replace the JSON document at ``path`` atomically: readers see the old or the new one, never a mix."""
        ...

    def write_frame(self, path: str, frame: pd.DataFrame) -> None:
        """Write a table as Parquet at ``path``, atomically."""
        ...

    def read_frame(self, path: str) -> pd.DataFrame | None:
        """Return the Parquet table at ``path``, or None."""
        ...

    def put_file(self, path: str, source: Path) -> None:
        """Copy a local file (a model, possibly large) to ``path``, atomically."""
        ...

    def get_file(self, path: str, target: Path) -> bool:
        """Copy ``path`` to the local file ``target`` (replaced atomically); return False when there is none."""
        ...

    def location(self, path: str = "") -> str:
        """Return a human-readable location of ``path`` (a file path or URI) for messages."""
        ...
