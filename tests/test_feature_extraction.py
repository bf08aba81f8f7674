"""ECGFeatureExtractor and ECGProcessor: lead matching, resampling, cropping, normalisation, NaNs, errors."""

import warnings

import numpy as np
import pytest
import torch

from processing.ecg.wfdb_reader import read_wfdb_record
from modeling_supreme import ECGFeatureExtractor, ECGProcessor, SuPreMEConfig

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


@pytest.fixture
def extractor():
    return ECGFeatureExtractor()


def _ecg(seconds=10.0, rate=500, leads=12, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    base = np.sin(2 * np.pi * 1.2 * t)[None] * rng.uniform(0.2, 1.5, (leads, 1))
    return (base + 0.05 * rng.standard_normal((leads, t.size)) + rng.uniform(-1, 1, (leads, 1))).astype(np.float32)


def test_reorders_leads_by_name_case_insensitively(extractor):
    signal = _ecg()
    order = np.random.default_rng(1).permutation(12)
    names = [LEADS[i].upper() if i % 2 else LEADS[i].lower() for i in order]
    shuffled = extractor(signal[order], sampling_rate=500, lead_names=names)
    reference = extractor(signal, sampling_rate=500, lead_names=LEADS)
    np.testing.assert_array_equal(shuffled["input_values"], reference["input_values"])
    assert reference["input_values"].shape == (1, 12, 5000) and reference["lead_mask"].all()


def test_missing_leads_are_zero_filled_and_masked(extractor):
    signal = _ecg(leads=6)
    out = extractor(signal, sampling_rate=500, lead_names=["I", "II", "III", "aVR", "aVL", "aVF"])
    assert out["lead_mask"][0].tolist() == [True] * 6 + [False] * 6
    assert np.all(out["input_values"][0, 6:] == 0)
    single = extractor(signal[:1], sampling_rate=500, lead_names=["I"])
    assert single["lead_mask"][0].sum() == 1 and single["lead_mask"][0, 0]


def test_baseline_normalisation_keeps_millivolts(extractor):
    signal = _ecg()
    out = extractor(signal, sampling_rate=500, lead_names=LEADS)["input_values"][0]
    expected = signal - np.median(signal, axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    zscore = ECGFeatureExtractor(normalization="zscore")(signal, sampling_rate=500, lead_names=LEADS)["input_values"][0]
    np.testing.assert_allclose(zscore.mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(zscore.std(axis=1), 1, atol=1e-3)


def test_resampling_cropping_and_padding(extractor):
    t = np.arange(2000) / 200.0
    slow = np.tile(np.sin(2 * np.pi * 1.0 * t), (12, 1)).astype(np.float32)  # 10 s at 200 Hz
    out = extractor(slow, sampling_rate=200, lead_names=LEADS)
    t500 = np.arange(5000) / 500.0
    np.testing.assert_allclose(out["input_values"][0, 0, 100:-100], np.sin(2 * np.pi * t500)[100:-100], atol=0.02)
    long = extractor(_ecg(seconds=30), sampling_rate=500, lead_names=LEADS)
    assert long["input_values"].shape == (1, 12, 5000) and long["attention_mask"].all()
    short = extractor(_ecg(seconds=4), sampling_rate=500, lead_names=LEADS)
    assert short["attention_mask"][0].sum() == 2000
    assert np.all(short["input_values"][0, :, 2000:] == 0)
    odd = extractor(_ecg(seconds=10, rate=257), sampling_rate=257, lead_names=LEADS)  # INCART's rate
    assert odd["input_values"].shape == (1, 12, 5000) and odd["attention_mask"][0].sum() == 5000


@pytest.mark.parametrize("rate,target", [(500, 100), (257, 500), (200, 500), (1000, 500), (500, 250), (360, 120)])
def test_resampling_is_scipys_resample_poly(rate, target):
    """The extractor passes resample_poly a cached copy of the filter it would design: the same output bit
    for bit. Integer decimations run that filter as one matrix product (`_decimate`): the same
    within float32 rounding, and never off by a sample (the tolerance is 1e-6 of the signal's range)."""
    from fractions import Fraction

    from scipy.signal import resample_poly

    signal = _ecg(seconds=10, rate=rate)
    extractor = ECGFeatureExtractor(sampling_rate=target, num_samples=10 * target, normalization="none", clip_value=None)
    out = extractor(signal, sampling_rate=rate, lead_names=LEADS)["input_values"][0]
    ratio = Fraction(target, rate)
    expected = resample_poly(signal, ratio.numerator, ratio.denominator, axis=1).astype(np.float32)[:, : 10 * target]
    if ratio.numerator == 1:
        assert out.shape == expected.shape
        assert np.abs(np.asarray(out) - expected).max() <= 1e-6 * np.ptp(expected)
    else:
        assert np.array_equal(np.asarray(out), expected)


@pytest.mark.parametrize("length", [3, 33, 160, 1000, 1001, 1003, 4999, 5000, 5004, 12345])
@pytest.mark.parametrize("down", [2, 3, 4, 5, 8])
@pytest.mark.filterwarnings("error")  # e.g. torch's warning for a read-only array (a one-block signal)
def test_decimation_matches_resample_poly_at_every_length(length, down):
    """Output length, padding at both ends and filter centring as resample_poly's, for lengths that are and
    are not multiples of the factor, shorter than the filter, and within one block of the product; float64
    input too."""
    from scipy.signal import resample_poly

    from processing.ecg.feature_extraction_supreme import _decimate, _resampling_taps

    signal = np.random.default_rng(length * down).standard_normal((3, length))
    for dtype in (np.float32, np.float64):
        x = signal.astype(dtype)
        expected = resample_poly(x, 1, down, axis=1, window=_resampling_taps(1, down).astype(dtype)).astype(np.float32)
        got = _decimate(x, down)
        assert got.dtype == np.float32 and got.shape == expected.shape
        assert np.abs(got - expected).max() < 2e-6


def test_baseline_medians_are_numpys_exactly(ptbxl_dir):
    """The one-selection median (`_row_medians`) gives np.median's values bit for bit: odd and even lengths,
    ties, a single sample, real records; non-finite input takes np.median itself."""
    from processing.ecg.feature_extraction_supreme import _row_medians

    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((12, n)).astype(np.float32) for n in (1, 2, 3, 1000, 4999, 5000)]
    arrays += [np.round(rng.standard_normal((12, 5000)), 1).astype(np.float32),  # many ties
               np.zeros((3, 10), np.float32), np.tile(np.float32([1, 2]), (2, 3))]
    arrays += [read_wfdb_record(ptbxl_dir / f"records500/00000/0000{i}_hr").signal for i in (1, 2, 3)]
    with_nan = rng.standard_normal((2, 100)).astype(np.float32)
    with_nan[0, 5] = np.nan
    arrays.append(with_nan)
    for signal in arrays:
        expected = np.median(signal, axis=1, keepdims=True)
        got = _row_medians(signal)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)  # NaN equals NaN here
    assert np.isnan(_row_medians(with_nan)[0, 0]) and np.isfinite(_row_medians(with_nan)[1, 0])


def test_center_crop_takes_the_middle():
    extractor = ECGFeatureExtractor(crop="center", normalization="none", clip_value=None)
    ramp = np.tile(np.arange(15000, dtype=np.float32), (12, 1))
    out = extractor(ramp, sampling_rate=500, lead_names=LEADS)["input_values"][0, 0]
    assert out[0] == 5000 and out[-1] == 9999


def test_layouts_inputs_and_batches(extractor):
    signal = _ecg()
    reference = extractor(signal, sampling_rate=500, lead_names=LEADS)["input_values"]
    time_first = extractor(signal.T, sampling_rate=500, lead_names=LEADS, layout="time_first")["input_values"]
    as_dict = extractor({"signal": signal, "sampling_rate": 500, "lead_names": LEADS})["input_values"]
    as_torch = extractor(torch.from_numpy(signal), sampling_rate=500, lead_names=LEADS)["input_values"]
    as_lists = extractor(signal.tolist(), sampling_rate=500, lead_names=LEADS)["input_values"]
    for other in (time_first, as_dict, as_torch, as_lists):
        np.testing.assert_array_equal(other, reference)
    batch = extractor(np.stack([signal, signal]), sampling_rate=500, lead_names=LEADS, return_tensors="pt")
    assert batch["input_values"].shape == (2, 12, 5000) and batch["lead_mask"].dtype == torch.bool
    mixed = extractor([{"signal": signal, "sampling_rate": 500, "lead_names": LEADS},
                       {"signal": signal[:, ::5], "sampling_rate": 100, "lead_names": LEADS}])
    assert mixed["input_values"].shape == (2, 12, 5000)


def test_nan_gaps_are_interpolated_and_nan_leads_masked(extractor):
    signal = _ecg()
    gappy = signal.copy()
    gappy[3, 1000:1010] = np.nan
    gappy[5] = np.nan
    out = extractor(gappy, sampling_rate=500, lead_names=LEADS)
    assert np.isfinite(out["input_values"]).all()
    assert not out["lead_mask"][0, 5] and out["lead_mask"][0].sum() == 11
    expected_gap = np.linspace(signal[3, 999], signal[3, 1010], 12)[1:-1] - np.median(signal[3])
    np.testing.assert_allclose(out["input_values"][0, 3, 1000:1010], expected_gap, atol=0.05)


def test_real_ptbxl_100_and_500_hz_agree(ptbxl_dir, extractor):
    high = read_wfdb_record(ptbxl_dir / "records500/00000/00001_hr")
    low = read_wfdb_record(ptbxl_dir / "records100/00000/00001_lr")
    a = extractor(high)["input_values"][0]
    b = extractor(low)["input_values"][0]
    # The 100 Hz file is a decimated copy: after upsampling it matches the 500 Hz file closely.
    correlation = np.corrcoef(a[:, 100:-100].ravel(), b[:, 100:-100].ravel())[0, 1]
    assert correlation > 0.9


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ecg": np.zeros((12, 5000)), "lead_names": LEADS}, "no sampling rate"),
        ({"ecg": np.zeros((12, 5000)), "sampling_rate": 500, "lead_names": LEADS[:11] + ["V7"]}, "unknown lead name"),
        ({"ecg": np.zeros((12, 5000)), "sampling_rate": 500, "lead_names": LEADS[:11] + ["avr"]}, "duplicated lead"),
        ({"ecg": np.zeros((12, 5000)), "sampling_rate": 500, "lead_names": LEADS[:8]}, "12 leads along axis 0 but 8"),
        ({"ecg": np.zeros((5000, 12)), "sampling_rate": 500, "lead_names": LEADS}, "time_first"),
        ({"ecg": np.zeros((12, 0)), "sampling_rate": 500, "lead_names": LEADS}, "empty"),
        ({"ecg": np.full((12, 5000), np.nan), "sampling_rate": 500, "lead_names": LEADS}, "entirely NaN"),
        ({"ecg": np.zeros((12, 400)), "sampling_rate": 500, "lead_names": LEADS}, "at least 1 s"),
        ({"ecg": np.zeros((12, 5000)), "sampling_rate": 500}, "lead_names is required"),
        ({"ecg": np.zeros(5000), "sampling_rate": 500, "lead_names": ["I"]}, "2-D"),
    ],
)
def test_bad_input_raises_clear_error(extractor, kwargs, message):
    ecg = kwargs.pop("ecg")
    with pytest.raises(ValueError, match=message):
        extractor(ecg, **kwargs)


