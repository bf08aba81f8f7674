"""examples/pretrain.py end to end on a small synthetic corpus: outputs, model selection, exact resume
after a kill, two processes, Hub push to a loopback stand-in, and the errors for bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import HubStandIn, load_example

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "pretrain.py"


@pytest.fixture(scope="module")
def corpus(synthetic_pretraining_corpus):
    return synthetic_pretraining_corpus


def base_args(corpus, output_dir, *extra):
    return [
        "--dataset", "synthetic", "--dataset_arg", "num_records=160", "seed=1", "--sampling_rate", "100",
        "--cache_dir", corpus["cache"], "--entities", corpus["entities"], "--min_concept_count", "3",
        "--ecg_num_layers", "2", "--fusion_num_layers", "1", "--per_device_train_batch_size", "16",
        "--logging_steps", "1", "--output_dir", str(output_dir), *extra,
    ]


def run_script(args, env=None, launcher=None, timeout=600):
    command = (launcher or [sys.executable]) + [str(SCRIPT)] + args
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=timeout, cwd=REPO)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


EVAL = ["--eval_dataset", "synthetic", "--eval_dataset_arg", "num_records=160", "seed=1", "--eval_steps", "4"]


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    output = tmp_path_factory.mktemp("run") / "uninterrupted"
    run_script(base_args(corpus, output, "--max_steps", "8", "--checkpointing_steps", "2", *EVAL))
    return output


@pytest.mark.slow
def test_outputs_model_card_and_selection(uninterrupted, generated_records):
    import modeling_supreme  # noqa: F401
    from transformers import pipeline

    from modeling_supreme import SuPreMEModel

    for name in ("model.safetensors", "config.json", "processor_config.json", "tokenizer.json", "concepts.json",
                 "training_args.json", "eval_results.json", "README.md", "modeling_supreme.py"):
        assert (uninterrupted / name).is_file(), name
    concepts = json.loads((uninterrupted / "concepts.json").read_text())["concepts"]
    model = SuPreMEModel.from_pretrained(uninterrupted)
    assert model.config.concept_names == [c["name"] for c in concepts] and len(concepts) >= 8
    assert all(c["positive_records"] >= 3 for c in concepts)
    results = json.loads((uninterrupted / "eval_results.json").read_text())
    validated = [h for h in results["history"] if "val_macro_auroc" in h]
    assert [h["step"] for h in validated] == [4, 8]
    best = max(validated, key=lambda h: h["val_macro_auroc"])
    assert results["best"]["step"] == best["step"] and results["best"]["split"] == "validation"
    card = (uninterrupted / "README.md").read_text()
    assert "Not for clinical use" in card and concepts[0]["name"] in card and "Apache-2.0" in card
    args = json.loads((uninterrupted / "training_args.json").read_text())
    assert args["train"]["max_steps"] == 8 and args["data"]["dataset"] == "synthetic"
    assert sorted(p.name for p in (uninterrupted / "checkpoints").iterdir()) == ["step_00000006", "step_00000008"]
    clf = pipeline("zero-shot-ecg-classification", model=str(uninterrupted))
    result = clf(generated_records["lr"][0], candidate_labels=["atrial fibrillation", "sinus rhythm"])
    assert {r["label"] for r in result} == {"atrial fibrillation", "sinus rhythm"}


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(corpus, uninterrupted, tmp_path):
    output = tmp_path / "killed"
    command = [sys.executable, str(SCRIPT)] + base_args(corpus, output, "--max_steps", "8", "--checkpointing_steps", "2", *EVAL)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=REPO)
    target = output / "checkpoints" / "step_00000004" / "trainer_state.json"
    deadline = time.time() + 600
    while not target.is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed: " + process.stderr.read()[-2000:]
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (output / "model.safetensors").exists()  # it really died before finishing
    run_script(base_args(corpus, output, "--max_steps", "8", "--checkpointing_steps", "2", *EVAL,
                         "--resume_from_checkpoint", "latest"))
    expected = load_file(uninterrupted / "model.safetensors")
    resumed = load_file(output / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for key in expected:
        assert (expected[key] == resumed[key]).all(), key
    assert json.loads((output / "eval_results.json").read_text())["best"] == \
        json.loads((uninterrupted / "eval_results.json").read_text())["best"]


@pytest.mark.slow
def test_only_required_flags_select_on_the_corpus_validation_split(corpus, tmp_path):
    """No --eval_dataset and no --sampling_rate: the model is selected on the trained concepts over the
    corpus's validation split, and its rate is the recipe's 100 Hz (the corpus is read at 500 Hz)."""
    output = tmp_path / "required"
    result = run_script(["--dataset", "synthetic", "--dataset_arg", "num_records=160", "seed=1", "--cache_dir", corpus["cache"],
                         "--entities", corpus["entities"], "--min_concept_count", "3", "--ecg_num_layers", "2",
                         "--max_steps", "4", "--output_dir", str(output)])
    assert "model selection and early stopping on the validation split of 'synthetic'" in result.stdout
    assert "saved the best validated model" in result.stdout
    best = json.loads((output / "eval_results.json").read_text())["best"]
    assert best["kind"] == "concepts" and best["split"] == "validation" and 0.0 <= best["macro_auroc"] <= 1.0
    assert best["class_names"] and best["records"] > 0
    assert json.loads((output / "training_args.json").read_text())["train"]["learning_rate"] == 2e-4  # the ViT recipe's
    config = json.loads((output / "config.json").read_text())
    assert config["sampling_rate"] == 100 and config["num_samples"] == 1000
    args = json.loads((output / "training_args.json").read_text())
    assert args["data"]["sampling_rate"] == 500 and args["model"]["ecg_sampling_rate"] == 100
    card = (output / "README.md").read_text()
    assert "trained concepts against the targets" in card and "model-index" in card

    plain = tmp_path / "plain"
    result = run_script(base_args(corpus, plain, "--max_steps", "2", "--no_concept_validation"))
    assert "saved the last model" in result.stdout
    assert "best" not in json.loads((plain / "eval_results.json").read_text())


@pytest.mark.slow
def test_two_cpu_processes(corpus, tmp_path):
    output = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    result = run_script(base_args(corpus, output, "--max_steps", "3", "--checkpointing_steps", "3"),
                        env={"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}, launcher=launcher)
    assert (output / "model.safetensors").is_file()
    # The synthetic corpus has a validation split with entity lines: the model is selected on it.
    assert result.stdout.count("saved the best validated model") == 1  # only the main process writes
    state = json.loads((output / "checkpoints" / "step_00000003" / "trainer_state.json").read_text())
    assert state["global_step"] == 3


@pytest.mark.slow
def test_push_to_hub_sends_the_checkpoint(corpus, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), HubStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        output = tmp_path / "pushed"
        env = {"HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}", "HF_TOKEN": "hf_loopback_test_token",
               "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
        run_script(base_args(corpus, output, "--max_steps", "2", "--checkpointing_steps", "2", "--push_to_hub",
                             "--hub_model_id", "ecg-lab/supreme-test", "--hub_private"), env=env)
    finally:
        server.shutdown()
    assert HubStandIn.created and HubStandIn.created[0]["name"] == "supreme-test"
    assert HubStandIn.created[0]["visibility"] == "private"
    sent = set(HubStandIn.received)
    for name in ("model.safetensors", "config.json", "README.md", "concepts.json", "processor_config.json",
                 "tokenizer.json", "modeling_supreme.py", "training_args.json"):
        assert name in sent, name
    assert not any(name.startswith(("checkpoints/", "best_model/")) for name in sent)
    assert HubStandIn.card_metadata["license"] == "apache-2.0" and "ecg" in HubStandIn.card_metadata["tags"]
    assert HubStandIn.received["model.safetensors"] == (output / "model.safetensors").read_bytes()


# -- bad input: each stops early with a message that says what to fix ----------------------------------


def expect_exit(argv, message):
    pretrain = load_example("pretrain")
    with pytest.raises(SystemExit) as caught:
        pretrain.main(argv)
    assert message in str(caught.value), str(caught.value)


def test_missing_and_empty_entities_file(corpus, tmp_path):
    args = base_args(corpus, tmp_path / "out", "--max_steps", "1")
    missing = [a if a != corpus["entities"] else str(tmp_path / "none.jsonl") for a in args]
    expect_exit(missing, "not found")
    (tmp_path / "empty.jsonl").write_text("")
    empty = [a if a != corpus["entities"] else str(tmp_path / "empty.jsonl") for a in args]
    expect_exit(empty, "is empty")


def test_entities_of_another_corpus(corpus, tmp_path):
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"record_id": "12345", "report_sha256": "0" * 64, "backend": "lexicon", "model": "x",
                                 "entities": [{"span": "af", "concept": "atrial fibrillation", "status": "present"}],
                                 "error": None}) + "\n")
    args = [a if a != corpus["entities"] else str(other) for a in base_args(corpus, tmp_path / "out", "--max_steps", "1")]
    expect_exit(args, "was it extracted from another dataset")


def test_partly_unknown_records_need_consent(corpus, tmp_path):
    mixed = tmp_path / "mixed.jsonl"
    shutil.copy(corpus["entities"], mixed)
    with open(mixed, "a") as handle:
        handle.write(json.dumps({"record_id": "not-in-corpus", "report_sha256": "0" * 64, "backend": "lexicon",
                                 "model": "x", "entities": [], "error": None}) + "\n")
    args = [a if a != corpus["entities"] else str(mixed) for a in base_args(corpus, tmp_path / "out", "--max_steps", "1")]
    expect_exit(args, "--allow_unknown_entity_records")


def test_no_concept_with_enough_positives(corpus, tmp_path):
    args = base_args(corpus, tmp_path / "out", "--max_steps", "1")
    args[args.index("--min_concept_count") + 1] = "100000"
    expect_exit(args, "lower --min_concept_count")


def test_data_dir_that_is_not_the_corpus(corpus, tmp_path, generated_records):
    challenge_dir = generated_records["mat"][0].parent
    args = ["--dataset", "ptbxl", "--dataset_config", "reports", "--data_dir", str(challenge_dir), "--entities",
            corpus["entities"], "--cache_dir", corpus["cache"], "--output_dir", str(tmp_path / "out"), "--max_steps", "1"]
    expect_exit(args, "cannot load corpus 'ptbxl'")


def test_output_dir_of_another_model_or_not_empty(corpus, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (foreign / "checkpoints" / "step_00000001").mkdir(parents=True)
    (foreign / "checkpoints" / "step_00000001" / "trainer_state.json").write_text("{}")
    expect_exit(base_args(corpus, foreign, "--resume_from_checkpoint", "latest"), "checkpoint of another model")
    expect_exit(base_args(corpus, foreign), "is not empty")
    expect_exit(base_args(corpus, tmp_path / "fresh", "--resume_from_checkpoint", "latest"), "no finished checkpoint")
