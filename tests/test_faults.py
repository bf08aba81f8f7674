"""The fault-and-input suite of issue 11: each class of bad input or fault, several instances each.

Every case asserts the exact behaviour (an error that names the file, record or argument; a warning;
or the correct result) and, where something is written, that no partial output is left behind.
Classes: 1 header fields, 2 files outside the record, 3 text decoding, 4 array inputs, 5 call
arguments, 6 errors in a batch, 7 reports, 8 two writers, 9 multi-signal records, 10 exact resume
(here the in-process parts; the runs of examples/pretrain.py are in tests/test_resume.py).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from datasets_scripts.testing import example_signal, write_wfdb_dat, write_wfdb_mat
from processing.ecg.ecg_leads import STANDARD_12_LEADS
from processing.ecg.wfdb_reader import ECGDataWarning, RecordError, read_digital, read_wfdb_record


@pytest.fixture(scope="module")
def signal():
    return example_signal(0)


def _edit_header(base: Path, old: str, new: str, count: int = 1) -> None:
    hea = base.with_suffix(".hea")
    text = hea.read_text()
    assert old in text, (old, text[:200])
    hea.write_text(text.replace(old, new, count))


# ------------------------------------------------------------------------------------------------
# Class 1: a header field that is missing or unparsable is an error naming the file and the field


@pytest.mark.parametrize(
    "old, new, field",
    [
        (" 500 5000", "", "no sampling frequency"),  # record line "name 12": no rate, no length
        (" 500 5000", " 5000", "no number of samples per signal"),  # the rate slot holds the length
        (" 500 5000", " fivehundred 5000", "unparsable sampling frequency 'fivehundred'"),
        (" 500 5000", " 0 5000", "unparsable sampling frequency '0'"),
        (" 500 5000", " -500 5000", "unparsable sampling frequency '-500'"),
        (" 500 5000", " nan 5000", "unparsable sampling frequency 'nan'"),
        (" 500 5000", " 500 5k", "unparsable number of samples per signal '5k'"),
    ],
)
def test_record_line_fields_are_required(tmp_path, signal, old, new, field):
    base = write_wfdb_dat(tmp_path, "rec", signal)
    _edit_header(base, old, new)
    for fast in (True, False):  # the wfdb route would assume 250 Hz: it must refuse the same way
        with pytest.raises(RecordError, match=f"{base}: .*{field}"):
            read_wfdb_record(base, fast=fast)


# lead I's line of a Challenge-style header: "mrec.mat 16+24 1000/mV 16 0 <first> <checksum> 0 I"
SIGNAL_LINE_DEFECTS = {
    "no ADC gain": lambda p: p[:2],
    "no units": lambda p: p[:2] + ["1000"] + p[3:],
    "unparsable ADC gain 'abc/mV'": lambda p: p[:2] + ["abc/mV"] + p[3:],
    "unparsable ADC gain '0/mV'": lambda p: p[:2] + ["0/mV"] + p[3:],  # WFDB would read 0 as 200
    "unparsable ADC gain '-1000/mV'": lambda p: p[:2] + ["-1000/mV"] + p[3:],
    "unparsable ADC zero 'zero'": lambda p: p[:4] + ["zero"] + p[5:],
    "unparsable checksum 'x17'": lambda p: p[:6] + ["x17"] + p[7:],
    "no signal description \\(lead name\\)": lambda p: p[:8],
}


@pytest.mark.parametrize("field", list(SIGNAL_LINE_DEFECTS))
def test_signal_line_fields_are_required(tmp_path, signal, field):
    base = write_wfdb_mat(tmp_path, "mrec", signal)
    hea = base.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    lines[1] = " ".join(SIGNAL_LINE_DEFECTS[field](lines[1].split(" ")))
    hea.write_text("\n".join(lines) + "\n")
    for fast in (True, False):
        with pytest.raises(RecordError, match=f"{base}: .*{field}"):
            read_wfdb_record(base, fast=fast)


def test_real_headers_have_every_required_field(shared_data):
    """The required-field rule refuses none of the 653 real records (they all carry every field)."""
    paths = sorted(shared_data.glob("ptbxl/records*/*/*.hea")) + sorted(shared_data.glob("cinc2021/*.hea"))
    for hea in paths[::25]:
        rec = read_wfdb_record(hea.with_suffix(""), warn=False)
        assert rec.sampling_rate in (100, 500) and rec.signal.shape[0] == 12


# ------------------------------------------------------------------------------------------------
# Class 2: signal files outside the record's folder are refused unless explicitly allowed


@pytest.mark.parametrize("kind", ["parent", "absolute", "nested_escape", "home"])
def test_signal_file_outside_the_record_folder(tmp_path, signal, kind):
    outside = write_wfdb_dat(tmp_path, "x", signal)
    folder = tmp_path / "records"
    base = write_wfdb_dat(folder, "rec", signal * 2)
    (folder / "sub").mkdir()
    name = {"parent": "../x.dat", "absolute": str(outside.with_suffix(".dat")), "nested_escape": "sub/../../x.dat",
            "home": "~/x.dat"}[kind]
    _edit_header(base, "rec.dat", name, count=12)
    for fast in (True, False):
        with pytest.raises(RecordError, match=r"rec: the header names signal file .* outside the record's folder.*"
                                              r"allow_external_files=True"):
            read_wfdb_record(base, fast=fast)
    if kind in ("parent", "absolute", "nested_escape"):  # the explicit opt-in reads the other file
        rec = read_wfdb_record(base, allow_external_files=True, warn=False)  # checksums are rec.dat's
        np.testing.assert_allclose(rec.signal, signal, atol=0.0006)


def test_signal_file_in_a_subfolder_is_inside(tmp_path, signal):
    base = write_wfdb_dat(tmp_path, "rec", signal)
    (tmp_path / "data").mkdir()
    base.with_suffix(".dat").rename(tmp_path / "data" / "rec.dat")
    _edit_header(base, "rec.dat", "data/rec.dat", count=12)
    rec = read_wfdb_record(base)
    np.testing.assert_allclose(rec.signal, signal, atol=0.0006)


def test_symlinked_signal_file_pointing_outside_is_refused(tmp_path, signal):
    outside = write_wfdb_dat(tmp_path / "elsewhere", "x", signal)
    base = write_wfdb_dat(tmp_path / "records", "rec", signal)
    base.with_suffix(".dat").unlink()
    base.with_suffix(".dat").symlink_to(outside.with_suffix(".dat"))
    with pytest.raises(RecordError, match="outside the record's folder"):
        read_wfdb_record(base)


def _multi_segment(folder: Path, signal, name="multi"):
    for k in (1, 2):
        write_wfdb_dat(folder, f"{name}_{k}", signal)
    n = signal.shape[1]
    (folder / f"{name}.hea").write_text(f"{name}/2 12 500 {2 * n}\n{name}_1 {n}\n{name}_2 {n}\n")
    return folder / name


def test_multi_segment_record_inside_its_folder_is_read(tmp_path, signal):
    rec = read_wfdb_record(_multi_segment(tmp_path / "records", signal))
    assert rec.signal.shape == (12, 2 * signal.shape[1])


@pytest.mark.parametrize("what", ["segment header", "segment signal file"])
def test_multi_segment_record_with_a_segment_leading_outside_is_refused(tmp_path, signal, what):
    outside = write_wfdb_dat(tmp_path / "elsewhere", "x", signal)
    base = _multi_segment(tmp_path / "records", signal)
    link = base.parent / ("multi_2.hea" if what == "segment header" else "multi_2.dat")
    link.unlink()
    link.symlink_to(outside.with_suffix(link.suffix))
    if what == "segment header":  # the linked header names x.dat: put it beside, so only the link is wrong
        (base.parent / "x.dat").write_bytes(outside.with_suffix(".dat").read_bytes())
    message = r"segment 'multi_2' lies outside" if what == "segment header" else r"in segment 'multi_2'.*outside the record's folder"
    with pytest.raises(RecordError, match=message):
        read_wfdb_record(base)
    read_wfdb_record(base, allow_external_files=True)  # an explicit opt-in still reads it


# ------------------------------------------------------------------------------------------------
# Class 3: header text decoded as UTF-8 (Latin-1 only for headers that are not UTF-8)


@pytest.mark.parametrize("comment", ["Sex: weiblich, Größe 165 cm", "Amplitude 5 µV", "Médecin: Zoë Ødegård", "心电图"])
def test_utf8_header_comments(tmp_path, signal, comment):
    base = write_wfdb_mat(tmp_path, "utf", signal, comments=[comment])
    hea = base.with_suffix(".hea")
    assert comment.encode("utf-8") in hea.read_bytes()
    rec = read_wfdb_record(base)
    assert rec.comments == [comment]


def test_latin1_header_still_read(tmp_path, signal):
    base = write_wfdb_mat(tmp_path, "latin", signal)
    hea = base.with_suffix(".hea")
    hea.write_bytes(hea.read_bytes() + "#Größe 165\n".encode("latin-1"))
    assert read_wfdb_record(base).comments == ["Größe 165"]


def test_utf8_units_in_a_header(tmp_path, signal):
    base = write_wfdb_mat(tmp_path, "micro", signal * 1000.0, gain=1.0, units="µV")
    rec = read_wfdb_record(base)
    np.testing.assert_allclose(rec.signal, signal, atol=0.0006)


# ------------------------------------------------------------------------------------------------
# Class 9: multi-signal records use the standard leads and report the extra signals

PTB_DIAGNOSTIC_NAMES = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6", "vx", "vy", "vz"]


def _ptb_diagnostic(tmp_path, signal, names=PTB_DIAGNOSTIC_NAMES):
    frank = signal[:3] * 0.5
    full = np.concatenate([signal, frank])[: len(names)]
    return write_wfdb_dat(tmp_path, "s0010_re", full, fs=1000, gain=2000.0, lead_names=names)


@pytest.mark.parametrize("fast", [True, False])
def test_ptb_diagnostic_record_reads_the_standard_leads(tmp_path, signal, fast):
    base = _ptb_diagnostic(tmp_path, signal)
    with pytest.warns(ECGDataWarning, match=r"s0010_re: 3 signal\(s\) besides the 12 standard leads \(vx, vy, vz\)"):
        rec = read_wfdb_record(base, fast=fast)
    assert rec.lead_names == list(STANDARD_12_LEADS) and rec.sampling_rate == 1000
    assert rec.extra_signals == ["vx", "vy", "vz"]
    np.testing.assert_allclose(rec.signal, signal, atol=0.0003)


def test_extra_signals_in_the_middle_and_reordered_leads(tmp_path, signal):
    names = ["vx"] + list(reversed(PTB_DIAGNOSTIC_NAMES[:12])) + ["resp"]
    full = np.concatenate([signal[:1] * 0.1, signal[::-1], signal[:1] * 0.2])
    base = write_wfdb_dat(tmp_path, "mixed", full, lead_names=names)
    rec = read_wfdb_record(base, warn=False)
    assert rec.extra_signals == ["vx", "resp"]
    assert rec.lead_names == list(reversed(STANDARD_12_LEADS))
    np.testing.assert_allclose(rec.signal, signal[::-1], atol=0.0006)


def test_unknown_signal_without_all_standard_leads_is_still_an_error(tmp_path, signal):
    names = PTB_DIAGNOSTIC_NAMES[:11] + ["vx"]  # V6 missing, vx instead: more likely a misnamed lead
    base = write_wfdb_dat(tmp_path, "short", signal, lead_names=names)
    with pytest.raises(RecordError, match=r"short: unknown lead name 'vx'.*only when all 12 are present; "
                                          r"this record has 11 standard leads"):
        read_wfdb_record(base)


def test_duplicated_standard_lead_with_extras_is_an_error(tmp_path, signal):
    names = PTB_DIAGNOSTIC_NAMES[:12] + ["II", "vx"]
    full = np.concatenate([signal, signal[1:2], signal[:1]])
    base = write_wfdb_dat(tmp_path, "dup", full, lead_names=names)
    with pytest.raises(RecordError, match="dup: duplicated lead 'II'"):
        read_wfdb_record(base)


def test_extra_signal_units_do_not_matter(tmp_path, signal):
    """A respiration channel in other units is left out, not a units error."""
    base = _ptb_diagnostic(tmp_path, signal)
    hea = base.with_suffix(".hea")
    lines = hea.read_text().splitlines(keepends=True)
    lines[-1] = lines[-1].replace("/mV", "/mmHg")
    hea.write_text("".join(lines))
    rec = read_digital(base, warn=False)
    assert rec.extra_signals == ["vx", "vy", "vz"] and rec.digital.shape == (12, 5000)


# ------------------------------------------------------------------------------------------------
# Class 4: array inputs get the checks that files get


@pytest.fixture(scope="module")
def extractor():
    from processing.ecg.feature_extraction_supreme import ECGFeatureExtractor

    return ECGFeatureExtractor(sampling_rate=500, num_samples=5000)


LEADS = list(STANDARD_12_LEADS)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int64, np.uint16])
def test_integer_arrays_need_units(extractor, signal, dtype):
    counts = np.rint(signal * 1000).astype(dtype) if dtype != np.uint16 else np.rint(signal * 1000 + 5000).astype(dtype)
    with pytest.raises(ValueError, match=rf"record 0: signal is an integer array \({np.dtype(dtype).name}\); "
                                         r"integers are usually ADC counts.*units='mV'"):
        extractor(counts, sampling_rate=500, lead_names=LEADS)


def test_integer_arrays_in_a_batch_name_the_record(extractor, signal):
    records = [{"signal": signal, "sampling_rate": 500, "lead_names": LEADS, "record_id": "ok"},
               {"signal": np.rint(signal * 1000).astype(np.int16), "sampling_rate": 500, "lead_names": LEADS,
                "record_id": "adc_42"}]
    with pytest.raises(ValueError, match=r"record 'adc_42': signal is an integer array \(int16\)"):
        extractor(records)


def test_torch_and_nested_integer_inputs_are_refused(extractor, signal):
    import torch

    counts = np.rint(signal * 1000).astype(np.int16)
    with pytest.raises(ValueError, match=r"integer array \(int16\)"):
        extractor(torch.from_numpy(counts), sampling_rate=500, lead_names=LEADS)
    with pytest.raises(ValueError, match=r"integer array \(int64\)"):
        extractor(counts.astype(int).tolist(), sampling_rate=500, lead_names=LEADS)
    with pytest.raises(ValueError, match="boolean array"):
        extractor(counts > 0, sampling_rate=500, lead_names=LEADS)


def test_stated_units_convert_integer_and_float_arrays(extractor, signal):
    reference = extractor(signal.astype(np.float32), sampling_rate=500, lead_names=LEADS)["input_values"]
    microvolts = np.rint(signal * 1000).astype(np.int32)
    from_uv = extractor(microvolts, sampling_rate=500, lead_names=LEADS, units="uV")["input_values"]
    np.testing.assert_allclose(from_uv, reference, atol=1.1e-3)
    volts = (signal / 1000.0).astype(np.float64)
    np.testing.assert_allclose(extractor(volts, sampling_rate=500, lead_names=LEADS, units="V")["input_values"],
                               reference, atol=1e-5)
    dict_units = extractor({"signal": microvolts, "sampling_rate": 500, "lead_names": LEADS, "units": "uV"})
    np.testing.assert_allclose(dict_units["input_values"], reference, atol=1.1e-3)
    with pytest.raises(ValueError, match=r"units must be one of \['mV', 'uV', 'µV', 'V'\], got 'counts'"):
        extractor(signal, sampling_rate=500, lead_names=LEADS, units="counts")


@pytest.mark.parametrize("factor, name", [(1000.0, "microvolts taken as mV"), (0.001, "volts taken as mV"),
                                          (5.0, "gain 5x too small"), (0.2, "gain 5x too large")])
def test_array_amplitude_plausibility(extractor, signal, factor, name):
    typical = signal * 1.4  # median lead peak-to-peak about 1.3 mV, as on real records
    with pytest.warns(ECGDataWarning, match=r"record 'x1': implausible amplitude.*check the signal's units"):
        extractor({"signal": typical * factor, "sampling_rate": 500, "lead_names": LEADS, "record_id": "x1"})


def test_plausible_array_gives_no_warning_and_flat_lead_warns(extractor, signal):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        extractor(signal, sampling_rate=500, lead_names=LEADS)
        extractor(signal * 1000, sampling_rate=500, lead_names=LEADS, check_amplitude=False)  # opted out
    flat = signal.copy()
    flat[3] = 0.25
    with pytest.warns(ECGDataWarning, match=r"record 0: flat \(constant\) lead\(s\) aVR"):
        out = extractor(flat, sampling_rate=500, lead_names=LEADS)
    assert out["lead_mask"][0, 3]  # a recorded flat lead is still recorded, with a warning


def test_amplitude_check_from_given_extremes_matches_the_signal_scan(signal, ptbxl_dir):
    """The extractor hands the amplitude check the per-lead extremes it computed for its finiteness check: the
    messages are those of scanning the signal, for plausible, implausible and flat records; bad extremes raise."""
    from processing.ecg.wfdb_reader import amplitude_issues

    flat = signal.copy()
    flat[3] = 0.25
    real = read_wfdb_record(ptbxl_dir / "records500/00000/00001_hr").signal
    cases = [signal, signal * 1000, signal * 0.001, flat, np.zeros_like(signal), real, real.astype(np.float64)]
    for case in cases:
        scanned = amplitude_issues(case, LEADS)
        assert amplitude_issues(case, LEADS, extremes=(case.max(axis=1), case.min(axis=1))) == scanned
    assert amplitude_issues(signal * 1000, LEADS) and amplitude_issues(flat, LEADS)  # the cases do warn
    with pytest.raises(ValueError, match="extremes must be 12 finite maxima and minima"):
        amplitude_issues(signal, LEADS, extremes=(signal.max(axis=1)[:5], signal.min(axis=1)))
    with pytest.raises(ValueError, match="extremes must be 12 finite"):
        amplitude_issues(signal, LEADS, extremes=(np.full(12, np.nan), signal.min(axis=1)))


def test_entirely_missing_lead_in_an_array_is_absent(extractor, signal):
    gap = signal.copy()
    gap[[4, 9]] = np.nan
    out = extractor(gap, sampling_rate=500, lead_names=LEADS)
    assert out["lead_mask"][0].tolist() == [i not in (4, 9) for i in range(12)]
    assert np.all(out["input_values"][0, [4, 9]] == 0)


def test_entirely_missing_lead_in_a_file_is_absent(tmp_path, extractor, signal):
    digital = np.rint(signal * 1000).astype(np.int64)
    digital[4] = -32768  # the WFDB missing-sample value over the whole of aVL
    base = write_wfdb_dat(tmp_path, "dead_avl", digital=digital)
    with pytest.warns(ECGDataWarning, match=r"dead_avl: 5000 missing \(NaN\) samples in lead\(s\) aVL"):
        record = read_wfdb_record(base)
    assert record.missing_leads == ["aVL"]
    for given in (str(base), record, [record]):  # a path, the reader's record, a list of them
        out = extractor(given)
        assert out["lead_mask"][0].tolist() == [lead != "aVL" for lead in LEADS]
    partly = np.rint(signal * 1000).astype(np.int64)
    partly[4, :100] = -32768  # a gap is interpolated: the lead stays recorded
    out = extractor(str(write_wfdb_dat(tmp_path, "gap_avl", digital=partly)))
    assert out["lead_mask"][0].all()


def test_collator_rows_are_not_rechecked(extractor, signal):
    from processing.ecg.data_collator import ECGDataCollator

    collate = ECGDataCollator(extractor, label_column=None, return_tensors="np")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = collate([{"signal": signal * 1000, "sampling_rate": 500, "lead_names": LEADS, "record_id": "r"}])
    assert batch["input_values"].shape == (1, 12, 5000)


# ------------------------------------------------------------------------------------------------
# Classes 5 and 6: pipeline call arguments, and errors inside a list of inputs


@pytest.fixture(scope="module")
def classifier(tiny_checkpoint):
    import modeling_supreme  # noqa: F401  (registers the task)
    from transformers import pipeline

    return pipeline("zero-shot-ecg-classification", model=str(tiny_checkpoint))


@pytest.mark.parametrize(
    "labels, message",
    [
        ([], r"candidate_labels is empty"),
        (["sinus rhythm", ""], r"candidate_labels\[1\] is '': an empty or whitespace-only label"),
        (["  \t", "sinus rhythm"], r"candidate_labels\[0\] is '  \\t': an empty or whitespace-only label"),
        (["sinus rhythm", None], r"candidate_labels\[1\] is None \(NoneType\); each label must be a non-empty string"),
        ([3, "sinus rhythm"], r"candidate_labels\[0\] is 3 \(int\)"),
        (["Sinus rhythm", "sinus  rhythm"], r"duplicates: \[0\] 'Sinus rhythm' and \[1\] 'sinus  rhythm'"),
        ("sinus rhythm,,atrial fibrillation", r"empty label at comma-separated position\(s\) \[1\]"),
        (" , ", r"holds no label"),
        (None, r"candidate_labels is required"),
    ],
)
def test_candidate_labels_are_validated(classifier, generated_records, labels, message):
    with pytest.raises(ValueError, match=message):
        classifier(str(generated_records["hr"][0]), candidate_labels=labels)


@pytest.mark.parametrize(
    "template, message",
    [
        ("no slot", r"exactly one '\{\}' slot.*'no slot' with 0 slot"),
        ("{} and {}", r"exactly one '\{\}' slot.*with 2 slot"),
        ("ECG of {label}", r"with 1 slot\(s\) \(named or numbered\)"),
        ("ECG {0}", r"named or numbered"),
        ("ECG {", r"not a valid format string"),
        (7, r"hypothesis_template must be a string"),
    ],
)
def test_hypothesis_template_needs_exactly_one_slot(classifier, generated_records, template, message):
    with pytest.raises(ValueError, match=message):
        classifier(str(generated_records["hr"][0]), candidate_labels=["sinus rhythm"], hypothesis_template=template)


def test_template_with_literal_braces_is_accepted():
    from modeling_supreme.pipeline_supreme import validate_hypothesis_template

    assert validate_hypothesis_template("{{ECG}} shows {}") == "{{ECG}} shows {}"


@pytest.mark.parametrize("value", ["false", "False", 0, 1, None.__class__, "yes"])
def test_multi_label_must_be_a_bool(classifier, generated_records, value):
    with pytest.raises(ValueError, match=r"multi_label must be True or False, got"):
        classifier(str(generated_records["hr"][0]), candidate_labels=["sinus rhythm"], multi_label=value)


@pytest.mark.parametrize("value", [0, -1, 1.5, "2", True])
def test_top_k_and_errors_arguments(classifier, generated_records, value):
    with pytest.raises(ValueError, match=r"top_k must be a whole number of at least 1"):
        classifier(str(generated_records["hr"][0]), candidate_labels=["sinus rhythm"], top_k=value)
    with pytest.raises(ValueError, match=r"errors must be one of \('raise', 'return'\), got 'ignore'"):
        classifier(str(generated_records["hr"][0]), candidate_labels=["sinus rhythm"], errors="ignore")


def test_labels_over_the_text_limit(classifier, generated_records):
    limit = classifier.model.config.text_max_length
    common = "atrial fibrillation with rapid ventricular response " * (limit // 4)
    with pytest.raises(ValueError, match=rf"candidate_labels\[0\] .* and candidate_labels\[1\] .* identical within the "
                                         rf"text limit of {limit} tokens"):
        classifier(str(generated_records["hr"][0]), candidate_labels=[common + "and LBBB", common + "and RBBB"])
    long_label = "sinus rhythm " * limit
    with pytest.warns(UserWarning, match=rf"candidate_labels\[1\] 'sinus rhythm sinus .* only the first {limit}"):
        result = classifier(str(generated_records["hr"][0]), candidate_labels=["atrial fibrillation", long_label])
    assert len(result) == 2
    with warnings.catch_warnings():  # labels within the limit: no warning
        warnings.simplefilter("error")
        classifier(str(generated_records["hr"][0]), candidate_labels=["atrial fibrillation", "sinus rhythm"])


def _bad_inputs(tmp_path, generated_records, signal):
    missing = tmp_path / "no_such_record"
    return [
        str(generated_records["hr"][0]),
        str(missing),  # position 1: no header
        {"signal": signal, "sampling_rate": 500, "lead_names": LEADS, "record_id": "good_dict"},
        {"signal": np.rint(signal * 1000).astype(np.int16), "sampling_rate": 500, "lead_names": LEADS,
         "record_id": "adc_counts"},  # position 3: integer counts
        {"signal": signal[:, :100], "sampling_rate": 500, "lead_names": LEADS, "record_id": "too_short"},  # 4
    ]


@pytest.mark.parametrize("batch_size", [1, 3])
def test_errors_in_a_list_name_the_position_and_record(classifier, generated_records, tmp_path, signal, batch_size):
    inputs = _bad_inputs(tmp_path, generated_records, signal)
    with pytest.raises(RecordError, match=r"^input 1: .*no_such_record: no WFDB header"):
        classifier(inputs, candidate_labels=["sinus rhythm"], batch_size=batch_size)
    with pytest.raises(ValueError, match=r"^input 1: record 'adc_counts': signal is an integer array"):
        classifier(inputs[2:4], candidate_labels=["sinus rhythm"], batch_size=batch_size)
    with pytest.raises(ValueError, match=r"^input 2: record 'too_short': record is 0.200 s long"):
        classifier([inputs[0], inputs[2], inputs[4]], candidate_labels=["sinus rhythm"], batch_size=batch_size)


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_errors_return_scores_the_rest(classifier, generated_records, tmp_path, signal, batch_size):
    inputs = _bad_inputs(tmp_path, generated_records, signal)
    labels = ["atrial fibrillation", "sinus rhythm"]
    results = classifier(inputs, candidate_labels=labels, errors="return", batch_size=batch_size)
    assert len(results) == 5
    errors = {i: r for i, r in enumerate(results) if isinstance(r, dict)}
    assert sorted(errors) == [1, 3, 4]
    assert errors[1]["input"] == 1 and errors[1]["record_id"] == str(tmp_path / "no_such_record")
    assert "no WFDB header" in errors[1]["error"]
    assert errors[3]["record_id"] == "adc_counts" and "integer array" in errors[3]["error"]
    assert errors[4]["record_id"] == "too_short" and "0.200 s long" in errors[4]["error"]
    # the good records get exactly the scores they get alone
    for i in (0, 2):
        alone = classifier(inputs[i], candidate_labels=labels)
        assert {r["label"]: r["score"] for r in results[i]} == pytest.approx({r["label"]: r["score"] for r in alone},
                                                                            abs=1e-5)


def test_errors_return_when_every_input_fails(classifier, tmp_path):
    results = classifier([str(tmp_path / "a"), str(tmp_path / "b")], candidate_labels=["sinus rhythm"],
                         errors="return", batch_size=2)
    assert [r["input"] for r in results] == [0, 1] and all("no WFDB header" in r["error"] for r in results)


# ------------------------------------------------------------------------------------------------
# Class 7: reports (empty reports, CSV decode errors, CSV field limit; no 0-byte output)

REPO = Path(__file__).resolve().parents[1]
EXTRACT = REPO / "examples" / "extract_entities.py"


@pytest.fixture(scope="module")
def lexicon():
    from processing.reports.extraction import create_backend

    return create_backend("lexicon")


def test_empty_reports_are_marked_and_left_out_of_targets(tmp_path, lexicon):
    from modeling_supreme.training.targets import build_targets, load_entities
    from processing.reports.entities_file import iter_entities_file, run_extraction

    records = [("a", ""), ("b", "  \n\t "), ("c", None), ("d", "Sinusrhythmus. Linksschenkelblock."),
               ("e", b"   "), ("f", "Vorhofflimmern")]
    out = tmp_path / "e.jsonl"
    stats = run_extraction(records, out, lexicon, batch_size=4, progress=False, log=lambda m: None)
    assert stats.no_report == 4 and stats.errors == 0 and stats.written == 6
    lines = {line["record_id"]: line for line in iter_entities_file(out)}
    for rid in "abce":
        assert lines[rid]["no_report"] is True and lines[rid]["entities"] == [] and lines[rid]["error"] is None
    for rid in "df":
        assert "no_report" not in lines[rid] and lines[rid]["entities"]
    targets = build_targets(list("abcdef"), list("abcdef"), load_entities(str(out)), min_count=1)
    assert targets.rows.tolist() == [3, 5]  # only d and f: an empty report is not a negative for every concept
    assert targets.report["records_without_report"] == 4
    # resuming the file does not extract them again
    again = run_extraction(records, out, lexicon, progress=False, log=lambda m: None)
    assert again.written == 0 and again.already_done == 6


def _ptbxl_table(folder: Path, report_3: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    header = b"ecg_id,patient_id,report,scp_codes,strat_fold,filename_lr,filename_hr\n"
    row = lambda i, report: (f'{i},{100 + i}.0,"'.encode() + report + f'","{{\'NORM\': 100.0}}",1,'  # noqa: E731
                             f"records100/00000/{i:05d}_lr,records500/00000/{i:05d}_hr\n".encode())
    (folder / "ptbxl_database.csv").write_bytes(header + row(1, b"sinusrhythmus") + row(2, b"normales ekg")
                                                + row(3, report_3) + row(4, b"lagetyp normal"))
    return folder


@pytest.mark.parametrize(
    "report, message",
    [
        ("qt-verl\xe4ngerung".encode("latin-1"), r"ptbxl_database.csv: line 4 is not valid UTF-8 \(byte 0xe4 at file offset"),
        (b"\xff\xfe broken", r"ptbxl_database.csv: line 4 is not valid UTF-8 \(byte 0xff"),
        (b"x" * 200_000, r"ptbxl_database.csv: line 4: unreadable CSV \(field larger than field limit \(131072\)\); "
                         r"a field is longer than csv.field_size_limit\(\)"),
    ],
)
def test_ptbxl_table_faults_name_file_and_line(tmp_path, report, message):
    from datasets_scripts.corpora.ptbxl import read_ptbxl_database

    folder = _ptbxl_table(tmp_path / "ptbxl", report)
    with pytest.raises(ValueError, match=message):
        read_ptbxl_database(str(folder))
    assert len(read_ptbxl_database(str(_ptbxl_table(tmp_path / "fine", "qt-verlängerung".encode())))) == 4


@pytest.mark.parametrize("bad, message", [
    (b"Sinus\xe4rhythm", r"machine_measurements.csv: line 3 is not valid UTF-8 \(byte 0xe4"),
    (b"z" * 150_000, r"machine_measurements.csv: line 3: unreadable CSV \(field larger than field limit"),
])
def test_mimic_measurements_faults_name_file_and_line(tmp_path, bad, message):
    from datasets_scripts.corpora.mimic_iv_ecg import iter_mimic_reports

    (tmp_path / "machine_measurements.csv").write_bytes(
        b"subject_id,study_id,report_0,report_1\n1,40000001,Sinus rhythm,Normal ECG\n2,40000002," + bad + b",x\n")
    with pytest.raises(ValueError, match=message):
        list(iter_mimic_reports(str(tmp_path)))


def _run_extract(*args, env=None, timeout=300):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, str(EXTRACT), "--no_progress", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


@pytest.mark.parametrize("report, message", [
    ("qt-verl\xe4ngerung".encode("latin-1"), "line 4 is not valid UTF-8"),
    (b"x" * 200_000, "line 4: unreadable CSV (field larger than field limit (131072))"),
])
def test_extract_entities_csv_faults_leave_no_output(tmp_path, report, message):
    folder = _ptbxl_table(tmp_path / "ptbxl", report)
    out = tmp_path / "entities.jsonl"
    result = _run_extract("--dataset", "ptbxl", "--data_dir", str(folder), "--output", str(out))
    assert result.returncode != 0 and message in result.stderr and "ptbxl_database.csv" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not (tmp_path / "entities.jsonl.lock").exists()


def test_reports_csv_field_limit_and_legacy_bytes(tmp_path):
    table = tmp_path / "reports.csv"
    table.write_bytes(b"record_id,report\n1,Sinusrhythmus\n2,\"" + b"y" * 140_000 + b"\"\n")
    out = tmp_path / "e.jsonl"
    result = _run_extract("--reports_csv", str(table), "--output", str(out), "--batch_size", "1")
    assert result.returncode != 0 and f"{table}: line 3: unreadable CSV" in result.stderr
    assert "Traceback" not in result.stderr
    # the rows before the bad one were written as complete lines (the file resumes); nothing half-written
    assert out.read_text().count("\n") == 1 and out.read_text().endswith("\n")
    # a legacy (cp1252) byte in a --reports_csv file is decoded per report, not an error
    legacy = tmp_path / "legacy.csv"
    legacy.write_bytes(b"record_id,report\n1,QT-Verl\xe4ngerung\n")
    result = _run_extract("--reports_csv", str(legacy), "--output", str(tmp_path / "l.jsonl"))
    assert result.returncode == 0, result.stderr
    assert '"error": null' in (tmp_path / "l.jsonl").read_text()


# ------------------------------------------------------------------------------------------------
# Class 8: one writer per entities file


def test_second_writer_is_refused_and_a_killed_writer_releases_the_lock(tmp_path, lexicon):
    import os
    import signal as signals
    import subprocess
    import sys

    from processing.reports.entities_file import OutputLocked, run_extraction

    out = tmp_path / "e.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from processing.reports.entities_file import _WriterLock\n"
         "with _WriterLock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(120)", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLocked, match=rf"e.jsonl: another extraction \(pid {holder.pid}\) is writing this file"):
            run_extraction([("1", "Sinusrhythmus")], out, lexicon, progress=False, log=lambda m: None)
        assert not out.exists()
    finally:
        holder.send_signal(signals.SIGKILL)
        holder.wait()
    stats = run_extraction([("1", "Sinusrhythmus")], out, lexicon, progress=False, log=lambda m: None)
    assert stats.written == 1 and not (tmp_path / "e.jsonl.lock").exists()


@pytest.mark.slow
def test_two_extract_entities_processes_on_one_file(tmp_path):
    import os
    import subprocess
    import sys
    import time

    out = tmp_path / "e.jsonl"
    args = ["--dataset", "synthetic", "--dataset_arg", "num_records=4000", "--dataset_arg", "seed=3", "--output", str(out),
            "--batch_size", "20", "--no_progress"]
    first = subprocess.Popen([sys.executable, str(EXTRACT), *args], cwd=REPO, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 300
    while not (out.exists() and out.stat().st_size) and first.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    second = _run_extract(*args[:-1])
    first_err = first.communicate(timeout=600)[1]
    assert first.returncode == 0, first_err[-2000:]
    if second.returncode == 0:  # the first had already finished: the second found everything done
        assert "skipped 4000 already done" in second.stderr
    else:
        assert f"another extraction (pid {first.pid}) is writing this file" in second.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 4000 and len({json.loads(line)["record_id"] for line in lines}) == 4000


@pytest.mark.slow
def test_extraction_killed_at_seeded_random_points(tmp_path):
    import os
    import signal as signals
    import subprocess
    import sys
    import time

    args = ["--dataset", "synthetic", "--dataset_arg", "num_records=3000", "--dataset_arg", "seed=5", "--batch_size", "16",
            "--no_progress"]
    reference = tmp_path / "reference.jsonl"
    assert _run_extract(*args, "--output", str(reference)).returncode == 0
    out = tmp_path / "killed.jsonl"
    rng = np.random.default_rng(8)
    kills = 0
    for _ in range(4):
        written = out.stat().st_size if out.exists() else 0
        target = written + int(rng.integers(2_000, 60_000))  # bytes more before the kill, plus a random delay
        process = subprocess.Popen([sys.executable, str(EXTRACT), *args, "--output", str(out)], cwd=REPO,
                                   stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        deadline = time.time() + 300
        while process.poll() is None and time.time() < deadline and (out.stat().st_size if out.exists() else 0) < target:
            time.sleep(0.002)
        time.sleep(float(rng.uniform(0, 0.05)))
        if process.poll() is None:
            process.send_signal(signals.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 3
    assert _run_extract(*args, "--output", str(out)).returncode == 0
    assert not out.with_name(out.name + ".lock").exists()
    assert sorted(out.read_text().splitlines()) == sorted(reference.read_text().splitlines())


# ------------------------------------------------------------------------------------------------
# Class 10 (in process): the cause of the replayed epoch, and what a killed save leaves behind


def test_prepared_loader_follows_the_epoch_it_is_given():
    """accelerate's prepared DataLoader sets its sampler's epoch from its own counter when iterated; a
    new process starts that counter at 0. Setting the epoch on the prepared loader is what the
    training loop does; setting it on the sampler alone is overridden (the defect of issue 11)."""
    import torch
    from accelerate.data_loader import prepare_data_loader

    from modeling_supreme.training.data import EpochSampler

    def order(set_on):
        sampler = EpochSampler(12, seed=3)
        loader = prepare_data_loader(torch.utils.data.DataLoader(list(range(12)), batch_size=4, sampler=sampler),
                                     device=torch.device("cpu"), num_processes=1, process_index=0, put_on_device=False)
        if set_on == "loader":
            loader.set_epoch(2)
        else:
            sampler.set_epoch(2)
        return [int(x) for batch in loader for x in batch]

    expected = np.random.default_rng([3, 2]).permutation(12).tolist()
    assert order("loader") == expected
    assert order("sampler") == np.random.default_rng([3, 0]).permutation(12).tolist() != expected


def test_unfinished_checkpoints_are_ignored_and_removed(tmp_path):
    from modeling_supreme.training.checkpoints import (
        STATE_FILE, complete_checkpoints, remove_unfinished_checkpoints, resolve_resume,
    )

    root = tmp_path / "checkpoints"
    for name, finished in (("step_00000002", True), ("step_00000004", True), (".partial_step_00000006", True),
                           (".deleting_step_00000001", True), ("step_00000008", False)):
        (root / name).mkdir(parents=True)
        (root / name / "model.safetensors").write_bytes(b"x")
        if finished:
            (root / name / STATE_FILE).write_text("{}")
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_00000002", "step_00000004"]
    assert resolve_resume(tmp_path, "latest").name == "step_00000004"
    assert remove_unfinished_checkpoints(tmp_path) == [".deleting_step_00000001", ".partial_step_00000006"]
    assert sorted(p.name for p in root.iterdir()) == ["step_00000002", "step_00000004", "step_00000008"]


@pytest.mark.parametrize("rate, message", [
    (True, r"sampling rate must be a number of Hz, got True \(bool\)"),
    ("500", r"sampling rate must be a number of Hz, got '500' \(str\)"),
    (float("nan"), r"sampling rate must be a positive finite number of Hz, got nan"),
    (float("inf"), r"sampling rate must be a positive finite number of Hz, got inf"),
    (-500, r"sampling rate must be positive, got -500"),
])
def test_array_sampling_rate_must_be_a_number(extractor, signal, rate, message):
    with pytest.raises(ValueError, match=rf"record 0: {message}"):
        extractor(signal, sampling_rate=rate, lead_names=LEADS)


def test_lead_names_as_one_string_is_refused(extractor, signal):
    with pytest.raises(ValueError, match=r"record 0: lead_names must be a list of lead names, got the string 'II'"):
        extractor(signal[:1], sampling_rate=500, lead_names="II")


def test_array_gaps_are_repaired_with_a_warning(extractor, signal):
    gappy = signal.copy()
    gappy[1, 100:150] = np.nan
    gappy[7, 10] = np.inf
    gappy[9, :4000] = np.nan  # 80% missing: more than max_nan_fraction
    with pytest.warns(ECGDataWarning, match=r"record 0: 51 missing \(NaN/inf\) samples in lead\(s\) II, V2 interpolated; "
                                            r"lead\(s\) V4 with more than 50% missing samples treated as absent"):
        out = extractor(gappy, sampling_rate=500, lead_names=LEADS)
    assert out["lead_mask"][0].tolist() == [i != 9 for i in range(12)]
    assert np.isfinite(out["input_values"]).all()
