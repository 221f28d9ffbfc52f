"""NASSearch model: paper defaults, both key spellings, the example manifest, run ids and recipe hashes."""

import re
from pathlib import Path
from typing import Any

import pydantic
import pytest

from popnas.spec import API_VERSION, KIND, NASSearch, SearchSpec, Task, load_manifest, parse_manifest

EXAMPLE_MANIFEST = """\
apiVersion: popnas.io/v1alpha1
kind: NASSearch
metadata: {name: gunpoint}
spec:
  task: TimeSeriesClassification
  dataset: {uri: "builtin:gunpoint", validationSize: 0.1, batchSize: 32}
  searchSpace: {operators: ["identity", "7 conv", "7:2dr conv", "2 maxpool", "gru"], maxBlocks: 3, lookback: 2}
  strategy: {beamSize: 32, explorationBeamSize: 4, pareto: true, seed: 1}
  training: {epochs: 3, learningRate: 0.01, weightDecay: 0.001}
  architecture: {motifs: 2, normalCellsPerMotif: 1, filters: 16, residualCells: true}
  trainers: {parallelism: 2}
"""

# Operator sets of the POPNASv3 paper's experiments, written out here so that a change to the
# defaults in the model shows up as a failure.
PAPER_IMAGE_OPERATORS = (
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
PAPER_SERIES_OPERATORS = (
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


def manifest(task: str = "ImageClassification", uri: str = "builtin:digits", **sections: Any) -> dict[str, Any]:
    """A minimal valid manifest as parsed YAML, with ``sections`` added to its spec."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "search"},
        "spec": {"task": task, "dataset": {"uri": uri}, **sections},
    }


def image_spec() -> SearchSpec:
    return parse_manifest(manifest()).spec


def series_spec() -> SearchSpec:
    return parse_manifest(manifest("TimeSeriesClassification", "builtin:gunpoint")).spec


# Defaults ---------------------------------------------------------------------------------------------


def test_search_space_defaults() -> None:
    spec = image_spec()
    assert spec.search_space.max_blocks == 5
    assert spec.search_space.lookback == 2


def test_strategy_defaults() -> None:
    strategy = image_spec().strategy
    assert strategy.beam_size == 128
    assert strategy.exploration_beam_size == 16
    assert strategy.pareto is True
    assert strategy.seed == 0
    assert strategy.predictor_folds == 5


def test_training_defaults() -> None:
    training = image_spec().training
    assert training.epochs == 21
    assert training.learning_rate == 0.01
    assert training.restart_period == 3


def test_architecture_defaults() -> None:
    architecture = image_spec().architecture
    assert architecture.motifs == 3
    assert architecture.normal_cells_per_motif == 2
    assert architecture.filters == 24
    assert architecture.residual_cells is False


def test_dataset_defaults() -> None:
    dataset = image_spec().dataset
    assert dataset.validation_size == 0.1
    assert dataset.batch_size is None


def test_image_weight_decay_default() -> None:
    spec = image_spec()
    assert spec.weight_decay == 5e-4
    assert spec.training.weight_decay == 5e-4


def test_series_weight_decay_default() -> None:
    spec = series_spec()
    assert spec.weight_decay == 1e-3
    assert spec.training.weight_decay == 1e-3


def test_image_operators_default() -> None:
    assert image_spec().operators == PAPER_IMAGE_OPERATORS


def test_series_operators_default() -> None:
    assert series_spec().operators == PAPER_SERIES_OPERATORS


def test_explicit_weight_decay_kept() -> None:
    spec = parse_manifest(manifest(training={"weightDecay": 0.0})).spec
    assert spec.weight_decay == 0.0


def test_explicit_operators_kept() -> None:
    spec = parse_manifest(manifest(searchSpace={"operators": ["identity", "3x3 conv"]})).spec
    assert spec.operators == ("identity", "3x3 conv")


def test_task_dims() -> None:
    assert Task.IMAGE_CLASSIFICATION.dims == 2
    assert Task.TIME_SERIES_CLASSIFICATION.dims == 1


def test_namespace_defaults() -> None:
    assert parse_manifest(manifest()).metadata.namespace == "default"


# Spellings ---------------------------------------------------------------------------------------------


def test_camel_and_snake_case_equal() -> None:
    camel = manifest(
        searchSpace={"maxBlocks": 3},
        strategy={"beamSize": 8, "explorationBeamSize": 2},
        architecture={"normalCellsPerMotif": 1},
        training={"learningRate": 0.02},
    )
    snake = manifest(
        search_space={"max_blocks": 3},
        strategy={"beam_size": 8, "exploration_beam_size": 2},
        architecture={"normal_cells_per_motif": 1},
        training={"learning_rate": 0.02},
    )
    camel_search = parse_manifest(camel)
    snake_search = parse_manifest(snake)
    assert snake_search.spec.search_space.max_blocks == 3
    assert snake_search.spec.strategy.beam_size == 8
    assert snake_search.spec.architecture.normal_cells_per_motif == 1
    assert snake_search.spec.training.learning_rate == 0.02
    assert camel_search == snake_search
    assert camel_search.run_id == snake_search.run_id


def test_snake_case_api_version_accepted() -> None:
    raw = manifest()
    raw["api_version"] = raw.pop("apiVersion")
    assert parse_manifest(raw).api_version == API_VERSION


def test_spec_json_uses_camel_case() -> None:
    spec = parse_manifest(manifest()).spec_json()
    assert spec["searchSpace"]["maxBlocks"] == 5
    assert spec["strategy"]["explorationBeamSize"] == 16
    assert spec["training"]["weightDecay"] == 5e-4
    assert "search_space" not in spec


def test_model_frozen() -> None:
    spec = image_spec()
    with pytest.raises(pydantic.ValidationError):
        spec.strategy.beam_size = 3


# Example manifest ---------------------------------------------------------------------------------------


def test_example_manifest_validates(tmp_path: Path) -> None:
    path = tmp_path / "search.yaml"
    path.write_text(EXAMPLE_MANIFEST)
    search = load_manifest(path)
    spec = search.spec
    assert search.metadata.name == "gunpoint"
    assert spec.task is Task.TIME_SERIES_CLASSIFICATION
    assert spec.dataset.uri == "builtin:gunpoint"
    assert spec.dataset.batch_size == 32
    assert spec.operators == ("identity", "7 conv", "7:2dr conv", "2 maxpool", "gru")
    assert spec.search_space.max_blocks == 3
    assert spec.strategy.beam_size == 32
    assert spec.strategy.exploration_beam_size == 4
    assert spec.strategy.seed == 1
    assert spec.training.epochs == 3
    assert spec.weight_decay == 0.001
    assert spec.architecture.motifs == 2
    assert spec.architecture.residual_cells is True
    assert spec.trainers.parallelism == 2


# Run id and recipe hash ------------------------------------------------------------------------------------


def with_section(name: str, **values: Any) -> NASSearch:
    raw = manifest()
    raw["spec"][name] = values
    return parse_manifest(raw)


def test_run_id_stable() -> None:
    first = parse_manifest(manifest())
    second = parse_manifest(manifest())
    assert first.run_id == second.run_id
    assert re.fullmatch(r"[0-9a-f]{12}", first.run_id)


def test_run_id_ignores_trainers() -> None:
    plain = parse_manifest(manifest())
    assert with_section("trainers", parallelism=8).run_id == plain.run_id
    assert with_section("trainers", retries=3).run_id == plain.run_id


@pytest.mark.parametrize(
    ("section", "values"),
    [
        ("storage", {"uri": "s3://popnas-runs/team", "endpointUrl": "http://127.0.0.1:9000", "pathStyle": True}),
        ("training", {"keepModels": True}),
        ("strategy", {"reuseResults": False}),
    ],
)
def test_run_id_and_recipe_ignore_where_results_go(section: str, values: dict[str, Any]) -> None:
    plain = parse_manifest(manifest())
    changed = with_section(section, **values)
    assert changed.run_id == plain.run_id
    assert changed.spec.recipe_hash() == plain.spec.recipe_hash()


def test_run_id_ignores_explicit_defaults() -> None:
    assert with_section("strategy", beamSize=128).run_id == parse_manifest(manifest()).run_id


def test_run_id_ignores_metadata() -> None:
    renamed = manifest()
    renamed["metadata"] = {"name": "other", "labels": {"team": "vision"}}
    assert parse_manifest(renamed).run_id == parse_manifest(manifest()).run_id


@pytest.mark.parametrize(
    ("section", "values"),
    [
        ("strategy", {"beamSize": 64}),
        ("searchSpace", {"maxBlocks": 4}),
        ("training", {"epochs": 5}),
        ("architecture", {"filters": 32}),
    ],
)
def test_run_id_changes_with_spec(section: str, values: dict[str, Any]) -> None:
    assert with_section(section, **values).run_id != parse_manifest(manifest()).run_id


def test_run_id_changes_with_task() -> None:
    assert (
        parse_manifest(manifest("TimeSeriesClassification", "builtin:gunpoint")).run_id
        != parse_manifest(manifest("ImageClassification", "builtin:digits")).run_id
    )


def test_recipe_hash_stable() -> None:
    assert image_spec().recipe_hash() == image_spec().recipe_hash()
    assert re.fullmatch(r"[0-9a-f]{16}", image_spec().recipe_hash())


@pytest.mark.parametrize(
    ("section", "values"),
    [
        ("training", {"epochs": 5}),
        ("training", {"learningRate": 0.02}),
        ("training", {"weightDecay": 1e-3}),
        ("training", {"restartPeriod": 2}),
        ("training", {"augmentation": {"horizontalFlip": False}}),
        ("architecture", {"filters": 32}),
        ("architecture", {"motifs": 2}),
        ("architecture", {"residualCells": True}),
        ("strategy", {"seed": 7}),
        ("dataset", {"uri": "builtin:digits", "batchSize": 64}),
        ("dataset", {"uri": "builtin:digits", "validationSize": 0.2}),
    ],
)
def test_recipe_hash_changes_with_training(section: str, values: dict[str, Any]) -> None:
    assert with_section(section, **values).spec.recipe_hash() != image_spec().recipe_hash()


@pytest.mark.parametrize(
    ("section", "values"),
    [
        ("strategy", {"beamSize": 4}),
        ("strategy", {"explorationBeamSize": 0}),
        ("strategy", {"pareto": False}),
        ("searchSpace", {"maxBlocks": 2}),
        ("trainers", {"parallelism": 3}),
    ],
)
def test_recipe_hash_ignores_search_settings(section: str, values: dict[str, Any]) -> None:
    assert with_section(section, **values).spec.recipe_hash() == image_spec().recipe_hash()


def test_recipe_hash_differs_between_tasks() -> None:
    assert series_spec().recipe_hash() != image_spec().recipe_hash()
