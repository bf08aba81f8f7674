"""Every column is a native `datasets` feature: the HF idioms (with_format, DataLoader, map, save_to_disk,
Parquet, streaming, builder.as_dataset) see the signal in millivolts and labels whose class names live in
the features; on the real PTB-XL and Challenge records and on the synthetic corpus."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import datasets
from datasets_scripts import RecordError, add_millivolts, class_names_of, load_ecg_dataset, read_wfdb_record
from datasets_scripts.corpora.ptbxl import Ptbxl
from datasets_scripts.testing import example_signal, make_cpsc2018_tree, make_mimic_tree, write_wfdb_dat
from processing.ecg.data_collator import ECGDataCollator, row_signal
from processing.ecg.feature_extraction_supreme import ECGFeatureExtractor

from conftest import REFUSE_PROJECT

torch = pytest.importorskip("torch")
datasets.disable_progress_bars()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("native_cache"))


@pytest.fixture(scope="module")
def ptbxl(ptbxl_dir, cache):
    return load_ecg_dataset("ptbxl", "super", data_dir=str(ptbxl_dir), cache_dir=cache, sampling_rate=100, output=None)


@pytest.fixture(scope="module")
def cinc(cinc2021_dir, cache):
    return load_ecg_dataset("physionet2021", data_dir=str(cinc2021_dir), cache_dir=cache, output=None)


@pytest.fixture(scope="module")
def synthetic(cache):
    return load_ecg_dataset("synthetic", num_records=30, seed=4, sampling_rate=100, cache_dir=cache, output=None)


@pytest.fixture(scope="module")
def cpsc(tmp_path_factory, cache):
    """CPSC2018 in its original layout: records of 6-14 s, so the signal column is variable-length."""
    root = make_cpsc2018_tree(tmp_path_factory.mktemp("cpsc"), {f"A{i:04d}": [1 + i % 9] for i in range(1, 13)})
    return load_ecg_dataset("cpsc2018", data_dir=str(root), cache_dir=cache, output=None)


@pytest.fixture(params=["ptbxl", "cinc", "synthetic"])
def corpus(request):
    return request.param, request.getfixturevalue(request.param)


def extractor(rate=100, seconds=10):
    return ECGFeatureExtractor(sampling_rate=rate, num_samples=rate * seconds)


def test_features_are_native_and_formats_give_float32_millivolts(corpus):
    name, ds = corpus
    split = ds["train"]
    features = split.features
    assert set(features) == {"record_id", "patient_id", "signal", "lead_names", "missing_leads", "sampling_rate", "report", "labels",
                             "label_ids", "multi_hot"}
    expected = {"ptbxl": datasets.Array2D((12, 1000), "float32"), "synthetic": datasets.Array2D((12, 1000), "float32"),
                "cinc": datasets.List(datasets.List(datasets.Value("float32")))}[name]
    assert features["signal"] == expected
    assert isinstance(features["label_ids"].feature, datasets.ClassLabel)
    samples = {"ptbxl": 1000, "synthetic": 1000, "cinc": 5000}[name]
    row = split.with_format("numpy")[0]
    assert row["signal"].dtype == np.float32 and row["signal"].shape == (12, samples)
    batch = split.with_format("numpy")[:5]
    assert batch["signal"].shape == (5, 12, samples)
    tensors = split.with_format("torch")[:5]
    assert tensors["signal"].dtype == torch.float32 and tuple(tensors["signal"].shape) == (5, 12, samples)
    np.testing.assert_array_equal(tensors["signal"].numpy(), batch["signal"])
    # plain Python rows (no format) hold the same numbers
    np.testing.assert_array_equal(np.asarray(split[0]["signal"], dtype=np.float32), row["signal"])
    frame = split.select(range(3)).to_pandas()
    assert np.stack(frame["signal"][0]).shape == (12, samples)


def test_builder_as_dataset_gives_the_signal(ptbxl_dir, cache, ptbxl):
    builder = Ptbxl(config_name="super", data_dir=str(ptbxl_dir), cache_dir=cache, sampling_rate=100)
    direct = builder.as_dataset(split="validation").with_format("numpy")
    row = direct[0]
    assert row["signal"].shape == (12, 1000)
    ref = read_wfdb_record(ptbxl_dir / "records100" / "00000" / f"{int(row['record_id']):05d}_lr")
    np.testing.assert_array_equal(row["signal"], ref.signal)  # wfdb's values within float32, by lead name
    assert class_names_of(direct.features) == builder.class_names()


def test_builders_state_licence_citation_and_homepage(ptbxl, cinc, synthetic):
    from datasets_scripts.loading import BUILDERS, get_builder_class

    for name in BUILDERS:
        cls = get_builder_class(name)
        assert cls.LICENSE.hub_id in ("cc-by-4.0", "odbl", "apache-2.0", "other") and cls.LICENSE.link.startswith("http")
        assert cls.CITATION and cls.CORPUS_DESCRIPTION
        assert cls.HOMEPAGE.startswith("http") or name == "synthetic"
    info = ptbxl["train"].info
    assert "Creative Commons Attribution 4.0" in info.license and "Wagner" in info.citation
    assert info.homepage == "https://physionet.org/content/ptb-xl/"
    assert "CC BY" not in synthetic["train"].info.license and "Apache" in synthetic["train"].info.license
    assert cinc["train"].info.homepage == "https://physionet.org/content/challenge-2021/"


def test_multi_hot_matches_labels_and_the_class_names(corpus):
    _, ds = corpus
    names = class_names_of(ds["train"].features)
    assert names and len(set(names)) == len(names)
    for split in ds.values():
        for labels, ids, multi_hot in zip(split["labels"], split["label_ids"], split["multi_hot"]):
            assert [names[i] for i in ids] == labels
            assert len(multi_hot) == len(names)
            assert {names[k] for k, v in enumerate(multi_hot) if v == 1.0} == set(labels)
            assert set(multi_hot) <= {0.0, 1.0}


def test_class_lists_of_the_corpora(ptbxl, cinc, synthetic, cpsc, tmp_path):
    assert len(class_names_of(ptbxl["train"].features)) == 5
    assert len(class_names_of(synthetic["train"].features)) == 12
    assert len(class_names_of(cpsc["train"].features)) == 9
    # SNOMED-labelled corpora: every vocabulary concept with a SNOMED code, the same list for CSN and the Challenge
    from datasets_scripts.labels import snomed_concept_names

    assert class_names_of(cinc["train"].features) == snomed_concept_names()
    seen = {label for split in cinc.values() for labels in split["labels"] for label in labels}
    assert seen <= set(snomed_concept_names()) and len(seen) > 5
    # MIMIC-IV-ECG has no diagnosis labels: an empty class list and empty multi-hot vectors
    root = make_mimic_tree(tmp_path / "mimic", [{"subject_id": 10000000 + i, "study_id": 40000000 + i,
                                                 "reports": ["Sinus rhythm"]} for i in range(3)])
    mimic = load_ecg_dataset("mimic_iv_ecg", data_dir=str(root), cache_dir=str(tmp_path / "c"), output=None,
                             validation_fraction=0.0, test_fraction=0.0)
    assert class_names_of(mimic["train"].features) == [] and mimic["train"][0]["multi_hot"] == []


def test_dataloader_with_the_collator(ptbxl, cinc, cpsc):
    collator = ECGDataCollator(extractor())
    loader = torch.utils.data.DataLoader(ptbxl["train"].with_format("torch"), batch_size=8, collate_fn=collator)
    batch = next(iter(loader))
    assert set(batch) == {"input_values", "lead_mask", "attention_mask", "labels"}
    assert tuple(batch["input_values"].shape) == (8, 12, 1000) and batch["input_values"].dtype == torch.float32
    assert tuple(batch["labels"].shape) == (8, 5) and batch["lead_mask"].all()
    np.testing.assert_array_equal(batch["labels"].numpy(), np.asarray(ptbxl["train"][:8]["multi_hot"]))
    # the same rows by hand through the feature extractor
    rows = ptbxl["train"].with_format("numpy")[:8]
    by_hand = extractor()(list(rows["signal"]), sampling_rate=100, lead_names=list(ptbxl["train"][0]["lead_names"]))
    np.testing.assert_array_equal(batch["input_values"].numpy(), by_hand["input_values"])
    # 500 Hz Challenge records resampled to the model's 100 Hz, plain Python rows
    cinc_batch = ECGDataCollator(extractor())([cinc["train"][i] for i in range(4)])
    assert tuple(cinc_batch["input_values"].shape) == (4, 12, 1000) and tuple(cinc_batch["labels"].shape) == (4, 127)
    # CPSC2018's records differ in length (6-14 s): no stacking needed, the collator crops and pads
    lengths = {len(row["signal"][0]) for row in cpsc["train"]}
    assert len(lengths) > 1
    ragged = torch.utils.data.DataLoader(cpsc["train"].with_format("numpy"), batch_size=6,
                                         collate_fn=ECGDataCollator(extractor(500, 12)))
    batch = next(iter(ragged))
    assert tuple(batch["input_values"].shape) == (6, 12, 6000)
    assert not batch["attention_mask"].all()  # the shorter records are padded, and the mask says so
    # labels from another class list (a model's concepts), built from the concept names
    names = class_names_of(ptbxl["train"].features)
    own = ECGDataCollator(extractor(), class_names=list(reversed(names)))(ptbxl["train"].select(range(8)))
    np.testing.assert_array_equal(own["labels"].numpy()[:, ::-1], np.asarray(ptbxl["train"][:8]["multi_hot"]))


def test_dataloader_workers_resample_as_the_main_process_does(cinc):
    """Training at 100 Hz from 500 Hz records with DataLoader workers: the decimation runs torch inside each
    forked worker (whose torch threads the DataLoader sets to 1), and the batches match those of no workers."""
    rows = cinc["train"].with_format("torch")
    assert int(rows[0]["sampling_rate"]) == 500
    loaders = [torch.utils.data.DataLoader(rows, batch_size=4, collate_fn=ECGDataCollator(extractor()), num_workers=n)
               for n in (0, 2)]
    batches = [list(loader) for loader in loaders]
    assert len(batches[0]) == len(batches[1]) >= 2
    for alone, in_workers in zip(*batches):
        assert tuple(alone["input_values"].shape)[1:] == (12, 1000)
        for key in alone:
            torch.testing.assert_close(in_workers[key], alone[key])  # float32 tolerance: thread counts differ


def test_collator_errors_name_the_problem(ptbxl):
    rows = [dict(ptbxl["train"][0])]
    with pytest.raises(ValueError, match="no 'multi_hot' column; pass label_column=None"):
        ECGDataCollator(extractor())([{k: v for k, v in rows[0].items() if k != "multi_hot"}])
    with pytest.raises(ValueError, match="has no ECG: expected a 'signal' column"):
        ECGDataCollator(extractor(), label_column=None)([{k: v for k, v in rows[0].items() if k != "signal"}])
    with pytest.raises(ValueError, match="has no 'sampling_rate'"):
        ECGDataCollator(extractor())([{k: v for k, v in rows[0].items() if k != "sampling_rate"}])


def test_torch_default_collate_over_with_format_torch(ptbxl, synthetic):
    for ds in (ptbxl, synthetic):
        split = ds["train"].with_format("torch", columns=["signal", "multi_hot", "sampling_rate"])
        batch = next(iter(torch.utils.data.DataLoader(split, batch_size=8, shuffle=True)))
        assert tuple(batch["signal"].shape) == (8, 12, 1000) and batch["signal"].dtype == torch.float32
        assert batch["multi_hot"].dtype == torch.float32 and batch["multi_hot"].shape[0] == 8
        assert batch["sampling_rate"].tolist() == [100] * 8


def test_a_map_that_writes_the_signal_is_kept(ptbxl, cinc, tmp_path):
    for ds in (ptbxl, cinc):
        split = ds["validation"]
        doubled = split.map(lambda ex: {"signal": np.asarray(ex["signal"], dtype=np.float32) * 2})
        assert doubled.features["signal"] == split.features["signal"]
        np.testing.assert_array_equal(doubled.with_format("numpy")[:3]["signal"], 2 * split.with_format("numpy")[:3]["signal"])
        # in numpy format and batched, through a formatted dataset as load_ecg_dataset returns it
        formatted = split.with_format("numpy", columns=["signal"], output_all_columns=True)
        halved = formatted.map(lambda b: {"signal": b["signal"] / 2}, batched=True, batch_size=4)
        np.testing.assert_allclose(halved.with_format("numpy")[:3]["signal"], split.with_format("numpy")[:3]["signal"] / 2)
        assert halved.with_format("numpy")[0]["signal"].dtype == np.float32


def test_save_to_disk_and_load_from_disk(ptbxl, cinc, tmp_path):
    for name, ds in (("ptbxl", ptbxl), ("cinc", cinc)):
        formatted = ds.with_format("torch", columns=["signal", "multi_hot"], output_all_columns=True)
        formatted.save_to_disk(str(tmp_path / name))
        back = datasets.load_from_disk(str(tmp_path / name))
        assert back["train"].features == ds["train"].features
        assert {k: len(v) for k, v in back.items()} == {k: len(v) for k, v in ds.items()}
        np.testing.assert_array_equal(back["test"].with_format("numpy")[:]["signal"], ds["test"].with_format("numpy")[:]["signal"])
        assert back["test"]["record_id"] == ds["test"]["record_id"]


def test_streaming_splits_have_features(ptbxl_dir, ptbxl, cinc2021_dir, cinc):
    for stream, built in ((load_ecg_dataset("ptbxl", "super", data_dir=str(ptbxl_dir), sampling_rate=100, streaming=True), ptbxl),
                          (load_ecg_dataset("physionet2021", data_dir=str(cinc2021_dir), streaming=True, output="torch"), cinc)):
        assert stream["train"].features == built["train"].features
        first = next(iter(stream["train"]))
        np.testing.assert_array_equal(np.asarray(first["signal"]), built["train"].with_format("numpy")[0]["signal"])
        assert first["labels"] == built["train"][0]["labels"] and isinstance(first["lead_names"], list)


def test_compact_int16_storage(ptbxl_dir, ptbxl, tmp_path):
    compact = load_ecg_dataset("ptbxl", "super", data_dir=str(ptbxl_dir), sampling_rate=100, cache_dir=str(tmp_path),
                               signal_storage="int16", output=None)
    features = compact["train"].features
    assert "signal" not in features and features["signal_int16"] == datasets.Array2D((12, 1000), "int16")
    assert features["signal_gain"] == datasets.List(datasets.Value("float64"))
    rows = compact["train"].with_format("numpy")[:16]
    # the one-line conversion gives exactly the float32 storage's millivolts
    one_line = (rows["signal_int16"] / rows["signal_gain"][:, :, None]).astype(np.float32)
    np.testing.assert_array_equal(one_line, ptbxl["train"].with_format("numpy")[:16]["signal"])
    np.testing.assert_array_equal(row_signal(compact["train"][3]), ptbxl["train"].with_format("numpy")[3]["signal"])
    with_mv = compact["train"].select(range(4)).map(add_millivolts, batched=True)
    np.testing.assert_array_equal(with_mv.with_format("numpy")[:]["signal"], one_line[:4])
    # the collator reads either storage to the same model inputs
    a = ECGDataCollator(extractor())(compact["train"].select(range(8)))
    b = ECGDataCollator(extractor())(ptbxl["train"].select(range(8)))
    for key in ("input_values", "lead_mask", "labels"):
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
    def arrow_bytes(ds):
        return sum(os.path.getsize(f["filename"]) for split in ds.values() for f in split.cache_files)

    assert 0.45 < arrow_bytes(compact) / arrow_bytes(ptbxl) < 0.6  # half the bytes of the float32 storage
    with pytest.raises(ValueError, match="signal_storage must be one of"):
        load_ecg_dataset("ptbxl", "super", data_dir=str(ptbxl_dir), cache_dir=str(tmp_path), signal_storage="float16")


def test_a_record_of_another_length_in_a_fixed_length_corpus(tmp_path):
    studies = [{"subject_id": 10000000 + i, "study_id": 40000000 + i, "reports": ["Sinus rhythm"]} for i in range(4)]
    root = make_mimic_tree(tmp_path / "mimic", studies)
    record = next(root.rglob("40000002.hea")).with_suffix("")
    write_wfdb_dat(record.parent, record.name, example_signal(0, seconds=8.0))  # 8 s instead of 10
    with pytest.raises(RecordError, match=r"40000002 .*12 leads x 4000 samples at 500 Hz, but mimic_iv_ecg stores exactly 12 x 5000"):
        load_ecg_dataset("mimic_iv_ecg", data_dir=str(root), cache_dir=str(tmp_path / "c"), validation_fraction=0.0,
                         test_fraction=0.0)
    ds = load_ecg_dataset("mimic_iv_ecg", data_dir=str(root), cache_dir=str(tmp_path / "c"), on_error="skip",
                          validation_fraction=0.0, test_fraction=0.0)
    assert sorted(ds["train"]["record_id"]) == ["40000000", "40000001", "40000003"]


# -- Parquet read back where this project is not importable ---------------------------------------------

CLEAN_READER = REFUSE_PROJECT + textwrap.dedent(
    """

    import numpy as np, pandas as pd, pyarrow.parquet as pq
    spec = json.load(open(sys.argv[1]))
    report = {}
    # pyarrow and pandas first, before datasets registers its Arrow extension types
    for name, item in spec.items():
        table = pq.read_table(item["files"][0])
        frame = pd.read_parquet(item["files"][0])
        report[name] = {"pyarrow_type": str(table.schema.field("signal").type),
                        "pandas_shape": list(np.stack(frame["signal"][0]).shape),
                        "pandas_dtype": str(np.stack(frame["signal"][0]).dtype), "datasets_loaded": "datasets" in sys.modules}
    import datasets, torch
    for name, item in spec.items():
        expected = np.load(item["expected"])
        ds = datasets.load_dataset("parquet", data_files={"train": item["files"]}, split="train")
        rows = ds.with_format("numpy")
        ids = list(expected["record_ids"])
        by_id = {rid: i for i, rid in enumerate(ds["record_id"])}
        worst = 0.0
        for k, rid in enumerate(ids):
            signal = rows[by_id[rid]]["signal"]
            worst = max(worst, float(np.abs(signal - expected[f"signal_{k}"]).max()))
        loader = torch.utils.data.DataLoader(ds.with_format("torch", columns=["signal", "multi_hot"]), batch_size=4)
        batch = next(iter(loader))
        report[name].update({
            "rows": len(ds), "features": sorted(ds.features), "signal_feature": repr(ds.features["signal"]),
            "class_names": ds.features["label_ids"].feature.names, "dtype": str(rows[0]["signal"].dtype),
            "shape": list(rows[0]["signal"].shape), "max_difference": worst, "batch_shape": list(batch["signal"].shape),
            "multi_hot_sum_equals_labels": all(sum(m) == len(l) for m, l in zip(ds["multi_hot"], ds["labels"])),
        })
    report["project_modules"] = [m for m in sys.modules if m.split(".")[0] in PROJECT]
    print(json.dumps(report))
    """
)


def read_in_clean_interpreter(spec: dict, tmp_path) -> dict:
    """Run CLEAN_READER on ``{name: {"files": [...], "expected": npz}}``; return its report."""
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    result = subprocess.run([sys.executable, "-c", CLEAN_READER, str(tmp_path / "spec.json")], capture_output=True,
                            text=True, timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                            cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def expected_rows(split, path, count=3):
    """The first ``count`` rows' ids and signals, saved for the clean interpreter to compare against."""
    rows = split.with_format("numpy")
    np.savez(path, record_ids=np.array([rows[i]["record_id"] for i in range(count)]),
             **{f"signal_{i}": rows[i]["signal"] for i in range(count)})
    return str(path)


