"""Searches that keep everything in S3 (SeaweedFS on 127.0.0.1), through the command a user runs.

A killed search resumes from S3 without retraining, a second search reuses the first one's
results, a storage outage in the middle of a search is waited out, and trainers store models.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import yaml

from tests.s3server import BUCKET, SeaweedServer
from tests.test_integration import ONE_BLOCK_CELLS, SMALL_SEARCH, popnas, processes_in_session

pytestmark = [pytest.mark.slow, pytest.mark.s3]


def write_manifest(folder: Path, name: str = "gunpoint-small", **storage: Any) -> Path:
    search = json.loads(json.dumps(SMALL_SEARCH))
    search["metadata"]["name"] = name
    if storage:
        search["spec"]["storage"] = storage
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(search))
    return path


def result_keys(server: SeaweedServer, prefix: str) -> set[str]:
    """Keys of the results stored under s3://popnas-test/PREFIX/results/."""
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/results/")
    return {item["Key"].rsplit("/", 1)[1] for page in pages for item in page.get("Contents", [])}


def read_summary(server: SeaweedServer, prefix: str) -> dict[str, Any]:
    body = server.client().get_object(Bucket=BUCKET, Key=f"{prefix}/summary.json")["Body"].read()
    return dict(json.loads(body))


def wait_for_results(server: SeaweedServer, prefix: str, count: int, process: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 600
    while len(result_keys(server, prefix)) < count:
        assert process.poll() is None, "the search ended before the test could interrupt it"
        assert time.monotonic() < deadline, f"fewer than {count} results after 10 minutes"
        time.sleep(0.5)


def run(command: list[str], environment: dict[str, str], folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=900, env={**os.environ, **environment}, cwd=folder
    )


def test_killed_search_resumes_and_shares(
    s3_server: SeaweedServer, s3_environment: dict[str, str], tmp_path: Path
) -> None:
    prefix = f"runs-{uuid.uuid4().hex[:8]}"
    store = f"s3://{BUCKET}/{prefix}"
    manifest = write_manifest(tmp_path)
    search = popnas("search", "-f", str(manifest), "--store", store)
    process = subprocess.Popen(
        search,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, **s3_environment},
        cwd=tmp_path,
    )
    try:
        wait_for_results(s3_server, prefix, 5, process)
    finally:
        # A hard kill of the search and its trainers, as when a machine or a pod dies.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    deadline = time.monotonic() + 30
    while processes_in_session(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_in_session(process.pid) == []
    stored = result_keys(s3_server, prefix)
    assert 5 <= len(stored) < 1 + ONE_BLOCK_CELLS

    completed = run(search, s3_environment, tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert f"summary: {store}/searches/default/gunpoint-small/" in completed.stdout
    summary = read_summary(s3_server, prefix)
    planned = sum(step["planned"] for step in summary["steps"])
    assert summary["finished"]
    assert summary["reused"] == len(stored)
    assert summary["trained"] == planned - len(stored)
    assert len(result_keys(s3_server, prefix)) == planned
    assert (tmp_path / "popnas-results" / "gunpoint-small" / "popnas.log").is_file()

    second = write_manifest(tmp_path, name="gunpoint-again")
    completed = run(popnas("search", "-f", str(second), "--store", store), s3_environment, tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    again = read_summary(s3_server, prefix)
    assert again["search"] == "gunpoint-again"
    assert again["reused"] >= 1 + ONE_BLOCK_CELLS  # at least the empty cell and the one-block cells
    assert again["trained"] == sum(step["planned"] for step in again["steps"]) - again["reused"]


def test_search_survives_storage_outage(
    s3_server: SeaweedServer, s3_environment: dict[str, str], tmp_path: Path
) -> None:
    prefix = f"outage-{uuid.uuid4().hex[:8]}"
    manifest = write_manifest(tmp_path, uri=f"s3://{BUCKET}/{prefix}", retryTimeout=180)
    # Files rather than pipes, so the search never blocks on output nobody reads during the outage.
    stdout_path, stderr_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with stdout_path.open("w") as stdout_file, stderr_path.open("w") as stderr_file:
        process = subprocess.Popen(
            popnas("search", "-f", str(manifest)),
            stdout=stdout_file,
            stderr=stderr_file,
            start_new_session=True,
            env={**os.environ, **s3_environment},
            cwd=tmp_path,
        )

    try:
        wait_for_results(s3_server, prefix, 3, process)
        s3_server.stop()
        time.sleep(30)
        assert process.poll() is None, "the search stopped while storage was down"

        s3_server.start()
        process.wait(timeout=900)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
        if s3_server.process is None:
            s3_server.start()

    assert process.returncode == 0, stderr_path.read_text()[-3000:]
    assert "Search 'gunpoint-small' finished" in stdout_path.read_text()
    summary = read_summary(s3_server, prefix)
    planned = sum(step["planned"] for step in summary["steps"])
    assert summary["failed"] == 0
    assert summary["trained"] == planned
    assert len(result_keys(s3_server, prefix)) == planned
    log = (tmp_path / "popnas-results" / "gunpoint-small" / "popnas.log").read_text()
    assert "retrying for up to" in log


def test_trainer_stores_its_model(s3_server: SeaweedServer, s3_environment: dict[str, str], tmp_path: Path) -> None:
    prefix = f"models-{uuid.uuid4().hex[:8]}"
    manifest = write_manifest(tmp_path)
    raw = yaml.safe_load(manifest.read_text())
    raw["spec"]["training"]["keepModels"] = True
    manifest.write_text(yaml.safe_dump(raw))
    cell = "[(-1, '7 conv', -2, 'identity')]"
    completed = run(
        popnas("train-cell", "-f", str(manifest), "--cell", cell, "--store", f"s3://{BUCKET}/{prefix}"),
        s3_environment,
        tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout)
    location = f"s3://{BUCKET}/{prefix}/models/{result['key']}/model.keras"
    assert result["extra"]["model"] == location
    assert result_keys(s3_server, prefix) == {f"{result['key']}.json"}
    local = tmp_path / "model.keras"
    s3_server.client().download_file(BUCKET, location.removeprefix(f"s3://{BUCKET}/"), str(local))
    model = keras.saving.load_model(local)
    probabilities = model.predict(np.zeros((2, 150, 1), dtype="float32"), verbose=0)
    assert probabilities.shape == (2, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
