"""zero_shot.py and linear_probe.py end to end on a tiny checkpoint and real PTB-XL records, the scoring
functions they share, and their errors for bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_example

import modeling_supreme.evaluation as ev
from modeling_supreme import ECGProcessor, SuPreMEConfig, SuPreMEModel
from modeling_supreme.evaluation.linear_probe import training_subset

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
linear_probe = load_example("linear_probe")
zero_shot = load_example("zero_shot")

SUPER = ["conduction disturbance", "hypertrophy", "myocardial infarction", "normal ECG", "ST/T change"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    config = SuPreMEConfig(ecg_num_layers=2, fusion_num_layers=1)
    folder = tmp_path_factory.mktemp("tiny_supreme")
    SuPreMEModel(config).save_pretrained(folder)
    ECGProcessor.from_config(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("datasets_cache")


@pytest.fixture(scope="module")
def ptbxl_super(ptbxl_dir, cache_dir):
    splits, names, source = ev.load_evaluation_dataset("ptbxl", "super", ptbxl_dir, 100, cache_dir)
    return splits, names


def _run_script(script, *args):
    result = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


# -- end to end ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_zero_shot_script_on_real_ptbxl(checkpoint, ptbxl_dir, cache_dir, tmp_path):
    out = tmp_path / "zero_shot"
    result = _run_script("zero_shot.py", "--model", checkpoint, "--dataset", "ptbxl", "--dataset_config", "super",
                         "--data_dir", ptbxl_dir, "--sampling_rate", 100, "--split", "test", "--max_records", 24,
                         "--output_dir", out, "--cache_dir", cache_dir, "--n_bootstrap", 100, "--batch_size", 16,
                         "--no_progress")
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "metrics.md", "roc.png"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_records"] == 24 and metrics["run"]["splits_evaluated"] == {"test": 24}
    assert [c["name"] for c in metrics["classes"]] == SUPER
    assert sum(c["positives"] for c in metrics["classes"]) >= 24  # every PTB-XL super record has a label
    assert metrics["run"]["prompts"]["normal ECG"][-1] == "normal ECG"
    assert metrics["macro_auroc"] is None or 0.0 <= metrics["macro_auroc"] <= 1.0
    assert metrics["run"]["ecg_per_second"] > 0
    assert "| normal ECG |" in result.stdout and str(out / "roc.png") in result.stdout
    assert (out / "metrics.md").read_text().startswith("# Zero-shot ptbxl/super, split test")


@pytest.mark.slow
def test_linear_probe_script_on_real_ptbxl(checkpoint, ptbxl_dir, cache_dir, tmp_path):
    out = tmp_path / "probe"
    result = _run_script("linear_probe.py", "--model", checkpoint, "--dataset", "ptbxl", "--dataset_config", "super",
                         "--data_dir", ptbxl_dir, "--sampling_rate", 100, "--max_records", 40, "--output_dir", out,
                         "--cache_dir", cache_dir, "--n_bootstrap", 50, "--C_grid", "0.01,1", "--no_progress")
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "metrics.md"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"]["split_sizes"] == {"train": 40, "validation": 40, "test": 40}
    fractions = metrics["fractions"]
    assert [f["fraction"] for f in fractions] == [0.01, 0.1, 1.0]
    assert fractions[-1]["train_records"] == 40 and fractions[0]["train_records"] < fractions[1]["train_records"] < 40
    for entry in fractions:
        assert entry["C"] in (0.01, 1.0) and entry["test"]["num_records"] == 40
        assert entry["test"]["macro_auroc"] is None or 0.0 <= entry["test"]["macro_auroc"] <= 1.0
    assert "| 0.01 |" in result.stdout and "Per-class test AUROC" in (out / "metrics.md").read_text()


# -- scoring functions -----------------------------------------------------------------------------


def test_zero_shot_scores_average_logits_over_a_class_prompts(checkpoint, ptbxl_super):
    splits, names = ptbxl_super
    model, processor = ev.load_checkpoint(checkpoint)
    part = splits["validation"].select(range(10))
    prompts = {"normal ECG": ["a normal tracing", "normal ECG", "nothing abnormal"], "hypertrophy": ["hypertrophy"]}
    model.train()  # scoring must switch to eval and back
    scores, targets, ids = ev.zero_shot_scores(model, processor, part, list(prompts), prompts, batch_size=4, progress=False)
    assert model.training
    assert scores.shape == targets.shape == (10, 2) and ids == list(part["record_id"])
    assert targets[:, 0].tolist() == [int("normal ECG" in labels) for labels in part["labels"]]

    model.eval()
    rows = part[0:10]
    inputs = processor(ecg=rows["signal"], sampling_rate=list(rows["sampling_rate"]),
                       lead_names=list(rows["lead_names"]), return_tensors="pt")
    texts = prompts["normal ECG"] + prompts["hypertrophy"]
    tokens = processor.tokenize_queries(texts)
    with torch.no_grad():
        logits = model(**inputs, query_input_ids=tokens["query_input_ids"],
                       query_attention_mask=tokens["query_attention_mask"]).logits
    expected = torch.sigmoid(torch.stack([logits[:, :3].mean(1), logits[:, 3]], dim=1)).numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)

    bf16_scores, _, _ = ev.zero_shot_scores(model, processor, part, list(prompts), prompts, bf16=True, progress=False)
    assert np.abs(bf16_scores - scores).max() < 0.05

    features, feature_ids = ev.extract_ecg_features(model, processor, part, batch_size=3, progress=False)
    assert features.shape == (10, model.config.ecg_hidden_size) and feature_ids == ids
    with torch.no_grad():
        direct = model.get_ecg_features(**inputs).numpy()
    np.testing.assert_allclose(features, direct, rtol=1e-4, atol=1e-5)

    with pytest.raises(ev.EvaluationError, match="empty"):
        ev.zero_shot_scores(model, processor, part.select([]), list(prompts), prompts, progress=False)
    with pytest.raises(ev.EvaluationError, match="hypertrophy"):
        ev.zero_shot_scores(model, processor, part, list(prompts), {"normal ECG": ["x"]}, progress=False)


def test_training_subsets_are_nested_and_cover_every_class():
    targets = np.zeros((200, 3), dtype=int)
    targets[:100, 0] = 1
    targets[7, 1] = 1  # a rare class: one positive in the whole split
    targets[:, 2] = 1  # a class without negatives
    permutation = np.random.default_rng(0).permutation(200)
    small, added_small = training_subset(targets, 0.01, permutation)
    large, _ = training_subset(targets, 0.1, permutation)
    full, added_full = training_subset(targets, 1.0, permutation)
    assert set(permutation[:2]) <= set(small) and set(permutation[:20]) <= set(large) and len(full) == 200
    for subset in (small, large):
        assert targets[subset, 1].sum() == 1 and 0 < targets[subset, 0].sum() < len(subset)
    assert len(small) == 2 + added_small and added_full == 0


# -- bad input -------------------------------------------------------------------------------------


def _error_of(main, argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


def test_bad_model_folders(tmp_path, capsys, ptbxl_dir):
    base = ["--dataset", "ptbxl", "--dataset_config", "super", "--data_dir", str(ptbxl_dir), "--output_dir", str(tmp_path / "o")]
    assert "not a folder" in _error_of(zero_shot.main, ["--model", str(tmp_path / "nothing"), *base], capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no config.json" in _error_of(zero_shot.main, ["--model", str(empty), *base], capsys)
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert "'bert', not 'supreme'" in _error_of(linear_probe.main, ["--model", str(bert), *base], capsys)
    no_processor = tmp_path / "no_processor"
    no_processor.mkdir()
    (no_processor / "config.json").write_text(json.dumps({"model_type": "supreme"}))
    assert "processor_config.json" in _error_of(zero_shot.main, ["--model", str(no_processor), *base], capsys)
    assert not (tmp_path / "o").exists()


def test_bad_dataset_split_and_prompts(tmp_path, capsys, checkpoint, cache_dir, ptbxl_dir):
    common = ["--model", str(checkpoint), "--output_dir", str(tmp_path / "o"), "--cache_dir", str(cache_dir), "--no_progress"]
    error = _error_of(zero_shot.main, [*common, "--dataset", "ptb-xxl"], capsys)
    assert "unknown ECG corpus 'ptb-xxl'" in error and "ptbxl" in error
    # 5 synthetic records fill only the train split (index % 10 == 9 is test)
    error = _error_of(zero_shot.main, [*common, "--dataset", "synthetic", "--num_records", "5", "--split", "test"], capsys)
    assert "empty" in error and "test" in error
    error = _error_of(linear_probe.main, [*common, "--dataset", "synthetic", "--num_records", "5"], capsys)
    assert "test split" in error and "empty" in error
    prompt_file = tmp_path / "prompts.json"
    prompt_file.write_text(json.dumps({"normal ECG": "healthy heart"}))
    error = _error_of(zero_shot.main, [*common, "--dataset", "ptbxl", "--dataset_config", "super", "--data_dir",
                                       str(ptbxl_dir), "--sampling_rate", "100", "--prompts", str(prompt_file)], capsys)
    assert "no prompts for 4 of 5 classes" in error and "myocardial infarction" in error
    error = _error_of(zero_shot.main, [*common, "--dataset", "ptbxl", "--prompts", str(tmp_path / "absent.json")], capsys)
    assert "absent.json" in error and "not found" in error
    error = _error_of(linear_probe.main, [*common, "--dataset", "ptbxl", "--fractions", "0,2"], capsys)
    assert "--fractions" in error
    assert not (tmp_path / "o").exists()
