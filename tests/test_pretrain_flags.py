"""examples/pretrain.py behaves like the HF examples: a JSON config file (and training_args.json parsing
back into the same arguments), HF Trainer's flag names, the launcher's mixed precision unless a flag
overrides it, `--report_to` through accelerate's trackers (TensorBoard offline), and gradient
checkpointing that really recomputes activations."""

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from conftest import load_example

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "pretrain.py"
pretrain = load_example("pretrain")

FLAGS = ["--dataset", "synthetic", "--entities", "e.jsonl", "--output_dir", "out", "--dataset_arg", "num_records=160",
         "seed=1", "--sampling_rate", "100", "--max_steps", "8", "--learning_rate", "0.001", "--bf16",
         "--save_steps", "4", "--lr_scheduler_type", "linear", "--gradient_checkpointing", "--hub_private_repo",
         "--report_to", "tensorboard", "--eval_dataset", "synthetic", "--eval_dataset_arg", "num_records=160", "seed=1"]


def record(parsed):
    data, model, train = parsed
    return {"data": asdict(data), "model": asdict(model), "train": asdict(train)}


def test_training_args_json_parses_back_into_the_same_arguments(tmp_path):
    parsed = pretrain.parse_arguments(FLAGS)
    saved = tmp_path / "training_args.json"
    saved.write_text(json.dumps(record(parsed), indent=2, default=str))  # as the script writes it
    assert pretrain.parse_arguments([str(saved)]) == parsed
    train = parsed[2]
    assert (train.checkpointing_steps, train.bf16, train.hub_private_repo, train.gradient_checkpointing) == (4, True, True, True)
    assert train.lr_scheduler_type == "linear" and train.report_to == ["tensorboard"]
    assert parsed[0].dataset_arg == ["num_records=160", "seed=1"]


def test_a_flat_json_config_with_flags_that_override_it(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"dataset": "synthetic", "entities": "e.jsonl", "output_dir": "out", "max_steps": 3,
                                  "save_steps": 2, "hub_private": True, "report_to": ["none"]}))
    data, model, train = pretrain.parse_arguments([str(config), "--max_steps", "5", "--seed", "7"])
    assert (data.dataset, train.max_steps, train.seed, train.checkpointing_steps, train.hub_private_repo) == \
        ("synthetic", 5, 7, 2, True)
    assert train.mixed_precision is None and not train.bf16  # nothing chosen: the launcher decides


@pytest.mark.parametrize("content, message", [
    ({"dataset": "synthetic", "learning_rat": 0.1}, "unknown arguments ['learning_rat']"),
    ([1, 2], "must hold a JSON object"),
])
def test_config_file_errors(tmp_path, content, message):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(content))
    with pytest.raises(pretrain.PretrainingError, match=message.replace("[", r"\[").replace("]", r"\]")):
        pretrain.parse_arguments([str(config)])
    with pytest.raises(pretrain.PretrainingError, match="not found"):
        pretrain.parse_arguments([str(tmp_path / "missing.json")])


def _train_args(*flags):
    return pretrain.parse_arguments(["--dataset", "d", "--entities", "e", "--output_dir", "o", *flags])[2]


