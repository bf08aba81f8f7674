"""The WFDB reader: fast path equals wfdb on every real record; each bad-input case on generated files."""

import warnings
from pathlib import Path

import numpy as np
import pytest

from datasets_scripts.testing import example_signal, write_wfdb_dat, write_wfdb_mat
from processing.ecg.wfdb_reader import (
    ECGDataWarning,
    RecordError,
    parse_header_text,
    read_digital,
    read_wfdb_record,
)
from processing.ecg.ecg_leads import STANDARD_12_LEADS


def _real_records(shared: Path):
    paths = sorted(shared.glob("ptbxl/records*/*/*.hea")) + sorted(shared.glob("cinc2021/*.hea"))
    paths += sorted(shared.glob("chapman/*.hea"))
    return [p.with_suffix("") for p in paths]


def test_fast_path_matches_wfdb_on_every_real_record(shared_data):
    import wfdb

    records = _real_records(shared_data)
    assert len(records) == 653
    worst = 0.0
    for base in records:
        rec = read_digital(base, warn=False)
        assert rec.fast_path, base
        ref, fields = wfdb.rdsamp(str(base))
        # the float64 physical values agree to 1e-6 mV with wfdb.rdsamp; the float32 output is its rounding
        phys64 = rec.digital.astype(np.float64) / rec.gain[:, None]
        worst = max(worst, float(np.max(np.abs(phys64 - ref.T))))
        out = read_wfdb_record(base, warn=False)
        assert out.signal.dtype == np.float32 and out.signal.shape == ref.T.shape
        np.testing.assert_array_equal(out.signal, ref.T.astype(np.float32))
        assert out.sampling_rate == int(fields["fs"])
        assert out.lead_names == list(STANDARD_12_LEADS)  # AVR/AVL/AVF canonicalised
    assert worst <= 1e-6


def test_ptbxl_lead_names_canonicalised_and_fallback_agrees(ptbxl_dir):
    base = ptbxl_dir / "records100" / "00000" / "00001_lr"
    assert "AVR" in (base.with_suffix(".hea")).read_text()
    fast = read_wfdb_record(base)
    slow = read_wfdb_record(base, fast=False)
    assert fast.lead_names == slow.lead_names == list(STANDARD_12_LEADS)
    np.testing.assert_array_equal(fast.signal, slow.signal)
    assert fast.sampling_rate == 100 and fast.signal.shape == (12, 1000)


def test_accepts_paths_with_extension(cinc2021_dir):
    a = read_wfdb_record(cinc2021_dir / "E07500.hea")
    b = read_wfdb_record(str(cinc2021_dir / "E07500"))
    np.testing.assert_array_equal(a.signal, b.signal)
    assert a.record_id == "E07500" and any("Dx" in c for c in a.comments)


def test_header_record_name_with_extension_is_tolerated():
    h = parse_header_text("E00666.mat 12 500 5000 05-May-2020 14:50:55\n" + "E00666.mat 16+24 1000/mV 16 0 -39 -24145 0 I\n" * 12)
    assert h.record_name == "E00666" and h.n_samples == 5000 and h.byte_offsets[0] == 24 and h.gains[0] == 1000.0


@pytest.fixture
def signal():
    return example_signal(0)


def test_generated_dat_and_mat_roundtrip(tmp_path, signal):
    dat = write_wfdb_dat(tmp_path, "rec_dat", signal)
    mat = write_wfdb_mat(tmp_path, "rec_mat", signal)
    for base in (dat, mat):
        rec = read_wfdb_record(base)
        np.testing.assert_allclose(rec.signal, signal, atol=0.0006)
        np.testing.assert_array_equal(rec.signal, read_wfdb_record(base, fast=False).signal)


def test_other_formats_use_wfdb_fallback(tmp_path, signal):
    base = write_wfdb_dat(tmp_path, "rec212", signal[:, :1000], fmt="212", gain=200.0)
    rec = read_digital(base)
    assert not rec.fast_path
    np.testing.assert_allclose(rec.physical(), signal[:, :1000], atol=0.003)


