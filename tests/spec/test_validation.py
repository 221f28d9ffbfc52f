"""Manifest validation: every problem in one ManifestError, with its field path and value."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from popnas.spec import (
    API_VERSION,
    BUILTIN_DATASETS,
    KIND,
    BuiltinDataset,
    ManifestError,
    NASSearch,
    Problem,
    Task,
    check_search,
    load_manifest,
    parse_manifest,
)


def manifest(task: str = "ImageClassification", uri: str = "builtin:digits", **sections: Any) -> dict[str, Any]:
    """A minimal valid manifest as parsed YAML, with ``sections`` added to its spec."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "search"},
        "spec": {"task": task, "dataset": {"uri": uri}, **sections},
    }


def problems_of(raw: Any, **options: Any) -> dict[str, Problem]:
    """Validate ``raw``, which must fail, and return its problems by field path."""
    with pytest.raises(ManifestError) as caught:
        parse_manifest(raw, **options)
    problems = {problem.path: problem for problem in caught.value.problems}
    assert len(problems) == len(caught.value.problems), "two problems share a path"
    return problems


def write_npz(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        x_train=np.zeros((4, 8, 1)),
        y_train=np.zeros(4),
        x_test=np.zeros((2, 8, 1)),
        y_test=np.zeros(2),
    )
    return path


# All problems at once ---------------------------------------------------------------------------------


def test_every_problem_in_one_error(tmp_path: Path) -> None:
    raw = manifest(
        uri=str(tmp_path / "missing.npz"),
        searchSpace={"operators": ["identity", "3x3 convolution", "gru"], "maxBlocks": 0},
        strategy={"beamSize": 0},
    )
    with pytest.raises(ManifestError) as caught:
        parse_manifest(raw)
    error = caught.value
    problems = {problem.path: problem for problem in error.problems}
    message = str(error)

    assert len(error.problems) == 5
    assert "(5 problems)" in message

    unknown = problems["spec.searchSpace.operators.1"]
    assert unknown.value == "3x3 convolution"
    assert "not recognized" in unknown.message
    assert "'KxK conv'" in unknown.message
    assert "spec.searchSpace.operators.1: operator '3x3 convolution' is not recognized" in message

    recurrent = problems["spec.searchSpace.operators.2"]
    assert recurrent.value == "gru"
    assert "recurrent" in recurrent.message
    assert "spec.searchSpace.operators.2: operator 'gru' is recurrent" in message

    beam = problems["spec.strategy.beamSize"]
    assert beam.value == 0
    assert "greater than or equal to 1" in beam.message
    assert "spec.strategy.beamSize: input should be greater than or equal to 1 (received 0)" in message

    blocks = problems["spec.searchSpace.maxBlocks"]
    assert blocks.value == 0
    assert "spec.searchSpace.maxBlocks: input should be greater than or equal to 1 (received 0)" in message

    dataset = problems["spec.dataset.uri"]
    assert dataset.value == str(tmp_path / "missing.npz")
    assert "file not found" in dataset.message
    assert "spec.dataset.uri: file not found" in message
    assert repr(str(tmp_path / "missing.npz")) in message


