"""The pydantic model of a ``NASSearch`` manifest: the same file drives local and cluster runs.

Field names are snake_case in Python and camelCase in YAML (``beam_size`` / ``beamSize``); both
spellings are accepted on input. Defaults follow the POPNASv3 paper. Structural checks (types,
ranges) live on the fields; checks that need several fields or the file system live in
``popnas.spec.validation`` so that one message can report every problem at once.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

API_VERSION: Final = "popnas.io/v1alpha1"
KIND: Final = "NASSearch"

IMAGE_OPERATORS = (
    "identity",
    "3x3 dconv",
    "5x5 dconv",
    "7x7 dconv",
    "1x3-3x1 conv",
    "1x5-5x1 conv",
    "1x7-7x1 conv",
    "1x1 conv",
    "3x3 conv",
    "5x5 conv",
    "2x2 maxpool",
    "2x2 avgpool",
)
"""The operator set the POPNASv3 paper uses for every image-classification experiment."""

SERIES_OPERATORS = (
    "identity",
    "7 dconv",
    "13 dconv",
    "21 dconv",
    "7 conv",
    "13 conv",
    "21 conv",
    "7:2dr conv",
    "7:4dr conv",
    "2 maxpool",
    "2 avgpool",
    "lstm",
    "gru",
)
"""The operator set the POPNASv3 paper uses for every time-series-classification experiment."""


class Task(StrEnum):
    """What the searched networks classify."""

    IMAGE_CLASSIFICATION = "ImageClassification"
    """Inputs of shape (height, width, channels); 2D operators."""
    TIME_SERIES_CLASSIFICATION = "TimeSeriesClassification"
    """Inputs of shape (length, channels); 1D operators and recurrent layers."""

    @property
    def dims(self) -> int:
        """Spatial dimensions of the inputs: 2 for images, 1 for series."""
        return 2 if self is Task.IMAGE_CLASSIFICATION else 1


class _Section(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, validate_default=True
    )


class DatasetSpec(_Section):
    uri: str = Field(
        description=(
            "'builtin:NAME', or a path or s3://bucket/key of an .npz file with x_train, y_train, x_test, y_test."
        )
    )
    validation_size: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="Fraction of the training split held out for validation (stratified, seeded).",
    )
    batch_size: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Samples per training batch. Unset: the largest multiple of 16 in [32, 128] that still gives "
            "10 batches per epoch, or 32 when none does."
        ),
    )


class SearchSpaceSpec(_Section):
    operators: tuple[str, ...] | None = Field(
        default=None, description="Operator strings; unset: the paper's set for the task.", min_length=1
    )
    max_blocks: int = Field(default=5, ge=1, le=10, description="Blocks per cell at the last step of the search.")
    lookback: int = Field(default=2, ge=1, le=5, description="How many previous cells a block may read.")


class StrategySpec(_Section):
    beam_size: int = Field(default=128, ge=1, description="Maximum candidates kept on the Pareto front per step.")
    exploration_beam_size: int = Field(
        default=16, ge=0, description="Maximum extra candidates that explore under-used operators and inputs per step."
    )
    pareto: bool = Field(
        default=True,
        description=(
            "True: POPNAS (time-accuracy Pareto front plus exploration). False: PNAS baseline "
            "(top beamSize by predicted accuracy, no time predictor, no exploration)."
        ),
    )
    seed: int = Field(default=0, ge=0, description="Seed for data splits, weights and predictors.")
    predictor_folds: int = Field(default=5, ge=2, description="Folds, and so ensemble members, of both predictors.")
    time_predictor_search_iterations: int = Field(
        default=40, ge=1, description="Random-search iterations for the time predictor's hyperparameters."
    )
    reuse_results: bool = Field(
        default=True,
        description=(
            "Reuse results that any search on the same store trained for the same candidate identity. "
            "False: train every candidate again and keep this run's results apart."
        ),
    )


class AugmentationSpec(_Section):
    shift: float = Field(
        default=0.125, ge=0, lt=1, description="Maximum random shift, as a fraction of height and width."
    )
    horizontal_flip: bool = Field(default=True, description="Random horizontal flip; disable for digits and text.")


class TrainingSpec(_Section):
    epochs: int = Field(default=21, ge=1, description="Proxy-training epochs per candidate.")
    learning_rate: float = Field(default=0.01, gt=0, description="Initial learning rate of AdamW.")
    weight_decay: float | None = Field(
        default=None,
        ge=0,
        description="Weight decay per step at the initial learning rate; unset: 5e-4 for images, 1e-3 for series.",
    )
    restart_period: int = Field(
        default=3, ge=1, description="Epochs of the first cosine-decay period; each restart doubles the period."
    )
    augmentation: AugmentationSpec = Field(
        default_factory=lambda: AugmentationSpec(), description="Image augmentation; ignored for series."
    )
    keep_models: bool = Field(
        default=False, description="Store each trained candidate's model.keras under models/<result key>/."
    )


class ArchitectureSpec(_Section):
    motifs: int = Field(default=3, ge=1, description="Motifs; each but the last ends with a reduction cell.")
    normal_cells_per_motif: int = Field(default=2, ge=0, description="Normal cells in each motif.")
    filters: int = Field(default=24, ge=1, description="Filters of the first motif; doubled at each reduction cell.")
    residual_cells: bool = Field(default=False, description="Add the nearest lookback to each cell's output.")


class TrainersSpec(_Section):
    parallelism: int | None = Field(
        default=None, ge=1, description="Candidates trained at once; unset: one per two CPU cores locally."
    )
    retries: int = Field(
        default=1, ge=0, le=5, description="Extra attempts for a candidate whose trainer process died."
    )


class StorageSpec(_Section):
    uri: str | None = Field(
        default=None,
        description=(
            "Where results, checkpoints and models go: a folder path or s3://bucket/prefix. "
            "Unset: popnas-results/<metadata.name> locally (the --store option overrides it)."
        ),
    )
    endpoint_url: str | None = Field(
        default=None,
        description=(
            "S3 endpoint of a non-AWS server (MinIO, Ceph RGW, SeaweedFS, GCS); unset: AWS or AWS_ENDPOINT_URL."
        ),
    )
    region: str | None = Field(default=None, description="S3 region; unset: boto3's configured region.")
    path_style: bool = Field(
        default=False, description="Address buckets as endpoint/bucket/key; most self-hosted servers need it."
    )
    retry_timeout: float = Field(
        default=300.0,
        gt=0,
        description="Seconds to keep retrying throttled, failing or unreachable storage before the search stops.",
    )


class SearchSpec(_Section):
    task: Task
    dataset: DatasetSpec
    search_space: SearchSpaceSpec = Field(default_factory=lambda: SearchSpaceSpec())
    strategy: StrategySpec = Field(default_factory=lambda: StrategySpec())
    training: TrainingSpec = Field(default_factory=lambda: TrainingSpec())
    architecture: ArchitectureSpec = Field(default_factory=lambda: ArchitectureSpec())
    trainers: TrainersSpec = Field(default_factory=lambda: TrainersSpec())
    storage: StorageSpec = Field(default_factory=lambda: StorageSpec())

    @model_validator(mode="after")
    def _fill_task_defaults(self) -> SearchSpec:
        if self.search_space.operators is None:
            operators = IMAGE_OPERATORS if self.task is Task.IMAGE_CLASSIFICATION else SERIES_OPERATORS
            object.__setattr__(self, "search_space", self.search_space.model_copy(update={"operators": operators}))
        if self.training.weight_decay is None:
            decay = 5e-4 if self.task is Task.IMAGE_CLASSIFICATION else 1e-3
            object.__setattr__(self, "training", self.training.model_copy(update={"weight_decay": decay}))
        return self

    def recipe_hash(self) -> str:
        """Hash everything besides the cell that changes what training a candidate produces.

        Two searches with the same recipe and dataset can share trained results.
        """
        recipe = {
            "task": self.task.value,
            "validationSize": self.dataset.validation_size,
            "batchSize": self.dataset.batch_size,
            "seed": self.strategy.seed,
            "training": self.training.model_dump(mode="json", by_alias=True, exclude={"keep_models"}),
            "architecture": self.architecture.model_dump(mode="json", by_alias=True),
        }
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def operators(self) -> tuple[str, ...]:
        assert self.search_space.operators is not None  # filled by the validator
        return self.search_space.operators

    @property
    def weight_decay(self) -> float:
        assert self.training.weight_decay is not None  # filled by the validator
        return self.training.weight_decay


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    namespace: str = "default"


class NASSearch(BaseModel):
    """A whole manifest: ``apiVersion``, ``kind``, ``metadata`` and ``spec``."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    api_version: Literal["popnas.io/v1alpha1"] = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["NASSearch"] = KIND
    metadata: Metadata
    spec: SearchSpec

    def spec_json(self) -> dict[str, Any]:
        """Return the spec with defaults filled in, in manifest (camelCase) spelling."""
        return self.spec.model_dump(mode="json", by_alias=True)

    @property
    def run_id(self) -> str:
        """A short hash of the normalized spec: rerunning the same spec continues the same run.

        ``trainers``, ``storage``, ``training.keepModels`` and ``strategy.reuseResults`` are left out
        because they change how a search runs and where it stores, not what it searches.
        """
        spec = {name: value for name, value in self.spec_json().items() if name not in ("trainers", "storage")}
        spec["training"] = {name: value for name, value in spec["training"].items() if name != "keepModels"}
        spec["strategy"] = {name: value for name, value in spec["strategy"].items() if name != "reuseResults"}
        text = json.dumps(spec, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]