def test_missing_header_and_signal_file(tmp_path, signal):
    with pytest.raises(RecordError, match="no WFDB header"):
        read_wfdb_record(tmp_path / "nothing")
    base = write_wfdb_dat(tmp_path, "gone", signal)
    base.with_suffix(".dat").unlink()
    with pytest.raises(RecordError, match=r"gone.*signal file gone.dat not found"):
        read_wfdb_record(base)


def test_unreadable_header(tmp_path):
    (tmp_path / "bad.hea").write_text("bad twelve 500\n")
    with pytest.raises(RecordError, match="bad: unparsable number of signals .twelve."):
        read_wfdb_record(tmp_path / "bad")
    (tmp_path / "short.hea").write_text("short 12 500 5000\nshort.dat 16 1000/mV 16 0 0 0 0 I\n")
    with pytest.raises(RecordError, match="declares 12 signals but has 1 signal lines"):
        read_wfdb_record(tmp_path / "short")


def test_truncated_dat_file(tmp_path, signal):
    base = write_wfdb_dat(tmp_path, "trunc", signal)
    data = base.with_suffix(".dat")
    data.write_bytes(data.read_bytes()[:50000])
    with pytest.raises(RecordError, match=r"trunc.*holds 50000 bytes.*truncated signal file"):
        read_wfdb_record(base)


def test_header_length_disagrees_with_data(tmp_path, signal):
    base = write_wfdb_dat(tmp_path, "long", signal)
    hea = base.with_suffix(".hea")
    hea.write_text(hea.read_text().replace(" 500 5000", " 500 4000", 1))
    with pytest.raises(RecordError, match="smaller than the data"):
        read_wfdb_record(base)


def test_mat_lead_count_and_length_disagree_with_header(tmp_path, signal):
    base = write_wfdb_mat(tmp_path, "leads", signal[:8], lead_names=STANDARD_12_LEADS[:8], header_leads=12,
                          comments=["Dx: 426783006"])
    with pytest.raises(RecordError, match="holds 8 leads, the header declares 12"):
        read_wfdb_record(base)
    base = write_wfdb_mat(tmp_path, "length", signal, header_samples=4000)
    with pytest.raises(RecordError, match="holds 5000 samples per lead, the header declares 4000"):
        read_wfdb_record(base)


def test_truncated_mat_file(tmp_path, signal):
    base = write_wfdb_mat(tmp_path, "tmat", signal)
    mat = base.with_suffix(".mat")
    mat.write_bytes(mat.read_bytes()[:1000])
    with pytest.raises(RecordError, match="tmat.*truncated"):
        read_wfdb_record(base)


def test_mat_v5_file_is_not_a_wfdb_signal_file(tmp_path, signal):
    from scipy.io import savemat

    base = write_wfdb_mat(tmp_path, "v5", signal)
    savemat(str(base.with_suffix(".mat")), {"val": (signal * 1000).astype(np.int16)})
    with pytest.raises(RecordError, match="MATLAB v5"):
        read_wfdb_record(base)


def test_units_microvolt_and_volt_are_converted(tmp_path, signal):
    uv = write_wfdb_dat(tmp_path, "uv", signal * 1000.0, gain=1.0, units="uV")
    rec = read_wfdb_record(uv)
    np.testing.assert_allclose(rec.signal, signal, atol=0.0006)
    bad = write_wfdb_dat(tmp_path, "degc", signal, units="degC")
    with pytest.raises(RecordError, match="unsupported units 'degC'"):
        read_wfdb_record(bad)


def test_unknown_and_duplicate_lead_names(tmp_path, signal):
    names = list(STANDARD_12_LEADS)
    names[7] = "V7"
    base = write_wfdb_dat(tmp_path, "v7", signal, lead_names=names)
    with pytest.raises(RecordError, match="v7.*unknown lead name 'V7'"):
        read_wfdb_record(base)
    names[7] = "v1"  # wfdb itself only refuses exact duplicates
    base = write_wfdb_dat(tmp_path, "dup", signal, lead_names=names)
    with pytest.raises(RecordError, match="duplicated lead 'V1'"):
        read_wfdb_record(base)


def _with_nan(tmp_path, signal, name, spans):
    digital = np.rint(signal * 1000).astype(np.int64)
    for lead, a, b in spans:
        digital[lead, a:b] = -32768
    return write_wfdb_dat(tmp_path, name, digital=digital)


