"""The POPNASv3 sequential model-based optimization loop.

Step 0 trains the empty cell and step 1 every one-block cell (the bootstrap). Each later step
``b`` fits the predictors on every result so far and expands each cell trained at step ``b - 1``
by one block. It predicts the children's accuracy and training time, keeps the time-accuracy
Pareto front (at most ``beamSize``) plus an exploration front (at most ``explorationBeamSize``),
and trains them. With ``strategy.pareto: false`` the loop is PNAS: the top ``beamSize`` children by
predicted accuracy, with no time predictor and no exploration.

The loop is deterministic for a given spec, seed and set of results. The plan of each step is
checkpointed before training starts, so a restarted search replays the plan and trains only what
has no stored result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from popnas.predict.accuracy import AccuracyPredictor
from popnas.predict.features import dynamic_reindex, time_feature_frame
from popnas.predict.quality import mape, spearman
from popnas.predict.time import TimePredictor
from popnas.results import CandidateResult, ResultStatus, candidate_key
from popnas.search.executor import Candidate, Executor
from popnas.search.exploration import exploration_front, exploration_sets
from popnas.search.listener import SearchListener
from popnas.search.pareto import non_dominated
from popnas.search.state import Prediction, Quality, SearchState, StepRecord
from popnas.space import Block, Cell, SearchSpace
from popnas.spec import NASSearch
from popnas.storage import RESULTS, Store

logger = logging.getLogger(__name__)


@dataclass
class Counts:
    """Candidates trained, taken from stored results, and failed."""

    trained: int = 0
    reused: int = 0
    failed: int = 0


@dataclass
class SearchCounts(Counts):
    """Counts of this invocation, in total and per step."""

    steps: dict[int, Counts] = field(default_factory=dict)

    def add(self, step: int, *, trained: int = 0, reused: int = 0, failed: int = 0) -> None:
        counts = self.steps.setdefault(step, Counts())
        for target in (self, counts):
            target.trained += trained
            target.reused += reused
            target.failed += failed


@dataclass
class _Step:
    """A step's plan, with the predictions table that led to it (None for steps without predictions)."""

    record: StepRecord
    predictions: pd.DataFrame | None = None


