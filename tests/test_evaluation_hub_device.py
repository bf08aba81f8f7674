"""zero_shot.py and linear_probe.py take --model_name_or_path (a folder or a Hub id, here served by the
loopback Hub stand-in) and --device (cpu, cuda, auto: the GPU when there is one)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modeling_supreme.evaluation import EvaluationError, load_checkpoint
from modeling_supreme.evaluation.cli import resolve_device

REPO = Path(__file__).resolve().parents[1]


def test_device_choices():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("CPU") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(EvaluationError, match="no CUDA GPU is visible"):
            resolve_device("cuda")
    with pytest.raises(EvaluationError, match="must be cpu, cuda, cuda:N or auto"):
        resolve_device("tpu")


def test_a_hub_id_that_is_not_cached_offline_says_so():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    with pytest.raises(EvaluationError, match="not in the local cache while the Hub is unreachable or HF_HUB_OFFLINE=1"):
        load_checkpoint("ecg-lab/not-cached-anywhere")


@pytest.mark.slow
@pytest.mark.parametrize("script", ["zero_shot.py", "linear_probe.py"])
def test_scripts_load_a_hub_id_from_the_stand_in(script, tiny_checkpoint, hub_stand_in, tmp_path):
    endpoint, hub = hub_stand_in
    hub.received.update({p.name: p.read_bytes() for p in tiny_checkpoint.iterdir() if p.is_file()})
    out = tmp_path / "out"
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    extra = ["--fractions", "1", "--C_grid", "1"] if script == "linear_probe.py" else ["--split", "test"]
    run = subprocess.run([sys.executable, str(REPO / "examples" / script), "--model_name_or_path", "ecg-lab/supreme-tiny",
                          "--device", "auto", "--dataset", "synthetic", "--num_records", "60", "--seed", "2",
                          "--cache_dir", str(tmp_path / "cache"), "--output_dir", str(out), "--n_bootstrap", "0",
                          "--no_progress", *extra], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"]["model"] == "ecg-lab/supreme-tiny"
    assert metrics["run"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    snapshot = next((tmp_path / "hf" / "hub" / "models--ecg-lab--supreme-tiny" / "snapshots").iterdir())
    assert (snapshot / "model.safetensors").read_bytes() == (tiny_checkpoint / "model.safetensors").read_bytes()
