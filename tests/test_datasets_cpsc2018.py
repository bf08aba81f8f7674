"""CPSC2018 builder on a generated fixture in the original layout (struct ECG .mat + REFERENCE.csv)."""

import csv
import json
import os

import numpy as np
import pytest

from datasets_scripts import RecordError, load_ecg_dataset
from datasets_scripts.corpora.cpsc2018 import CPSC_CLASSES, Cpsc2018, read_cpsc_mat
from datasets_scripts.testing import make_cpsc2018_tree


def _records():
    # 40 records: every class, some with two or three labels
    out = {}
    for i in range(40):
        first = i % 9 + 1
        labels = [first]
        if i % 5 == 0:
            labels.append((first % 9) + 1)
        if i % 11 == 0:
            labels.append(((first + 3) % 9) + 1)
        out[f"A{i + 1:04d}"] = labels
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_cpsc2018_tree(tmp_path_factory.mktemp("cpsc"), _records())


@pytest.fixture(scope="module")
def vocab():
    from processing.concepts.vocabulary import load_concept_vocabulary

    return load_concept_vocabulary()


def test_labels_split_and_signal(corpus, tmp_path, vocab):
    ds = load_ecg_dataset("cpsc2018", data_dir=str(corpus), cache_dir=str(tmp_path))
    sizes = {k: len(v) for k, v in ds.items()}
    assert sum(sizes.values()) == 40 and sizes["validation"] >= 3 and sizes["test"] >= 3
    rows = {}
    for split in ds.values():
        batch = split[:]  # the decoded signal is not a stored column: read it through rows or slices
        rows.update({r: (labs, sig) for r, labs, sig in zip(batch["record_id"], batch["labels"], batch["signal"])})
    names = {n: vocab.by_scp_code(scp).name for n, (_, scp) in CPSC_CLASSES.items()}
    for record, numbers in _records().items():
        assert rows[record][0] == [names[n] for n in numbers]
    # signal: the .mat data (mV, 1 microvolt resolution) exactly, 500 Hz, lengths 6-14 s
    data = read_cpsc_mat(os.path.join(corpus, "TrainingSet", "A0001.mat"), "A0001")
    np.testing.assert_allclose(rows["A0001"][1], data, atol=1e-6)
    lengths = {sig.shape[1] for _, sig in rows.values()}
    assert len(lengths) > 1 and all(3000 <= n <= 7000 for n in lengths)


def test_split_is_deterministic_and_stratified(corpus, tmp_path):
    a = Cpsc2018(data_dir=str(corpus), cache_dir=str(tmp_path))._index()
    b = Cpsc2018(data_dir=str(corpus), cache_dir=str(tmp_path), validation_fraction=0.1, test_fraction=0.1)._index()
    assert [(e.record_id, e.split) for e in a] == [(e.record_id, e.split) for e in b]
    # every class that has at least 4 records appears in train and in at least one held-out split
    for name in {lab for e in a for lab in e.labels}:
        splits = [e.split for e in a if name in e.labels]
        if len(splits) >= 4:
            assert "train" in splits and ({"validation", "test"} & set(splits)), name


def test_split_file(corpus, tmp_path):
    split_file = tmp_path / "split.csv"
    with open(split_file, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["record_id", "split"])
        for i in range(1, 21):
            w.writerow([f"A{i:04d}", "train" if i <= 14 else "val" if i <= 17 else "test"])
    ds = load_ecg_dataset("cpsc2018", data_dir=str(corpus), cache_dir=str(tmp_path / "c"), split_file=str(split_file))
    assert {k: len(v) for k, v in ds.items()} == {"train": 14, "validation": 3, "test": 3}
    assert ds["test"]["record_id"] == ["A0018", "A0019", "A0020"]
    bad = tmp_path / "bad.csv"
    bad.write_text("record,fold\nA0001,1\n")
    with pytest.raises(ValueError, match="needs the columns record_id and split"):
        load_ecg_dataset("cpsc2018", data_dir=str(corpus), cache_dir=str(tmp_path / "c"), split_file=str(bad))


def test_damaged_mat_raise_or_skip(corpus, tmp_path_factory):
    import shutil

    root = tmp_path_factory.mktemp("cpsc_bad")
    shutil.copytree(corpus, root, dirs_exist_ok=True)
    mat = root / "TrainingSet" / "A0007.mat"
    mat.write_bytes(mat.read_bytes()[:300])  # truncated
    (root / "TrainingSet" / "A0009.mat").unlink()  # listed in REFERENCE.csv, file missing
    cache = tmp_path_factory.mktemp("cpsc_bad_cache")
    with pytest.raises(RecordError, match="A0007"):
        load_ecg_dataset("cpsc2018", data_dir=str(root), cache_dir=str(cache))
    ds = load_ecg_dataset("cpsc2018", data_dir=str(root), cache_dir=str(cache), on_error="skip")
    ids = {r for split in ds.values() for r in split["record_id"]}
    assert len(ids) == 38 and "A0007" not in ids and "A0009" not in ids
    summaries = list(cache.rglob("ecg_summary.json"))
    assert len(summaries) == 1
    summary = json.loads(summaries[0].read_text())
    assert summary["num_skipped"] == 2
    reasons = {s["record_id"]: s["reason"] for s in summary["skipped"]}
    assert "unreadable .mat file" in reasons["A0007"] and "not found" in reasons["A0009"]
    skipped_csv = summaries[0].parent / "skipped_records.csv"
    assert skipped_csv.read_text().count("\n") == 3


def test_not_a_cpsc_folder(tmp_path):
    with pytest.raises(ValueError, match="not a CPSC2018 folder"):
        Cpsc2018(data_dir=str(tmp_path), cache_dir=str(tmp_path))
