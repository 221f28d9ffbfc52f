"""The record of one trained candidate, shared by trainers, stores and the search loop.

A result is immutable once written. Failures are results too: a trainer that crashes or produces
NaN returns a record with a status and a reason, never an exception that escapes the search loop.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class ResultStatus(StrEnum):
    """Outcome of training one candidate."""

    SUCCEEDED = "succeeded"
    """Training finished and the metrics are finite."""
    FAILED = "failed"
    """Building or training raised an error, or the trainer process died, as ``reason`` records."""
    INVALID = "invalid"
    """Training ran but produced a NaN or infinite loss, so its metrics cannot be trusted."""


@dataclass(frozen=True)
class CandidateResult:
    """Outcome of proxy training one cell.

    Times are in seconds. ``training_time`` is the sum of the training-batch times, without
    compile or validation. ``inference_time`` is the mean time to predict one batch.
    """

    key: str
    """Candidate identity: dataset fingerprint, training recipe, canonical cell and device class."""
    cell: str
    """The cell in text form, as trained."""
    status: ResultStatus
    accuracy: float | None = None
    """Best validation accuracy over the epochs, in [0, 1]; None unless the status is succeeded."""
    training_time: float | None = None
    inference_time: float | None = None
    params: int | None = None
    flops: int | None = None
    """Floating-point operations of one forward pass on one sample."""
    epochs: int = 0
    """Epochs actually run (fewer than requested when training stopped on NaN)."""
    reason: str | None = None
    """Cause of a failed or invalid status."""
    device_class: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)
    """Other measurements, such as per-epoch history; kept as plain JSON values."""

    @property
    def succeeded(self) -> bool:
        return self.status is ResultStatus.SUCCEEDED

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return {_camel(name): value for name, value in data.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CandidateResult:
        values = {_snake(name): value for name, value in data.items()}
        known = {name for name in cls.__dataclass_fields__}
        values = {name: value for name, value in values.items() if name in known}
        values["status"] = ResultStatus(values["status"])
        return cls(**values)

    @classmethod
    def failure(cls, *, key: str, cell: str, reason: str, device_class: str = "cpu") -> CandidateResult:
        return cls(key=key, cell=cell, status=ResultStatus.FAILED, reason=reason, device_class=device_class)


def is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _snake(name: str) -> str:
    return "".join(f"_{char.lower()}" if char.isupper() else char for char in name)


def candidate_key(*, dataset_fingerprint: str, recipe: str, cell_key: str, device_class: str) -> str:
    """Return the identity of a trained result: the same key means the same training would be repeated."""
    text = "|".join((dataset_fingerprint, recipe, cell_key, device_class))
    return hashlib.sha256(text.encode()).hexdigest()[:24]
