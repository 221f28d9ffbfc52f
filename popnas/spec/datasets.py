"""Catalog of the datasets shipped with popnas (``builtin:NAME``): their task and where they come from.

Loading lives in ``popnas.train.datasets``; this module only describes, so that a manifest can be
checked before any training starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from popnas.spec.model import Task

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the original idx files."""


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    task: Task
    source: str
    """Package that ships the data offline."""
    files: tuple[Path, ...] = ()
    """Files that must exist for the data to load; empty when a Python package ships them."""

    def missing_files(self) -> list[Path]:
        return [path for path in self.files if not path.exists()]


BUILTIN_DATASETS = {
    dataset.name: dataset
    for dataset in (
        BuiltinDataset("digits", Task.IMAGE_CLASSIFICATION, "scikit-learn (8x8 grayscale digits, 10 classes)"),
        BuiltinDataset(
            "fashion-mnist",
            Task.IMAGE_CLASSIFICATION,
            "Debian package dataset-fashion-mnist (28x28 grayscale, 10 classes)",
            files=tuple(
                FASHION_MNIST_DIR / name
                for name in (
                    "train-images-idx3-ubyte.gz",
                    "train-labels-idx1-ubyte.gz",
                    "t10k-images-idx3-ubyte.gz",
                    "t10k-labels-idx1-ubyte.gz",
                )
            ),
        ),
        BuiltinDataset("gunpoint", Task.TIME_SERIES_CLASSIFICATION, "aeon (UCR GunPoint, length 150, 2 classes)"),
        BuiltinDataset(
            "italypowerdemand", Task.TIME_SERIES_CLASSIFICATION, "aeon (UCR ItalyPowerDemand, length 24, 2 classes)"
        ),
        BuiltinDataset(
            "basicmotions",
            Task.TIME_SERIES_CLASSIFICATION,
            "aeon (UEA BasicMotions, 6 channels, length 100, 4 classes)",
        ),
    )
}
