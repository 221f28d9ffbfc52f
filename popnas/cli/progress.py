"""Progress lines for a search run in a terminal: step, trained/planned, elapsed and estimated time left."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TextIO

from popnas.results import CandidateResult
from popnas.search.state import StepRecord


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=int(seconds)))


class ProgressPrinter:
    """Prints one line per event; on a terminal, candidate lines overwrite each other."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.started = time.monotonic()
        self.step_clock = self.started
        self.planned = 0
        self.to_train = 0
        self.done = 0
        self.best: float | None = None
        self._open_line = False

    def _print(self, text: str, *, transient: bool = False) -> None:
        if self.interactive:
            end = "" if transient else "\n"
            self.stream.write("\r\033[K" + text + end)
            self._open_line = transient
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def phase(self, step: int, text: str) -> None:
        self._print(f"step {step}: {text} ...")

    def step_started(self, step: int, *, max_step: int, planned: int, reused: int, to_train: int) -> None:
        self.step_clock = time.monotonic()
        self.planned, self.to_train, self.done = planned, to_train, reused
        label = {0: "empty cell", 1: "one-block cells (bootstrap)"}.get(step, f"{step}-block cells")
        self._print(
            f"step {step}/{max_step}: {label}: {planned} planned, {reused} reused, {to_train} to train "
            f"(elapsed {_clock(time.monotonic() - self.started)})"
        )

    def candidate_finished(self, step: int, result: CandidateResult) -> None:
        self.done += 1
        trained_now = self.done - (self.planned - self.to_train)
        step_elapsed = time.monotonic() - self.step_clock
        left = step_elapsed / trained_now * (self.planned - self.done) if trained_now else 0.0
        if result.succeeded and result.accuracy is not None:
            self.best = max(self.best or 0.0, result.accuracy)
            outcome = f"accuracy {result.accuracy:.3f}, {result.training_time or 0:.1f} s"
        else:
            outcome = f"{result.status.value}: {result.reason}"
        best = f", best {self.best:.3f}" if self.best is not None else ""
        self._print(
            f"  step {step} [{self.done}/{self.planned}] elapsed {_clock(time.monotonic() - self.started)}, "
            f"step ~{_clock(left)} left{best} | {result.cell} {outcome}",
            transient=result.succeeded,
        )

    def step_finished(self, step: int, record: StepRecord, results: Sequence[CandidateResult]) -> None:
        succeeded = [result for result in results if result.succeeded]
        best = max((result.accuracy or 0.0 for result in succeeded), default=None)
        parts = [f"step {step} done: {len(succeeded)}/{len(results)} succeeded"]
        if best is not None:
            parts.append(f"best accuracy {best:.3f}")
        if record.exploration:
            parts.append(f"{record.exploration} from exploration")
        if record.accuracy_quality is not None and record.accuracy_quality.spearman is not None:
            parts.append(f"accuracy predictor Spearman {record.accuracy_quality.spearman:.2f}")
        if record.time_quality is not None and record.time_quality.spearman is not None:
            parts.append(f"time predictor Spearman {record.time_quality.spearman:.2f}")
        self._print(", ".join(parts))
