"""Datasets: the shipped ones load offline with the documented shapes, .npz files, splits, batch size."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest

from popnas.spec.model import Task
from popnas.train.datasets import (
    Dataset,
    fingerprint_arrays,
    load_dataset,
    resolve_batch_size,
    split_validation,
)

# Fingerprints are part of every stored result's key: a change here means loading now produces
# different arrays, and results trained on the old arrays will no longer be reused.
BUILTIN_CASES = [
    # name, task, train shape, test shape, classes, fingerprint
    ("digits", Task.IMAGE_CLASSIFICATION, (1347, 8, 8, 1), (450, 8, 8, 1), 10, "84ba1dc523189c4a"),
    (
        "fashion-mnist",
        Task.IMAGE_CLASSIFICATION,
        (60000, 28, 28, 1),
        (10000, 28, 28, 1),
        10,
        "98ec3f955bee9fb4",
    ),
    ("gunpoint", Task.TIME_SERIES_CLASSIFICATION, (50, 150, 1), (150, 150, 1), 2, "420efb5c4a07bb8f"),
    ("italypowerdemand", Task.TIME_SERIES_CLASSIFICATION, (67, 24, 1), (1029, 24, 1), 2, "a6e028a87fe7a32e"),
    ("basicmotions", Task.TIME_SERIES_CLASSIFICATION, (40, 100, 6), (40, 100, 6), 4, "9afae04337d7bb4c"),
]


@pytest.mark.parametrize(("name", "task", "train_shape", "test_shape", "classes", "fingerprint"), BUILTIN_CASES)
def test_builtin_dataset_loads(
    name: str,
    task: Task,
    train_shape: tuple[int, ...],
    test_shape: tuple[int, ...],
    classes: int,
    fingerprint: str,
) -> None:
    dataset = load_dataset(f"builtin:{name}")

    assert dataset.name == name
    assert dataset.task is task
    assert dataset.x_train.shape == train_shape
    assert dataset.x_test.shape == test_shape
    assert dataset.input_shape == train_shape[1:]
    assert dataset.classes == classes
    assert dataset.x_train.dtype == np.float32
    assert dataset.y_train.dtype == np.int32
    assert dataset.y_test.dtype == np.int32
    assert set(np.unique(dataset.y_train)) == set(range(classes))
    assert dataset.y_test.min() >= 0
    assert dataset.y_test.max() < classes
    assert dataset.fingerprint == fingerprint
    assert dataset.fingerprint == fingerprint_arrays(dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test)


@pytest.mark.parametrize("name", ["digits", "fashion-mnist"])
def test_builtin_images_scaled_to_unit_range(name: str) -> None:
    dataset = load_dataset(f"builtin:{name}")

    assert dataset.x_train.min() == 0.0
    assert dataset.x_train.max() == 1.0


@pytest.mark.parametrize("name", ["gunpoint", "italypowerdemand", "basicmotions"])
def test_builtin_series_znormalized_per_sample_and_channel(name: str) -> None:
    dataset = load_dataset(f"builtin:{name}")

    for x in (dataset.x_train, dataset.x_test):
        assert np.allclose(x.mean(axis=1), 0.0, atol=1e-4)
        assert np.allclose(x.std(axis=1), 1.0, atol=1e-3)


def test_load_dataset_cached_and_read_only() -> None:
    first = load_dataset("builtin:digits")

    assert load_dataset("builtin:digits") is first
    assert not first.x_train.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        first.x_train[0, 0, 0, 0] = 2.0


def test_unknown_builtin_rejected() -> None:
    with pytest.raises(ValueError, match=r"unknown dataset builtin:mnist.*builtin:digits"):
        load_dataset("builtin:mnist")


def test_builtin_with_other_task_rejected() -> None:
    with pytest.raises(ValueError, match="TimeSeriesClassification dataset, but the task is ImageClassification"):
        load_dataset("builtin:gunpoint", task=Task.IMAGE_CLASSIFICATION)


def _write_npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return str(path)


def _images(samples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(samples, 6, 5), dtype=np.uint8)


def test_npz_grayscale_images_and_string_labels(tmp_path: Path) -> None:
    uri = _write_npz(
        tmp_path / "shapes.npz",
        x_train=_images(12, 0),
        y_train=np.array(["square", "circle", "triangle"] * 4),
        x_test=_images(6, 1),
        y_test=np.array(["triangle", "circle", "square"] * 2),
        task=np.array(Task.IMAGE_CLASSIFICATION.value),
    )

    dataset = load_dataset(uri)

    assert dataset.name == "shapes"
    assert dataset.task is Task.IMAGE_CLASSIFICATION
    assert dataset.input_shape == (6, 5, 1)
    assert dataset.x_train.dtype == np.float32
    assert 0.0 <= dataset.x_train.min() <= dataset.x_train.max() <= 1.0
    assert dataset.classes == 3
    # Sorted train labels: circle 0, square 1, triangle 2.
    assert dataset.y_train[:3].tolist() == [1, 0, 2]
    assert dataset.y_test[:3].tolist() == [2, 0, 1]


def test_npz_task_conflicting_with_file_rejected(tmp_path: Path) -> None:
    uri = _write_npz(
        tmp_path / "tagged.npz",
        x_train=_images(4, 0),
        y_train=np.array([0, 1, 0, 1]),
        x_test=_images(2, 1),
        y_test=np.array([0, 1]),
        task=np.array(Task.IMAGE_CLASSIFICATION.value),
    )

    with pytest.raises(ValueError, match="is for ImageClassification, but the task is TimeSeriesClassification"):
        load_dataset(uri, task=Task.TIME_SERIES_CLASSIFICATION)


def test_npz_task_argument_reads_three_axes_as_series(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    uri = _write_npz(
        tmp_path / "series.npz",
        x_train=rng.normal(size=(8, 30, 2)),
        y_train=np.array([3, 5] * 4),
        x_test=rng.normal(size=(4, 30, 2)),
        y_test=np.array([5, 3, 3, 5]),
    )

    dataset = load_dataset(uri, task=Task.TIME_SERIES_CLASSIFICATION)

    assert dataset.input_shape == (30, 2)
    assert dataset.y_train.tolist() == [0, 1] * 4
    assert np.allclose(dataset.x_train.mean(axis=1), 0.0, atol=1e-5)


def test_npz_univariate_series_flat_series_stay_finite(tmp_path: Path) -> None:
    x_train = np.random.default_rng(0).normal(size=(6, 20))
    x_train[0] = 4.0  # flat: standard deviation 0
    uri = _write_npz(
        tmp_path / "flat.npz",
        x_train=x_train,
        y_train=np.array([0, 1] * 3),
        x_test=np.ones((2, 20)),
        y_test=np.array([0, 1]),
    )

    dataset = load_dataset(uri)

    assert dataset.task is Task.TIME_SERIES_CLASSIFICATION
    assert dataset.input_shape == (20, 1)
    assert np.isfinite(dataset.x_train).all()
    assert np.all(dataset.x_train[0] == 0.0)
    assert np.all(dataset.x_test == 0.0)


def test_npz_fingerprint_follows_content(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(6, 20)),
        "y_train": np.array([0, 1] * 3),
        "x_test": rng.normal(size=(2, 20)),
        "y_test": np.array([0, 1]),
    }
    first = load_dataset(_write_npz(tmp_path / "a.npz", **arrays))
    same = load_dataset(_write_npz(tmp_path / "b.npz", **arrays))
    arrays["x_test"][1, 3] += 1.0
    changed = load_dataset(_write_npz(tmp_path / "c.npz", **arrays))

    assert first.fingerprint == same.fingerprint
    assert first.fingerprint != changed.fingerprint
    assert len(first.fingerprint) == 16


def test_npz_missing_array_names_file_and_key(tmp_path: Path) -> None:
    uri = _write_npz(tmp_path / "partial.npz", x_train=np.zeros((4, 10)), y_train=np.zeros(4), x_test=np.zeros((2, 10)))

    with pytest.raises(ValueError, match=r"partial\.npz has no array 'y_test'"):
        load_dataset(uri)


def test_npz_three_axes_without_task_rejected(tmp_path: Path) -> None:
    uri = _write_npz(
        tmp_path / "ambiguous.npz",
        x_train=np.zeros((4, 6, 6)),
        y_train=np.array([0, 1, 0, 1]),
        x_test=np.zeros((2, 6, 6)),
        y_test=np.array([0, 1]),
    )

    with pytest.raises(ValueError, match=r"grayscale images .* or series"):
        load_dataset(uri)


def test_npz_non_finite_inputs_rejected(tmp_path: Path) -> None:
    x_train = np.zeros((4, 6, 6, 1), dtype=np.float32)
    x_train[1, 2, 3, 0] = np.inf
    uri = _write_npz(
        tmp_path / "inf.npz",
        x_train=x_train,
        y_train=np.array([0, 1, 0, 1]),
        x_test=np.zeros((2, 6, 6, 1)),
        y_test=np.array([0, 1]),
    )

    with pytest.raises(ValueError, match="train inputs contain 1 NaN or infinite values"):
        load_dataset(uri)


def test_npz_unseen_test_label_rejected(tmp_path: Path) -> None:
    uri = _write_npz(
        tmp_path / "unseen.npz",
        x_train=np.zeros((4, 10)),
        y_train=np.array([0, 1, 0, 1]),
        x_test=np.zeros((2, 10)),
        y_test=np.array([0, 7]),
    )

    with pytest.raises(ValueError, match=r"test labels \[7\] do not occur in the train split"):
        load_dataset(uri)


def test_npz_missing_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing\.npz"):
        load_dataset(str(tmp_path / "nothing.npz"))


def test_split_validation_keeps_class_proportions() -> None:
    dataset = load_dataset("builtin:digits")

    splits = split_validation(dataset, validation_size=0.2, seed=0)

    train, validation_count, total_count = len(splits.x_train), len(splits.x_validation), len(dataset.x_train)
    assert train + validation_count == total_count
    assert validation_count == math.ceil(0.2 * total_count)  # sklearn rounds the held-out part up
    assert len(splits.x_train) == len(splits.y_train)
    assert len(splits.x_validation) == len(splits.y_validation)
    total = np.bincount(dataset.y_train, minlength=dataset.classes)
    validation = np.bincount(splits.y_validation, minlength=dataset.classes)
    assert np.all(np.abs(validation - 0.2 * total) <= 1)


def test_split_validation_seeded() -> None:
    dataset = load_dataset("builtin:gunpoint")

    first = split_validation(dataset, validation_size=0.2, seed=3)
    again = split_validation(dataset, validation_size=0.2, seed=3)
    other = split_validation(dataset, validation_size=0.2, seed=4)

    assert np.array_equal(first.x_validation, again.x_validation)
    assert np.array_equal(first.y_train, again.y_train)
    assert not np.array_equal(first.x_validation, other.x_validation)


def test_split_validation_partitions_samples() -> None:
    dataset = load_dataset("builtin:italypowerdemand")

    splits = split_validation(dataset, validation_size=0.25, seed=0)

    rows = {row.tobytes() for row in dataset.x_train}
    train_rows = {row.tobytes() for row in splits.x_train}
    validation_rows = {row.tobytes() for row in splits.x_validation}
    assert train_rows | validation_rows == rows
    assert not train_rows & validation_rows


def test_split_validation_unstratified_for_singleton_class(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    uri = _write_npz(
        tmp_path / "singleton.npz",
        x_train=np.random.default_rng(0).normal(size=(9, 10)),
        y_train=np.array([0, 0, 0, 0, 1, 1, 1, 1, 2]),
        x_test=np.zeros((2, 10)),
        y_test=np.array([0, 1]),
    )
    dataset: Dataset = load_dataset(uri)

    with caplog.at_level(logging.WARNING, logger="popnas.train.datasets"):
        splits = split_validation(dataset, validation_size=0.3, seed=0)

    assert len(splits.x_validation) == 3
    assert "cannot stratify" in caplog.text


def test_split_validation_rejects_bad_size() -> None:
    dataset = load_dataset("builtin:gunpoint")

    with pytest.raises(ValueError, match="validation_size must be in"):
        split_validation(dataset, validation_size=1.0, seed=0)


@pytest.mark.parametrize(
    ("batch_size", "train_samples", "expected"),
    [
        (None, 48000, 128),  # 375 batches
        (None, 1280, 128),  # exactly 10 batches
        (None, 1153, 128),  # 10 batches counting the final partial one
        (None, 1152, 112),  # 9 batches of 128, 11 of 112
        (None, 1077, 112),
        (None, 1000, 96),
        (None, 400, 32),  # no multiple of 16 in [32, 128] gives 10 batches
        (None, 40, 32),
        (None, 20, 20),  # never larger than the training split
        (64, 1000, 64),
        (64, 40, 40),
        (1, 40, 1),
    ],
)
def test_resolve_batch_size(batch_size: int | None, train_samples: int, expected: int) -> None:
    assert resolve_batch_size(batch_size, train_samples) == expected


def test_resolve_batch_size_rejects_no_samples() -> None:
    with pytest.raises(ValueError, match="train_samples=0"):
        resolve_batch_size(None, 0)
