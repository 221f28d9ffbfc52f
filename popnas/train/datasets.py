"""Datasets for proxy training: loading, normalization, fingerprints, validation splits and batch size.

Arrays come out ready for the Keras builder. Images are float32 in [0, 1] with shape
(samples, height, width, channels). Series are float32 with shape (samples, length, channels),
z-normalized per sample and channel. Labels are int32 in 0..classes-1. Input pipelines and
augmentation layers do not belong here; augmentation lives in the model (``popnas.train.builder``).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from popnas.spec.datasets import BUILTIN_DATASETS, FASHION_MNIST_DIR
from popnas.spec.model import Task
from popnas.spec.uris import is_s3
from popnas.storage.cache import fetch
from popnas.storage.s3 import S3Settings

logger = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

_AEON_NAMES = {"gunpoint": "GunPoint", "italypowerdemand": "ItalyPowerDemand", "basicmotions": "BasicMotions"}

_DIGITS_TEST_SIZE = 0.25
_DIGITS_SPLIT_SEED = 0
"""Seed of the split that makes digits' test split (sklearn ships none); fixed so the fingerprint is stable."""

_FLAT_SERIES_STD = 1e-8
"""A series channel whose standard deviation is below this is flat: it is only centred, not scaled."""


@dataclass(frozen=True)
class Dataset:
    """A classification dataset with its predefined train and test splits.

    The arrays are read-only because ``load_dataset`` shares one instance per process.
    """

    name: str
    task: Task
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int
    fingerprint: str
    """First 16 hex digits of the sha256 of the four arrays' dtypes, shapes and bytes."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample: (height, width, channels) or (length, channels)."""
        return tuple(int(size) for size in self.x_train.shape[1:])


@dataclass(frozen=True)
class Splits:
    """The training split of a dataset divided into the part trained on and the part validated on."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_validation: np.ndarray
    y_validation: np.ndarray


def load_dataset(uri: str, *, task: Task | None = None, storage: S3Settings | None = None) -> Dataset:
    """Load ``builtin:NAME`` or an .npz file (a path or s3://bucket/key), normalized and fingerprinted.

    Datasets are cached per process. An S3 object is downloaded once into the local cache of
    ``popnas.storage.cache`` (reached with ``storage``) and read from there. The fingerprint comes
    from the arrays, so the same data has the same fingerprint wherever it is stored.

    Shipped names: digits, fashion-mnist, gunpoint, italypowerdemand, basicmotions. An .npz must
    contain x_train, y_train, x_test and y_test, and may contain ``task`` (a Task value).
    ``task`` selects how an .npz is read when its samples have two axes, because those could be
    grayscale images (height, width) or series (length, channels). It must match the task of a
    shipped dataset or of an .npz ``task`` entry. Without either, samples with three axes are
    images and samples with one axis are series.

    Raises ValueError for an unknown name, a missing array or an ambiguous shape,
    FileNotFoundError when the data is not installed or the object does not exist, and
    StorageError when the bucket cannot be used.
    """
    if uri.startswith(BUILTIN_PREFIX):
        dataset = _load_builtin(uri.removeprefix(BUILTIN_PREFIX))
        if task is not None and dataset.task is not task:
            raise ValueError(f"dataset {uri} is a {dataset.task.value} dataset, but the task is {task.value}")
        return dataset
    if is_s3(uri):
        return _load_npz(_fetch_once(uri, storage), task)
    return _load_npz(Path(uri), task)


@cache
def _fetch_once(uri: str, storage: S3Settings | None) -> Path:
    """Fetch an S3 dataset once per process, so one search trains every candidate on the same data."""
    return fetch(uri, storage)


def split_validation(dataset: Dataset, *, validation_size: float, seed: int) -> Splits:
    """Split the training split into training and validation parts, stratified by class and seeded.

    ``validation_size`` is the fraction of the training split held out. The test split is never
    used. When stratification is impossible (a class with one sample, or fewer validation samples
    than classes), the split falls back to a seeded random split and logs a warning.
    """
    if not 0 < validation_size < 1:
        raise ValueError(f"validation_size must be in (0, 1), received validation_size={validation_size}")
    samples = len(dataset.y_train)
    validation_samples = math.ceil(validation_size * samples)
    counts = np.bincount(dataset.y_train, minlength=dataset.classes)
    present = counts[counts > 0]
    stratify: np.ndarray | None = dataset.y_train
    if present.min() < 2 or validation_samples < len(present) or samples - validation_samples < len(present):
        logger.warning(
            "dataset %s: cannot stratify a validation split of %d of %d samples with class counts %s; "
            "using an unstratified seeded split instead",
            dataset.name,
            validation_samples,
            samples,
            counts.tolist(),
        )
        stratify = None
    x_train, x_validation, y_train, y_validation = train_test_split(
        dataset.x_train,
        dataset.y_train,
        test_size=validation_size,
        random_state=seed,
        stratify=stratify,
    )
    return Splits(x_train=x_train, y_train=y_train, x_validation=x_validation, y_validation=y_validation)


def resolve_batch_size(batch_size: int | None, train_samples: int) -> int:
    """Return the batch size to train with, never larger than ``train_samples``.

    With ``batch_size`` None it is the largest multiple of 16 in [32, 128] that gives at least 10
    batches per epoch (counting a final partial batch), or 32 when none does.
    """
    if train_samples < 1:
        raise ValueError(f"expected at least 1 training sample, received train_samples={train_samples}")
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, received batch_size={batch_size}")
        return min(batch_size, train_samples)
    chosen = 32
    for candidate in range(128, 31, -16):
        if math.ceil(train_samples / candidate) >= 10:
            chosen = candidate
            break
    return min(chosen, train_samples)


def fingerprint_arrays(*arrays: np.ndarray) -> str:
    """Return the first 16 hex digits of the sha256 of each array's dtype, shape and bytes, in order."""
    digest = hashlib.sha256()
    for array in arrays:
        contiguous = np.ascontiguousarray(array)
        digest.update(contiguous.dtype.str.encode())
        digest.update(repr(contiguous.shape).encode())
        digest.update(contiguous.tobytes())
    return digest.hexdigest()[:16]


@cache
def _load_builtin(name: str) -> Dataset:
    if name not in BUILTIN_DATASETS:
        known = ", ".join(f"{BUILTIN_PREFIX}{known}" for known in BUILTIN_DATASETS)
        raise ValueError(f"unknown dataset {BUILTIN_PREFIX}{name}; shipped datasets are {known}")
    if name == "digits":
        return _load_digits()
    if name == "fashion-mnist":
        return _load_fashion_mnist()
    if name in _AEON_NAMES:
        return _load_aeon(name)
    raise ValueError(f"dataset {BUILTIN_PREFIX}{name} is in the catalog but has no loader")


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values of sklearn's digits are integers 0..16.
    images = (digits.images / 16.0).astype(np.float32)[..., np.newaxis]
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        digits.target,
        test_size=_DIGITS_TEST_SIZE,
        random_state=_DIGITS_SPLIT_SEED,
        stratify=digits.target,
    )
    return _finish("digits", Task.IMAGE_CLASSIFICATION, x_train, y_train, x_test, y_test)


