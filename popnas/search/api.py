"""Run a search from Python (notebooks, scripts, the CLI) and read its results as pandas tables.

from popnas.search import run_search
outcome = run_search("examples/gunpoint.yaml", store="runs/gunpoint")   # or "s3://bucket/runs"
outcome.results_frame()          # every trained candidate
outcome.front_frame(step=3)      # the predicted Pareto front of step 3, with measured results
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from popnas.results import CandidateResult
from popnas.search.executor import Executor
from popnas.search.listener import SearchListener
from popnas.search.local import LocalExecutor
from popnas.search.loop import Counts, SearchCounts, SearchLoop
from popnas.search.state import SearchState
from popnas.space import Cell
from popnas.spec import NASSearch, check_search, load_manifest
from popnas.storage import S3Settings, Store, open_store, store_uri
from popnas.train.datasets import load_dataset

logger = logging.getLogger(__name__)

TOP_CELLS = 5
"""Best cells listed in the summary; model selection takes the same number in POPNASv3."""


@dataclass
class SearchOutcome:
    """The results of a finished (or stopped) search run."""

    search: NASSearch
    state: SearchState
    results: dict[str, CandidateResult]
    counts: SearchCounts
    wall_time: float
    """Seconds this invocation ran."""
    store: Store
    prefix: str
    """Folder of this run inside the store."""

    def results_frame(self) -> pd.DataFrame:
        """Return one row per planned candidate of every step, with predictions (when made) and measurements."""
        rows = []
        for step in sorted(self.state.steps):
            record = self.state.steps[step]
            first_exploration = len(record.planned) - record.exploration
            for position, (text, key) in enumerate(zip(record.planned, record.keys, strict=True)):
                result = self.results.get(key)
                prediction = record.predictions.get(key)
                rows.append(
                    {
                        "step": step,
                        "cell": text,
                        "key": key,
                        "exploration": position >= first_exploration,
                        "status": None if result is None else result.status.value,
                        "accuracy": None if result is None else result.accuracy,
                        "trainingTime": None if result is None else result.training_time,
                        "inferenceTime": None if result is None else result.inference_time,
                        "params": None if result is None else result.params,
                        "flops": None if result is None else result.flops,
                        "epochs": None if result is None else result.epochs,
                        "predictedAccuracy": None if prediction is None else prediction.accuracy,
                        "predictedTime": None if prediction is None else prediction.time,
                        "reason": None if result is None else result.reason,
                    }
                )
        return pd.DataFrame(rows)

    def front_frame(self, step: int | None = None) -> pd.DataFrame:
        """Return the predicted Pareto front of ``step`` (default: the last step with one), with measured results."""
        steps = [s for s in sorted(self.state.steps) if self.state.steps[s].predictions]
        if step is None:
            if not steps:
                return pd.DataFrame()
            step = steps[-1]
        front = self.store.read_frame(f"{self.prefix}/steps/{step}/front.parquet")
        if front is None:
            return pd.DataFrame()
        measured = self.results_frame()
        measured = measured[measured["step"] == step][["cell", "status", "accuracy", "trainingTime", "params"]]
        return front.merge(measured, on="cell", how="left")

    def top(self, count: int = TOP_CELLS) -> list[CandidateResult]:
        """Return the best succeeded cells by validation accuracy (the empty cell left out), best first."""
        planned = {key for record in self.state.steps.values() for key in record.keys}
        succeeded = [
            result
            for key, result in self.results.items()
            if key in planned and result.succeeded and not Cell.parse(result.cell).is_empty
        ]
        succeeded.sort(key=lambda result: (-(result.accuracy or 0.0), result.training_time or 0.0, result.cell))
        return succeeded[:count]

    def summary(self) -> dict[str, Any]:
        """Return the content of ``summary.json``."""

        def describe(result: CandidateResult) -> dict[str, Any]:
            return {
                "cell": result.cell,
                "accuracy": result.accuracy,
                "trainingTime": result.training_time,
                "params": result.params,
                "key": result.key,
            }

        top = self.top()
        front = self.front_frame()
        steps = []
        for step in sorted(self.state.steps):
            record = self.state.steps[step]
            step_results = [self.results[key] for key in record.keys if key in self.results]
            counts = self.counts.steps.get(step, Counts())
            steps.append(
                {
                    "step": step,
                    "evaluated": record.evaluated or len(record.planned),
                    "planned": len(record.planned),
                    "trained": counts.trained,
                    "reused": counts.reused,
                    "failed": counts.failed,
                    "exploration": record.exploration,
                    "succeeded": sum(result.succeeded for result in step_results),
                    "bestAccuracy": max((r.accuracy or 0.0 for r in step_results if r.succeeded), default=None),
                    "accuracyPredictor": None
                    if record.accuracy_quality is None
                    else {"mape": record.accuracy_quality.mape, "spearman": record.accuracy_quality.spearman},
                    "timePredictor": None
                    if record.time_quality is None
                    else {"mape": record.time_quality.mape, "spearman": record.time_quality.spearman},
                }
            )
        return {
            "search": self.search.metadata.name,
            "runId": self.search.run_id,
            "finished": self.state.finished,
            "best": describe(top[0]) if top else None,
            "top": [describe(result) for result in top],
            "lastFront": [
                {
                    "cell": row["cell"],
                    "predictedAccuracy": row["predictedAccuracy"],
                    "predictedTime": None if pd.isna(row["predictedTime"]) else row["predictedTime"],
                    "accuracy": None if pd.isna(row["accuracy"]) else row["accuracy"],
                    "trainingTime": None if pd.isna(row["trainingTime"]) else row["trainingTime"],
                }
                for _, row in front.iterrows()
            ],
            "trained": self.counts.trained,
            "reused": self.counts.reused,
            "failed": self.counts.failed,
            "steps": steps,
            "wallTime": round(self.wall_time, 1),
            "location": self.store.location(self.prefix),
        }


def run_search(
    search: NASSearch | str | Path,
    *,
    store: str | Path | None = None,
    workers: int | None = None,
    listener: SearchListener | None = None,
    executor: Executor | None = None,
) -> SearchOutcome:
    """Run (or continue) a search and return its outcome; ``search`` is a manifest path or a NASSearch.

    Results go to ``store``: a folder or ``s3://bucket/prefix`` (default: ``spec.storage.uri``,
    else the folder ``popnas-results/<name>``), where ``summary.json`` is written at the end.
    Rerunning with the same spec and store continues the run, and every search on the store
    reuses the results stored for the same candidates (unless ``strategy.reuseResults`` is false).
    Raises StorageError when the store cannot be used.
    """
    if not isinstance(search, NASSearch):
        search = load_manifest(search)
    else:
        check_search(search)
    search = with_store(search, store)
    settings = S3Settings.from_spec(search.spec.storage)
    assert search.spec.storage.uri is not None  # set by with_store
    opened = open_store(search.spec.storage.uri, settings)
    started = time.perf_counter()
    dataset = load_dataset(search.spec.dataset.uri, task=search.spec.task, storage=settings)
    owns_executor = executor is None
    if executor is None:
        executor = LocalExecutor(search, workers=workers, retries=search.spec.trainers.retries)
    loop = SearchLoop(
        search=search, store=opened, executor=executor, dataset_fingerprint=dataset.fingerprint, listener=listener
    )
    try:
        state = loop.run()
    finally:
        if owns_executor:
            executor.close()
    outcome = SearchOutcome(
        search=search,
        state=state,
        results=loop.results,
        counts=loop.counts,
        wall_time=time.perf_counter() - started,
        store=opened,
        prefix=loop.prefix,
    )
    summary = outcome.summary()
    opened.write_json(f"{loop.prefix}/summary.json", summary)
    opened.write_json("summary.json", summary)
    return outcome


def with_store(search: NASSearch, store: str | Path | None = None) -> NASSearch:
    """Return ``search`` with spec.storage.uri set to the store it runs on, for trainer processes to find.

    A local folder becomes an absolute path, so trainers started elsewhere find the same folder.
    """
    uri = store_uri(search, store)
    if "://" not in uri:
        uri = str(Path(uri).expanduser().resolve())
    storage = search.spec.storage.model_copy(update={"uri": uri})
    return search.model_copy(update={"spec": search.spec.model_copy(update={"storage": storage})})
