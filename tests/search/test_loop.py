import shutil

import pytest

from popnas.results import ResultStatus
from popnas.search.loop import SearchLoop
from popnas.space import Cell, SearchSpace
from popnas.storage import LocalStore
from tests.search.toy import ToyExecutor, toy_search

pytestmark = pytest.mark.slow  # each search fits the real predictors at every step

FINGERPRINT = "toy-data"


def run_toy(tmp_path, search=None, executor=None):
    search = search or toy_search()
    executor = executor or ToyExecutor()
    loop = SearchLoop(search=search, store=LocalStore(tmp_path), executor=executor, dataset_fingerprint=FINGERPRINT)
    state = loop.run()
    return loop, state, executor


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One complete toy search shared by the tests that only read its outcome."""
    folder = tmp_path_factory.mktemp("finished")
    loop, state, executor = run_toy(folder)
    return folder, loop, state, executor


def test_loop_runs_every_step(finished):
    _, loop, state, executor = finished
    space = SearchSpace.create(list(toy_search().spec.operators), max_blocks=3, lookback=2, dims=1)
    assert state.finished
    assert sorted(state.steps) == [0, 1, 2, 3]
    assert state.steps[0].planned == ["[]"]
    assert len(state.steps[1].planned) == len(space.one_block_cells())
    for step in (2, 3):
        record = state.steps[step]
        front = len(record.planned) - record.exploration
        assert 1 <= front <= 6
        assert record.exploration <= 2
        assert all(len(Cell.parse(text)) == step for text in record.planned)
        assert record.accuracy_quality is not None
        assert record.time_quality is not None
    assert state.steps[3].exploration == 0  # no exploration at the last step
    assert len(executor.trained) == len(set(executor.trained))
    assert loop.counts.trained == len(executor.trained)


def test_loop_plans_are_isomorphism_free(finished):
    _, _, state, _ = finished
    for record in state.steps.values():
        canonical = {Cell.parse(text).key for text in record.planned}
        assert len(canonical) == len(record.planned)


def test_loop_children_extend_previous_step(finished):
    _, _, state, _ = finished
    for step in (2, 3):
        parents = {Cell.parse(text) for text in state.steps[step - 1].planned}
        for text in state.steps[step].planned:
            child = Cell.parse(text)
            assert Cell(child.blocks[:-1]) in parents


def test_loop_deterministic_for_seed(finished, tmp_path):
    _, _, first, _ = finished
    _, second, _ = run_toy(tmp_path)
    assert [first.steps[s].planned for s in sorted(first.steps)] == [
        second.steps[s].planned for s in sorted(second.steps)
    ]


def test_loop_resumes_without_retraining(tmp_path):
    interrupted = ToyExecutor(interrupt_after=20)
    with pytest.raises(KeyboardInterrupt):
        run_toy(tmp_path, executor=interrupted)
    loop, state, resumed = run_toy(tmp_path)
    assert state.finished
    assert not set(interrupted.trained) & set(resumed.trained)
    assert loop.counts.reused == 20
    planned = {key for record in state.steps.values() for key in record.keys}
    assert planned == set(interrupted.trained) | set(resumed.trained)


def test_loop_rerun_after_finish_trains_nothing(finished):
    folder = finished[0]
    loop, _, executor = run_toy(folder)
    assert executor.trained == []
    assert loop.counts.trained == 0


def test_loop_pnas_mode(tmp_path):
    _, state, _ = run_toy(tmp_path, search=toy_search(pareto=False))
    for step in (2, 3):
        record = state.steps[step]
        assert len(record.planned) == 6
        assert record.exploration == 0
        assert all(prediction.time is None for prediction in record.predictions.values())
        assert record.time_quality is None


def test_loop_failures_recorded_and_not_expanded(tmp_path):
    loop, state, _ = run_toy(tmp_path, executor=ToyExecutor(fail_operator="gru"))
    failed = [result for result in loop.results.values() if result.status is ResultStatus.FAILED]
    assert failed
    assert loop.counts.failed == len(failed)
    assert all((tmp_path / "failures" / f"{result.key}.json").exists() for result in failed)
    assert not any((tmp_path / "results" / f"{result.key}.json").exists() for result in failed)
    for step in (2, 3):
        for text in state.steps[step].planned:
            parent = Cell(Cell.parse(text).blocks[:-1])
            assert "gru" not in str(parent)


def test_loop_writes_step_tables(finished):
    folder, loop, _, _ = finished
    store = LocalStore(folder)
    predictions = store.read_frame(f"{loop.prefix}/steps/2/predictions.parquet")
    front = store.read_frame(f"{loop.prefix}/steps/2/front.parquet")
    assert predictions is not None
    assert front is not None
    assert len(front) == int(predictions["front"].sum())
    assert predictions["predictedAccuracy"].between(0, 1).all()


def renamed(search, name):
    return search.model_copy(update={"metadata": search.metadata.model_copy(update={"name": name})})


def test_second_search_reuses_results(finished, tmp_path):
    folder, first_loop, _, _ = finished
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    loop, state, executor = run_toy(tmp_path, search=renamed(toy_search(), "toy-again"))
    planned = [key for record in state.steps.values() for key in record.keys]
    # Same data, recipe and seed: the same plans, every candidate taken from the first search.
    assert executor.trained == []
    assert loop.counts.reused == len(planned)
    assert loop.prefix != first_loop.prefix


def test_narrower_search_reuses_bootstrap(finished, tmp_path):
    folder, _, first, _ = finished
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    search = renamed(toy_search(beamSize=3, explorationBeamSize=0), "toy-narrow")
    loop, state, executor = run_toy(tmp_path, search=search)
    bootstrap = len(state.steps[0].keys) + len(state.steps[1].keys)
    assert set(state.steps[1].keys) == set(first.steps[1].keys)
    assert not set(executor.trained) & (set(state.steps[0].keys) | set(state.steps[1].keys))
    assert loop.counts.reused >= bootstrap
    assert loop.counts.trained == len(executor.trained)


def test_reuse_off_trains_apart(finished, tmp_path):
    folder = finished[0]
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    shared_before = sorted(path.name for path in (tmp_path / "results").iterdir())
    search = renamed(toy_search(reuseResults=False), "toy-fresh")
    loop, state, executor = run_toy(tmp_path, search=search)
    planned = {key for record in state.steps.values() for key in record.keys}
    assert loop.counts.reused == 0
    assert set(executor.trained) == planned
    assert sorted(path.name for path in (tmp_path / "results").iterdir()) == shared_before
    own = tmp_path / loop.prefix / "results"
    assert {path.stem for path in own.iterdir()} == planned
    # Rerunning it continues from its own results.
    again, _, rerun = run_toy(tmp_path, search=search)
    assert rerun.trained == []
    assert again.counts.reused == len(planned)