def _load_fashion_mnist() -> Dataset:
    def read(stem: str, *, images: bool) -> np.ndarray:
        path = FASHION_MNIST_DIR / f"{stem}-{'images-idx3' if images else 'labels-idx1'}-ubyte.gz"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; install the Debian package dataset-fashion-mnist")
        with gzip.open(path, "rb") as file:
            data = file.read()
        return _parse_idx(data, path)

    x_train = read("train", images=True)
    y_train = read("train", images=False)
    x_test = read("t10k", images=True)
    y_test = read("t10k", images=False)
    return _finish(
        "fashion-mnist",
        Task.IMAGE_CLASSIFICATION,
        (x_train / 255.0).astype(np.float32)[..., np.newaxis],
        y_train,
        (x_test / 255.0).astype(np.float32)[..., np.newaxis],
        y_test,
    )


def _parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Parse an idx file of unsigned bytes: magic (0, 0, 0x08, dims), big-endian int32 sizes, then the values."""
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not an idx file of unsigned bytes")
    dims = data[3]
    sizes = tuple(int(size) for size in np.frombuffer(data, dtype=">i4", count=dims, offset=4))
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if values.size != math.prod(sizes):
        raise ValueError(f"{path} contains {values.size} values, but its header gives the shape {sizes}")
    return values.reshape(sizes)


def _load_aeon(name: str) -> Dataset:
    import aeon
    from aeon.datasets import load_classification

    aeon_name = _AEON_NAMES[name]
    data_dir = Path(aeon.__file__).parent / "datasets" / "data"
    # aeon downloads a dataset missing from extract_path, so check the bundled files first to
    # keep loading offline.
    for split in ("TRAIN", "TEST"):
        path = data_dir / aeon_name / f"{aeon_name}_{split}.ts"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; the installed aeon package does not bundle {aeon_name}")
    arrays = []
    for split in ("train", "test"):
        x, y = load_classification(aeon_name, split=split, extract_path=str(data_dir))
        # aeon returns (samples, channels, length); Keras layers expect channels last.
        arrays.append((np.transpose(np.asarray(x, dtype=np.float64), (0, 2, 1)), np.asarray(y)))
    (x_train, y_train), (x_test, y_test) = arrays
    return _finish(name, Task.TIME_SERIES_CLASSIFICATION, _znormalize(x_train), y_train, _znormalize(x_test), y_test)


@cache
def _load_npz(path: Path, task: Task | None) -> Dataset:
    if path.suffix != ".npz":
        raise ValueError(f"dataset {path} must be '{BUILTIN_PREFIX}NAME' or a path to an .npz file")
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {path} not found")
    with np.load(path, allow_pickle=False) as archive:
        for key in NPZ_KEYS:
            if key not in archive:
                raise ValueError(
                    f"dataset file {path} has no array {key!r}; it must contain {', '.join(NPZ_KEYS)} "
                    f"(found {', '.join(archive.files) or 'nothing'})"
                )
        x_train, y_train, x_test, y_test = (np.asarray(archive[key]) for key in NPZ_KEYS)
        stored_task = str(archive["task"]) if "task" in archive else None
    if stored_task is not None:
        try:
            file_task = Task(stored_task)
        except ValueError as error:
            allowed = ", ".join(member.value for member in Task)
            raise ValueError(f"dataset file {path}: 'task' is {stored_task!r}, expected one of {allowed}") from error
        if task is not None and task is not file_task:
            raise ValueError(f"dataset file {path} is for {file_task.value}, but the task is {task.value}")
        task = file_task
    task = _npz_task(path, x_train, task)

    if task is Task.IMAGE_CLASSIFICATION:
        x_train, x_test = (_image_array(x, path) for x in (x_train, x_test))
    else:
        x_train, x_test = (_series_array(x, path) for x in (x_train, x_test))
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"dataset file {path}: x_train samples have shape {x_train.shape[1:]} "
            f"but x_test samples have shape {x_test.shape[1:]}"
        )
    return _finish(path.stem, task, x_train, y_train, x_test, y_test)


def _npz_task(path: Path, x_train: np.ndarray, task: Task | None) -> Task:
    if task is not None:
        return task
    if x_train.ndim == 4:
        return Task.IMAGE_CLASSIFICATION
    if x_train.ndim == 2:
        return Task.TIME_SERIES_CLASSIFICATION
    raise ValueError(
        f"dataset file {path}: x_train has shape {x_train.shape}, which could be grayscale images "
        f"(samples, height, width) or series (samples, length, channels); add a 'task' entry to the file "
        f"or pass the task"
    )


def _image_array(x: np.ndarray, path: Path) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4:
        raise ValueError(
            f"dataset file {path}: images must have shape (samples, height, width[, channels]), received {x.shape}"
        )
    # 8-bit images are scaled to [0, 1]; float images are taken as already scaled.
    if x.dtype == np.uint8:
        return (x / 255.0).astype(np.float32)
    return x.astype(np.float32)


def _series_array(x: np.ndarray, path: Path) -> np.ndarray:
    if x.ndim == 2:
        x = x[..., np.newaxis]
    if x.ndim != 3:
        raise ValueError(
            f"dataset file {path}: series must have shape (samples, length[, channels]), received {x.shape}"
        )
    return _znormalize(x.astype(np.float64))


def _znormalize(x: np.ndarray) -> np.ndarray:
    """Z-normalize each sample's channels along time; a flat channel becomes all zeros."""
    mean = x.mean(axis=1, keepdims=True)
    std = x.std(axis=1, keepdims=True)
    std = np.where(std < _FLAT_SERIES_STD, 1.0, std)
    return ((x - mean) / std).astype(np.float32)