@pytest.mark.slow
def test_parquet_export_reads_without_the_package(ptbxl, cinc, tmp_path):
    spec = {}
    for name, ds in (("ptbxl", ptbxl), ("cinc", cinc)):
        path = tmp_path / f"{name}.parquet"
        ds["train"].with_format("numpy").to_parquet(str(path))
        spec[name] = {"files": [str(path)], "expected": expected_rows(ds["train"], tmp_path / f"{name}.npz")}
    report = read_in_clean_interpreter(spec, tmp_path)
    assert report["project_modules"] == []
    for name, ds, samples in (("ptbxl", ptbxl, 1000), ("cinc", cinc, 5000)):
        got = report[name]
        assert got["rows"] == len(ds["train"]) and got["features"] == sorted(ds["train"].features)
        assert got["class_names"] == class_names_of(ds["train"].features)
        assert got["dtype"] == "float32" and got["shape"] == [12, samples] and got["max_difference"] == 0.0
        assert got["batch_shape"] == [4, 12, samples] and got["multi_hot_sum_equals_labels"]
        assert got["pyarrow_type"].startswith("list<element: list<element: float")  # plain nested lists for pyarrow
        assert got["pandas_shape"] == [12, samples] and got["pandas_dtype"] == "float32" and not got["datasets_loaded"]
    assert report["ptbxl"]["signal_feature"] == "Array2D(shape=(12, 1000), dtype='float32')"


