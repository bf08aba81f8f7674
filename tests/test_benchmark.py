"""MERL's six-set benchmark: the protocol file against MERL's split files, prompts for all 106 classes,
the CPSC2018 crop, missing records, and the four PTB-XL sets end to end on a small checkpoint.

The real-data tests read ``$SUPREME_SHARED_DATA/merl`` (MERL's split files and CKEPE prompts) and the
partial corpora beside it: 300 PTB-XL records, of which 42 are in MERL's PTB-XL test splits, and the
Challenge copies of Chapman/Ningbo records, none of which is in MERL's CSN test split.
"""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import load_example
from modeling_supreme.evaluation import EvaluationError
from modeling_supreme.evaluation.benchmark import benchmark_prompts
from modeling_supreme.evaluation.merl import (
    SET_NAMES, RecordLocator, load_protocol, present_rows, protocol_signal, read_split_file, split_dataset,
    substring_derived_positives,
)
from processing.concepts.vocabulary import load_concept_vocabulary

benchmark_script = load_example("benchmark")
EXPECTED_SIZES = {"ptbxl_super": 5, "ptbxl_sub": 23, "ptbxl_form": 19, "ptbxl_rhythm": 12, "cpsc2018": 9, "csn": 38}


@pytest.fixture(scope="module")
def merl_split_dir(shared_data) -> Path:
    path = shared_data / "merl" / "data_split"
    if not path.is_dir():
        pytest.skip(f"MERL's split files not found at {path}")
    return path


def _csv_header(path: Path):
    with open(path, newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle))


def test_protocol_has_the_six_sets_and_106_classes_each_mapped_to_its_concept():
    protocol = load_protocol()
    vocab = load_concept_vocabulary()
    assert list(protocol) == list(SET_NAMES)
    assert {name: len(s.classes) for name, s in protocol.items()} == EXPECTED_SIZES
    assert sum(EXPECTED_SIZES.values()) == 106
    lookups = {"scp": vocab.by_scp_code, "snomed": vocab.by_snomed_code, "ptbxl_class": vocab.by_ptbxl_class}
    for name, merl_set in protocol.items():
        concepts = [c.concept for c in merl_set.classes]
        assert len(set(concepts)) == len(concepts), f"{name}: two classes share a concept (identical prompts)"
        for merl_class in merl_set.classes:
            kind, code = merl_class.basis.split(":", 1)
            found = lookups[kind](code)
            assert found is not None and found.name == merl_class.concept, (name, merl_class)


def test_the_prompt_bank_covers_all_106_classes():
    prompts, source = benchmark_prompts(load_protocol(), "bank")
    assert sum(len(p) for p in prompts.values()) == 106
    assert all(texts and all(t.strip() for t in texts) for p in prompts.values() for texts in p.values())
    assert "prompt bank" in source
    # The two CSN ST codes that are easy to confuse get different concepts, hence different prompts.
    assert prompts["csn"]["STE"] != prompts["csn"]["STTU"]


def test_class_order_and_counts_equal_merls_csv_columns_for_all_six_sets(merl_split_dir):
    for name, merl_set in load_protocol().items():
        for split in ("train", "validation", "test"):
            path = merl_set.split_file(merl_split_dir, split)
            header = _csv_header(path)
            assert header[len(merl_set.leading_columns):] == merl_set.file_columns(split), (name, split)
            assert sorted(merl_set.file_columns(split)) == sorted(merl_set.codes)
            rows = read_split_file(merl_set, merl_split_dir, split)
            with open(path, encoding="utf-8") as handle:
                assert len(rows.references) == sum(1 for line in csv.reader(handle)) - 1
            assert rows.targets.shape == (len(rows.references), EXPECTED_SIZES[name])
            assert rows.targets.sum() > 0
            if split == "test":
                assert header[len(merl_set.leading_columns):] == merl_set.codes
    # MERL's sub train file orders ISC, AVB and RAO/RAE differently: read by name, its targets follow the
    # test file's order.
    sub = load_protocol()["ptbxl_sub"]
    assert sub.file_columns("train") != sub.codes
    rows = read_split_file(sub, merl_split_dir, "train")
    with open(sub.split_file(merl_split_dir, "train"), newline="", encoding="utf-8") as handle:
        index, row = next((i, r) for i, r in enumerate(csv.DictReader(handle)) if r["ISC"] != r["AVB"])
    assert [int(row[code]) for code in sub.codes] == rows.targets[index].tolist()