def _finish(
    name: str,
    task: Task,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
) -> Dataset:
    """Map labels to 0..classes-1, check sizes, fingerprint and freeze the arrays."""
    y_train = np.asarray(y_train).reshape(-1)
    y_test = np.asarray(y_test).reshape(-1)
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if len(x) != len(y):
            raise ValueError(f"dataset {name}: the {split} split has {len(x)} samples but {len(y)} labels")
        if len(x) == 0:
            raise ValueError(f"dataset {name}: the {split} split is empty")
        non_finite = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        if non_finite:
            raise ValueError(f"dataset {name}: the {split} inputs contain {non_finite} NaN or infinite values")
    labels = np.unique(y_train)
    unknown = np.setdiff1d(np.unique(y_test), labels)
    if unknown.size:
        raise ValueError(f"dataset {name}: test labels {unknown.tolist()[:10]} do not occur in the train split")
    if labels.size < 2:
        raise ValueError(f"dataset {name}: the train split has {labels.size} class, expected at least 2")
    # Labels of any type (strings included) become their index among the sorted train labels.
    y_train = np.searchsorted(labels, y_train).astype(np.int32)
    y_test = np.searchsorted(labels, y_test).astype(np.int32)
    arrays = [np.ascontiguousarray(array) for array in (x_train, y_train, x_test, y_test)]
    for array in arrays:
        array.setflags(write=False)
    x_train, y_train, x_test, y_test = arrays
    return Dataset(
        name=name,
        task=task,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        classes=int(labels.size),
        fingerprint=fingerprint_arrays(x_train, y_train, x_test, y_test),
    )
