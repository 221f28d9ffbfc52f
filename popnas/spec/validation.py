"""Load a manifest and check all of it at once, before any training.

Every problem becomes one line naming the field path, the value received and what to change.
``ManifestError`` carries them all, so a user fixes a manifest in one round.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from popnas.space.operators import OperatorError, parse_operator
from popnas.spec.datasets import BUILTIN_DATASETS
from popnas.spec.model import NASSearch, Task
from popnas.spec.uris import has_scheme, is_s3, parse_s3


@dataclass(frozen=True)
class Problem:
    """One invalid field: its path, its value and what is allowed."""

    path: str
    value: Any
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} (received {self.value!r})"


class ManifestError(ValueError):
    """A manifest with one or more invalid fields; ``problems`` lists each of them."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        super().__init__(f"invalid manifest {source} ({count}):\n{lines}")


def load_manifest(path: str | Path) -> NASSearch:
    """Read a YAML manifest, fill in defaults and check it; raise ManifestError listing every problem.

    A relative ``dataset.uri`` path is resolved against the manifest's folder, not the working
    directory, so a manifest works from wherever it is run.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ManifestError(str(path), [Problem("file", str(path), f"cannot be read: {error.strerror}")]) from error
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ManifestError(str(path), [Problem("file", str(path), f"is not valid YAML: {error}")]) from error
    return parse_manifest(raw, source=str(path), base_dir=path.parent)


def parse_manifest(raw: Any, *, source: str = "<manifest>", base_dir: Path | None = None) -> NASSearch:
    """Validate a manifest already parsed into Python objects; see ``load_manifest``."""
    if not isinstance(raw, Mapping):
        problem = Problem("manifest", raw, "must be a mapping with apiVersion, kind, metadata and spec")
        raise ManifestError(source, [problem])
    raw = _resolve_dataset_path(raw, base_dir)
    problems = []
    search = None
    try:
        search = NASSearch.model_validate(raw)
    except ValidationError as error:
        problems.extend(_pydantic_problems(error))
    problems.extend(_semantic_problems(raw))
    if problems:
        raise ManifestError(source, problems)
    assert search is not None
    return search


def check_search(search: NASSearch) -> None:
    """Run the cross-field checks on a search built in code; raise ManifestError when any fails."""
    problems = _semantic_problems(search.model_dump(mode="json", by_alias=True))
    if problems:
        raise ManifestError(search.metadata.name, problems)


def _resolve_dataset_path(raw: Mapping[str, Any], base_dir: Path | None) -> Mapping[str, Any]:
    spec = raw.get("spec")
    if base_dir is None or not isinstance(spec, Mapping):
        return raw
    dataset = spec.get("dataset")
    if not isinstance(dataset, Mapping):
        return raw
    uri = dataset.get("uri")
    if not isinstance(uri, str) or ":" in uri.split("/")[0] or Path(uri).is_absolute():
        return raw
    resolved = str((base_dir / uri).resolve())
    return {**raw, "spec": {**spec, "dataset": {**dataset, "uri": resolved}}}


def _pydantic_problems(error: ValidationError) -> list[Problem]:
    problems = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "manifest"
        value = item.get("input")
        message = item["msg"]
        if item["type"] == "missing":
            message = "is required"
            value = None
        elif item["type"] == "extra_forbidden":
            message = "is not a known field; check its spelling"
        problems.append(Problem(path, value, message[0].lower() + message[1:]))
    return problems


def _semantic_problems(raw: Mapping[str, Any]) -> list[Problem]:
    """Checks that need more than one field or the file system; tolerant of structurally broken input."""
    spec = raw.get("spec")
    if not isinstance(spec, Mapping):
        return []
    # A missing or unknown task is reported by pydantic; the checks that need one are skipped.
    task = next((member for member in Task if member.value == spec.get("task")), None)
    problems = []
    problems.extend(_operator_problems(spec, task))
    problems.extend(_dataset_problems(spec, task))
    problems.extend(_storage_problems(spec))
    return problems


def _section(spec: Mapping[str, Any], *names: str) -> tuple[str, Mapping[str, Any]]:
    """Return the first of ``names`` whose value in ``spec`` is a mapping, with that value.

    The name is the spelling the manifest used (camelCase or snake_case), so that problem paths
    match both the file and the paths pydantic reports.
    """
    for name in names:
        value = spec.get(name)
        if isinstance(value, Mapping):
            return name, value
    return names[0], {}


def _operator_problems(spec: Mapping[str, Any], task: Task | None) -> list[Problem]:
    name, space = _section(spec, "searchSpace", "search_space")
    operators = space.get("operators")
    if task is None or not isinstance(operators, list | tuple):
        return []
    problems = []
    seen: dict[str, int] = {}
    for index, text in enumerate(operators):
        path = f"spec.{name}.operators.{index}"
        if not isinstance(text, str):
            continue  # reported by pydantic
        try:
            operator = parse_operator(text, dims=task.dims)
        except OperatorError as error:
            problems.append(Problem(path, text, str(error)))
            continue
        if operator.text in seen:
            problems.append(
                Problem(path, text, f"duplicates operator {seen[operator.text]} ('{operator.text}'); remove one")
            )
        seen.setdefault(operator.text, index)
    return problems


def _dataset_problems(spec: Mapping[str, Any], task: Task | None) -> list[Problem]:
    _, dataset = _section(spec, "dataset")
    uri = dataset.get("uri")
    if not isinstance(uri, str):
        return []
    path = "spec.dataset.uri"
    if uri.startswith("builtin:"):
        name = uri.removeprefix("builtin:")
        builtin = BUILTIN_DATASETS.get(name)
        if builtin is None:
            names = ", ".join(f"builtin:{known}" for known in BUILTIN_DATASETS)
            return [Problem(path, uri, f"is not a shipped dataset; choose one of {names}, or give an .npz path")]
        problems = []
        if task is not None and builtin.task is not task:
            article = "an" if builtin.task.value[0] in "AEIOU" else "a"
            problems.append(
                Problem(path, uri, f"is {article} {builtin.task.value} dataset but spec.task is {task.value}")
            )
        missing = builtin.missing_files()
        if missing:
            package = builtin.source.split(" (")[0]
            problems.append(Problem(path, uri, f"is not installed: {missing[0]} is missing; install {package}"))
        return problems
    if is_s3(uri):
        try:
            location = parse_s3(uri)
        except ValueError as error:
            return [Problem(path, uri, f"is not a valid S3 URI: {error}")]
        if not location.key.endswith(".npz"):
            return [Problem(path, uri, "must name an .npz object, such as s3://bucket/data/gunpoint.npz")]
        return []
    file = Path(uri)
    if has_scheme(uri) or file.suffix != ".npz":
        return [Problem(path, uri, "must be 'builtin:NAME', or a path or s3://bucket/key of an .npz file")]
    if not file.is_file():
        return [Problem(path, uri, "file not found; give an existing .npz path (relative paths start at the manifest)")]
    return []


def _storage_problems(spec: Mapping[str, Any]) -> list[Problem]:
    name, storage = _section(spec, "storage")
    problems = []
    uri = storage.get("uri")
    if isinstance(uri, str):
        path = f"spec.{name}.uri"
        if is_s3(uri):
            try:
                parse_s3(uri)
            except ValueError as error:
                problems.append(Problem(path, uri, f"is not a valid S3 URI: {error}"))
        elif has_scheme(uri):
            problems.append(Problem(path, uri, "must be a folder path or s3://bucket/prefix (other schemes: use S3)"))
        elif not uri.strip():
            problems.append(Problem(path, uri, "must not be empty; remove it to use popnas-results/<name>"))
    endpoint_key = "endpointUrl" if "endpointUrl" in storage else "endpoint_url"
    endpoint = storage.get(endpoint_key)
    if isinstance(endpoint, str) and not endpoint.startswith(("http://", "https://")):
        problems.append(
            Problem(
                f"spec.{name}.{endpoint_key}",
                endpoint,
                "must start with http:// or https://, such as http://minio:9000",
            )
        )
    return problems
