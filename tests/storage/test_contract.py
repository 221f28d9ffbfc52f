"""The Store contract, run against both stores: a local folder and S3 (SeaweedFS on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from popnas.results import CandidateResult, ResultStatus
from popnas.storage import LocalStore, S3Settings, Store, open_store

StoreFactory = Callable[[], Store]


def make_result(key: str = "k1", accuracy: float = 0.5) -> CandidateResult:
    return CandidateResult(
        key=key, cell="[]", status=ResultStatus.SUCCEEDED, accuracy=accuracy, training_time=1.5, params=10, epochs=1
    )


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return str(request.getfixturevalue("s3_uri"))


@pytest.fixture
def store(store_uri: str) -> Store:
    return open_store(store_uri, S3Settings(retry_timeout=20))


def test_result_round_trip(store: Store) -> None:
    assert store.get_result("k1") is None
    assert store.put_result(make_result())
    assert store.get_result("k1") == make_result()


def test_result_written_once(store: Store) -> None:
    assert store.put_result(make_result(accuracy=0.5))
    assert not store.put_result(make_result(accuracy=0.9))
    stored = store.get_result("k1")
    assert stored is not None
    assert stored.accuracy == 0.5


def test_results_kept_apart_by_folder(store: Store) -> None:
    assert store.put_result(make_result(accuracy=0.5))
    assert store.put_result(make_result(accuracy=0.7), "searches/run/results")
    assert store.get_result("k1", "searches/run/results") == make_result(accuracy=0.7)
    assert store.get_result("k1") == make_result(accuracy=0.5)


def test_concurrent_writers_keep_one_result(store_uri: str) -> None:
    # One store per writer, as separate trainer processes would have.
    stores = [open_store(store_uri, S3Settings(retry_timeout=20)) for _ in range(6)]
    outcomes = [False] * len(stores)

    def write(writer: int) -> None:
        outcomes[writer] = stores[writer].put_result(make_result(accuracy=writer / 10))

    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(True) == 1
    stored = stores[0].get_result("k1")
    assert stored is not None
    assert stored.accuracy == outcomes.index(True) / 10


def test_json_replaced(store: Store) -> None:
    assert store.read_json("a/state.json") is None
    store.write_json("a/state.json", {"step": 1})
    store.write_json("a/state.json", {"step": 2})
    assert store.read_json("a/state.json") == {"step": 2}


def test_frame_round_trip(store: Store) -> None:
    assert store.read_frame("steps/2/front.parquet") is None
    frame = pd.DataFrame({"cell": ["[]", "[(-1, 'identity', -1, 'identity')]"], "predictedAccuracy": [0.1, 0.2]})
    store.write_frame("steps/2/front.parquet", frame)
    pd.testing.assert_frame_equal(store.read_frame("steps/2/front.parquet"), frame)


def test_file_round_trip_in_parts(store: Store, tmp_path: Path) -> None:
    # Larger than the multipart threshold, so S3 receives it as a multipart upload.
    source = tmp_path / "model.keras"
    source.write_bytes(os.urandom(17 * 1024 * 1024))
    store.put_file("models/k1/model.keras", source)
    copy = tmp_path / "copy" / "model.keras"
    assert store.get_file("models/k1/model.keras", copy)
    assert copy.read_bytes() == source.read_bytes()
    assert not store.get_file("models/absent/model.keras", tmp_path / "absent.keras")
    assert not (tmp_path / "absent.keras").exists()


def test_location_names_the_store(store: Store, store_uri: str) -> None:
    assert store.location() == store_uri
    assert store.location("results/k1.json") == f"{store_uri}/results/k1.json"


@pytest.mark.parametrize("path", ["../escape.json", "a/../../escape.json", "/absolute.json"])
def test_path_outside_root_rejected(store: Store, path: str) -> None:
    with pytest.raises(ValueError, match="inside"):
        store.write_json(path, {})


_WRITER = textwrap.dedent(
    """
    import os, socket, sys, time
    from popnas.storage import S3Settings, open_store

    uri, size = sys.argv[1], int(sys.argv[2])

    def stall():
        print("interrupt me", flush=True)
        time.sleep(120)

    # Stall where a crash does the most harm, so the test can kill the process there. On S3 that is
    # half-way through sending the body. In a folder it is after the temporary file is written and
    # before it replaces the document.
    if uri.startswith("s3://"):
        send = socket.socket.sendall
        sent = [0]

        def sendall(self, data, *rest):
            sent[0] += len(data)
            if sent[0] > size // 2:
                stall()
            return send(self, data, *rest)

        socket.socket.sendall = sendall
    else:
        os.replace = lambda *arguments, **options: stall()

    store = open_store(uri, S3Settings(retry_timeout=20))
    store.write_json("state.json", {"step": 2, "padding": "x" * size})
    print("written", flush=True)
    """
)


def test_crash_mid_write_keeps_previous(store: Store, store_uri: str, tmp_path: Path) -> None:
    store.write_json("state.json", {"step": 1})
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, store_uri, str(20 * 1024 * 1024)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "interrupt me"
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=30) == -signal.SIGKILL
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=30)
    assert store.read_json("state.json") == {"step": 1}
    # The store stays usable after the crash.
    store.write_json("state.json", {"step": 3})
    assert store.read_json("state.json") == {"step": 3}


def test_local_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_result(make_result())
    store.put_result(make_result())
    store.write_json("a/state.json", {"step": 1})
    store.write_frame("a/front.parquet", pd.DataFrame({"cell": ["[]"]}))
    names = sorted(path.name for path in tmp_path.rglob("*") if path.is_file())
    assert names == ["front.parquet", "k1.json", "state.json"]
    assert json.loads((tmp_path / "a" / "state.json").read_text()) == {"step": 1}
