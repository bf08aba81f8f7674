"""load_ecg_dataset as one interface: errors naming the record, num_proc, cache reuse, output formats,
signal encoding, imports."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from datasets_scripts import RecordError, iter_reports, load_ecg_dataset
from datasets_scripts.encoding import encode_labels, encode_signal, quantize_physical
from datasets_scripts.loading import BUILDERS, get_builder_class
from datasets_scripts.testing import make_mimic_tree


@pytest.fixture
def broken_mimic(tmp_path):
    studies = [{"subject_id": 10000000 + i, "study_id": 40000000 + i, "reports": ["Sinus rhythm"]} for i in range(10)]
    root = make_mimic_tree(tmp_path / "mimic", studies)
    dat = next(root.rglob("40000003.dat"))
    dat.write_bytes(dat.read_bytes()[:1000])
    hea = next(root.rglob("40000006.hea"))
    hea.write_text(hea.read_text().replace(" aVL\n", " LA\n"))
    return root


def test_every_corpus_answers_the_same_interface():
    for name in BUILDERS:
        cls = get_builder_class(name)
        assert cls._corpus_name() == name
    with pytest.raises(ValueError, match="unknown ECG corpus 'ptb'"):
        load_ecg_dataset("ptb", data_dir=".")
    with pytest.raises(ValueError, match="no report text for corpus 'cpsc2018'"):
        list(iter_reports("cpsc2018", "."))
    with pytest.raises(ValueError, match="needs data_dir"):
        list(iter_reports("mimic_iv_ecg"))


def test_on_error_raise_names_record_and_fault(broken_mimic, tmp_path):
    with pytest.raises(RecordError, match=r"mimic_iv_ecg: .*/40000003: signal file 40000003.dat holds 1000 bytes, .*truncated"):
        load_ecg_dataset("mimic_iv_ecg", data_dir=str(broken_mimic), cache_dir=str(tmp_path / "c"),
                         validation_fraction=0.0, test_fraction=0.0)


def test_on_error_skip_with_two_processes_writes_one_summary(broken_mimic, tmp_path):
    cache = tmp_path / "c"
    ds = load_ecg_dataset("mimic_iv_ecg", data_dir=str(broken_mimic), cache_dir=str(cache), on_error="skip",
                          num_proc=2, validation_fraction=0.0, test_fraction=0.0)
    assert len(ds["train"]) == 8 and len(ds["validation"]) == 0 and len(ds["test"]) == 0
    summaries = list(cache.rglob("ecg_summary.json"))
    assert len(summaries) == 1
    assert not list(cache.rglob("_ecg_issues-*"))
    summary = json.loads(summaries[0].read_text())
    reasons = {s["record_id"]: s["reason"] for s in summary["skipped"]}
    assert set(reasons) == {"40000003", "40000006"}
    assert "unknown lead name 'LA'" in reasons["40000006"]
    # same content as a one-process build
    one = load_ecg_dataset("mimic_iv_ecg", data_dir=str(broken_mimic), cache_dir=str(tmp_path / "one"),
                           on_error="skip", validation_fraction=0.0, test_fraction=0.0)
    a, b = ds["train"][:], one["train"][:]
    assert a["record_id"] == b["record_id"]
    np.testing.assert_array_equal(a["signal"], b["signal"])


def test_cache_is_reused(tmp_path):
    cache = tmp_path / "c"
    load_ecg_dataset("synthetic", num_records=12, seed=5, cache_dir=str(cache))
    arrows = {p: p.stat().st_mtime_ns for p in cache.rglob("*.arrow")}
    load_ecg_dataset("synthetic", num_records=12, seed=5, cache_dir=str(cache))
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.arrow")} == arrows
    # the builder used directly, with defaults spelled out, finds the same cache
    from datasets_scripts.corpora.synthetic import Synthetic

    same = Synthetic(num_records=12, seed=5, cache_dir=str(cache), on_error="raise", nan_policy="interpolate")
    assert os.path.isfile(os.path.join(same._output_dir, "dataset_info.json"))
    load_ecg_dataset("synthetic", num_records=13, seed=5, cache_dir=str(cache))
    assert len(list(cache.rglob("dataset_info.json"))) == 2


def test_torch_output_and_streaming(tmp_path):
    torch = pytest.importorskip("torch")
    ds = load_ecg_dataset("synthetic", num_records=20, seed=1, cache_dir=str(tmp_path), output="torch")
    batch = ds["train"][:8]
    assert isinstance(batch["signal"], torch.Tensor) and batch["signal"].dtype == torch.float32
    assert tuple(batch["signal"].shape) == (8, 12, 5000) and tuple(batch["multi_hot"].shape) == (8, 12)
    assert isinstance(batch["record_id"][0], str) and isinstance(batch["labels"][0], list)  # other columns stay Python
    plain = load_ecg_dataset("synthetic", num_records=20, seed=1, cache_dir=str(tmp_path), output=None)
    assert isinstance(plain["train"][0]["signal"], list)  # no format: what plain datasets returns
    stream = load_ecg_dataset("synthetic", num_records=20, seed=1, streaming=True)
    first = next(iter(stream["train"]))
    assert first["signal"].dtype == np.float32
    np.testing.assert_array_equal(first["signal"], ds["train"][0]["signal"].numpy())
    with pytest.raises(ValueError, match="output must be"):
        load_ecg_dataset("synthetic", num_records=20, seed=1, cache_dir=str(tmp_path), output="tensorflow")


def test_signal_encoding_roundtrip_and_overflow():
    rng = np.random.default_rng(0)
    digital = rng.integers(-3000, 3000, size=(12, 700))
    gain = np.full(12, 1000.0)
    # float32 storage: counts / gain in float64, rounded once (the reader's formula)
    np.testing.assert_array_equal(encode_signal(digital, gain)["signal"], (digital / 1000.0).astype(np.float32))
    compact = encode_signal(digital, gain, "int16")
    assert compact["signal_int16"].dtype == np.int16
    np.testing.assert_array_equal(compact["signal_int16"] / compact["signal_gain"][:, None], digital / 1000.0)
    big = digital.copy()
    big[3] *= 40  # out of int16 range: lead 3 re-quantised in the compact storage, the others untouched
    compact = encode_signal(big, gain, "int16")
    out = compact["signal_int16"] / compact["signal_gain"][:, None]
    np.testing.assert_allclose(out[3], big[3] / 1000.0, atol=0.1)
    np.testing.assert_array_equal(out[0], big[0] / 1000.0)
    np.testing.assert_array_equal(encode_signal(big, gain)["signal"][3], (big[3] / 1000.0).astype(np.float32))
    counts, gains = quantize_physical(np.array([[0.1234567, -40.0], [1.0, 2.0]]))
    assert gains[0] < 1000.0 and gains[1] == 1000.0
    with pytest.raises(ValueError, match="signal_storage must be one of"):
        encode_signal(digital, gain, "float16")


def test_label_encoding_keeps_the_class_order():
    encoded = encode_labels(["b", "a"], ["a", "b", "c"])
    assert encoded["label_ids"] == [1, 0] and encoded["multi_hot"].tolist() == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="label 'd' is not one of the configuration's 3 classes"):
        encode_labels(["d"], ["a", "b", "c"], where="x")


def test_builders_import_neither_torch_nor_the_model():
    code = (
        "import sys\n"
        "import datasets_scripts.loading, datasets_scripts.corpora.ptbxl, datasets_scripts.corpora.cpsc2018, datasets_scripts.corpora.csn\n"
        "import datasets_scripts.corpora.physionet2021, datasets_scripts.corpora.mimic_iv_ecg, datasets_scripts.corpora.synthetic\n"
        "from datasets_scripts import read_wfdb_record, iter_reports\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('modeling_supreme')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