def test_pretraining_and_scoring_read_either_storage(synthetic, cache):
    """The scripts' DataLoaders (pre-training rows + the collator, evaluation batches) give the same model
    inputs from the float32 and the compact int16 storage."""
    from modeling_supreme.evaluation.scoring import iterate_processed_batches
    from modeling_supreme.training.data import EpochSampler, PretrainingDataset

    compact = load_ecg_dataset("synthetic", num_records=30, seed=4, sampling_rate=100, cache_dir=cache,
                               signal_storage="int16", output=None)
    targets = np.random.default_rng(0).integers(0, 2, size=(len(synthetic["train"]), 3)).astype(np.float32)
    rows = np.arange(len(synthetic["train"]))
    batches = []
    for ds in (synthetic, compact):
        dataset = PretrainingDataset(ds["train"], rows, targets, seed=1, lead_subset_prob=0.5)
        loader = torch.utils.data.DataLoader(dataset, batch_size=8, sampler=EpochSampler(len(dataset), 1),
                                             collate_fn=ECGDataCollator(extractor(), label_column="targets"))
        batches.append(next(iter(loader)))
    for key in ("input_values", "lead_mask", "attention_mask", "labels"):
        np.testing.assert_array_equal(batches[0][key].numpy(), batches[1][key].numpy())
    assert not batches[0]["lead_mask"].all()  # some records were shown with a lead subset
    order = EpochSampler(len(rows), 1).__iter__()
    first = [next(order) for _ in range(8)]
    np.testing.assert_array_equal(batches[0]["labels"].numpy(), targets[first])
    scored = [list(iterate_processed_batches(ds["test"], extractor(), batch_size=2)) for ds in (synthetic, compact)]
    for (a, ids_a), (b, ids_b) in zip(*scored):
        assert ids_a == ids_b
        np.testing.assert_array_equal(a["input_values"].numpy(), b["input_values"].numpy())
