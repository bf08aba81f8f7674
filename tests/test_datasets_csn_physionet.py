"""CSN (generated tree in its exact layout) and PhysioNet/CinC 2021 (the 52 real records)."""

import csv
import json

import numpy as np
import pytest

from datasets_scripts import load_ecg_dataset, read_wfdb_record
from datasets_scripts.corpora.csn import Csn
from datasets_scripts.corpora.physionet2021 import Physionet2021, header_dx_codes
from datasets_scripts.testing import make_csn_tree
from processing.ecg.ecg_leads import STANDARD_12_LEADS

CSN_RECORDS = {
    f"JS{i:05d}": codes
    for i, codes in enumerate(
        [["426783006"], ["164889003", "59118001"], ["426177001"], ["427084000", "164934002"], ["164889003"],
         ["426783006", "270492004"], ["426177001", "164909002"], ["427084000"], ["164889003", "429622005"],
         ["426783006"], ["426177001"], ["427084000", "59118001"]] * 2,
        start=1,
    )
}


@pytest.fixture(scope="module")
def vocab():
    from processing.concepts.vocabulary import load_concept_vocabulary

    return load_concept_vocabulary()


@pytest.fixture(scope="module")
def csn_dir(tmp_path_factory):
    return make_csn_tree(tmp_path_factory.mktemp("csn"), CSN_RECORDS)


def test_csn_tree_labels_and_leads(csn_dir, tmp_path, vocab):
    assert (csn_dir / "WFDBRecords" / "01" / "010" / "JS00001.hea").is_file()
    ds = load_ecg_dataset("csn", data_dir=str(csn_dir), cache_dir=str(tmp_path))
    assert sum(len(v) for v in ds.values()) == 24
    assert len(ds["validation"]) >= 2 and len(ds["test"]) >= 2
    for split in ds.values():
        for rid, labels in zip(split["record_id"], split["labels"]):
            assert labels == [vocab.by_snomed_code(c).name for c in CSN_RECORDS[rid]]
    ex = ds["train"][0]
    assert ex["lead_names"] == list(STANDARD_12_LEADS) and ex["signal"].shape == (12, 5000)
    ref = read_wfdb_record(next(csn_dir.rglob(f"{ex['record_id']}.hea")))
    np.testing.assert_array_equal(ex["signal"], ref.signal)


def test_unmapped_code_is_a_clear_error(tmp_path):
    root = make_csn_tree(tmp_path / "csn", {"JS00001": ["426783006"], "JS00002": ["999999999", "426783006"]},
                         condition_names={"999999999": "made-up condition"})
    with pytest.raises(ValueError, match=r"snomed:999999999 \(1 record\(s\)\).*999999999=made-up condition"):
        load_ecg_dataset("csn", data_dir=str(root), cache_dir=str(tmp_path / "c"))
    ds = load_ecg_dataset("csn", data_dir=str(root), cache_dir=str(tmp_path / "c"), unmapped_codes="drop")
    assert sum(len(v) for v in ds.values()) == 2
    summary = json.loads(next((tmp_path / "c").rglob("ecg_summary.json")).read_text())
    assert summary["label_notes"]["unmapped_codes_dropped"] == {"snomed:999999999": 1}


def test_not_a_csn_folder(tmp_path):
    with pytest.raises(ValueError, match="not a CSN folder"):
        Csn(data_dir=str(tmp_path), cache_dir=str(tmp_path))


def test_physionet2021_real_records(cinc2021_dir, tmp_path, vocab):
    ds = load_ecg_dataset("physionet2021", data_dir=str(cinc2021_dir), cache_dir=str(tmp_path))
    assert sum(len(v) for v in ds.values()) == 52
    with open(cinc2021_dir / "labels.csv", newline="") as fh:
        truth = {r["record"]: r["dx_snomed"].split(",") for r in csv.DictReader(fh)}
    seen = 0
    for split in ds.values():
        for rid, labels in zip(split["record_id"], split["labels"]):
            expected = []
            for code in truth[rid]:
                name = vocab.by_snomed_code(code).name
                if name not in expected:
                    expected.append(name)
            assert labels == expected, rid
            seen += 1
    assert seen == 52
    assert header_dx_codes(str(cinc2021_dir / "JS00666.hea")) == ["427084000"]
    # the real Ningbo records with flat leads are reported in the summary, naming the record
    summary = json.loads(next(tmp_path.rglob("ecg_summary.json")).read_text())
    flat = {w["record_id"] for w in summary["warnings"] if "flat" in w["reason"]}
    assert flat == {"JS20004", "JS20008"}


def test_physionet2021_resampling(cinc2021_dir, tmp_path):
    ds = load_ecg_dataset("physionet2021", data_dir=str(cinc2021_dir), cache_dir=str(tmp_path), sampling_rate=250)
    ex = ds["train"][0]
    assert ex["sampling_rate"] == 250 and ex["signal"].shape == (12, 2500)
    ref = read_wfdb_record(cinc2021_dir / ex["record_id"])
    # a 2:1 polyphase decimation keeps the waveform (compare at the shared time points)
    assert np.corrcoef(ex["signal"][1], ref.signal[1, ::2])[0, 1] > 0.97


def test_physionet2021_split_is_reproducible(cinc2021_dir, tmp_path):
    a = [(e.record_id, e.split) for e in Physionet2021(data_dir=str(cinc2021_dir), cache_dir=str(tmp_path))._index()]
    b = [(e.record_id, e.split) for e in Physionet2021(data_dir=str(cinc2021_dir), cache_dir=str(tmp_path))._index()]
    assert a == b
    counts = {s: sum(1 for _, x in a if x == s) for s in ("train", "validation", "test")}
    assert counts["validation"] >= 3 and counts["test"] >= 3
