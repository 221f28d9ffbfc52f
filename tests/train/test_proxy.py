"""Proxy training and its measurements, failure results, and the trainer's runtime settings."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from popnas.results import ResultStatus, candidate_key
from popnas.space import Cell
from popnas.spec.model import NASSearch, Task
from popnas.train.datasets import load_dataset
from popnas.train.proxy import (
    BatchTimer,
    StepSchedule,
    batch_norm_momentum,
    count_flops,
    train_candidate,
)
from popnas.train.runtime import configure_threads, device_class


def _search(
    *,
    uri: str = "builtin:gunpoint",
    task: Task = Task.TIME_SERIES_CLASSIFICATION,
    architecture: dict[str, Any] | None = None,
    **training: Any,
) -> NASSearch:
    # model_validate skips the manifest's file checks, so a missing dataset reaches the trainer.
    return NASSearch.model_validate(
        {
            "apiVersion": "popnas.io/v1alpha1",
            "kind": "NASSearch",
            "metadata": {"name": "proxy-test"},
            "spec": {
                "task": task.value,
                "dataset": {"uri": uri, "validationSize": 0.2},
                "training": {"epochs": 1, **training},
                "architecture": architecture or {"motifs": 1, "normalCellsPerMotif": 1, "filters": 8},
            },
        }
    )


def _expected_key(search: NASSearch, cell: Cell, fingerprint: str) -> str:
    return candidate_key(
        dataset_fingerprint=fingerprint,
        recipe=search.spec.recipe_hash(),
        cell_key=cell.key,
        device_class=device_class(),
    )


def test_batch_timer_replaces_first_batch_by_epoch_mean() -> None:
    timer = BatchTimer()
    timer.epochs = [[5.0, 1.0, 3.0], [2.0, 2.0]]

    assert timer.training_time() == pytest.approx(2.0 + 1.0 + 3.0 + 2.0 + 2.0)


def test_batch_timer_single_batch_epochs_use_later_epochs() -> None:
    timer = BatchTimer()
    timer.epochs = [[5.0], [1.0], [3.0]]

    assert timer.training_time() == pytest.approx(2.0 + 1.0 + 3.0)


def test_batch_timer_single_batch_kept() -> None:
    timer = BatchTimer()
    timer.epochs = [[5.0]]

    assert timer.training_time() == pytest.approx(5.0)


def test_batch_timer_no_batches() -> None:
    assert BatchTimer().training_time() == 0.0


@pytest.mark.parametrize(
    ("steps_per_epoch", "expected"),
    [(1, 0.1), (2, 0.1**0.5), (9, 0.1 ** (1 / 9)), (230, 0.99), (5000, 0.99)],
)
def test_batch_norm_momentum(steps_per_epoch: int, expected: float) -> None:
    assert batch_norm_momentum(steps_per_epoch) == pytest.approx(expected)


def test_step_schedule_matches_cosine_decay_restarts() -> None:
    schedule = keras.optimizers.schedules.CosineDecayRestarts(0.01, first_decay_steps=4, t_mul=2.0, m_mul=1.0)

    rates = StepSchedule(schedule, steps=30).rates

    expected = [float(schedule(step)) for step in range(30)]
    assert rates.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert rates[0] == pytest.approx(0.01)
    assert rates[4] == pytest.approx(0.01)  # first restart after 4 steps
    assert rates[12] == pytest.approx(0.01)  # second restart after 4 + 8 steps


def test_step_schedule_sets_learning_rate_per_batch() -> None:
    schedule = keras.optimizers.schedules.CosineDecayRestarts(0.01, first_decay_steps=4)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=0.01), loss="mse")
    callback = StepSchedule(schedule, steps=6)
    callback.set_model(model)

    for batch in range(3):
        callback.on_train_batch_begin(batch)

    assert float(model.optimizer.learning_rate) == pytest.approx(callback.rates[2])


def test_count_flops_adds_recurrent_steps() -> None:
    inputs = keras.Input((20, 4))
    sequence = keras.layers.GRU(8, return_sequences=True)(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(sequence))
    model = keras.Model(inputs, outputs)

    # Each of 20 steps multiplies input (4) and state (8) by the kernels of 3 gates of 8 units.
    recurrent = 2 * 20 * 3 * 8 * (4 + 8)
    assert count_flops(model) >= recurrent


def test_count_flops_dense_head() -> None:
    inputs = keras.Input((10, 3))
    outputs = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling1D()(inputs))
    model = keras.Model(inputs, outputs)

    # The matrix product alone is 2 * 3 * 5 operations, plus the mean and the bias.
    assert count_flops(model) >= 2 * 3 * 5


def test_train_candidate_invalid_operator_fails() -> None:
    search = _search()
    cell = Cell.parse("[(-1, '3x3 conv', -1, 'identity')]")

    result = train_candidate(search, cell)

    fingerprint = load_dataset("builtin:gunpoint").fingerprint
    assert result.status is ResultStatus.FAILED
    assert result.reason is not None
    assert result.reason.startswith("OperatorError: operator '3x3 conv' has a 2D (KxK) kernel")
    assert result.key == _expected_key(search, cell, fingerprint)
    assert result.cell == str(cell)
    assert result.accuracy is None
    assert result.device_class == device_class()


def test_train_candidate_failure_keeps_given_key() -> None:
    result = train_candidate(_search(), Cell.parse("[(-1, 'lstm', -1, '2x2 maxpool')]"), key="given-key")

    assert result.status is ResultStatus.FAILED
    assert result.key == "given-key"


def test_train_candidate_missing_dataset_fails(tmp_path: Path) -> None:
    search = _search(uri=str(tmp_path / "missing.npz"))
    cell = Cell.parse("[(-1, '3 conv', -1, 'identity')]")

    result = train_candidate(search, cell)

    assert result.status is ResultStatus.FAILED
    assert result.reason is not None
    assert result.reason.startswith("FileNotFoundError: dataset file")
    assert result.key == _expected_key(search, cell, "unavailable")


def test_configure_threads_after_first_op_raises() -> None:
    _ = (tf.constant(1.0) + 1.0).numpy()
    threads = tf.config.threading.get_intra_op_parallelism_threads() + 3

    with pytest.raises(RuntimeError, match="call configure_threads first"):
        configure_threads(threads)


def test_configure_threads_rejects_zero() -> None:
    with pytest.raises(ValueError, match="threads=0"):
        configure_threads(0)


def test_device_class_names_device() -> None:
    name = device_class()

    assert re.fullmatch(r"cpu|tpu|gpu(-[a-z0-9]+)*", name)
    if not tf.config.list_physical_devices("GPU") and not tf.config.list_physical_devices("TPU"):
        assert name == "cpu"


@pytest.mark.slow
def test_configure_threads_in_fresh_process() -> None:
    code = (
        "from popnas.train.runtime import configure_threads\n"
        "configure_threads(1)\n"
        "import tensorflow as tf\n"
        "_ = (tf.constant(1.0) + 1.0).numpy()\n"
        "configure_threads(1)\n"  # same value again after the first op: allowed
        "print(tf.config.threading.get_intra_op_parallelism_threads(),"
        " tf.config.threading.get_inter_op_parallelism_threads())\n"
    )

    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split()[-2:] == ["1", "1"]


@pytest.mark.slow
def test_train_candidate_gunpoint_succeeds() -> None:
    search = _search()
    cell = Cell.parse("[(-1, '7 conv', -2, '2 maxpool')]")

    result = train_candidate(search, cell)

    assert result.status is ResultStatus.SUCCEEDED, result.reason
    assert result.key == _expected_key(search, cell, load_dataset("builtin:gunpoint").fingerprint)
    assert result.cell == str(cell)
    assert result.accuracy is not None
    assert 0.0 <= result.accuracy <= 1.0
    assert result.training_time is not None
    assert result.training_time > 0
    assert result.inference_time is not None
    assert result.inference_time > 0
    assert result.params is not None
    assert result.params > 0
    assert result.flops is not None
    assert result.flops > 0
    assert result.epochs == 1
    assert result.reason is None
    assert result.device_class == device_class()
    history = result.extra["history"]
    assert set(history) == {"accuracy", "valAccuracy", "loss"}
    assert all(len(values) == 1 for values in history.values())
    assert all(isinstance(value, float) for values in history.values() for value in values)
    assert result.accuracy == max(history["valAccuracy"])


@pytest.mark.slow
def test_train_candidate_empty_cell_succeeds() -> None:
    result = train_candidate(_search(epochs=2), Cell(()))

    assert result.status is ResultStatus.SUCCEEDED, result.reason
    assert result.epochs == 2
    assert result.params == 1 * 2 + 2  # dense head on one channel, two classes
    assert result.training_time is not None
    assert result.training_time > 0


@pytest.mark.slow
def test_train_candidate_images_with_augmentation() -> None:
    search = _search(
        uri="builtin:digits",
        task=Task.IMAGE_CLASSIFICATION,
        architecture={"motifs": 2, "normalCellsPerMotif": 1, "filters": 16},
        epochs=2,
        augmentation={"shift": 0.125, "horizontalFlip": False},
    )

    result = train_candidate(search, Cell.parse("[(-1, '3x3 conv', -2, '2x2 maxpool')]"))

    assert result.status is ResultStatus.SUCCEEDED, result.reason
    assert result.epochs == 2
    assert result.accuracy is not None
    # Ten digit classes: chance is 0.1; this network reached 0.70 after two epochs when the test was written.
    assert result.accuracy > 0.3


@pytest.mark.slow
def test_train_candidate_repeats_with_same_seed() -> None:
    search = _search(epochs=2)
    cell = Cell.parse("[(-1, '5 conv', -2, 'identity')]")

    first = train_candidate(search, cell)
    second = train_candidate(search, cell)

    assert first.status is ResultStatus.SUCCEEDED, first.reason
    assert first.extra["history"] == second.extra["history"]


@pytest.mark.slow
def test_train_candidate_nan_loss_invalid() -> None:
    search = _search(uri="builtin:italypowerdemand", epochs=2, learningRate=1e30)

    result = train_candidate(search, Cell.parse("[(-1, '7 conv', -1, '7 conv')]"))

    assert result.status is ResultStatus.INVALID
    assert result.reason is not None
    assert "loss became NaN or infinite at epoch 1" in result.reason
    assert result.epochs == 1
    assert result.accuracy is None
    assert result.extra["history"]["loss"] == [None]  # NaN is not valid JSON
    assert result.params is not None


@pytest.mark.slow
def test_train_candidate_npz_dataset(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # Two classes of series that differ in frequency, so training is meaningful but quick.
    time_axis = np.linspace(0, 1, 32)
    labels = np.arange(60) % 2
    x = np.sin(2 * np.pi * (2 + 3 * labels[:, None]) * time_axis) + 0.1 * rng.normal(size=(60, 32))
    path = tmp_path / "waves.npz"
    np.savez(path, x_train=x[:40], y_train=labels[:40], x_test=x[40:], y_test=labels[40:])

    result = train_candidate(_search(uri=str(path)), Cell.parse("[(-1, '3 conv', -1, 'identity')]"))

    assert result.status is ResultStatus.SUCCEEDED, result.reason
