"""Checkpoints that load anywhere: the frozen text encoder stays frozen through from_pretrained (and a
two-process fine-tuning step of a loaded checkpoint works), every saved checkpoint names its pipeline
in config.json, and `pipeline(..., trust_remote_code=True)` scores WFDB paths and `datasets.Dataset`
rows in an interpreter where this project (and wfdb) cannot be imported."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, pipeline

import modeling_supreme  # noqa: F401  (registers the task and Auto classes)
from modeling_supreme import ECGProcessor, SuPreMEConfig, SuPreMEModel

from conftest import REFUSE_PROJECT

REPO = Path(__file__).resolve().parents[1]
LABELS = ["atrial fibrillation", "sinus rhythm", "left bundle branch block"]


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """A 12-lead 100 Hz model (2 ViT layers, 1 fusion layer), saved with its processor."""
    torch.manual_seed(0)
    config = SuPreMEConfig(ecg_num_layers=2, fusion_num_layers=1, sampling_rate=100)
    model = SuPreMEModel(config)
    with torch.no_grad():  # spread the untrained scores so that comparisons can fail
        model.logit_head.weight.mul_(20.0)
    folder = tmp_path_factory.mktemp("small_checkpoint")
    model.save_pretrained(folder)
    ECGProcessor.from_config(config).save_pretrained(folder)
    return folder, trainable(model), sum(p.numel() for p in model.text_encoder.parameters())


def test_from_pretrained_keeps_the_text_encoder_frozen(small_checkpoint):
    folder, built_trainable, text_params = small_checkpoint
    assert text_params > 20_000_000 and built_trainable < 5_000_000  # the count tells frozen from not
    for loaded in (SuPreMEModel.from_pretrained(folder), AutoModel.from_pretrained(folder)):
        assert trainable(loaded) == built_trainable
        assert not any(p.requires_grad for p in loaded.text_encoder.parameters())
        loaded.train()
        assert not loaded.text_encoder.training and loaded.ecg_encoder.training
    model, info = SuPreMEModel.from_pretrained(folder, output_loading_info=True)
    assert trainable(model) == built_trainable and not info["missing_keys"]


def test_an_unfrozen_text_encoder_stays_trainable(small_checkpoint, tmp_path):
    folder, built_trainable, text_params = small_checkpoint
    model = SuPreMEModel.from_pretrained(folder, freeze_text_encoder=False)
    assert trainable(model) == built_trainable + text_params
    model.save_pretrained(tmp_path)
    assert trainable(SuPreMEModel.from_pretrained(tmp_path)) == built_trainable + text_params


def test_saved_checkpoint_names_its_pipeline(small_checkpoint, generated_records):
    folder, _, _ = small_checkpoint
    saved = json.loads((folder / "config.json").read_text())
    assert saved["custom_pipelines"] == {"zero-shot-ecg-classification": {
        "impl": "pipeline_supreme.ZeroShotECGClassificationPipeline", "pt": ["AutoModel"], "type": "multimodal"}}
    assert (folder / "pipeline_supreme.py").is_file()
    # With the package imported, the registered task and the custom_pipelines entry give the same class.
    clf = pipeline("zero-shot-ecg-classification", model=str(folder))
    assert type(clf).__module__ == "modeling_supreme.pipeline_supreme"
    assert {r["label"] for r in clf(generated_records["lr"][0], candidate_labels=LABELS)} == set(LABELS)


def test_a_dataset_is_scored_row_by_row_or_refused_with_what_to_pass(small_checkpoint, tmp_path):
    import datasets

    from datasets_scripts import load_ecg_dataset

    folder, _, _ = small_checkpoint
    clf = pipeline("zero-shot-ecg-classification", model=str(folder))
    splits = load_ecg_dataset("synthetic", num_records=12, seed=3, sampling_rate=100, cache_dir=str(tmp_path / "c"))
    test = splits["train"].select(range(5))
    rows = clf(test, candidate_labels=LABELS, batch_size=2)
    assert len(rows) == 5
    for index, result in enumerate(rows):
        row = test[index]
        single = clf({"signal": np.asarray(row["signal"]), "sampling_rate": row["sampling_rate"],
                      "lead_names": row["lead_names"]}, candidate_labels=LABELS)
        assert {r["label"]: r["score"] for r in result} == pytest.approx({r["label"]: r["score"] for r in single}, abs=1e-5)
    streamed = list(clf(test.with_format(None).to_iterable_dataset(), candidate_labels=LABELS, batch_size=2))  # lazily
    assert [[r["label"] for r in result] for result in streamed] == [[r["label"] for r in result] for result in rows]
    for got, want in zip(streamed, rows):
        assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], abs=1e-5)
    with pytest.raises(ValueError, match=r"pass one split, e.g. pipe\(dataset\['test'\]"):
        clf(splits, candidate_labels=LABELS)
    with pytest.raises(ValueError, match=r"lacks \['lead_names'\]"):
        clf(test.remove_columns("lead_names"), candidate_labels=LABELS)
    paths = datasets.Dataset.from_dict({"path": ["a"], "label": [0]})
    with pytest.raises(ValueError, match=r"pass the path column: pipe\(dataset\['path'\]"):
        clf(paths, candidate_labels=LABELS)


# -- a clean interpreter: neither this project nor wfdb importable ----------------------------------

CHILD = REFUSE_PROJECT + textwrap.dedent(
    """
    class RefuseWfdb(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == "wfdb":
                raise ImportError("wfdb is blocked in this test")

    sys.meta_path.insert(0, RefuseWfdb())
    import datasets
    from transformers import pipeline
    folder, request = sys.argv[1], json.loads(sys.argv[2])
    clf = pipeline("zero-shot-ecg-classification", model=folder, trust_remote_code=True)
    out = {"class": type(clf).__module__, "paths": [clf(p, candidate_labels=request["labels"]) for p in request["paths"]]}
    for name, disk in request["datasets"].items():
        out[name] = clf(datasets.load_from_disk(disk), candidate_labels=request["labels"], batch_size=3)
    try:
        clf(request["needs_wfdb"], candidate_labels=request["labels"])
    except Exception as error:
        out["needs_wfdb"] = f"{type(error).__name__}: {error}"
    out["project_modules"] = [m for m in sys.modules if m.split(".")[0] in PROJECT + ("wfdb",)]
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_pipeline_as_remote_code_in_a_clean_interpreter(small_checkpoint, generated_records, ptbxl_dir, cinc2021_dir,
                                                        tmp_path):
    from datasets_scripts import load_ecg_dataset
    from datasets_scripts.testing import write_wfdb_dat

    folder, _, _ = small_checkpoint
    paths = [str(generated_records["lr"][0]), str(generated_records["hr"][1]) + ".hea", str(generated_records["mat"][0]),
             str(ptbxl_dir / "records100/00000/00001_lr"), str(ptbxl_dir / "records500/00000/00002_hr"),
             str(cinc2021_dir / "E07500")]
    stored = {}
    for storage in ("float32", "int16"):
        split = load_ecg_dataset("synthetic", num_records=12, seed=3, sampling_rate=100, signal_storage=storage,
                                 cache_dir=str(tmp_path / "cache"))["train"].select(range(4))
        split.save_to_disk(str(tmp_path / storage))
        stored[storage] = split
    # Format 212 is not on the reader's own fast path: it needs wfdb, which the child lacks.
    fmt212 = write_wfdb_dat(tmp_path / "fmt212", "r212", generated_records["signals"][0][:, :1000], fs=100, fmt="212")
    request = {"labels": LABELS, "paths": paths, "datasets": {k: str(tmp_path / k) for k in stored},
               "needs_wfdb": str(fmt212)}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    run = subprocess.run([sys.executable, "-c", CHILD, str(folder), json.dumps(request)], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    child = json.loads(run.stdout.strip().splitlines()[-1])
    assert child["project_modules"] == [] and child["class"].startswith("transformers_modules.")

    local = pipeline("zero-shot-ecg-classification", model=str(folder))

    def scores(result):
        return {r["label"]: r["score"] for r in result}

    for path, result in zip(paths, child["paths"]):
        assert scores(result) == pytest.approx(scores(local(path, candidate_labels=LABELS)), abs=1e-5), path
    assert np.ptp([scores(r)["sinus rhythm"] for r in child["paths"]]) > 1e-3  # different records, different scores
    for storage, split in stored.items():
        expected = local(split, candidate_labels=LABELS)
        assert len(child[storage]) == len(split) == 4
        for got, want in zip(child[storage], expected):
            assert scores(got) == pytest.approx(scores(want), abs=1e-5)
    assert child["needs_wfdb"].startswith("RecordError") and "pip install wfdb" in child["needs_wfdb"]


# -- fine-tuning a loaded checkpoint with two processes -----------------------------------------------

FINETUNE = textwrap.dedent(
    """
    import hashlib, json, sys
    import torch
    from accelerate import Accelerator
    import modeling_supreme
    from modeling_supreme import ECGProcessor, SuPreMEModel

    accelerator = Accelerator()
    model = SuPreMEModel.from_pretrained(sys.argv[1]).train()
    processor = ECGProcessor.from_pretrained(sys.argv[1])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    text_before = {k: v.clone() for k, v in model.text_encoder.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    queries = processor.tokenize_queries(["sinus rhythm", "atrial fibrillation", "ST elevation"])
    generator = torch.Generator().manual_seed(accelerator.process_index)
    losses = []
    for step in range(3):
        signal = torch.randn(4, 12, 1000, generator=generator)
        labels = torch.randint(0, 2, (4, 3), generator=generator).float()
        out = model(input_values=signal, query_input_ids=queries["query_input_ids"],
                    query_attention_mask=queries["query_attention_mask"], labels=labels)
        accelerator.backward(out.loss)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(out.loss.item())
    unwrapped = accelerator.unwrap_model(model)
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in unwrapped.ecg_encoder.parameters())).hexdigest()
    text_same = all(torch.equal(text_before[k], v) for k, v in unwrapped.text_encoder.state_dict().items())
    # one file per process: two processes printing at once can interleave their lines
    with open(f"{sys.argv[2]}/rank{accelerator.process_index}.json", "w") as handle:
        json.dump({"rank": accelerator.process_index, "processes": accelerator.num_processes, "trainable": trainable,
                   "losses": losses, "ecg_sha": digest, "text_same": text_same}, handle)
    """
)


@pytest.mark.slow
def test_two_process_fine_tuning_of_a_loaded_checkpoint(small_checkpoint, tmp_path):
    folder, built_trainable, _ = small_checkpoint
    script = tmp_path / "finetune.py"
    script.write_text(FINETUNE)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               str(folder), str(tmp_path)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    results = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("rank*.json"))]
    assert sorted(r["rank"] for r in results) == [0, 1] and {r["processes"] for r in results} == {2}
    for result in results:
        assert result["trainable"] == built_trainable and result["text_same"]
        assert len(result["losses"]) == 3 and all(np.isfinite(result["losses"]))
    assert results[0]["ecg_sha"] == results[1]["ecg_sha"]  # DDP kept the two replicas identical
    assert results[0]["losses"] != results[1]["losses"]  # each process saw its own batches