def test_ckepe_prompts_cover_every_class(merl_split_dir):
    prompts, source = benchmark_prompts(load_protocol(), "ckepe", merl_split_dir=merl_split_dir)
    assert "CKEPE_prompt.json" in source
    assert {name: len(p) for name, p in prompts.items()} == EXPECTED_SIZES
    with open(merl_split_dir.parent / "CKEPE_prompt.json", encoding="utf-8") as handle:
        ckepe = json.load(handle)
    assert prompts["csn"]["AF"] == [ckepe["AF"]]
    bank, _ = benchmark_prompts(load_protocol(), "bank")
    assert prompts["ptbxl_super"]["NORM"] != bank["ptbxl_super"]["NORM"]


def test_a_prompt_file_missing_classes_is_an_error_naming_them(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"HYP": "hypertrophy", "NORM": "normal"}))
    with pytest.raises(EvaluationError, match=r"'MI', 'CD', 'STTC'"):
        benchmark_prompts({"ptbxl_super": load_protocol()["ptbxl_super"]}, str(path))


def test_a_split_file_with_other_columns_is_refused(merl_split_dir, tmp_path):
    merl_set = load_protocol()["ptbxl_super"]
    source = merl_set.split_file(merl_split_dir, "test")
    lines = source.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    header[-1], header[-2] = header[-2], header[-1]  # STTC and CD swapped
    target = merl_set.split_file(tmp_path, "test")
    target.parent.mkdir(parents=True)
    target.write_text("\n".join([",".join(header)] + lines[1:3]) + "\n", encoding="utf-8")
    with pytest.raises(EvaluationError, match="another order"):
        read_split_file(merl_set, tmp_path, "test")


def test_the_cpsc2018_crop_keeps_2500_samples_and_zero_pads_to_5000():
    signal = np.random.default_rng(0).normal(size=(12, 7000)).astype(np.float32)
    cropped = protocol_signal("cpsc2018", signal, 500)
    assert cropped.shape == (12, 5000)
    np.testing.assert_array_equal(cropped[:, :2500], signal[:, :2500])
    assert not cropped[:, 2500:].any()
    np.testing.assert_array_equal(protocol_signal("cpsc2018", signal, 500, full_record=True), signal)
    np.testing.assert_array_equal(protocol_signal("ptbxl", signal, 500), signal[:, :5000])
    # In seconds at the record's own rate: 5 s kept of 10 s at 250 Hz.
    at_250 = protocol_signal("cpsc2018", signal, 250)
    assert at_250.shape == (12, 2500) and not at_250[:, 1250:].any()


def test_cpsc2018_records_are_read_as_merl_does_and_missing_ones_are_reported(merl_split_dir, tmp_path):
    """A Challenge-format record named like MERL's A0001, 12 s long, in a CPSC2018 folder; the split file
    lists it and one record that is not on disk."""
    from datasets_scripts.testing import example_signal, write_wfdb_mat
    from processing.ecg.wfdb_reader import read_wfdb_record

    merl_set = load_protocol()["cpsc2018"]
    corpus = tmp_path / "cpsc2018"
    write_wfdb_mat(corpus / "g1", "A0001", example_signal(3, seed=5, seconds=12.0))
    train = merl_set.split_file(merl_split_dir, "train").read_text(encoding="utf-8").splitlines()
    rows_a0001 = [line for line in train if ",A0001," in line]
    other = [line for line in train[1:] if ",A0001," not in line][:1]
    split = merl_set.split_file(tmp_path / "split", "test")
    split.parent.mkdir(parents=True)
    split.write_text("\n".join([train[0]] + rows_a0001 + other) + "\n", encoding="utf-8")

    rows = read_split_file(merl_set, tmp_path / "split", "test")
    found, coverage = present_rows(rows, RecordLocator("cpsc2018", corpus))
    missing_id = other[0].split(",")[2]
    assert (coverage.in_split_file, coverage.present, coverage.missing) == (2, 1, 1)
    assert coverage.missing_examples == [missing_id]
    dataset = split_dataset(merl_set, rows, found, tmp_path / "cache")
    row = dataset[0]
    original = read_wfdb_record(corpus / "g1" / "A0001").signal
    assert row["record_id"] == "A0001" and row["signal"].shape == (12, 5000)
    np.testing.assert_allclose(row["signal"][:, :2500], original[:, :2500])
    assert not row["signal"][:, 2500:].any()
    assert row["labels"] == [code for code, v in zip(merl_set.codes, rows.targets[0]) if v]
    full = split_dataset(merl_set, rows, found, tmp_path / "cache_full", full_record=True)
    assert full[0]["signal"].shape == (12, 6000)