def test_error_names_the_record(extractor):
    with pytest.raises(ValueError, match="record '00042_hr'"):
        extractor({"record_id": "00042_hr", "signal": np.zeros((12, 100)), "sampling_rate": 500, "lead_names": LEADS})


def test_processor_round_trip_and_queries(tmp_path):
    from transformers import AutoFeatureExtractor, AutoProcessor

    processor = ECGProcessor.from_config(SuPreMEConfig(sampling_rate=250, num_samples=2500))
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, ECGProcessor) and isinstance(AutoFeatureExtractor.from_pretrained(tmp_path), ECGFeatureExtractor)
    assert loaded.feature_extractor.to_dict() == processor.feature_extractor.to_dict()
    out = loaded(ecg=_ecg(), sampling_rate=500, lead_names=LEADS, text=["atrial fibrillation", "sinus rhythm"],
                 return_tensors="pt")
    assert out["input_values"].shape == (1, 12, 2500)
    assert out["query_input_ids"].shape[0] == 2 and out["query_attention_mask"].shape == out["query_input_ids"].shape
    with pytest.raises(ValueError, match="non-empty"):
        loaded(text=["", "x"])


@pytest.mark.parametrize("rate,target,normalization", [(500, 500, "baseline"), (500, 100, "baseline"),
                                                       (360, 500, "zscore"), (500, 500, "none")])
