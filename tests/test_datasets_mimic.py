"""MIMIC-IV-ECG builder on a generated tree: lead-order fix, NaN samples, reports, streaming, footprint."""

import numpy as np
import pytest

from datasets_scripts import iter_reports, load_ecg_dataset, read_wfdb_record
from datasets_scripts.corpora.mimic_iv_ecg import MimicIvEcg, join_machine_statements
from datasets_scripts.testing import MIMIC_LEAD_ORDER, example_signal, make_mimic_tree
from processing.ecg.ecg_leads import STANDARD_12_LEADS

STUDIES = [
    {"subject_id": 10000032, "study_id": 40689238, "reports": ["Sinus rhythm", "Possible right atrial abnormality",
                                                              "Borderline ECG"]},
    {"subject_id": 10000032, "study_id": 44458630, "reports": ["Sinus tachycardia", "with 1st degree A-V block", "",
                                                              "Abnormal ECG."]},
    {"subject_id": 10000117, "study_id": 45090959, "reports": ["Atrial fibrillation", "Low QRS voltages in limb leads"],
     "nan": [("aVF", 1000, 1100), ("V3", 0, 25)]},
    {"subject_id": 10000560, "study_id": 41234567, "reports": []},
] + [
    {"subject_id": 10001000 + i, "study_id": 42000000 + i, "reports": ["Sinus rhythm", "Normal ECG"]} for i in range(8)
]


@pytest.fixture(scope="module")
def mimic_dir(tmp_path_factory):
    return make_mimic_tree(tmp_path_factory.mktemp("mimic"), STUDIES)


def test_machine_statements_are_joined():
    assert join_machine_statements(["Sinus rhythm", "Possible right atrial abnormality", "Borderline ECG"]) == (
        "Sinus rhythm. Possible right atrial abnormality. Borderline ECG"
    )
    assert join_machine_statements(["Sinus tachycardia", "with 1st degree A-V block", "", None, "Abnormal ECG."]) == (
        "Sinus tachycardia with 1st degree A-V block. Abnormal ECG."
    )
    assert join_machine_statements(["", "nan"]) == ""


def test_reports_ids_and_text(mimic_dir):
    reports = dict(iter_reports("mimic_iv_ecg", str(mimic_dir)))
    assert len(reports) == 11  # the study without statements is skipped
    assert reports["44458630"] == "Sinus tachycardia with 1st degree A-V block. Abnormal ECG."
    assert dict(iter_reports("mimic_iv_ecg", str(mimic_dir), include_empty=True))["41234567"] == ""
    with pytest.raises(ValueError, match="not a MIMIC-IV-ECG folder: machine_measurements.csv"):
        list(iter_reports("mimic_iv_ecg", str(mimic_dir / "files")))


def test_lead_order_fix_nan_and_contract(mimic_dir, tmp_path):
    hea = next(mimic_dir.rglob("40689238.hea")).read_text()
    assert [ln.split()[-1] for ln in hea.splitlines()[1:13]] == list(MIMIC_LEAD_ORDER)
    ds = load_ecg_dataset("mimic_iv_ecg", data_dir=str(mimic_dir), cache_dir=str(tmp_path))
    rows = {}
    for split in ds.values():
        for i in range(len(split)):
            rows[split[i]["record_id"]] = split[i]
    assert len(rows) == 12
    ex = rows["40689238"]
    assert ex["patient_id"] == "10000032" and ex["labels"] == []
    assert ex["report"] == "Sinus rhythm. Possible right atrial abnormality. Borderline ECG"
    # stored in the standard order, resolved by name: the file's 5th lead (aVF) is row 5, its 6th (aVL) row 4
    assert ex["lead_names"] == list(STANDARD_12_LEADS)
    source = read_wfdb_record(next(mimic_dir.rglob("40689238.hea")))
    assert source.lead_names == list(MIMIC_LEAD_ORDER)
    np.testing.assert_array_equal(ex["signal"][STANDARD_12_LEADS.index("aVL")], source.signal[5])
    np.testing.assert_array_equal(ex["signal"][STANDARD_12_LEADS.index("aVF")], source.signal[4])
    # and they are really aVL and aVF of the generating signal (gain 200/mV: 5 microvolt steps)
    truth = example_signal(0, seed=11)
    np.testing.assert_allclose(ex["signal"], truth, atol=0.0026)
    # NaN samples: interpolated, counted in the summary
    nan_ex = rows["45090959"]
    assert np.isfinite(nan_ex["signal"]).all()
    avf = nan_ex["signal"][STANDARD_12_LEADS.index("aVF")]
    np.testing.assert_allclose(avf[1000:1100], np.linspace(avf[999], avf[1100], 102)[1:-1], atol=0.006)
    import json

    summary = json.loads(next(tmp_path.rglob("ecg_summary.json")).read_text())
    assert [w["record_id"] for w in summary["warnings"]] == ["45090959"]
    assert "125 missing (NaN) samples in lead(s) aVF, V3, interpolated" in summary["warnings"][0]["reason"]


