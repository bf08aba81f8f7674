"""Exact resume of examples/pretrain.py (issue 11, class 10): from a checkpoint in a later epoch, after a
SIGKILL during a checkpoint write, with bf16 autocast and gradient accumulation, with two processes, and
after SIGKILLs at seeded random points. Each resumed run must end with bitwise-identical weights.

The runs use 48 training records in batches of 16 (3 optimizer steps per epoch), so a checkpoint at
step 4 lies inside the second epoch: the case in which accelerate's own epoch counter, restarted at 0
in the resumed process, used to replay the first epoch's data order.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "pretrain.py"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(synthetic_pretraining_corpus):
    return synthetic_pretraining_corpus


def args_for(corpus, output_dir, *extra, records=48, steps=8, every=2):
    return [
        "--dataset", "synthetic", "--dataset_arg", "num_records=160", "seed=1", "--sampling_rate", "100",
        "--cache_dir", corpus["cache"], "--entities", corpus["entities"], "--min_concept_count", "3",
        "--ecg_num_layers", "2", "--fusion_num_layers", "1", "--per_device_train_batch_size", "16",
        "--max_train_records", str(records), "--max_steps", str(steps), "--checkpointing_steps", str(every),
        "--save_total_limit", "10", "--logging_steps", "1", "--output_dir", str(output_dir), *extra,
    ]


def command(args, processes=1, port=29541):
    if processes == 1:
        return [sys.executable, str(SCRIPT), *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
            str(port), str(SCRIPT), *args]


def run(args, processes=1, env=None):
    environment = {**ENV, **({"ACCELERATE_USE_CPU": "true"} if processes > 1 else {}), **(env or {})}
    result = subprocess.run(command(args, processes), capture_output=True, text=True, env=environment, cwd=REPO,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def assert_same_weights(expected_dir: Path, resumed_dir: Path):
    expected = load_file(expected_dir / "model.safetensors")
    resumed = load_file(resumed_dir / "model.safetensors")
    assert expected.keys() == resumed.keys()
    different = [key for key in expected if not (expected[key] == resumed[key]).all()]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    losses = lambda d: [h["loss"] for h in json.loads((d / "eval_results.json").read_text())["history"] if "loss" in h]  # noqa: E731
    assert losses(expected_dir) == losses(resumed_dir)


def resume_copy(source: Path, target: Path, step: int) -> Path:
    """A copy of a finished run's folder that holds only what existed when ``step`` was saved."""
    shutil.copytree(source, target)
    for item in target.iterdir():
        if item.is_file():
            item.unlink()
    for folder in (target / "checkpoints").iterdir():
        if int(folder.name.split("_")[1]) > step:
            shutil.rmtree(folder)
    return target / "checkpoints" / f"step_{step:08d}"


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    output = tmp_path_factory.mktemp("resume") / "uninterrupted"
    run(args_for(corpus, output))
    return output


def test_checkpoints_lie_in_later_epochs(uninterrupted):
    state = json.loads((uninterrupted / "checkpoints" / "step_00000004" / "trainer_state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"]) == (1, 1)


@pytest.mark.parametrize("step", [4, 6])
def test_resume_in_a_later_epoch(corpus, uninterrupted, tmp_path, step):
    checkpoint = resume_copy(uninterrupted, tmp_path / "resumed", step)
    result = run(args_for(corpus, tmp_path / "resumed", "--resume_from_checkpoint", str(checkpoint)))
    assert f"resumed from {checkpoint} at step {step}" in result.stdout
    assert_same_weights(uninterrupted, tmp_path / "resumed")


def test_sigkill_during_a_checkpoint_write(corpus, uninterrupted, tmp_path):
    output = tmp_path / "killed"
    process = subprocess.Popen(command(args_for(corpus, output)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, env=ENV, cwd=REPO)
    partial = output / "checkpoints" / ".partial_step_00000006"
    deadline = time.time() + 600
    while not partial.is_dir() and process.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert partial.is_dir(), "the kill missed the checkpoint write: " + process.stderr.read()[-2000:]
    assert not (output / "checkpoints" / "step_00000006").exists()
    result = run(args_for(corpus, output, "--resume_from_checkpoint", "latest"))
    assert "resumed from" in result.stdout and "step_00000004 at step 4" in result.stdout
    assert "removed the unfinished checkpoint .partial_step_00000006" in result.stdout
    assert not partial.exists()
    assert_same_weights(uninterrupted, output)


def test_bf16_and_gradient_accumulation(corpus, tmp_path):
    # 3 micro-batches per epoch, 2 per step: the second step of each epoch ends at the loader's end
    extra = ("--mixed_precision", "bf16", "--gradient_accumulation_steps", "2")
    full = tmp_path / "full"
    run(args_for(corpus, full, *extra, steps=6, every=1))
    state = json.loads((full / "checkpoints" / "step_00000003" / "trainer_state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"]) == (1, 1)
    for step in (3, 4):
        checkpoint = resume_copy(full, tmp_path / f"resumed{step}", step)
        run(args_for(corpus, tmp_path / f"resumed{step}", *extra, "--resume_from_checkpoint", str(checkpoint),
                     steps=6, every=1))
        assert_same_weights(full, tmp_path / f"resumed{step}")


def test_two_processes(corpus, tmp_path):
    # 64 records, 16 per process: 2 steps per epoch; step 3 lies inside the second epoch
    full = tmp_path / "full"
    run(args_for(corpus, full, records=64, steps=5, every=3), processes=2)
    state = json.loads((full / "checkpoints" / "step_00000003" / "trainer_state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"]) == (1, 1)
    checkpoint = resume_copy(full, tmp_path / "resumed", 3)
    run(args_for(corpus, tmp_path / "resumed", "--resume_from_checkpoint", str(checkpoint), records=64, steps=5,
                 every=3), processes=2)
    assert_same_weights(full, tmp_path / "resumed")


def test_sigkill_at_seeded_random_points(corpus, uninterrupted, tmp_path):
    """Three SIGKILLs, each after a seeded number of finished checkpoints plus a seeded delay (so some
    land inside a step, some inside a checkpoint write), then a run to the end: identical weights."""
    rng = np.random.default_rng(11)
    output = tmp_path / "chain"
    kills = 0
    for _ in range(3):
        have = len(list((output / "checkpoints").glob("step_*"))) if (output / "checkpoints").is_dir() else 0
        wait_for, delay = have + int(rng.integers(1, 3)), float(rng.uniform(0.0, 1.5))
        if wait_for > 4:
            break
        resume = ("--resume_from_checkpoint", "latest") if have else ("--overwrite_output_dir",)
        process = subprocess.Popen(command(args_for(corpus, output, *resume)), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env=ENV, cwd=REPO)
        deadline = time.time() + 600
        while process.poll() is None and time.time() < deadline and \
                len(list((output / "checkpoints").glob("step_*/trainer_state.json"))) < wait_for:
            time.sleep(0.01)
        time.sleep(delay)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 2
    run(args_for(corpus, output, "--resume_from_checkpoint", "latest"))
    assert_same_weights(uninterrupted, output)