def test_the_callers_array_is_never_written(rate, target, normalization):
    """The extractor copies only where it must (gaps, declared missing leads, no resampling), so no path may
    write into the array it was given: read-only input would raise, and a writable one must keep its values."""
    extractor = ECGFeatureExtractor(sampling_rate=target, num_samples=10 * target, normalization=normalization)
    signal = _ecg(seconds=10, rate=rate).astype(np.float32)
    signal[3, 100:120] = np.nan  # a gap: repaired in the extractor's copy
    for given in (signal.copy(), signal[[0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11]]):
        names = LEADS if len(given) == 12 else [lead for i, lead in enumerate(LEADS) if i != 3]
        before = given.copy()
        given.setflags(write=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = extractor(given, sampling_rate=rate, lead_names=names)["input_values"][0]
        np.testing.assert_array_equal(given, before)  # NaN equals NaN here
        assert np.isfinite(out).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        given = signal[[0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11]]
        before = given.copy()
        extractor({"signal": given, "sampling_rate": rate, "lead_names": [lead for lead in LEADS if lead != "aVR"],
                   "missing_leads": ["V6"]})  # a declared missing lead is blanked in the extractor's copy
    np.testing.assert_array_equal(given, before)


def test_feature_extraction_benchmark_runs_on_real_records_and_refuses_bad_arguments(ptbxl_dir, tmp_path, capsys):
    """`benchmarks/bench_feature_extraction.py` backs the extractor's quoted figures: it runs on real records
    (here two, two repeats) and prints each of them; bad arguments stop it before any work."""
    from conftest import load_benchmark

    bench = load_benchmark("bench_feature_extraction")
    for argv, message in ((["--records", "0"], "--records and --repeats must be at least 1"),
                          (["--threads", "0"], "--threads must be at least 1")):
        with pytest.raises(SystemExit):
            bench.main(argv)
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--data_dir", str(tmp_path)])
    assert "no PTB-XL 500 Hz records under" in capsys.readouterr().err
    threads = torch.get_num_threads()
    try:
        bench.main(["--data_dir", str(ptbxl_dir.parent), "--records", "2", "--repeats", "2", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    for line in ("fp32 matmul peak", "resample_poly", "over the 2 distinct records", "amplitude check",
                 "model at 100 Hz", "model at 500 Hz"):
        assert line in out
    largest = float(out.split("largest difference ")[1].split(" mV")[0])
    assert largest < 2e-6  # the matrix product is resample_poly within float32 rounding
