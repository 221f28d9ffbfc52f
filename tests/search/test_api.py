import json

import pytest

from popnas.search import run_search
from popnas.spec import ArchitectureSpec, DatasetSpec, NASSearch, SearchSpaceSpec, SearchSpec, StrategySpec, Task
from tests.search.toy import OPERATOR_VALUE, ToyExecutor

pytestmark = pytest.mark.slow  # fits the real predictors


def search_built_in_code() -> NASSearch:
    return NASSearch(
        metadata={"name": "notebook"},
        spec=SearchSpec(
            task=Task.TIME_SERIES_CLASSIFICATION,
            dataset=DatasetSpec(uri="builtin:gunpoint"),
            search_space=SearchSpaceSpec(operators=tuple(OPERATOR_VALUE), max_blocks=2),
            strategy=StrategySpec(
                beam_size=5, exploration_beam_size=2, predictor_folds=2, time_predictor_search_iterations=2
            ),
            architecture=ArchitectureSpec(motifs=1, normal_cells_per_motif=1, filters=8),
        ),
    )


def test_run_search_from_python(tmp_path):
    outcome = run_search(search_built_in_code(), store=tmp_path, executor=ToyExecutor())
    results = outcome.results_frame()
    front = outcome.front_frame()
    summary = json.loads((tmp_path / "summary.json").read_text())

    assert sorted(results["step"].unique()) == [0, 1, 2]
    assert (results["status"] == "succeeded").all()
    assert results.loc[results["step"] == 2, "predictedAccuracy"].notna().all()
    assert 1 <= len(front) <= 5
    assert front["accuracy"].notna().all()
    assert summary["trained"] == len(results)
    assert summary["best"]["cell"] == outcome.top()[0].cell
    assert summary["best"]["accuracy"] == max(results.loc[results["step"] > 0, "accuracy"])
    assert [step["step"] for step in summary["steps"]] == [0, 1, 2]
    assert summary["steps"][2]["accuracyPredictor"]["spearman"] is not None


def test_run_search_invalid_spec_in_code(tmp_path):
    search = search_built_in_code().model_copy(
        update={"spec": search_built_in_code().spec.model_copy(update={"dataset": DatasetSpec(uri="builtin:digits")})}
    )
    with pytest.raises(ValueError, match=r"spec\.dataset\.uri"):
        run_search(search, store=tmp_path, executor=ToyExecutor())
    assert not (tmp_path / "summary.json").exists()