def test_csn_substring_derived_labels_are_counted(merl_split_dir):
    merl_set = load_protocol()["csn"]
    rows = read_split_file(merl_set, merl_split_dir, "test")
    counts = substring_derived_positives(rows, merl_set.codes)
    # MERL's AF (atrial flutter) column is also set for AFIB records: substring matching.
    af = merl_set.codes.index("AF")
    afib_only = [i for i, d in enumerate(rows.diagnoses) if "AFIB" in d.split(",") and "AF" not in d.split(",")]
    assert afib_only and all(rows.targets[i, af] for i in afib_only)
    assert counts["AF"] >= len(afib_only)
    assert counts["SR"] == 0


@pytest.fixture(scope="module")
def benchmark_run(tiny_checkpoint, merl_split_dir, shared_data, tmp_path_factory):
    """The command line over the four PTB-XL sets and CSN (the Challenge copies: none in MERL's CSN test
    split), with the linear probe."""
    out = tmp_path_factory.mktemp("benchmark")
    code = benchmark_script.main([
        "--model", str(tiny_checkpoint), "--merl_split_dir", str(merl_split_dir),
        "--ptbxl_dir", str(shared_data / "ptbxl"), "--csn_dir", str(shared_data / "cinc2021"),
        "--output_dir", str(out), "--linear_probe", "--n_bootstrap", "50", "--no_progress", "--num_threads", "1",
    ])
    assert code == 0
    return out, json.loads((out / "benchmark.json").read_text(encoding="utf-8"))


def _present_test_records(merl_split_dir, ptbxl_dir, merl_set):
    path = merl_set.split_file(merl_split_dir, "test")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return len(rows), sum((ptbxl_dir / (row["filename_hr"] + ".hea")).is_file() for row in rows)


def test_the_four_ptbxl_sets_run_end_to_end(benchmark_run, merl_split_dir, shared_data):
    out, result = benchmark_run
    protocol = load_protocol()
    assert list(result["sets"]) == ["ptbxl_super", "ptbxl_sub", "ptbxl_form", "ptbxl_rhythm", "csn"]
    for name in ("ptbxl_super", "ptbxl_sub", "ptbxl_form", "ptbxl_rhythm"):
        entry = result["sets"][name]
        codes = _csv_header(protocol[name].split_file(merl_split_dir, "test"))[6:]
        assert entry["classes"] == codes and list(entry["per_class"]) == codes
        assert entry["num_classes"] == len(codes) == EXPECTED_SIZES[name]
        in_file, present = _present_test_records(merl_split_dir, shared_data / "ptbxl", protocol[name])
        assert entry["num_records"] == present > 0
        assert entry["records"] == {**entry["records"], "in_split_file": in_file, "present": present,
                                    "missing": in_file - present}
        low, high = entry["macro_auroc_ci95"]
        assert 0 <= low <= entry["macro_auroc"] <= high <= 1
        evaluated = [c["auroc"] for c in entry["per_class"].values() if c["evaluated"]]
        assert entry["num_classes_evaluated"] == len(evaluated) > 0
        assert entry["macro_auroc"] == pytest.approx(np.mean(evaluated))
        assert (out / f"roc_{name}.png").stat().st_size > 10_000
    assert result["average"] == pytest.approx(np.mean([result["sets"][n]["macro_auroc"] for n in result["average_over"]]))
    assert result["complete"] is False