@dataclass
class SearchLoop:
    """Runs one search to the end against a store and an executor."""

    search: NASSearch
    store: Store
    executor: Executor
    dataset_fingerprint: str
    listener: SearchListener | None = None
    counts: SearchCounts = field(default_factory=SearchCounts)
    results: dict[str, CandidateResult] = field(default_factory=dict)
    space: SearchSpace = field(init=False)
    recipe: str = field(init=False)
    prefix: str = field(init=False)
    """Folder of this run inside the store."""
    results_folder: str = field(init=False)
    """The store's shared results folder, or this run's own when strategy.reuseResults is false."""
    state: SearchState = field(init=False)

    def __post_init__(self) -> None:
        spec = self.search.spec
        self.space = SearchSpace.create(
            spec.operators,
            max_blocks=spec.search_space.max_blocks,
            lookback=spec.search_space.lookback,
            dims=spec.task.dims,
        )
        self.recipe = spec.recipe_hash()
        self.prefix = f"searches/{self.search.metadata.namespace}/{self.search.metadata.name}/{self.search.run_id}"
        self.results_folder = RESULTS if spec.strategy.reuse_results else f"{self.prefix}/{RESULTS}"
        stored = self.store.read_json(f"{self.prefix}/state.json")
        if stored is None:
            self.state = SearchState(
                name=self.search.metadata.name, namespace=self.search.metadata.namespace, run_id=self.search.run_id
            )
        else:
            self.state = SearchState.from_json(stored)
            logger.info("continuing run %s from %s", self.search.run_id, self.store.location(self.prefix))

    @property
    def max_step(self) -> int:
        return self.search.spec.search_space.max_blocks

    def key_of(self, cell: Cell) -> str:
        return candidate_key(
            dataset_fingerprint=self.dataset_fingerprint,
            recipe=self.recipe,
            cell_key=cell.key,
            device_class=self.executor.device_class,
        )

    def run(self) -> SearchState:
        """Run every remaining step; return the final state. Interrupting it loses no stored result."""
        self.store.write_json(f"{self.prefix}/spec.json", self.search.model_dump(mode="json", by_alias=True))
        previous: list[Cell] = []
        for step in range(self.max_step + 1):
            record = self.state.steps.get(step)
            if record is None:
                planned = self._plan(step, previous)
                record = planned.record
                self.state.steps[step] = record
                if planned.predictions is not None:
                    self._write_tables(step, planned.predictions)
                self._checkpoint()
            self._train(record)
            if step == 1:
                self.state.reindex = self._reindex()
            self._checkpoint()
            previous = [
                Cell.parse(text)
                for text, key in zip(record.planned, record.keys, strict=True)
                if self.results[key].succeeded
            ]
            if step >= 1 and not previous:
                logger.error("no candidate of step %d succeeded, so the search cannot expand further", step)
                break
        self.state.finished = True
        self._checkpoint()
        return self.state

    def _checkpoint(self) -> None:
        self.store.write_json(f"{self.prefix}/state.json", self.state.to_json())

    # Planning

    def _plan(self, step: int, previous: Sequence[Cell]) -> _Step:
        if step == 0:
            return self._fixed_plan(step, [Cell()])
        if step == 1:
            return self._fixed_plan(step, self.space.one_block_cells())
        return self._predicted_plan(step, previous)

    def _fixed_plan(self, step: int, cells: Sequence[Cell]) -> _Step:
        return _Step(StepRecord(step=step, planned=[str(cell) for cell in cells], keys=[self.key_of(c) for c in cells]))

    def _history(self) -> list[tuple[Cell, CandidateResult]]:
        history = []
        for step in sorted(self.state.steps):
            record = self.state.steps[step]
            for text, key in zip(record.planned, record.keys, strict=True):
                result = self.results.get(key)
                if result is not None and result.succeeded:
                    history.append((Cell.parse(text), result))
        return history

    def _children(self, previous: Sequence[Cell]) -> list[Cell]:
        seen: set[str] = set()
        children = []
        for parent in previous:
            for child in self.space.expand(parent):
                if child.key not in seen:
                    seen.add(child.key)
                    children.append(child)
        return children

    def _predicted_plan(self, step: int, previous: Sequence[Cell]) -> _Step:
        spec = self.search.spec
        strategy = spec.strategy
        children = self._children(previous)
        history = self._history()
        self._notify_phase(step, f"fitting predictors on {len(history)} results")
        started = time.perf_counter()
        accuracy_predictor = AccuracyPredictor(self.space, folds=strategy.predictor_folds, seed=strategy.seed)
        accuracy_predictor.fit([cell for cell, _ in history], [float(result.accuracy or 0.0) for _, result in history])
        predicted_times: np.ndarray | None = None
        if strategy.pareto:
            time_predictor = TimePredictor(
                folds=strategy.predictor_folds,
                search_iterations=strategy.time_predictor_search_iterations,
                seed=strategy.seed,
            )
            time_predictor.fit(
                self._features([cell for cell, _ in history]),
                [float(result.training_time or 0.0) for _, result in history],
            )
        self._notify_phase(step, f"predicting {len(children)} candidates")
        predicted_accuracy = accuracy_predictor.predict(children)
        if strategy.pareto:
            predicted_times = time_predictor.predict(self._features(children))
        logger.info(
            "step %d: fitted predictors on %d results and predicted %d candidates in %.1f s",
            step,
            len(history),
            len(children),
            time.perf_counter() - started,
        )

        # Best predicted accuracy first; ties broken by time, then by cell text, so plans are reproducible.
        texts = [str(child) for child in children]
        times_for_order = predicted_times if predicted_times is not None else np.zeros(len(children))
        order = sorted(range(len(children)), key=lambda i: (-predicted_accuracy[i], times_for_order[i], texts[i]))
        children = [children[i] for i in order]
        predicted_accuracy = predicted_accuracy[order]
        if predicted_times is not None:
            predicted_times = predicted_times[order]

        if predicted_times is None:
            front = list(range(min(strategy.beam_size, len(children))))
            explore: list[int] = []
        else:
            objectives = np.column_stack([-predicted_accuracy, predicted_times])
            front = sorted(int(i) for i in non_dominated(objectives))[: strategy.beam_size]
            front_cells = [children[i] for i in front]
            sets = exploration_sets(
                front_cells, operators=self.space.operators, inputs=self.space.inputs_for_position(step - 1)
            )
            explore = []
            # Exploration feeds the predictors of later steps, so the last step has no use for it.
            if step < self.max_step:
                explore = exploration_front(
                    children,
                    objectives,
                    sets=sets,
                    excluded={cell.key for cell in front_cells},
                    limit=strategy.exploration_beam_size,
                )
        chosen = front + explore
        record = StepRecord(
            step=step,
            planned=[str(children[i]) for i in chosen],
            keys=[self.key_of(children[i]) for i in chosen],
            exploration=len(explore),
            evaluated=len(children),
            predictions={
                self.key_of(children[i]): Prediction(
                    accuracy=float(predicted_accuracy[i]),
                    time=None if predicted_times is None else float(predicted_times[i]),
                )
                for i in chosen
            },
        )
        table = pd.DataFrame(
            {
                "cell": [str(child) for child in children],
                "predictedAccuracy": predicted_accuracy,
                "predictedTime": predicted_times if predicted_times is not None else np.nan,
                "front": np.isin(np.arange(len(children)), front),
                "exploration": np.isin(np.arange(len(children)), explore),
            }
        )
        return _Step(record, table)

    def _features(self, cells: Sequence[Cell]) -> pd.DataFrame:
        architecture = self.search.spec.architecture
        return time_feature_frame(
            cells,
            reindex=self.state.reindex,
            motifs=architecture.motifs,
            normal_cells_per_motif=architecture.normal_cells_per_motif,
        )

    def _reindex(self) -> dict[str, float]:
        """Score each operator's time cost from the symmetric one-block cells (-1, o, -1, o)."""
        empty = self.results.get(self.key_of(Cell()))
        empty_time = empty.training_time if empty is not None and empty.succeeded else None
        operator_times: dict[str, float] = {}
        for operator in self.space.operators:
            result = self.results.get(self.key_of(Cell((Block(-1, operator, -1, operator),))))
            if result is not None and result.succeeded and result.training_time is not None:
                operator_times[operator] = result.training_time
        if not operator_times:
            logger.warning("no symmetric one-block cell succeeded; every operator gets the same time score")
            return dict.fromkeys(self.space.operators, 1.0)
        if empty_time is None:
            logger.warning("the empty cell did not succeed; operator time scores use the fastest operator as base")
            empty_time = min(operator_times.values())
        reindex = dynamic_reindex(empty_time=empty_time, operator_times=operator_times)
        missing = [operator for operator in self.space.operators if operator not in reindex]
        if missing:
            fallback = float(np.mean(list(reindex.values())))
            logger.warning("operators %s have no time measurement; using the mean score %.3f", missing, fallback)
            reindex.update(dict.fromkeys(missing, fallback))
        return reindex

    def _write_tables(self, step: int, table: pd.DataFrame) -> None:
        folder = f"{self.prefix}/steps/{step}"
        self.store.write_frame(f"{folder}/predictions.parquet", table)
        self.store.write_frame(f"{folder}/front.parquet", table[table["front"]].reset_index(drop=True))
        self.store.write_frame(f"{folder}/exploration.parquet", table[table["exploration"]].reset_index(drop=True))

    # Training

    def _train(self, record: StepRecord) -> None:
        to_train: list[Candidate] = []
        reused = 0
        for text, key in zip(record.planned, record.keys, strict=True):
            if key in self.results:
                continue
            stored = self.store.get_result(key, self.results_folder)
            if stored is not None:
                self.results[key] = stored
                reused += 1
            else:
                to_train.append(Candidate(key=key, cell=Cell.parse(text)))
        self.counts.add(record.step, reused=reused)
        if self.listener is not None:
            self.listener.step_started(
                record.step, max_step=self.max_step, planned=len(record.planned), reused=reused, to_train=len(to_train)
            )
        if to_train:
            self.executor.submit(to_train)
            for result in self.executor.as_completed():
                self._record(record.step, result)
                if self.listener is not None:
                    self.listener.candidate_finished(record.step, result)
        record.completed = True
        self._score_predictions(record)
        if self.listener is not None:
            self.listener.step_finished(record.step, record, [self.results[key] for key in record.keys])

    def _record(self, step: int, result: CandidateResult) -> None:
        self.results[result.key] = result
        if result.status is ResultStatus.FAILED:
            # Failures may be transient (a killed process, memory pressure), so they are kept apart
            # from the immutable results and a rerun trains the candidate again.
            logger.warning("step %d: candidate %s %s failed: %s", step, result.key, result.cell, result.reason)
            self.counts.add(step, failed=1)
            self.store.write_json(f"failures/{result.key}.json", result.to_json())
            return
        logger.info(
            "step %d: candidate %s %s %s: accuracy %s, training time %s s",
            step,
            result.key,
            result.cell,
            result.status.value,
            result.accuracy,
            result.training_time,
        )
        self.counts.add(step, trained=1)
        self.store.put_result(result, self.results_folder)

    def _score_predictions(self, record: StepRecord) -> None:
        if not record.predictions:
            return
        pairs = [
            (record.predictions[key], self.results[key])
            for key in record.keys
            if key in record.predictions and self.results[key].succeeded
        ]
        accuracy = [(p.accuracy, float(r.accuracy or 0.0)) for p, r in pairs]
        record.accuracy_quality = Quality(
            mape=mape([a for _, a in accuracy], [p for p, _ in accuracy]),
            spearman=spearman([a for _, a in accuracy], [p for p, _ in accuracy]),
        )
        times = [(p.time, float(r.training_time or 0.0)) for p, r in pairs if p.time is not None]
        if times:
            record.time_quality = Quality(
                mape=mape([a for _, a in times], [p for p, _ in times]),
                spearman=spearman([a for _, a in times], [p for p, _ in times]),
            )

    def _notify_phase(self, step: int, text: str) -> None:
        logger.info("step %d: %s", step, text)
        if self.listener is not None:
            self.listener.phase(step, text)
