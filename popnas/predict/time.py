"""The time predictor: a CatBoost regressor from time features to training time, in seconds.

``fit`` runs a seeded random search over the CatBoost hyperparameters and scores each draw by
k-fold cross-validation with early stopping on each held-out fold. The fold models of the best
draw become the ensemble, and ``predict`` averages it. The features come from
``popnas.predict.features``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from catboost import CatBoostRegressor
from sklearn.model_selection import KFold

logger = logging.getLogger(__name__)

LEARNING_RATE_RANGE = (0.02, 0.2)
"""Uniform range of the learning rate draws."""
DEPTH_RANGE = (3, 6)
"""Tree depths drawn, both ends included."""
L2_LEAF_REG_RANGE = (0.1, 5.0)
"""Uniform range of the L2 penalty on leaf values."""
RANDOM_STRENGTH_RANGE = (0.3, 3.0)
"""Uniform range of the noise scale added to split scores."""
BAGGING_TEMPERATURE_RANGE = (0.3, 3.0)
"""Uniform range of the Bayesian bootstrap temperature (0 means no bagging, larger means heavier weights)."""


class _ConstantModel:
    """A model of the mean training time, for a fold whose training rows CatBoost rejects."""

    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.full(len(features), self.value, dtype=np.float64)


@dataclass(frozen=True)
class _FoldResult:
    model: CatBoostRegressor | _ConstantModel
    held_out_rmse: float
    trees: int


class TimePredictor:
    """Predicts the training time (seconds) of cells from their time features.

    ``search_iterations`` hyperparameter draws, seeded by ``seed``, are each scored by the mean
    held-out RMSE over ``folds`` folds of a seeded shuffled k-fold split. Every fold model trains
    for at most ``iterations`` trees and stops after ``early_stopping_rounds`` trees without a
    better held-out RMSE, keeping its best tree count. The fold models of the best draw form the
    ensemble. Retraining on the same folds with the same parameters and seeds would give the same
    models, so they are not retrained.

    The fits run in parallel, one CatBoost thread each, on the CPUs this process may use, because
    a second CatBoost thread gained nothing on 300 rows (measured with CatBoost 1.2.10). The
    results do not depend on the number of CPUs.

    POPNASv3 weighted features for the split choice (cells and op_score 1.5, dag_depth 1.2, though
    its comment meant concat_inputs for the last one). It gives no measurement for those weights,
    so all features weigh the same here.

    After ``fit``, ``best_params`` contains the hyperparameters of the best draw.
    """

    def __init__(
        self,
        *,
        folds: int = 5,
        search_iterations: int = 40,
        seed: int = 0,
        iterations: int = 2500,
        early_stopping_rounds: int = 50,
    ) -> None:
        problems = []
        if folds < 2:
            problems.append(f"folds must be at least 2, received folds={folds}")
        if search_iterations < 1:
            problems.append(f"search_iterations must be at least 1, received search_iterations={search_iterations}")
        if iterations < 1:
            problems.append(f"iterations must be at least 1, received iterations={iterations}")
        if early_stopping_rounds < 1:
            problems.append(
                f"early_stopping_rounds must be at least 1, received early_stopping_rounds={early_stopping_rounds}"
            )
        if problems:
            raise ValueError("invalid time predictor settings: " + "; ".join(problems))

        self.folds = folds
        self.search_iterations = search_iterations
        self.seed = seed
        self.iterations = iterations
        self.early_stopping_rounds = early_stopping_rounds
        self.best_params: dict[str, float | int] = {}
        self._columns: list[str] = []
        self._models: list[CatBoostRegressor | _ConstantModel] = []

    def fit(self, features: pd.DataFrame, times: Sequence[float]) -> None:
        """Search hyperparameters and train the ensemble on ``features`` and measured ``times`` (seconds).

        With fewer rows than ``folds``, each fold holds out one row instead. CatBoost rejects
        training rows with equal times or only constant features, so such a fold predicts the
        mean time of its training rows. Fewer than 2 rows, lengths that differ, times that are
        negative, NaN or infinite, and features that are not finite numbers raise ValueError.
        After an error the previous ensemble stays.
        """
        values = self._feature_values(features, list(features.columns))
        targets = np.asarray(times, dtype=np.float64).reshape(-1)
        if len(values) != len(targets):
            raise ValueError(
                f"features and times must have the same length, received {len(values)} rows and {len(targets)} times"
            )
        if len(values) < 2:
            raise ValueError(
                f"the time predictor needs at least 2 results to fit (one to train on, one to stop early on), "
                f"received {len(values)}"
            )
        invalid = [value for value in targets if not (np.isfinite(value) and value >= 0)]
        if invalid:
            raise ValueError(f"times must be finite, non-negative seconds, received {invalid[:5]}")

        folds = min(self.folds, len(values))
        if folds < self.folds:
            logger.warning(
                "time predictor: %d results are fewer than folds=%d, cross-validating on %d folds",
                len(values),
                self.folds,
                folds,
            )
        splits = list(KFold(n_splits=folds, shuffle=True, random_state=self.seed).split(values))
        draws = self._draw_params()
        jobs = [(params, fold, rows) for params in draws for fold, rows in enumerate(splits)]

        best_index = -1
        best_rmse = np.inf
        best_results: list[_FoldResult] = []
        with ThreadPoolExecutor(max_workers=_usable_cpus()) as executor:
            # map() yields results in job order, so each draw's folds arrive together and only
            # the best draw's models are kept.
            results = executor.map(lambda job: self._fit_fold(values, targets, *job), jobs)
            for index, draw_results in enumerate(_chunks(results, folds)):
                rmse = float(np.mean([result.held_out_rmse for result in draw_results]))
                logger.debug("time predictor: draw %d %s, mean held-out RMSE %.4f s", index, draws[index], rmse)
                if rmse < best_rmse or best_index < 0:
                    best_index, best_rmse, best_results = index, rmse, draw_results

        self.best_params = dict(draws[best_index])
        self._columns = list(features.columns)
        self._models = [result.model for result in best_results]
        logger.info(
            "time predictor: fitted on %d results, best draw %s with mean held-out RMSE %.4f s and %s trees per fold",
            len(values),
            self.best_params,
            best_rmse,
            [result.trees for result in best_results],
        )

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """Predict training times (seconds) as the ensemble mean, at least 0, float64, shape (len(features),).

        ``features`` needs the columns given to ``fit``, in any order. Raises RuntimeError before
        the first successful fit and ValueError for missing columns or values that are not finite.
        """
        if not self._models:
            raise RuntimeError("the time predictor has not been fitted, so call fit() with results first")
        values = self._feature_values(features, self._columns)
        if len(values) == 0:
            return np.zeros(0, dtype=np.float64)
        predictions = [np.asarray(model.predict(values), dtype=np.float64) for model in self._models]
        # Boosted trees can extrapolate below the smallest training time, but a time is never negative.
        return np.maximum(np.mean(predictions, axis=0), 0.0)

    def _draw_params(self) -> list[dict[str, float | int]]:
        generator = np.random.default_rng(self.seed)
        draws: list[dict[str, float | int]] = []
        for _ in range(self.search_iterations):
            draws.append(
                {
                    "learning_rate": float(generator.uniform(*LEARNING_RATE_RANGE)),
                    "depth": int(generator.integers(DEPTH_RANGE[0], DEPTH_RANGE[1] + 1)),
                    "l2_leaf_reg": float(generator.uniform(*L2_LEAF_REG_RANGE)),
                    "random_strength": float(generator.uniform(*RANDOM_STRENGTH_RANGE)),
                    "bagging_temperature": float(generator.uniform(*BAGGING_TEMPERATURE_RANGE)),
                }
            )
        return draws

    def _fit_fold(
        self,
        values: np.ndarray,
        targets: np.ndarray,
        params: dict[str, float | int],
        fold: int,
        rows: tuple[np.ndarray, np.ndarray],
    ) -> _FoldResult:
        train_rows, held_out_rows = rows
        train_targets = targets[train_rows]
        held_out_targets = targets[held_out_rows]
        train_values = values[train_rows]
        if np.ptp(train_targets) == 0 or np.all(np.ptp(train_values, axis=0) == 0):
            model = _ConstantModel(float(np.mean(train_targets)))
            rmse = float(np.sqrt(np.mean((model.predict(values[held_out_rows]) - held_out_targets) ** 2)))
            return _FoldResult(model=model, held_out_rmse=rmse, trees=0)

        model = CatBoostRegressor(
            loss_function="RMSE",
            iterations=self.iterations,
            # bagging_temperature only acts with the Bayesian bootstrap, and CatBoost 1.2.10 defaults to MVS.
            bootstrap_type="Bayesian",
            random_seed=self.seed + fold,
            thread_count=1,
            verbose=False,
            allow_writing_files=False,
            **params,
        )
        model.fit(
            train_values,
            train_targets,
            eval_set=(values[held_out_rows], held_out_targets),
            early_stopping_rounds=self.early_stopping_rounds,
            use_best_model=True,
        )
        rmse = float(model.get_best_score()["validation"]["RMSE"])
        return _FoldResult(model=model, held_out_rmse=rmse, trees=int(model.tree_count_))

    @staticmethod
    def _feature_values(features: pd.DataFrame, columns: list[str]) -> np.ndarray:
        missing = [column for column in columns if column not in features.columns]
        if missing:
            raise ValueError(f"features are missing the columns {missing} that the time predictor was fitted on")
        try:
            values = features[columns].to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"features must be numbers, received columns of types {features.dtypes.to_dict()}"
            ) from error
        if not np.all(np.isfinite(values)):
            raise ValueError("features contain NaN or infinite values")
        return values


def _chunks(results: Iterator[_FoldResult], size: int) -> Iterator[list[_FoldResult]]:
    chunk: list[_FoldResult] = []
    for result in results:
        chunk.append(result)
        if len(chunk) == size:
            yield chunk
            chunk = []


def _usable_cpus() -> int:
    # NOTE: CPU affinity does not reflect a container's CPU quota (cgroup cpu.max), so in a pod
    # with a CPU limit below the node's core count this starts more threads than the quota runs.
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # sched_getaffinity is missing on macOS and Windows
        return max(1, os.cpu_count() or 1)