def test_patient_level_split(mimic_dir, tmp_path):
    entries = MimicIvEcg(data_dir=str(mimic_dir), cache_dir=str(tmp_path), validation_fraction=0.3,
                         test_fraction=0.3)._index()
    by_patient = {}
    for e in entries:
        by_patient.setdefault(e.patient_id, set()).add(e.split)
    assert all(len(s) == 1 for s in by_patient.values())
    assert {e.split for e in entries} == {"train", "validation", "test"}


def test_streaming(mimic_dir):
    ds = load_ecg_dataset("mimic_iv_ecg", data_dir=str(mimic_dir), streaming=True, validation_fraction=0.0,
                          test_fraction=0.0)
    seen = list(ds["train"])
    assert len(seen) == 12
    assert all(ex["signal"].dtype == np.float32 and ex["signal"].shape == (12, 5000) for ex in seen)
    assert seen[0]["lead_names"] == list(STANDARD_12_LEADS)


def test_footprint_float32_and_compact_int16(mimic_dir, tmp_path):
    source = sum(p.stat().st_size for p in (mimic_dir / "files").rglob("*") if p.is_file())
    source += sum((mimic_dir / f).stat().st_size for f in ("record_list.csv", "machine_measurements.csv"))
    default = load_ecg_dataset("mimic_iv_ecg", data_dir=str(mimic_dir), cache_dir=str(tmp_path / "f32"))
    compact = load_ecg_dataset("mimic_iv_ecg", data_dir=str(mimic_dir), cache_dir=str(tmp_path / "i16"),
                               signal_storage="int16")
    f32 = sum(p.stat().st_size for p in (tmp_path / "f32").rglob("*.arrow"))
    i16 = sum(p.stat().st_size for p in (tmp_path / "i16").rglob("*.arrow"))
    assert 1.8 * source <= f32 <= 2.1 * source, (f32, source)  # 4 bytes a sample against WFDB's 2
    assert i16 <= 1.2 * source, (i16, source)  # the compact option stays at the WFDB size
    # and gives exactly the same millivolts through the one-line conversion
    a, b = default["train"][:], compact["train"][:]
    np.testing.assert_array_equal(a["signal"], (b["signal_int16"] / b["signal_gain"][:, :, None]).astype(np.float32))


# An entirely missing lead cannot be left out of a leads x samples array: the builder stores it as 0 mV and
# names it in missing_leads, so that every reader of the dataset marks it absent rather than recorded and flat.
DEAD_LEAD_STUDIES = [
    {"subject_id": 10002000, "study_id": 43000001, "reports": ["Sinus rhythm"], "nan": [("aVL", 0, 5000)]},
] + [{"subject_id": 10002001 + i, "study_id": 43000002 + i, "reports": ["Sinus rhythm"]} for i in range(5)]


@pytest.fixture(scope="module")
def dead_lead_dir(tmp_path_factory):
    return make_mimic_tree(tmp_path_factory.mktemp("mimic_dead_lead"), DEAD_LEAD_STUDIES)


def _rows_by_id(ds):
    return {row["record_id"]: row for split in ds.values() for row in split.with_format(None)}


