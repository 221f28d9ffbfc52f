import threading

import pandas as pd
import pytest

from popnas.results import CandidateResult, ResultStatus
from popnas.storage import LocalStore


def make_result(key: str = "k1", accuracy: float = 0.5) -> CandidateResult:
    return CandidateResult(
        key=key, cell="[]", status=ResultStatus.SUCCEEDED, accuracy=accuracy, training_time=1.5, params=10, epochs=1
    )


def test_result_round_trip(tmp_path):
    store = LocalStore(tmp_path)
    assert store.put_result(make_result())
    assert store.get_result("k1") == make_result()


def test_result_written_once(tmp_path):
    store = LocalStore(tmp_path)
    assert store.put_result(make_result(accuracy=0.5))
    assert not store.put_result(make_result(accuracy=0.9))
    stored = store.get_result("k1")
    assert stored is not None
    assert stored.accuracy == 0.5


def test_concurrent_writers_keep_one_result(tmp_path):
    store = LocalStore(tmp_path)
    outcomes: list[bool] = []
    threads = [
        threading.Thread(target=lambda i=i: outcomes.append(store.put_result(make_result(accuracy=i / 10))))
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(True) == 1
    assert not list((tmp_path / "results").glob(".*.tmp"))


def test_missing_result_is_none(tmp_path):
    assert LocalStore(tmp_path).get_result("absent") is None


def test_json_replaced_atomically(tmp_path):
    store = LocalStore(tmp_path)
    store.write_json("a/state.json", {"step": 1})
    store.write_json("a/state.json", {"step": 2})
    assert store.read_json("a/state.json") == {"step": 2}
    assert [path.name for path in (tmp_path / "a").iterdir()] == ["state.json"]


def test_frame_round_trip(tmp_path):
    store = LocalStore(tmp_path)
    frame = pd.DataFrame({"cell": ["[]", "[(-1, 'identity', -1, 'identity')]"], "predictedAccuracy": [0.1, 0.2]})
    store.write_frame("steps/2/front.parquet", frame)
    pd.testing.assert_frame_equal(store.read_frame("steps/2/front.parquet"), frame)


def test_path_outside_root_rejected(tmp_path):
    with pytest.raises(ValueError, match="inside"):
        LocalStore(tmp_path).write_json("../escape.json", {})
