"""PTB-XL builder on the 300 real records: label derivation, class lists, splits, rates, cache key."""

import csv
import os
import shutil

import numpy as np
import pytest

from datasets_scripts import iter_reports, load_ecg_dataset, read_wfdb_record
from datasets_scripts.corpora.ptbxl import Ptbxl, class_codes, label_codes, read_ptbxl_database, read_scp_statements
from processing.ecg.ecg_leads import STANDARD_12_LEADS


@pytest.fixture(scope="module")
def vocab():
    from processing.concepts.vocabulary import load_concept_vocabulary

    return load_concept_vocabulary()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf_cache"))


@pytest.fixture(scope="module")
def statements(ptbxl_dir):
    return read_scp_statements(ptbxl_dir)


@pytest.fixture(scope="module")
def rows(ptbxl_dir):
    return {r.ecg_id: r for r in read_ptbxl_database(ptbxl_dir)}


def test_database_parsing(rows):
    assert len(rows) == 300
    r = rows["1"]
    assert r.patient_id == "15709"  # stored as 15709.0 in the csv
    assert r.scp_codes == {"NORM": 100.0, "LVOLT": 0.0, "SR": 0.0}
    assert r.report == "sinusrhythmus periphere niederspannung"
    assert r.filename_hr == "records500/00000/00001_hr"


def test_class_lists_have_the_benchmark_sizes(statements):
    sizes = {s: len(class_codes(statements, s)) for s in ("super", "sub", "form", "rhythm", "all")}
    assert sizes == {"super": 5, "sub": 23, "form": 19, "rhythm": 12, "all": 71}
    assert [c for _, c in class_codes(statements, "super")] == ["CD", "HYP", "MI", "NORM", "STTC"]


def test_label_derivation_uses_every_listed_code(statements, rows):
    # every statement counts whatever its likelihood (0 = not given), as in the PTB-XL benchmark
    assert label_codes(rows["1"].scp_codes, statements, "super") == [("ptbxl_class", "NORM")]
    assert label_codes(rows["1"].scp_codes, statements, "form") == [("scp", "LVOLT")]
    assert label_codes(rows["1"].scp_codes, statements, "rhythm") == [("scp", "SR")]
    assert label_codes(rows["1"].scp_codes, statements, "all") == [("scp", "NORM"), ("scp", "LVOLT"), ("scp", "SR")]
    # ecg 39: IMI (MI), LNGQT/NST_/DIG (STTC); ABQRS form only; SR rhythm
    r39 = rows["39"].scp_codes
    assert {c for _, c in label_codes(r39, statements, "super")} == {"MI", "STTC"}
    assert {c for _, c in label_codes(r39, statements, "sub")} == {"IMI", "STTC", "NST_"}
    assert {c for _, c in label_codes(r39, statements, "form")} == {"LNGQT", "NST_", "DIG", "ABQRS"}
    # ecg 263: NST_ at likelihood 0 still counts
    assert ("ptbxl_class", "STTC") in label_codes(rows["263"].scp_codes, statements, "super")
    # a record with no rhythm statement has no rhythm label (and is left out of that config)
    assert label_codes(rows["8"].scp_codes, statements, "form") == [("scp", "ABQRS")]


def test_builder_labels_are_concept_names(ptbxl_dir, cache, vocab):
    ds = load_ecg_dataset("ptbxl", "super", data_dir=str(ptbxl_dir), cache_dir=cache)
    sizes = {k: len(v) for k, v in ds.items()}
    # 292 of 300 records have a diagnostic statement; strat_fold 1-8 / 9 / 10
    assert sizes == {"train": 200, "validation": 50, "test": 42}
    by_id = {r: labs for r, labs in zip(ds["train"]["record_id"], ds["train"]["labels"])}
    assert by_id["1"] == [vocab.by_ptbxl_class("NORM").name]
    allowed = {vocab.by_ptbxl_class(c).name for c in ("NORM", "MI", "STTC", "CD", "HYP")}
    for split in ds.values():
        for labs in split["labels"]:
            assert labs and set(labs) <= allowed
    val = {r: labs for r, labs in zip(ds["validation"]["record_id"], ds["validation"]["labels"])}
    assert set(val["8"]) == {vocab.by_ptbxl_class("MI").name}


@pytest.mark.parametrize("config,expected", [
    ("sub", {"train": 200, "validation": 50, "test": 42}),
    ("form", {"train": 40, "validation": 20, "test": 8}),
    ("rhythm", {"train": 192, "validation": 55, "test": 41}),
    ("reports", {"train": 200, "validation": 58, "test": 42}),
])
def test_split_sizes_per_label_set(ptbxl_dir, cache, config, expected):
    ds = load_ecg_dataset("ptbxl", config, data_dir=str(ptbxl_dir), cache_dir=cache, sampling_rate=100)
    assert {k: len(v) for k, v in ds.items()} == expected