def test_missing_records_are_counted_and_reported(benchmark_run):
    out, result = benchmark_run
    super_class = result["sets"]["ptbxl_super"]
    assert "318" in super_class["records"]["missing_examples"]  # ecg_id 318: beyond the 300 records on disk
    csn = result["sets"]["csn"]
    assert csn["macro_auroc"] is None and csn["num_records"] == 0
    assert csn["records"]["missing"] == csn["records"]["in_split_file"] == 4620
    assert not (out / "roc_csn.png").exists()
    markdown = (out / "benchmark.md").read_text(encoding="utf-8")
    assert "CSN: 4620 of 4620 missing" in markdown
    assert "| PTB-XL super | 5 (" in markdown and "| 42 (2158) |" in markdown
    assert "**75.2**" in markdown and "**77.20**" in markdown and "NOT the full protocol" in markdown


def test_the_linear_probe_uses_merls_train_fractions_and_val_split(benchmark_run):
    _, result = benchmark_run
    probe = result["sets"]["ptbxl_super"]["linear_probe"]
    fractions = probe["fractions"]
    assert [f["fraction"] for f in fractions] == [0.01, 0.1, 1.0]
    assert fractions[-1]["train_records"] == probe["records"]["train"]["present"]
    assert fractions[0]["train_records"] < fractions[1]["train_records"] < fractions[2]["train_records"]
    assert all("validation macro AUROC" in f["C_selection"] and f["macro_auroc"] is not None for f in fractions)
    # The Chapman/Ningbo copies are only in MERL's CSN train split: no probe, said so.
    assert "not_evaluated" in result["sets"]["csn"]["linear_probe"]


