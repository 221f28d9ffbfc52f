"""A small real search on real data, through the command a user runs, including an interrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

SMALL_SEARCH = {
    "apiVersion": "popnas.io/v1alpha1",
    "kind": "NASSearch",
    "metadata": {"name": "gunpoint-small"},
    "spec": {
        "task": "TimeSeriesClassification",
        "dataset": {"uri": "builtin:gunpoint", "validationSize": 0.2, "batchSize": 16},
        "searchSpace": {"operators": ["identity", "7 conv", "2 maxpool"], "maxBlocks": 2, "lookback": 2},
        "strategy": {
            "beamSize": 4,
            "explorationBeamSize": 2,
            "seed": 1,
            "predictorFolds": 2,
            "timePredictorSearchIterations": 4,
        },
        "training": {"epochs": 1},
        "architecture": {"motifs": 1, "normalCellsPerMotif": 1, "filters": 8},
        "trainers": {"parallelism": 2},
    },
}
ONE_BLOCK_CELLS = 21  # (I²O² + IO) / 2 with 2 inputs and 3 operators


def popnas(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "popnas.cli.main", *arguments]


def processes_in_session(session: int) -> list[int]:
    """Return the ids of live processes in a session, read from /proc (Linux)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while it was being read
        state, session_id = fields[0], int(fields[3])
        if session_id == session and state != "Z":
            members.append(int(stat.parent.name))
    return members


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(SMALL_SEARCH))
    return path


def test_search_end_to_end(tmp_path, manifest):
    out = tmp_path / "out"
    completed = subprocess.run(
        popnas("search", "-f", str(manifest), "--out", str(out)), capture_output=True, text=True, timeout=900
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Search 'gunpoint-small' finished" in completed.stdout
    summary = json.loads((out / "summary.json").read_text())
    steps = {step["step"]: step for step in summary["steps"]}
    assert sorted(steps) == [0, 1, 2]
    assert steps[1]["planned"] == ONE_BLOCK_CELLS
    assert 1 <= steps[2]["planned"] <= 4
    assert steps[2]["evaluated"] > steps[2]["planned"]
    assert all(step["trained"] == step["planned"] for step in steps.values())
    assert summary["failed"] == 0
    assert summary["reused"] == 0
    assert summary["trained"] == 1 + ONE_BLOCK_CELLS + steps[2]["planned"]
    assert 0 < summary["best"]["accuracy"] <= 1
    assert summary["best"]["trainingTime"] > 0
    assert steps[2]["accuracyPredictor"] is not None
    assert steps[2]["timePredictor"] is not None
    assert len(list((out / "results").glob("*.json"))) == summary["trained"]


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_search_resumes_after_interrupt(tmp_path, manifest, stop):
    out = tmp_path / "out"
    process = subprocess.Popen(
        popnas("search", "-f", str(manifest), "--out", str(out)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    results = out / "results"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and len(list(results.glob("*.json"))) < 5:
        time.sleep(0.5)
    if stop == "ctrl-c":
        # Ctrl-C reaches the whole foreground process group: the search and its trainers.
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 130
    time.sleep(2)
    assert processes_in_session(process.pid) == []  # no trainer process outlives the search
    finished_before = {path.name: path.stat().st_mtime_ns for path in results.glob("*.json")}
    assert 5 <= len(finished_before) < 1 + ONE_BLOCK_CELLS

    completed = subprocess.run(
        popnas("search", "-f", str(manifest), "--out", str(out)), capture_output=True, text=True, timeout=900
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reused"] == len(finished_before)
    planned = sum(step["planned"] for step in summary["steps"])
    assert summary["trained"] == planned - len(finished_before)
    for name, modified in finished_before.items():
        assert (results / name).stat().st_mtime_ns == modified