def test_precision_without_flags_is_the_launchers_bf16_or_the_native_bf16(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(pretrain, "bf16_is_native", lambda device_type: device_type == "cuda")
    assert pretrain.resolve_mixed_precision(_train_args(), "cpu") == "no"  # emulated bf16 is slower than fp32
    assert pretrain.resolve_mixed_precision(_train_args(), "cuda") == "bf16"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # what `accelerate launch` sets when given nothing
    assert pretrain.resolve_mixed_precision(_train_args(), "cuda") == "bf16"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # the launcher asked: Accelerator reads it
    assert pretrain.resolve_mixed_precision(_train_args(), "cpu") is None
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    assert pretrain.resolve_mixed_precision(_train_args("--mixed_precision", "no"), "cuda") == "no"  # the flag wins
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf17")  # a typo is named, not read as "no"
    with pytest.raises(pretrain.PretrainingError, match="ACCELERATE_MIXED_PRECISION='bf17'"):
        pretrain.resolve_mixed_precision(_train_args(), "cpu")


def test_bf16_is_native_is_onednns_own_check():
    import torch

    from modeling_supreme.training import bf16_is_native

    assert bf16_is_native("cpu") == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert bf16_is_native("cuda") == (torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def test_precision_flags_leave_the_launcher_alone_unless_given(monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert pretrain.resolve_mixed_precision(_train_args()) is None
    assert pretrain.resolve_mixed_precision(_train_args("--bf16")) == "bf16"
    assert pretrain.resolve_mixed_precision(_train_args("--fp16")) == "fp16"
    assert pretrain.resolve_mixed_precision(_train_args("--mixed_precision", "no")) == "no"
    assert pretrain.resolve_mixed_precision(_train_args("--bf16", "--mixed_precision", "bf16")) == "bf16"
    with pytest.raises(pretrain.PretrainingError, match="conflicting precision flags"):
        pretrain.resolve_mixed_precision(_train_args("--bf16", "--mixed_precision", "no"))
    with pytest.raises(pretrain.PretrainingError, match="must be no, bf16 or fp16"):
        pretrain.resolve_mixed_precision(_train_args("--mixed_precision", "int8"))


def test_report_to_names_accelerate_trackers():
    from accelerate.tracking import get_available_trackers

    assert pretrain.trackers(["none"]) is None
    assert pretrain.trackers(["tensorboard"]) == ["tensorboard"]
    assert pretrain.trackers(["all"]) == ["all"]
    with pytest.raises(pretrain.PretrainingError, match="unknown tracker"):
        pretrain.trackers(["tensorbored"])
    with pytest.raises(pretrain.PretrainingError, match="cannot be combined"):
        pretrain.trackers(["none", "tensorboard"])
    installed = {str(getattr(t, "value", t)) for t in get_available_trackers()}
    for name in ("wandb", "trackio"):
        if name not in installed:
            with pytest.raises(pretrain.PretrainingError, match=f"pip install {name}"):
                pretrain.trackers([name])
    flat = pretrain.tracker_config(record(pretrain.parse_arguments(FLAGS)))
    assert flat["train/report_to"] == "tensorboard" and flat["train/mixed_precision"] == "None"
    assert all(isinstance(v, (int, float, str, bool)) for v in flat.values())


def test_gradient_checkpointing_recomputes_and_gives_the_same_gradients(monkeypatch):
    import modeling_supreme.modeling_supreme as modeling
    from modeling_supreme import SuPreMEConfig, SuPreMEModel

    calls = []
    forward = modeling.SuPreMEMLP.forward
    monkeypatch.setattr(modeling.SuPreMEMLP, "forward", lambda self, x: calls.append(1) or forward(self, x))
    torch.manual_seed(0)
    config = SuPreMEConfig(ecg_num_layers=2, fusion_num_layers=1, sampling_rate=100, ecg_dropout=0.0, fusion_dropout=0.0)
    model = SuPreMEModel(config).train()
    inputs = {"input_values": torch.randn(2, 12, 1000), "query_embeds": torch.randn(3, 384),
              "labels": torch.randint(0, 2, (2, 3)).float()}

    def gradients():
        calls.clear()
        model.zero_grad()
        model(**inputs).loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad], len(calls)

    plain, plain_calls = gradients()
    model.activation_checkpointing_enable()
    checkpointed, checkpointed_calls = gradients()
    assert plain_calls == 3 and checkpointed_calls == 6  # 2 ViT + 1 fusion MLPs, run again in the backward pass
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b)


# -- end to end: the launcher's precision, TensorBoard, the config file ---------------------------------


@pytest.fixture(scope="module")
def entities(tmp_path_factory):
    from datasets_scripts import iter_reports
    from processing.reports.entities_file import run_extraction
    from processing.reports.extraction import create_backend

    path = tmp_path_factory.mktemp("entities") / "entities.jsonl"
    run_extraction(iter_reports("synthetic", num_records=160, seed=1), path, create_backend("lexicon"), progress=False)
    return path


@pytest.mark.slow
def test_launcher_precision_tensorboard_and_the_config_file(entities, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    common = ["--dataset", "synthetic", "--dataset_arg", "num_records=160", "seed=1", "--sampling_rate", "100",
              "--cache_dir", str(tmp_path / "cache"), "--entities", str(entities), "--min_concept_count", "3",
              "--ecg_num_layers", "2", "--fusion_num_layers", "1", "--per_device_train_batch_size", "16",
              "--logging_steps", "1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
              "--mixed_precision", "bf16"]
    first = subprocess.run(launch + [str(SCRIPT), *common, "--output_dir", str(out), "--max_steps", "3", "--save_steps", "2",
                                     "--report_to", "tensorboard", "--gradient_checkpointing", "--lr_scheduler_type", "linear"],
                           capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert first.returncode == 0, first.stderr[-4000:]
    assert "[pretrain] mixed precision: bf16; trackers: tensorboard" in first.stdout
    results = json.loads((out / "eval_results.json").read_text())
    assert results["mixed_precision"] == "bf16"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002", "step_00000003"]
    assert "bf16 mixed precision" in (out / "README.md").read_text() and "linear schedule" in (out / "README.md").read_text()

    events = EventAccumulator(str(out / "runs" / "supreme_pretrain"))
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == [1, 2, 3]
    assert [round(e.value, 5) for e in losses] == [round(h["loss"], 5) for h in results["history"] if "loss" in h]
    rates = [e.value for e in events.Scalars("train/learning_rate")]
    assert rates[0] > rates[1] > rates[2]  # the linear decay

    # The saved arguments re-run the job; a flag overrides the launcher's precision.
    saved = out / "training_args.json"
    second_out = tmp_path / "rerun"
    second = subprocess.run(launch + [str(SCRIPT), str(saved), "--output_dir", str(second_out), "--max_steps", "1",
                                      "--mixed_precision", "no", "--report_to", "none"],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "[pretrain] mixed precision: no; trackers: none" in second.stdout
    rerun = json.loads((second_out / "training_args.json").read_text())
    first_args = json.loads(saved.read_text())
    assert rerun["train"]["mixed_precision"] == "no" and rerun["train"]["max_steps"] == 1
    assert rerun["data"] == first_args["data"] and rerun["model"] == first_args["model"]
    assert rerun["train"]["lr_scheduler_type"] == "linear" and rerun["train"]["gradient_checkpointing"] is True


@pytest.mark.parametrize("flag,value", [("--ecg_sampling_rate", "0"), ("--ecg_sampling_rate", "-100"), ("--sampling_rate", "0")])
def test_non_positive_rates_are_refused_before_any_work(tmp_path, flag, value):
    # 0 once fell through `or` to the corpus's 500 Hz and trained silently at a rate nobody asked for
    output = tmp_path / "out"
    with pytest.raises(pretrain.PretrainingError, match=f"{flag} must be a positive rate in Hz, got {value}"):
        pretrain.train(["--dataset", "synthetic", "--entities", str(tmp_path / "missing.jsonl"), "--output_dir", str(output),
                        flag, value])
    assert not output.exists()  # nothing half-written


def test_an_unknown_encoder_type_is_refused_before_any_work(tmp_path):
    output = tmp_path / "out"
    with pytest.raises(pretrain.PretrainingError, match=r"--ecg_encoder_type must be one of \['vit', 'resnet1d'\], got 'cnn'"):
        pretrain.train(["--dataset", "synthetic", "--entities", str(tmp_path / "missing.jsonl"), "--output_dir", str(output),
                        "--ecg_encoder_type", "cnn"])
    assert not output.exists()


@pytest.mark.parametrize("value", ["1", "-0.1", "1.5"])
def test_a_dropout_outside_0_1_is_refused_before_any_work(tmp_path, value):
    output = tmp_path / "out"
    with pytest.raises(pretrain.PretrainingError, match=rf"--dropout must be in \[0, 1\), got {float(value)}"):
        pretrain.train(["--dataset", "synthetic", "--entities", str(tmp_path / "missing.jsonl"), "--output_dir", str(output),
                        "--dropout", value])
    assert not output.exists()


@pytest.mark.parametrize("encoder, dropout, config_dropout", [("vit", 0.0, 0.0), ("resnet1d", None, 0.1)])
def test_the_recipe_fills_each_encoders_own_dropout_into_the_model_and_keeps_a_given_one(encoder, dropout, config_dropout):
    """Small corpora: no dropout for the ViT (chosen on the study's validation folds), the config's 0.1 for the
    ResNet-1d; a --dropout on the command line wins; the built model's config carries it."""
    from modeling_supreme.training import TrainingTargets

    base = ["--dataset", "synthetic", "--entities", "e.jsonl", "--output_dir", "out", "--ecg_encoder_type", encoder]
    targets = TrainingTargets(concepts=["atrial fibrillation"], counts=[3], rows=[0], targets=None, report={})
    for extra, expected, expected_config in (([], dropout, config_dropout), (["--dropout", "0.2"], 0.2, 0.2)):
        data, model, train = pretrain.parse_arguments(base + extra)
        logged = []
        pretrain.apply_recipe(pretrain.default_recipe(300, model.ecg_encoder_type), model, train, logged.append)
        assert model.dropout == expected
        assert ("dropout=0.0" in logged[0]) == (encoder == "vit" and not extra)
        built, _ = pretrain.build_model(model, data, targets, [["atrial fibrillation"]])
        assert built.config.ecg_dropout == built.config.fusion_dropout == expected_config


@pytest.mark.parametrize("encoder, learning_rate", [("vit", 2e-4), ("resnet1d", 5e-4)])
def test_the_recipe_fills_each_encoders_own_learning_rate_and_keeps_a_given_one(encoder, learning_rate):
    """The small-corpus recipe's peak rate depends on the encoder (chosen per encoder on the study's
    validation folds); a --learning_rate on the command line wins."""
    base = ["--dataset", "synthetic", "--entities", "e.jsonl", "--output_dir", "out", "--ecg_encoder_type", encoder]
    data, model, train = pretrain.parse_arguments(base)
    logged = []
    recipe = pretrain.default_recipe(300, model.ecg_encoder_type)
    pretrain.apply_recipe(recipe, model, train, logged.append)
    assert train.learning_rate == learning_rate and f"learning_rate={learning_rate}" in logged[0]
    data, model, train = pretrain.parse_arguments(base + ["--learning_rate", "0.003"])
    pretrain.apply_recipe(pretrain.default_recipe(300, model.ecg_encoder_type), model, train, logged.append)
    assert train.learning_rate == 0.003
