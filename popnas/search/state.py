"""Search state: versioned JSON with everything the loop needs to continue after a stop.

The state records, per step, the candidates planned and the predictions made for them. Results
themselves live in the store under their candidate keys, so a restarted search replays each step
from its recorded plan and trains only the candidates with no stored result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

STATE_VERSION = 1


class StateError(ValueError):
    """A stored search state that this version of popnas cannot read."""


@dataclass
class Prediction:
    """Predicted accuracy and training time (seconds) of one planned candidate; time is None in PNAS mode."""

    accuracy: float
    time: float | None = None


@dataclass
class Quality:
    """Quality of a predictor on the candidates of a step, measured once they were trained."""

    mape: float | None = None
    """Mean absolute percentage error, in percent."""
    spearman: float | None = None
    """Spearman rank correlation between predicted and measured values."""


@dataclass
class StepRecord:
    """One step of the search: ``step`` is the number of blocks of its cells (0 for the empty cell)."""

    step: int
    planned: list[str]
    """Cells to train, in text form: the Pareto front first, then the exploration candidates."""
    keys: list[str]
    """Candidate key of each planned cell, in the same order."""
    exploration: int = 0
    """How many of the planned cells, at the end of the list, come from the exploration step."""
    evaluated: int = 0
    """Candidates whose accuracy (and time) the predictors estimated before choosing the plan."""
    predictions: dict[str, Prediction] = field(default_factory=dict)
    """Predictions for the planned candidates, by key; empty for the steps trained without prediction."""
    completed: bool = False
    accuracy_quality: Quality | None = None
    time_quality: Quality | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {
            "step": data["step"],
            "planned": data["planned"],
            "keys": data["keys"],
            "exploration": data["exploration"],
            "evaluated": data["evaluated"],
            "predictions": data["predictions"],
            "completed": data["completed"],
            "accuracyQuality": data["accuracy_quality"],
            "timeQuality": data["time_quality"],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepRecord:
        def quality(value: dict[str, Any] | None) -> Quality | None:
            return None if value is None else Quality(**value)

        return cls(
            step=data["step"],
            planned=list(data["planned"]),
            keys=list(data["keys"]),
            exploration=data.get("exploration", 0),
            evaluated=data.get("evaluated", 0),
            predictions={key: Prediction(**value) for key, value in data.get("predictions", {}).items()},
            completed=data.get("completed", False),
            accuracy_quality=quality(data.get("accuracyQuality")),
            time_quality=quality(data.get("timeQuality")),
        )


@dataclass
class SearchState:
    """The whole resumable state of one run of a search."""

    name: str
    namespace: str
    run_id: str
    steps: dict[int, StepRecord] = field(default_factory=dict)
    reindex: dict[str, float] = field(default_factory=dict)
    finished: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "name": self.name,
            "namespace": self.namespace,
            "runId": self.run_id,
            "steps": [self.steps[step].to_json() for step in sorted(self.steps)],
            "reindex": self.reindex,
            "finished": self.finished,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchState:
        version = data.get("version")
        if version != STATE_VERSION:
            raise StateError(
                f"search state version {version!r} is not supported (expected {STATE_VERSION}); "
                "start a new run in another output folder"
            )
        steps = [StepRecord.from_json(step) for step in data.get("steps", [])]
        return cls(
            name=data["name"],
            namespace=data["namespace"],
            run_id=data["runId"],
            steps={record.step: record for record in steps},
            reindex=dict(data.get("reindex", {})),
            finished=data.get("finished", False),
        )