def test_bad_arguments_exit_with_a_message(tiny_checkpoint, shared_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        benchmark_script.main(["--model", str(tiny_checkpoint), "--merl_split_dir", str(tmp_path / "nowhere"),
                               "--ptbxl_dir", str(shared_data / "ptbxl"), "--output_dir", str(tmp_path / "out")])
    assert raised.value.code == 2
    assert "MERL split folder" in capsys.readouterr().err


def test_a_damaged_record_is_an_error_naming_it(merl_split_dir, ptbxl_dir, tmp_path):
    """A record that is on disk but cannot be read stops the run with its name (it is not 'missing')."""
    merl_set = load_protocol()["ptbxl_super"]
    folder = tmp_path / "ptbxl" / "records500" / "00000"
    folder.mkdir(parents=True)
    (folder / "00009_hr.hea").write_bytes((ptbxl_dir / "records500" / "00000" / "00009_hr.hea").read_bytes())
    (folder / "00009_hr.dat").write_bytes((ptbxl_dir / "records500" / "00000" / "00009_hr.dat").read_bytes()[:1000])
    rows = read_split_file(merl_set, merl_split_dir, "test")
    found, coverage = present_rows(rows, RecordLocator("ptbxl", tmp_path / "ptbxl"))
    assert coverage.present == 1 and coverage.missing == coverage.in_split_file - 1
    with pytest.raises(EvaluationError, match="00009_hr"):
        split_dataset(merl_set, rows, found, tmp_path / "cache", progress=False)


def test_benchmark_scores_equal_the_pipelines(tiny_checkpoint, merl_split_dir, ptbxl_dir, tmp_path):
    """The benchmark scores through the pipeline's path: same records, same prompts, same scores."""
    from transformers import pipeline

    from modeling_supreme.evaluation import load_checkpoint, zero_shot_scores

    model, processor = load_checkpoint(tiny_checkpoint)
    merl_set = load_protocol()["ptbxl_super"]
    rows = read_split_file(merl_set, merl_split_dir, "test")
    found, _ = present_rows(rows, RecordLocator("ptbxl", ptbxl_dir), max_records=6)
    dataset = split_dataset(merl_set, rows, found, tmp_path / "cache", progress=False)
    prompts, _ = benchmark_prompts({"ptbxl_super": merl_set}, "ckepe", merl_split_dir=merl_split_dir)
    prompts = prompts["ptbxl_super"]
    scores, _, _ = zero_shot_scores(model, processor, dataset, merl_set.codes, prompts, batch_size=4, progress=False)
    texts = [prompts[code][0] for code in merl_set.codes]
    classifier = pipeline("zero-shot-ecg-classification", model=model, processor=processor)
    records = [{"signal": r["signal"], "sampling_rate": int(r["sampling_rate"]), "lead_names": list(r["lead_names"])}
               for r in dataset]
    results = classifier(records, candidate_labels=texts, batch_size=4)
    from_pipeline = np.array([[{r["label"]: r["score"] for r in result}[t] for t in texts] for result in results])
    assert scores.std() > 0.01
    np.testing.assert_allclose(scores, from_pipeline, atol=1e-5)


def test_original_cpsc2018_files_and_the_csn_folder_layout_are_found(merl_split_dir, tmp_path):
    """CPSC2018 as distributed (A0001.mat with struct ECG, no header) and CSN's WFDBRecords tree."""
    from datasets_scripts.corpora.cpsc2018 import read_cpsc_mat
    from datasets_scripts.testing import make_cpsc2018_tree, make_csn_tree

    protocol = load_protocol()
    cpsc_root = make_cpsc2018_tree(tmp_path / "cpsc", {"A0001": [1]})
    cpsc_rows = read_split_file(protocol["cpsc2018"], merl_split_dir, "train")
    found, coverage = present_rows(cpsc_rows, RecordLocator("cpsc2018", cpsc_root))
    assert coverage.present == 1 and found[0][1] == "cpsc_mat"
    row = split_dataset(protocol["cpsc2018"], cpsc_rows, found, tmp_path / "c1", progress=False)[0]
    original = read_cpsc_mat(str(found[0][2]), "A0001")
    assert row["record_id"] == "A0001" and row["signal"].shape == (12, 5000)
    np.testing.assert_allclose(row["signal"][:, :2500], original[:, :2500], atol=1e-6)
    assert not row["signal"][:, 2500:].any()

    csn_root = make_csn_tree(tmp_path / "csn", {"JS00001": ["164889003"]})
    csn_rows = read_split_file(protocol["csn"], merl_split_dir, "train")
    found, coverage = present_rows(csn_rows, RecordLocator("csn", csn_root))
    assert coverage.present == 1 and found[0][2] == csn_root / "WFDBRecords" / "01" / "010" / "JS00001"
    row = split_dataset(protocol["csn"], csn_rows, found, tmp_path / "c2", progress=False)[0]
    assert row["record_id"] == "JS00001" and row["signal"].shape == (12, 5000)
    assert set(row["labels"]) == {"AF", "RBBB", "AFIB", "TWC"}  # MERL's row: AF from AFIB by substring


@pytest.mark.slow
def test_the_script_runs_as_a_command_with_ckepe_prompts(tiny_checkpoint, merl_split_dir, ptbxl_dir, tmp_path):
    import os
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "examples" / "benchmark.py"
    result = subprocess.run(
        [sys.executable, str(script), "--model", str(tiny_checkpoint), "--merl_split_dir", str(merl_split_dir),
         "--ptbxl_dir", str(ptbxl_dir), "--sets", "ptbxl_form", "--prompts", "ckepe", "--n_bootstrap", "20",
         "--no_progress", "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ptbxl_form: macro AUROC" in result.stdout and "NOT the full protocol" in result.stdout
    written = json.loads((tmp_path / "out" / "benchmark.json").read_text(encoding="utf-8"))
    assert list(written["sets"]) == ["ptbxl_form"] and "CKEPE" in written["run"]["prompt_source"]
    assert all(len(texts) == 1 for texts in written["sets"]["ptbxl_form"]["prompts"].values())