@pytest.mark.parametrize("storage", ["float32", "int16"])
def test_an_entirely_missing_lead_is_absent_in_every_reader(dead_lead_dir, tmp_path, storage):
    import datasets
    import torch

    from modeling_supreme import ECGProcessor, SuPreMEConfig
    from modeling_supreme.training.data import PretrainingDataset
    from processing.ecg.data_collator import ECGDataCollator

    ds = load_ecg_dataset("mimic_iv_ecg", data_dir=str(dead_lead_dir), cache_dir=str(tmp_path / "c"),
                          validation_fraction=0.0, test_fraction=0.0, signal_storage=storage, output=None)
    rows = _rows_by_id(ds)
    assert rows["43000001"]["missing_leads"] == ["aVL"]
    assert all(rows[rid]["missing_leads"] == [] for rid in rows if rid != "43000001")
    avl = STANDARD_12_LEADS.index("aVL")
    collate = ECGDataCollator(ECGProcessor.from_config(SuPreMEConfig()), label_column=None, return_tensors="np")
    train = ds["train"]
    dead = train["record_id"].index("43000001")
    batch = collate(train[:])
    assert batch["lead_mask"][dead].tolist() == [lead != "aVL" for lead in STANDARD_12_LEADS]
    assert batch["lead_mask"][[i for i in range(len(train)) if i != dead]].all()
    assert np.all(batch["input_values"][dead, avl] == 0)
    # the column survives Parquet and is read back by the collator the same way
    parquet = tmp_path / "train.parquet"
    train.to_parquet(str(parquet))
    again = datasets.Dataset.from_parquet(str(parquet))
    assert again[dead]["missing_leads"] == ["aVL"]
    np.testing.assert_array_equal(collate(again[:])["lead_mask"], batch["lead_mask"])
    # pre-training rows (lead-subset augmentation on every row) keep aVL absent whenever it is shown
    targets = np.zeros((len(train), 1), dtype=np.float32)
    pretraining = PretrainingDataset(train, list(range(len(train))), targets, seed=0, lead_subset_prob=1.0)
    seen = 0
    for epoch in range(12):
        pretraining.set_epoch(epoch)
        item = pretraining.__getitems__([dead])[0]
        assert set(item["missing_leads"]) <= {"aVL"} and set(item["missing_leads"]) <= set(item["lead_names"])
        out = collate([item])
        assert not out["lead_mask"][0, avl]
        seen += "aVL" in item["lead_names"]
    assert seen  # the subset did include aVL in some epochs
    assert isinstance(torch.as_tensor(out["lead_mask"]), torch.Tensor)


def test_pipeline_scores_a_dataset_row_with_a_missing_lead_like_its_file(dead_lead_dir, tmp_path, tiny_checkpoint):
    import modeling_supreme  # noqa: F401  (registers the task)
    from transformers import pipeline

    ds = load_ecg_dataset("mimic_iv_ecg", data_dir=str(dead_lead_dir), cache_dir=str(tmp_path / "c"),
                          validation_fraction=0.0, test_fraction=0.0, output=None)
    train = ds["train"]
    row = train.select([train["record_id"].index("43000001")])
    classifier = pipeline("zero-shot-ecg-classification", model=str(tiny_checkpoint))
    labels = ["sinus rhythm", "atrial fibrillation", "left bundle branch block"]
    from_row = classifier(row, candidate_labels=labels)[0]
    from_file = classifier(str(next(dead_lead_dir.rglob("43000001.hea"))), candidate_labels=labels)
    by_label = lambda out: {entry["label"]: entry["score"] for entry in out}  # noqa: E731
    for label, score in by_label(from_file).items():
        assert abs(by_label(from_row)[label] - score) < 1e-5
    # without the column, the stored zeros would be taken as a recorded flat aVL and score differently
    flat = classifier(row.remove_columns("missing_leads"), candidate_labels=labels)[0]
    assert max(abs(by_label(flat)[k] - v) for k, v in by_label(from_file).items()) > 1e-4
