"""The ``NASSearch`` manifest: pydantic model, defaults, shipped-dataset catalog and validation."""

from popnas.spec.datasets import BUILTIN_DATASETS, BuiltinDataset
from popnas.spec.model import (
    API_VERSION,
    KIND,
    ArchitectureSpec,
    AugmentationSpec,
    DatasetSpec,
    NASSearch,
    SearchSpaceSpec,
    SearchSpec,
    StorageSpec,
    StrategySpec,
    Task,
    TrainersSpec,
    TrainingSpec,
)
from popnas.spec.validation import ManifestError, Problem, check_search, load_manifest, parse_manifest

__all__ = [
    "API_VERSION",
    "BUILTIN_DATASETS",
    "KIND",
    "ArchitectureSpec",
    "AugmentationSpec",
    "BuiltinDataset",
    "DatasetSpec",
    "ManifestError",
    "NASSearch",
    "Problem",
    "SearchSpaceSpec",
    "SearchSpec",
    "StorageSpec",
    "StrategySpec",
    "Task",
    "TrainersSpec",
    "TrainingSpec",
    "check_search",
    "load_manifest",
    "parse_manifest",
]