def test_nan_samples_counted_and_interpolated(tmp_path, signal):
    base = _with_nan(tmp_path, signal, "nan", [(1, 100, 150), (6, 0, 20)])
    with pytest.warns(ECGDataWarning, match=r"nan.*70 missing \(NaN\) samples in lead\(s\) II, V1, interpolated"):
        rec = read_wfdb_record(base)
    assert rec.n_nan == 70 and np.isfinite(rec.signal).all()
    # linear interpolation between the neighbours, the nearest valid value at the start
    lead2 = rec.signal[1]
    expected = np.interp(np.arange(100, 150), [99, 150], [lead2[99], lead2[150]])
    np.testing.assert_allclose(lead2[100:150], expected, atol=0.0011)
    assert np.all(rec.signal[6, :20] == rec.signal[6, 20])
    # wfdb gives NaN at the same places
    kept = read_wfdb_record(base, nan_policy="keep", warn=False)
    assert np.isnan(kept.signal).sum() == 70
    zero = read_wfdb_record(base, nan_policy="zero", warn=False)
    assert np.all(zero.signal[1, 100:150] == 0)
    with pytest.raises(RecordError, match="70 missing"):
        read_wfdb_record(base, nan_policy="raise", warn=False)


def test_too_many_nan_samples_and_all_nan_lead(tmp_path, signal):
    base = _with_nan(tmp_path, signal, "mostly_nan", [(i, 0, 4000) for i in range(12)])
    with pytest.raises(RecordError, match=r"mostly_nan: 48000 of 60000 samples \(80.0%\) are missing"):
        read_wfdb_record(base)
    base = _with_nan(tmp_path, signal, "dead_lead", [(4, 0, 5000)])
    rec = read_wfdb_record(base, warn=False)
    assert np.all(rec.signal[4] == 0)
    assert rec.missing_leads == ["aVL"]
    # said as what it is: absent, not "interpolated" and then "flat"
    assert rec.issues == ["5000 missing (NaN) samples in lead(s) aVL: no valid sample, treated as absent (missing_leads)"]


def test_implausible_amplitude_warns_with_record_name(tmp_path, signal):
    # a gain 1000x too large in the header (like the PTB copies of the 2020 Challenge): microvolt-sized signal
    base = write_wfdb_dat(tmp_path, "tiny", signal, gain=1000.0)
    hea = base.with_suffix(".hea")
    hea.write_text(hea.read_text().replace("1000.0(0)/mV", "1000000.0(0)/mV"))
    with pytest.warns(ECGDataWarning, match="tiny.*implausible amplitude"):
        rec = read_wfdb_record(base)
    assert rec.issues
    big = write_wfdb_dat(tmp_path, "huge", signal, gain=1000.0)
    hea = big.with_suffix(".hea")
    hea.write_text(hea.read_text().replace("1000.0(0)/mV", "20.0(0)/mV"))
    with pytest.warns(ECGDataWarning, match="huge.*implausible amplitude"):
        read_wfdb_record(big)
    # 5x gain errors (2020 release) on a record of typical amplitude (median lead peak-to-peak 1.3 mV)
    typical = signal * 1.4
    assert 1.2 < np.median(np.ptp(typical, axis=1)) < 1.5
    for name, factor in (("five_up", 5.0), ("five_down", 0.2)):
        base = write_wfdb_dat(tmp_path, name, typical * factor, gain=1000.0)
        with pytest.warns(ECGDataWarning, match=f"{name}.*implausible amplitude"):
            read_wfdb_record(base)


def test_plausible_record_gives_no_warning(tmp_path, signal):
    base = write_wfdb_dat(tmp_path, "fine", signal)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rec = read_wfdb_record(base)
    assert rec.issues == [] and rec.n_nan == 0


def test_checksum_mismatch_warns(tmp_path, signal):
    base = write_wfdb_mat(tmp_path, "cks", signal)
    mat = base.with_suffix(".mat")
    raw = bytearray(mat.read_bytes())
    raw[24 + 2 * 12 * 100] ^= 0x01  # flip one bit of lead I, sample 100
    mat.write_bytes(bytes(raw))
    with pytest.warns(ECGDataWarning, match="cks.*checksum mismatch in lead\\(s\\) I"):
        read_wfdb_record(base)