def test_class_names_for_zero_shot(ptbxl_dir, cache, vocab):
    for config, n in (("super", 5), ("sub", 23), ("form", 19), ("rhythm", 12)):
        names = Ptbxl(config_name=config, data_dir=str(ptbxl_dir), cache_dir=cache).class_names()
        assert len(names) == n, (config, names)
    rhythm = Ptbxl(config_name="rhythm", data_dir=str(ptbxl_dir), cache_dir=cache).class_names()
    assert vocab.by_scp_code("AFIB").name in rhythm


def test_examples_follow_the_data_contract(ptbxl_dir, cache):
    ds = load_ecg_dataset("ptbxl", "super", data_dir=str(ptbxl_dir), cache_dir=cache)
    ex = ds["train"][0]
    assert set(ex) == {"record_id", "patient_id", "signal", "lead_names", "missing_leads", "sampling_rate", "report", "labels",
                       "label_ids", "multi_hot"}
    assert ex["signal"].dtype == np.float32 and ex["signal"].shape == (12, 5000)
    assert ex["missing_leads"] == []  # every PTB-XL lead is recorded
    assert ex["lead_names"] == list(STANDARD_12_LEADS) and ex["sampling_rate"] == 500
    # decoded values equal the reader's (and so wfdb's) float32 millivolts
    ref = read_wfdb_record(ptbxl_dir / "records500" / "00000" / f"{int(ex['record_id']):05d}_hr")
    np.testing.assert_array_equal(ex["signal"], ref.signal)
    torch_ds = load_ecg_dataset("ptbxl", "super", data_dir=str(ptbxl_dir), cache_dir=cache, output="torch")
    batch = torch_ds["validation"][:16]
    assert tuple(batch["signal"].shape) == (16, 12, 5000) and str(batch["signal"].dtype) == "torch.float32"


def test_100_hz_records(ptbxl_dir, cache):
    ds = load_ecg_dataset("ptbxl", "super", data_dir=str(ptbxl_dir), cache_dir=cache, sampling_rate=100)
    ex = ds["test"][0]
    assert ex["sampling_rate"] == 100 and ex["signal"].shape == (12, 1000)


def test_report_ids_join_the_dataset(ptbxl_dir, cache):
    reports = dict(iter_reports("ptbxl", str(ptbxl_dir)))
    assert len(reports) == 300 and reports["1"] == "sinusrhythmus periphere niederspannung"
    ds = load_ecg_dataset("ptbxl", "reports", data_dir=str(ptbxl_dir), cache_dir=cache, sampling_rate=100)
    for split in ds.values():
        for rid, rep in zip(split["record_id"], split["report"]):
            assert reports[rid] == rep
    with pytest.raises(ValueError, match="not a PTB-XL folder"):
        list(iter_reports("ptbxl", str(ptbxl_dir / "records100")))


def _ptbxl_copy(src, dst):
    """PTB-XL metadata copied (to be edited), record folders linked."""
    os.makedirs(dst)
    for name in ("ptbxl_database.csv", "scp_statements.csv"):
        shutil.copy(src / name, dst / name)
    for folder in ("records100", "records500"):
        os.symlink(src / folder, dst / folder)
    return dst


def test_edited_metadata_invalidates_the_cache(ptbxl_dir, tmp_path, vocab):
    data = _ptbxl_copy(ptbxl_dir, tmp_path / "ptbxl")
    cache = str(tmp_path / "cache")
    first = load_ecg_dataset("ptbxl", "super", data_dir=str(data), cache_dir=cache, sampling_rate=100)
    again = Ptbxl(config_name="super", data_dir=str(data), cache_dir=cache, sampling_rate=100)
    fp1 = again.config.source_fingerprint
    # record 1 becomes a myocardial infarction; ecg 2 moves to the test fold
    path = data / "ptbxl_database.csv"
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields, table = reader.fieldnames, list(reader)
    table[0]["scp_codes"] = "{'IMI': 100.0, 'SR': 0.0}"
    table[1]["strat_fold"] = "10"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(table)
    edited = Ptbxl(config_name="super", data_dir=str(data), cache_dir=cache, sampling_rate=100)
    assert edited.config.source_fingerprint != fp1
    second = load_ecg_dataset("ptbxl", "super", data_dir=str(data), cache_dir=cache, sampling_rate=100)
    labels = dict(zip(second["train"]["record_id"], second["train"]["labels"]))
    assert labels["1"] == [vocab.by_ptbxl_class("MI").name]
    assert "2" in second["test"]["record_id"] and "2" not in second["train"]["record_id"]
    assert len(second["test"]) == len(first["test"]) + 1


def test_wrong_data_dir_and_config(ptbxl_dir, cinc2021_dir, cache):
    with pytest.raises(ValueError, match="not a PTB-XL folder"):
        Ptbxl(config_name="super", data_dir=str(cinc2021_dir), cache_dir=cache)
    with pytest.raises(ValueError, match="BuilderConfig 'diagnostic' not found"):
        Ptbxl(config_name="diagnostic", data_dir=str(ptbxl_dir), cache_dir=cache)
    with pytest.raises(ValueError, match="needs data_dir"):
        Ptbxl(config_name="super", cache_dir=cache)
