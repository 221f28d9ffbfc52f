"""A store in a local folder: results written once with a hard link, documents replaced atomically."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from popnas.results import CandidateResult
from popnas.storage.protocol import RESULTS

logger = logging.getLogger(__name__)


class LocalStore:
    """A store rooted at a folder, created on first write."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def location(self, path: str = "") -> str:
        return str(self._path(path)) if path else str(self.root)

    def _path(self, path: str) -> Path:
        relative = Path(path)
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"store path {path!r} must be relative and stay inside {self.root}")
        return self.root / relative

    def _temporary(self, target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(handle)
        return Path(name)

    def get_result(self, key: str, folder: str = RESULTS) -> CandidateResult | None:
        data = self.read_json(f"{folder}/{key}.json")
        return None if data is None else CandidateResult.from_json(data)

    def put_result(self, result: CandidateResult, folder: str = RESULTS) -> bool:
        target = self._path(f"{folder}/{result.key}.json")
        temporary = self._temporary(target)
        try:
            temporary.write_text(json.dumps(result.to_json(), indent=1, sort_keys=True))
            # A hard link fails when the target exists, so the first writer wins and a result is
            # never replaced, even by two processes racing on the same key.
            os.link(temporary, target)
        except FileExistsError:
            logger.debug("result %s already stored; keeping the stored one", result.key)
            return False
        finally:
            temporary.unlink(missing_ok=True)
        return True

    def read_json(self, path: str) -> Any | None:
        try:
            text = self._path(path).read_text()
        except FileNotFoundError:
            return None
        return json.loads(text)

    def write_json(self, path: str, data: Any) -> None:
        target = self._path(path)
        temporary = self._temporary(target)
        try:
            temporary.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)

    def write_frame(self, path: str, frame: pd.DataFrame) -> None:
        target = self._path(path)
        temporary = self._temporary(target)
        try:
            frame.to_parquet(temporary, index=False)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)

    def put_file(self, path: str, source: Path) -> None:
        self._copy(source, self._path(path))

    def get_file(self, path: str, target: Path) -> bool:
        source = self._path(path)
        if not source.is_file():
            return False
        self._copy(source, target)
        return True

    def _copy(self, source: Path, target: Path) -> None:
        temporary = self._temporary(target)
        try:
            shutil.copyfile(source, temporary)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)

    def read_frame(self, path: str) -> pd.DataFrame | None:
        target = self._path(path)
        if not target.exists():
            return None
        return pd.read_parquet(target)