def test_error_names_source(tmp_path: Path) -> None:
    path = tmp_path / "search.yaml"
    path.write_text("apiVersion: popnas.io/v1alpha1\nkind: NASSearch\nmetadata: {name: x}\nspec: {}\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert caught.value.source == str(path)
    assert str(caught.value).startswith(f"invalid manifest {path} (2 problems):")


def test_single_problem_wording() -> None:
    with pytest.raises(ManifestError, match=r"\(1 problem\)"):
        parse_manifest(manifest(strategy={"beamSize": 0}))


def test_problem_text_format() -> None:
    problem = Problem("spec.strategy.beamSize", 0, "input should be greater than or equal to 1")
    assert str(problem) == "spec.strategy.beamSize: input should be greater than or equal to 1 (received 0)"


def test_manifest_error_is_value_error() -> None:
    assert issubclass(ManifestError, ValueError)


# Field-level problems ---------------------------------------------------------------------------------------


def test_unknown_field_reported() -> None:
    problems = problems_of(manifest(strategy={"beamSzie": 4}, training={"epoch": 3}))
    assert problems["spec.strategy.beamSzie"].value == 4
    assert "not a known field" in problems["spec.strategy.beamSzie"].message
    assert problems["spec.training.epoch"].value == 3
    assert "check its spelling" in problems["spec.training.epoch"].message


def test_unknown_spec_section_reported() -> None:
    problems = problems_of(manifest(searchspace={"maxBlocks": 3}))
    assert "not a known field" in problems["spec.searchspace"].message


def test_missing_required_fields_reported() -> None:
    raw = manifest()
    del raw["spec"]["task"]
    del raw["spec"]["dataset"]
    problems = problems_of(raw)
    assert problems["spec.task"].message == "is required"
    assert problems["spec.dataset"].message == "is required"


def test_missing_spec_reported() -> None:
    raw = manifest()
    del raw["spec"]
    assert problems_of(raw)["spec"].message == "is required"


def test_unknown_task_reported() -> None:
    problems = problems_of(manifest(task="Segmentation", searchSpace={"operators": ["gru"]}))
    assert problems["spec.task"].value == "Segmentation"
    assert "'ImageClassification' or 'TimeSeriesClassification'" in problems["spec.task"].message
    assert len(problems) == 1


def test_wrong_api_version_and_kind_reported() -> None:
    raw = manifest()
    raw["apiVersion"] = "popnas.io/v2"
    raw["kind"] = "Search"
    problems = problems_of(raw)
    assert problems["apiVersion"].value == "popnas.io/v2"
    assert problems["kind"].value == "Search"


def test_invalid_name_reported() -> None:
    raw = manifest()
    raw["metadata"]["name"] = "My_Search"
    assert problems_of(raw)["metadata.name"].value == "My_Search"


@pytest.mark.parametrize(
    ("section", "values", "path"),
    [
        ("searchSpace", {"maxBlocks": 11}, "spec.searchSpace.maxBlocks"),
        ("searchSpace", {"lookback": 0}, "spec.searchSpace.lookback"),
        ("strategy", {"explorationBeamSize": -1}, "spec.strategy.explorationBeamSize"),
        ("strategy", {"predictorFolds": 1}, "spec.strategy.predictorFolds"),
        ("training", {"epochs": 0}, "spec.training.epochs"),
        ("training", {"learningRate": 0}, "spec.training.learningRate"),
        ("training", {"weightDecay": -0.1}, "spec.training.weightDecay"),
        ("architecture", {"motifs": 0}, "spec.architecture.motifs"),
        ("architecture", {"filters": 0}, "spec.architecture.filters"),
        ("trainers", {"retries": 6}, "spec.trainers.retries"),
    ],
)
def test_out_of_range_reported(section: str, values: dict[str, Any], path: str) -> None:
    raw = manifest()
    raw["spec"][section] = values
    problems = problems_of(raw)
    assert problems[path].value == next(iter(values.values()))


def test_validation_size_range_reported() -> None:
    problems = problems_of(manifest(dataset={"uri": "builtin:digits", "validationSize": 1.0}))
    assert problems["spec.dataset.validationSize"].value == 1.0


def test_snake_case_paths_follow_manifest() -> None:
    problems = problems_of(manifest(search_space={"max_blocks": 0, "operators": ["identity", "bogus"]}))
    assert "spec.search_space.max_blocks" in problems
    assert "spec.search_space.operators.1" in problems


# Operators ---------------------------------------------------------------------------------------------------


def test_duplicate_operators_reported() -> None:
    problems = problems_of(manifest(searchSpace={"operators": ["identity", "3x3 conv", "3X3  Conv"]}))
    duplicate = problems["spec.searchSpace.operators.2"]
    assert duplicate.value == "3X3  Conv"
    assert "duplicates operator 1 ('3x3 conv')" in duplicate.message
    assert len(problems) == 1


def test_image_operator_on_series_reported() -> None:
    problems = problems_of(
        manifest("TimeSeriesClassification", "builtin:gunpoint", searchSpace={"operators": ["7 conv", "3x3 conv"]})
    )
    assert problems["spec.searchSpace.operators.1"].value == "3x3 conv"
    assert "2D (KxK) kernel" in problems["spec.searchSpace.operators.1"].message


def test_non_string_operator_reported_once() -> None:
    problems = problems_of(manifest(searchSpace={"operators": ["identity", 5]}))
    assert problems["spec.searchSpace.operators.1"].value == 5
    assert len(problems) == 1


def test_empty_operators_reported() -> None:
    problems = problems_of(manifest(searchSpace={"operators": []}))
    assert problems["spec.searchSpace.operators"].value == []


def test_valid_operators_pass() -> None:
    operators = ["identity", "3x3 conv", "3x3:2dr conv", "5x5 dconv", "1x7-7x1 conv", "3x3 tconv", "2x2 maxpool"]
    search = parse_manifest(manifest(searchSpace={"operators": operators}))
    assert search.spec.operators == tuple(operators)


# Datasets -----------------------------------------------------------------------------------------------------


def test_relative_npz_resolves_against_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "project"
    data = write_npz(folder / "data" / "series.npz")
    manifest_path = folder / "search.yaml"
    manifest_path.write_text(
        "apiVersion: popnas.io/v1alpha1\n"
        "kind: NASSearch\n"
        "metadata: {name: local}\n"
        "spec:\n"
        "  task: TimeSeriesClassification\n"
        "  dataset: {uri: data/series.npz}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    search = load_manifest(manifest_path)
    assert search.spec.dataset.uri == str(data.resolve())


def test_relative_npz_missing_reports_resolved_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_npz(tmp_path / "cwd" / "data.npz")
    monkeypatch.chdir(tmp_path / "cwd")
    folder = tmp_path / "manifests"
    problems = problems_of(manifest(uri="data.npz"), base_dir=folder)
    assert problems["spec.dataset.uri"].value == str((folder / "data.npz").resolve())


def test_absolute_npz_accepted(tmp_path: Path) -> None:
    data = write_npz(tmp_path / "images.npz")
    search = parse_manifest(manifest(uri=str(data)), base_dir=tmp_path / "unrelated")
    assert search.spec.dataset.uri == str(data)


def test_non_npz_path_reported(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("1,2\n")
    problems = problems_of(manifest(uri=str(path)))
    assert (
        "must be 'builtin:NAME', or a path or s3://bucket/key of an .npz file" in problems["spec.dataset.uri"].message
    )


def test_s3_dataset_accepted_without_network() -> None:
    # The object is fetched when the search starts; validation checks only the URI's form.
    search = parse_manifest(manifest(uri="s3://popnas-data/series/gunpoint.npz"))
    assert search.spec.dataset.uri == "s3://popnas-data/series/gunpoint.npz"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://Bad_Bucket/data.npz", "is not a valid S3 URI: 'Bad_Bucket' is not a valid bucket name"),
        ("s3://popnas-data/data.csv", "must name an .npz object"),
        ("s3://popnas-data/a//b.npz", "has an empty, '.' or '..' part"),
        ("gs://popnas-data/data.npz", "must be 'builtin:NAME', or a path or s3://bucket/key of an .npz file"),
    ],
)
def test_bad_s3_dataset_reported(uri: str, message: str) -> None:
    problem = problems_of(manifest(uri=uri))["spec.dataset.uri"]
    assert problem.value == uri
    assert message in problem.message


@pytest.mark.parametrize(
    ("storage", "path", "message"),
    [
        ({"uri": "s3://x/runs"}, "spec.storage.uri", "not a valid bucket name"),
        ({"uri": "gs://popnas/runs"}, "spec.storage.uri", "must be a folder path or s3://bucket/prefix"),
        ({"uri": " "}, "spec.storage.uri", "must not be empty"),
        ({"uri": "s3://popnas/runs", "endpointUrl": "minio:9000"}, "spec.storage.endpointUrl", "http://"),
        ({"retryTimeout": 0}, "spec.storage.retryTimeout", "greater than 0"),
        ({"bucket": "popnas"}, "spec.storage.bucket", "is not a known field"),
    ],
)
def test_bad_storage_reported(storage: dict[str, Any], path: str, message: str) -> None:
    problem = problems_of(manifest(storage=storage))[path]
    assert message in problem.message


def test_storage_settings_accepted() -> None:
    storage = {"uri": "s3://popnas-runs/team-a", "endpointUrl": "http://127.0.0.1:9000", "pathStyle": True}
    search = parse_manifest(manifest(storage=storage))
    assert search.spec.storage.uri == "s3://popnas-runs/team-a"
    assert search.spec.storage.endpoint_url == "http://127.0.0.1:9000"
    assert search.spec.storage.path_style
    assert search.spec.storage.retry_timeout == 300


def test_builtin_of_wrong_task_reported() -> None:
    problems = problems_of(manifest("ImageClassification", "builtin:gunpoint"))
    problem = problems["spec.dataset.uri"]
    assert problem.value == "builtin:gunpoint"
    assert "is a TimeSeriesClassification dataset but spec.task is ImageClassification" in problem.message


def test_unknown_builtin_lists_choices() -> None:
    problem = problems_of(manifest(uri="builtin:mnist"))["spec.dataset.uri"]
    assert "not a shipped dataset" in problem.message
    for name in BUILTIN_DATASETS:
        assert f"builtin:{name}" in problem.message


def test_uninstalled_builtin_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absent = tmp_path / "train-images-idx3-ubyte.gz"
    monkeypatch.setitem(
        BUILTIN_DATASETS,
        "fashion-mnist",
        BuiltinDataset("fashion-mnist", Task.IMAGE_CLASSIFICATION, "Debian package x (28x28)", files=(absent,)),
    )
    problem = problems_of(manifest(uri="builtin:fashion-mnist"))["spec.dataset.uri"]
    assert f"{absent} is missing" in problem.message
    assert "install Debian package x" in problem.message


@pytest.mark.parametrize(
    ("name", "task"),
    [(name, dataset.task) for name, dataset in BUILTIN_DATASETS.items() if not dataset.files],
)
def test_package_builtins_accepted(name: str, task: Task) -> None:
    search = parse_manifest(manifest(task.value, f"builtin:{name}"))
    assert search.spec.dataset.uri == f"builtin:{name}"


# Loading files -------------------------------------------------------------------------------------------------


def test_unreadable_file_reported(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as caught:
        load_manifest(tmp_path / "absent.yaml")
    assert caught.value.problems[0].path == "file"
    assert "cannot be read" in caught.value.problems[0].message


def test_invalid_yaml_reported(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("spec: [unclosed\n")
    with pytest.raises(ManifestError, match="is not valid YAML"):
        load_manifest(path)


@pytest.mark.parametrize("text", ["", "- a list\n", "just text\n"])
def test_non_mapping_reported(tmp_path: Path, text: str) -> None:
    path = tmp_path / "search.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError, match="must be a mapping"):
        load_manifest(path)


def test_non_mapping_spec_sections_reported() -> None:
    raw = manifest()
    raw["spec"]["searchSpace"] = "small"
    raw["spec"]["dataset"] = ["builtin:digits"]
    problems = problems_of(raw)
    assert problems["spec.searchSpace"].value == "small"
    assert problems["spec.dataset"].value == ["builtin:digits"]


# check_search -----------------------------------------------------------------------------------------------------


def test_check_search_accepts_valid() -> None:
    check_search(parse_manifest(manifest()))


def test_check_search_reports_semantic_problems() -> None:
    search = NASSearch.model_validate(
        manifest("ImageClassification", "builtin:gunpoint", searchSpace={"operators": ["identity", "lstm"]})
    )
    with pytest.raises(ManifestError) as caught:
        check_search(search)
    paths = {problem.path for problem in caught.value.problems}
    assert paths == {"spec.searchSpace.operators.1", "spec.dataset.uri"}
    assert caught.value.source == "search"
