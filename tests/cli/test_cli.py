import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from popnas.cli import main

ROOT = Path(__file__).resolve().parents[2]

BAD_MANIFEST = {
    "apiVersion": "popnas.io/v1alpha1",
    "kind": "NASSearch",
    "metadata": {"name": "bad"},
    "spec": {
        "task": "ImageClassification",
        "dataset": {"uri": "missing/data.npz"},
        "searchSpace": {"operators": ["3x3 conv", "9x9 wobble", "gru"], "maxBlocks": 0},
        "strategy": {"beamSize": 0},
    },
}


def write(tmp_path: Path, manifest: dict) -> Path:
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def test_bad_manifest_lists_every_problem(tmp_path, capsys):
    code = main(["search", "-f", str(write(tmp_path, BAD_MANIFEST)), "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2
    assert "5 problems" in error
    assert "spec.searchSpace.operators.1" in error
    assert "'9x9 wobble'" in error
    assert "spec.searchSpace.operators.2" in error
    assert "recurrent" in error
    assert "spec.searchSpace.maxBlocks" in error
    assert "spec.strategy.beamSize" in error
    assert "spec.dataset.uri" in error
    assert "file not found" in error
    assert not (tmp_path / "out").exists()  # nothing ran


def test_missing_manifest_file(tmp_path, capsys):
    code = main(["search", "-f", str(tmp_path / "absent.yaml")])
    assert code == 2
    assert "cannot be read" in capsys.readouterr().err


def test_validate_prints_defaults(capsys):
    code = main(["validate", "-f", str(ROOT / "examples" / "gunpoint.yaml")])
    spec = json.loads(capsys.readouterr().out)["spec"]
    assert code == 0
    assert spec["searchSpace"]["maxBlocks"] == 3
    assert spec["strategy"]["predictorFolds"] == 5


@pytest.mark.parametrize("example", ["gunpoint.yaml", "digits.yaml"])
def test_examples_validate(example, capsys):
    assert main(["validate", "-f", str(ROOT / "examples" / example)]) == 0


def test_train_cell_rejects_bad_cell(capsys):
    code = main(["train-cell", "-f", str(ROOT / "examples" / "gunpoint.yaml"), "--cell", "[(0, 'gru', -1, 'gru')]"])
    assert code == 2
    assert "invalid --cell" in capsys.readouterr().err


def test_train_cell_rejects_operator_outside_space(capsys):
    code = main(["train-cell", "-f", str(ROOT / "examples" / "gunpoint.yaml"), "--cell", "[(-1, 'lstm', -1, 'gru')]"])
    assert code == 2
    assert "not in the search space" in capsys.readouterr().err


@pytest.mark.slow
def test_train_cell_prints_result(tmp_path):
    command = [
        sys.executable,
        "-m",
        "popnas.cli.main",
        "train-cell",
        "-f",
        str(ROOT / "examples" / "gunpoint.yaml"),
        "--cell",
        "[(-2, '7 conv', -1, 'identity')]",
        "--out",
        str(tmp_path),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["status"] == "succeeded"
    assert 0 <= result["accuracy"] <= 1
    assert result["trainingTime"] > 0
    assert (tmp_path / "results" / f"{result['key']}.json").exists()


def test_console_script_installed():
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "popnas"), "--version"], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0
    assert completed.stdout.startswith("popnas ")


def test_unloadable_dataset_stops_before_training(tmp_path, capsys):
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 3)), y=np.zeros(4))
    manifest = yaml.safe_load((ROOT / "examples" / "gunpoint.yaml").read_text())
    manifest["spec"]["dataset"]["uri"] = "bad.npz"
    code = main(["search", "-f", str(write(tmp_path, manifest)), "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2
    assert "spec.dataset.uri" in error
    assert "x_train" in error
    assert not (tmp_path / "out").exists()


def test_validate_rejects_unloadable_dataset(tmp_path, capsys):
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 3)), y=np.zeros(4))
    manifest = yaml.safe_load((ROOT / "examples" / "gunpoint.yaml").read_text())
    manifest["spec"]["dataset"]["uri"] = "bad.npz"
    assert main(["validate", "-f", str(write(tmp_path, manifest))]) == 2
    assert "cannot be loaded" in capsys.readouterr().err


def test_train_cell_rejects_too_many_blocks(capsys):
    blocks = ", ".join(["(-1, 'identity', -1, 'identity')"] * 4)
    code = main(["train-cell", "-f", str(ROOT / "examples" / "gunpoint.yaml"), "--cell", f"[{blocks}]"])
    assert code == 2
    assert "max_blocks=3" in capsys.readouterr().err


def small_manifest(tmp_path: Path, **storage: object) -> Path:
    raw = yaml.safe_load((ROOT / "examples" / "gunpoint.yaml").read_text())
    if storage:
        raw["spec"]["storage"] = storage
    return write(tmp_path, raw)


@pytest.mark.s3
def test_missing_bucket_stops_search(tmp_path, capsys, s3_environment, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["search", "-f", str(small_manifest(tmp_path)), "--store", "s3://popnas-absent/runs"])
    error = capsys.readouterr().err
    assert code == 3
    assert "bucket 'popnas-absent' does not exist" in error
    assert "Traceback" not in error


@pytest.mark.s3
def test_missing_s3_dataset_rejected(tmp_path, capsys, s3_uri, cache_folder):
    raw = yaml.safe_load((ROOT / "examples" / "gunpoint.yaml").read_text())
    raw["spec"]["dataset"]["uri"] = f"{s3_uri}/data/absent.npz"
    code = main(["validate", "-f", str(write(tmp_path, raw))])
    error = capsys.readouterr().err
    assert code == 2
    assert f"spec.dataset.uri '{s3_uri}/data/absent.npz' cannot be loaded" in error
    assert "does not exist" in error


def test_invalid_spec_storage_rejected(tmp_path, capsys, monkeypatch):
    # The manifest is checked whole, even when --store overrides its storage.uri.
    monkeypatch.chdir(tmp_path)
    manifest = small_manifest(tmp_path, uri="s3://popnas-bad_name/runs")
    code = main(["search", "-f", str(manifest), "--store", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2
    assert "spec.storage.uri: is not a valid S3 URI" in error
