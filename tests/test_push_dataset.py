"""examples/push_dataset.py: a built corpus goes to a (loopback) Hub as Parquet shards with a dataset card,
and what was pushed reloads with plain `datasets` where this project cannot be imported."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from datasets_scripts import class_names_of, load_ecg_dataset

from test_datasets_native import expected_rows, read_in_clean_interpreter

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "push_dataset.py"


def push(args, endpoint=None, expect_ok=True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if endpoint:
        # HF_ENDPOINT is read when huggingface_hub is imported: hence a fresh process per push.
        env.update({"HF_ENDPOINT": endpoint, "HF_TOKEN": "hf_loopback_test_token", "HF_HUB_OFFLINE": "0",
                    "HF_HUB_DISABLE_TELEMETRY": "1"})
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600,
                            cwd=REPO)
    if expect_ok:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def card_metadata(text: str) -> dict:
    return yaml.safe_load(text.split("---")[1])


@pytest.mark.slow
def test_push_sends_parquet_and_a_card_that_reload_without_the_package(ptbxl_dir, hub_stand_in, tmp_path):
    endpoint, hub = hub_stand_in
    cache = str(tmp_path / "cache")
    corpus = ["--dataset", "ptbxl", "--dataset_config", "super", "--data_dir", str(ptbxl_dir), "--sampling_rate", "100",
              "--cache_dir", cache]
    out = push(["--repo_id", "ecg-lab/ptbxl-super", "--private", "--max_shard_size", "4MB", *corpus], endpoint)
    assert "pushed ptbxl to ecg-lab/ptbxl-super" in out.stdout
    assert hub.created[0]["name"] == "ecg-lab/ptbxl-super".split("/")[1] and hub.created[0]["type"] == "dataset"
    assert hub.created[0]["visibility"] == "private"
    assert len(hub.commits) == 1  # card and shards in one commit
    files = sorted(hub.received)
    train_shards = [f for f in files if f.startswith("super/train-")]
    assert len(train_shards) == 3 and train_shards[0] == "super/train-00000-of-00003.parquet"
    assert "super/validation-00000-of-00001.parquet" in files and "super/test-00000-of-00001.parquet" in files

    built = load_ecg_dataset("ptbxl", "super", data_dir=str(ptbxl_dir), sampling_rate=100, cache_dir=cache, output=None)
    card = hub.received["README.md"].decode()
    meta = card_metadata(card)
    assert meta["license"] == "cc-by-4.0" and "ecg" in meta["tags"]
    assert meta["configs"] == [{"config_name": "super", "data_files": [
        {"split": "train", "path": "super/train-*"}, {"split": "validation", "path": "super/validation-*"},
        {"split": "test", "path": "super/test-*"}], "default": True}]
    info = meta["dataset_info"]
    assert [f["name"] for f in info["features"]] == list(built["train"].features)
    assert {s["name"]: s["num_examples"] for s in info["splits"]} == {k: len(v) for k, v in built.items()}
    label_feature = next(f for f in info["features"] if f["name"] == "label_ids")
    assert list(label_feature["list"]["class_label"]["names"].values()) == class_names_of(built["train"].features)
    from datasets_scripts.corpora.ptbxl import Ptbxl

    builder = Ptbxl(config_name="super", data_dir=str(ptbxl_dir), sampling_rate=100, cache_dir=cache)
    assert builder.config.source_fingerprint in card and "Wagner P. et al." in card and "not for clinical use" in card
    assert 'load_dataset("ecg-lab/ptbxl-super")' in card

    # what the Hub received, read back in an interpreter where the project cannot be imported
    pushed = tmp_path / "pushed"
    for name, data in hub.received.items():
        (pushed / name).parent.mkdir(parents=True, exist_ok=True)
        (pushed / name).write_bytes(data)
    spec = {"ptbxl": {"files": [str(pushed / f) for f in train_shards],
                      "expected": expected_rows(built["train"], tmp_path / "ptbxl.npz")}}
    report = read_in_clean_interpreter(spec, tmp_path)["ptbxl"]
    assert report["rows"] == len(built["train"]) and report["class_names"] == class_names_of(built["train"].features)
    assert report["dtype"] == "float32" and report["shape"] == [12, 1000] and report["max_difference"] == 0.0
    assert report["batch_shape"] == [4, 12, 1000] and report["multi_hot_sum_equals_labels"]

    # a re-push with other shard sizes replaces the configuration's shards: no stale shard stays behind
    push(["--repo_id", "ecg-lab/ptbxl-super", *corpus], endpoint)
    assert sorted(hub.commits[-1]["deleted"]) == train_shards
    assert sorted(f for f in hub.received if f.startswith("super/train-")) == ["super/train-00000-of-00001.parquet"]
    # another configuration in the same repository is refused (the card describes one)
    other = push(["--repo_id", "ecg-lab/ptbxl-super", *[a if a != "super" else "rhythm" for a in corpus]], endpoint,
                 expect_ok=False)
    assert other.returncode != 0 and "already holds the configuration folder(s) ['super']" in other.stderr
    assert len(hub.commits) == 2


@pytest.mark.slow
def test_export_only_and_bad_arguments(cinc2021_dir, tmp_path):
    out = tmp_path / "export"
    push(["--dataset", "physionet2021", "--data_dir", str(cinc2021_dir), "--cache_dir", str(tmp_path / "c"),
          "--dataset_arg", "signal_storage=int16", "--output_dir", str(out)])
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == ["README.md", "data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet",
                     "data/validation-00000-of-00001.parquet"]
    card = (out / "README.md").read_text()
    assert card_metadata(card)["license"] == "cc-by-4.0" and "signal_int16" in card and "signal_gain" in card
    import datasets

    back = datasets.load_dataset("parquet", data_files=str(out / "data" / "train-*.parquet"), split="train",
                                 cache_dir=str(tmp_path / "hf"))
    row = back.with_format("numpy")[0]
    signal = (row["signal_int16"] / row["signal_gain"][:, None]).astype(np.float32)  # the card's one-liner
    built = load_ecg_dataset("physionet2021", data_dir=str(cinc2021_dir), cache_dir=str(tmp_path / "c"))
    by_id = {rid: i for i, rid in enumerate(built["train"]["record_id"])}
    np.testing.assert_array_equal(signal, built["train"][by_id[row["record_id"]]]["signal"])
    # an existing folder is never overwritten; no destination at all is an error
    again = push(["--dataset", "synthetic", "--dataset_arg", "num_records=10", "--output_dir", str(out)], expect_ok=False)
    assert "exists and is not an empty folder" in again.stderr
    none = push(["--dataset", "synthetic"], expect_ok=False)
    assert "give --repo_id to push, or --output_dir" in none.stderr
