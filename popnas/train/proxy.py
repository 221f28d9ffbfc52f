"""Proxy training of one candidate cell and the measurements the search records for it.

``train_candidate`` is the trainer's whole job: it loads the dataset, builds the network, trains
it for the spec's few epochs, and measures accuracy, training time, inference time, parameters
and FLOPs. Every error in building or training becomes a result with a status and a reason, so
the search loop receives no exception from here. Writing the result to storage is the caller's
job; the trained model is stored here when the spec keeps models (``training.keepModels``).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from functools import cache
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from popnas.results import CandidateResult, ResultStatus, candidate_key
from popnas.space import Cell
from popnas.spec.model import NASSearch, Task
from popnas.storage import S3Settings, StorageError, Store, open_store, store_uri
from popnas.train.builder import build_model
from popnas.train.datasets import Dataset, load_dataset, resolve_batch_size, split_validation
from popnas.train.runtime import device_class

logger = logging.getLogger(__name__)

INFERENCE_RUNS = 13
"""Batches predicted to measure inference time; the first ``INFERENCE_WARMUP_RUNS`` are not counted."""
INFERENCE_WARMUP_RUNS = 3

MAX_REASON_LENGTH = 2000
"""Characters kept of a failure reason; TensorFlow errors can quote whole graphs."""

_UNAVAILABLE_FINGERPRINT = "unavailable"
"""Stands in for the dataset fingerprint in the key of a result whose dataset failed to load."""


class BatchTimer(keras.callbacks.Callback):
    """Records the wall time of every training batch, in seconds, per epoch.

    Because this callback overrides ``on_train_batch_end``, Keras 3.15 calls it synchronously
    after converting the batch's metrics to Python numbers, so each time covers the whole batch.
    """

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[list[float]] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epochs.append([])

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.epochs[-1].append(time.perf_counter() - self._start)

    def training_time(self) -> float:
        """Return the sum of the batch times, with the first batch's tracing left out.

        The first batch of the first epoch also traces and compiles the training step. Its time is
        replaced by the mean of the other batches of that epoch. When the first epoch has a single
        batch, the mean of the later epochs' batches is used, and with one batch in all it is kept.
        """
        times = [list(epoch) for epoch in self.epochs if epoch]
        if not times:
            return 0.0
        others = times[0][1:] or [batch for epoch in times[1:] for batch in epoch]
        if others:
            times[0][0] = sum(others) / len(others)
        return float(sum(sum(epoch) for epoch in times))


class StepSchedule(keras.callbacks.Callback):
    """Sets the optimizer's learning rate from a schedule before every training batch.

    Passing a schedule to the optimizer would be simpler, but Keras 3.15's TensorFlow backend
    evaluates it once per weight for the weight decay, and CosineDecayRestarts contains a cond.
    On 2 CPU cores that added about 2 s of tracing to a three-cell convolutional candidate, and
    time to every measured step. Here the schedule is evaluated once for all ``steps`` steps,
    and each batch assigns one value.
    """

    def __init__(self, schedule: keras.optimizers.schedules.LearningRateSchedule, *, steps: int) -> None:
        super().__init__()
        self.rates = keras.ops.convert_to_numpy(schedule(np.arange(max(steps, 1)))).astype(float)
        self.step = 0

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.model.optimizer.learning_rate = float(self.rates[min(self.step, len(self.rates) - 1)])
        self.step += 1


class NonFiniteLossStop(keras.callbacks.Callback):
    """Stops training at the first batch whose running loss is NaN or infinite, and records where."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0
        self.stopped_at: tuple[int, int] | None = None
        """(epoch, batch), both counted from 1, where the loss became non-finite; None if it stayed finite."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)) and self.stopped_at is None:
            self.stopped_at = (self.epoch + 1, batch + 1)
            self.model.stop_training = True


def train_candidate(search: NASSearch, cell: Cell, *, key: str | None = None) -> CandidateResult:
    """Proxy-train ``cell`` as ``search`` specifies and return its measured result.

    ``key`` defaults to the candidate key of the dataset fingerprint, the recipe hash, the
    canonical cell and this machine's device class. Any Exception raised while loading, building
    or training is caught and gives a FAILED result whose reason is "ExceptionType: message".
    A NaN or infinite loss gives an INVALID result.
    """
    spec = search.spec
    device = device_class()
    cell_text = str(cell)
    fingerprint = _UNAVAILABLE_FINGERPRINT
    try:
        dataset = load_dataset(spec.dataset.uri, task=spec.task, storage=S3Settings.from_spec(spec.storage))
        fingerprint = dataset.fingerprint
        key = key or _default_key(search, cell, fingerprint, device)
        logger.debug("training candidate %s, cell %s", key, cell_text)
        return _train(search, cell, dataset, key=key, device=device)
    except Exception as error:  # a failed candidate is a result, never an error that escapes the search loop
        key = key or _default_key(search, cell, fingerprint, device)
        reason = f"{type(error).__name__}: {error}"
        if len(reason) > MAX_REASON_LENGTH:
            reason = reason[: MAX_REASON_LENGTH - 3] + "..."
        logger.warning(
            "candidate %s, cell %s failed, recording a failed result: %s",
            key,
            cell_text,
            reason,
            exc_info=logger.isEnabledFor(logging.DEBUG),
        )
        return CandidateResult.failure(key=key, cell=cell_text, reason=reason, device_class=device)


def _default_key(search: NASSearch, cell: Cell, fingerprint: str, device: str) -> str:
    return candidate_key(
        dataset_fingerprint=fingerprint, recipe=search.spec.recipe_hash(), cell_key=cell.key, device_class=device
    )


def _train(search: NASSearch, cell: Cell, dataset: Dataset, *, key: str, device: str) -> CandidateResult:
    spec = search.spec
    training = spec.training
    seed = spec.strategy.seed
    splits = split_validation(dataset, validation_size=spec.dataset.validation_size, seed=seed)

    # Python's collector frees the previous candidate's graphs in its own time. Forcing a
    # collection here cost about 0.3 s per candidate on 2 CPU cores.
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(seed)
    batch_size = resolve_batch_size(spec.dataset.batch_size, len(splits.x_train))
    steps_per_epoch = math.ceil(len(splits.x_train) / batch_size)

    started = time.perf_counter()
    model = build_model(
        cell,
        input_shape=dataset.input_shape,
        classes=dataset.classes,
        task=spec.task,
        architecture=spec.architecture,
        augmentation=training.augmentation if spec.task is Task.IMAGE_CLASSIFICATION else None,
        batch_norm_momentum=batch_norm_momentum(steps_per_epoch),
    )
    schedule = keras.optimizers.schedules.CosineDecayRestarts(
        training.learning_rate,
        first_decay_steps=training.restart_period * steps_per_epoch,
        t_mul=2.0,
        m_mul=1.0,
        alpha=0.0,
    )
    scheduler = StepSchedule(schedule, steps=training.epochs * steps_per_epoch)
    # Keras decays each weight by weight_decay * current learning rate, so dividing the spec's
    # per-step decay by the initial learning rate gives that decay at the start, following the
    # learning-rate schedule from there, as POPNASv3's scheduled AdamW does.
    optimizer = keras.optimizers.AdamW(
        learning_rate=training.learning_rate, weight_decay=spec.weight_decay / training.learning_rate
    )
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    _create_training_variables(model, classes=dataset.classes)
    built = time.perf_counter()

    timer = BatchTimer()
    nan_stop = NonFiniteLossStop()
    history = model.fit(
        splits.x_train,
        splits.y_train,
        batch_size=batch_size,
        epochs=training.epochs,
        validation_data=(splits.x_validation, splits.y_validation),
        callbacks=[scheduler, timer, nan_stop],
        shuffle=True,
        verbose=0,
    ).history
    trained = time.perf_counter()
    epochs_run = len(history.get("loss", []))
    extra: dict[str, Any] = {
        "history": {
            "accuracy": _json_floats(history.get("accuracy", [])),
            "valAccuracy": _json_floats(history.get("val_accuracy", [])),
            "loss": _json_floats(history.get("loss", [])),
        }
    }
    params = int(model.count_params())

    validation_accuracy = [value for value in extra["history"]["valAccuracy"] if value is not None]
    reason = None
    if nan_stop.stopped_at is not None:
        reason = "loss became NaN or infinite at epoch {}, batch {}".format(*nan_stop.stopped_at)
    elif len(validation_accuracy) < epochs_run or not validation_accuracy:
        reason = f"validation accuracy is missing or not finite: {history.get('val_accuracy')}"
    if reason is not None:
        logger.info("candidate %s is invalid, recording an invalid result: %s", key, reason)
        return CandidateResult(
            key=key,
            cell=str(cell),
            status=ResultStatus.INVALID,
            params=params,
            epochs=epochs_run,
            reason=reason,
            device_class=device,
            extra=extra,
        )

    if training.keep_models:
        extra["model"] = _keep_model(search, model, key)
    inference_time = _inference_time(model, splits.x_train[:batch_size])
    measured = time.perf_counter()
    flops = count_flops(model)
    # Everything this candidate cost the trainer once the data was loaded: build, compile, fit,
    # inference timing and FLOPs counting. The training_time field counts training batches only.
    extra["wallTime"] = round(time.perf_counter() - started, 3)
    logger.debug(
        "candidate %s: build and compile %.2f s, fit %.2f s, inference timing %.2f s, FLOPs count %.2f s",
        key,
        built - started,
        trained - built,
        measured - trained,
        time.perf_counter() - measured,
    )
    return CandidateResult(
        key=key,
        cell=str(cell),
        status=ResultStatus.SUCCEEDED,
        accuracy=max(validation_accuracy),
        training_time=timer.training_time(),
        inference_time=inference_time,
        params=params,
        flops=flops,
        epochs=epochs_run,
        device_class=device,
        extra=extra,
    )


@cache
def _open_store(uri: str, settings: S3Settings) -> Store:
    """Open a store once per trainer process: an S3 client costs tens of milliseconds to make."""
    return open_store(uri, settings)


def _keep_model(search: NASSearch, model: keras.Model, key: str) -> str | None:
    """Store the trained model as models/<key>/model.keras; return where, or None when storing failed.

    A model that cannot be stored is logged and skipped: the measured result is still valid.
    """
    store = _open_store(store_uri(search), S3Settings.from_spec(search.spec.storage))
    path = f"models/{key}/model.keras"
    with tempfile.TemporaryDirectory(prefix="popnas-model-") as folder:
        local = Path(folder) / "model.keras"
        try:
            model.save(local)
            store.put_file(path, local)
        except (OSError, StorageError, ValueError) as error:
            logger.error("candidate %s: cannot store its model at %s: %s", key, store.location(path), error)
            return None
    return store.location(path)


def batch_norm_momentum(steps_per_epoch: int) -> float:
    """Return the batch-norm momentum for proxy training: Keras' 0.99, or less for short epochs.

    Proxy training runs few steps. With momentum 0.99 the moving statistics that validation uses
    still carry much of their initial value, so validation accuracy stays near chance whatever the
    training accuracy. In one seeded run on digits (3 epochs of 9 steps, 2 motifs of 1 normal cell,
    16 filters) it was 0.10 with 0.99 and 0.77 with this function's 0.77. The momentum returned
    leaves a weight of 0.1 to the statistics of one epoch ago.
    """
    return min(0.99, 0.1 ** (1 / max(steps_per_epoch, 1)))


def _json_floats(values: list[Any]) -> list[float | None]:
    """Return the values as floats, with None for NaN and infinities, which JSON cannot represent."""
    return [float(value) if math.isfinite(float(value)) else None for value in values]


def _create_training_variables(model: keras.Model, *, classes: int) -> None:
    """Create the optimizer and metric variables before ``fit``.

    Without a distribution strategy, Keras creates them while tracing the first training step,
    and TensorFlow then traces that step a second time. That doubles the tracing cost, which is
    seconds for recurrent cells. Updating the metrics once on a dummy prediction builds them, and
    resetting them clears that update.
    """
    model.optimizer.build(model.trainable_variables)
    labels = np.zeros((1,), dtype=np.int32)
    uniform = np.full((1, classes), 1.0 / classes, dtype=np.float32)
    model.compute_metrics(None, labels, uniform, sample_weight=None)
    model.reset_metrics()


def _inference_time(model: keras.Model, batch: np.ndarray) -> float:
    """Return the mean seconds to predict ``batch``, leaving out the first runs (tracing and warm-up)."""
    times = []
    for _ in range(INFERENCE_RUNS):
        start = time.perf_counter()
        model.predict_on_batch(batch)
        times.append(time.perf_counter() - start)
    counted = times[INFERENCE_WARMUP_RUNS:]
    return sum(counted) / len(counted)


def count_flops(model: keras.Model) -> int:
    """Return the floating-point operations of one forward pass of one sample, in inference mode.

    TensorFlow's graph profiler counts the traced forward pass. It does not look inside the while
    loops of recurrent layers, so their per-step matrix products are added from a formula.
    """
    # NOTE: TensorFlow 2.21's profiler counts no activation functions (sigmoid, tanh, so not
    # swish's sigmoid either). They are one operation per element, small beside the convolutions.
    spec = tf.TensorSpec((1, *model.input_shape[1:]), tf.float32)
    forward = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(
        graph=forward.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
    )
    return int(profile.total_float_ops) + sum(_recurrent_flops(layer) for layer in model.layers)


def _recurrent_flops(layer: keras.layers.Layer) -> int:
    """Return the matrix-product FLOPs of an LSTM or GRU over its sequence; 0 for other layers.

    Each step multiplies the input and the previous state by the kernels of every gate:
    2 * gates * units * (input features + units) operations per step.
    """
    if isinstance(layer, keras.layers.LSTM):
        gates = 4
    elif isinstance(layer, keras.layers.GRU):
        gates = 3
    else:
        return 0
    _, steps, features = layer.input.shape
    return 2 * int(steps) * gates * layer.units * (int(features) + layer.units)
