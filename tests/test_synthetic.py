"""The synthetic corpus: deterministic, labelled with concept names, and its conditions really change the waveform."""

import re

import numpy as np
import pytest

from datasets_scripts import iter_reports, load_ecg_dataset
from datasets_scripts.corpora import synthetic_ecg as S
from processing.ecg.ecg_leads import STANDARD_12_LEADS as LEADS

FS = 500


@pytest.fixture(scope="module")
def vocab():
    from processing.concepts.vocabulary import load_concept_vocabulary

    return load_concept_vocabulary()


@pytest.fixture(scope="module")
def corpus():
    """(spec, signal) of 240 records of seed 0."""
    out = []
    for i in range(240):
        spec = S.sample_spec(0, i)
        out.append((spec, S.render_signal(spec)))
    return out


def test_condition_names_are_concept_names(vocab):
    concepts = S.condition_concepts()
    assert len(concepts) == 12
    for key, code in S.CONDITION_CODES.items():
        name, phrasings = concepts[key]
        assert name == vocab.by_snomed_code(code).name
        assert phrasings[0] == name and len(phrasings) >= 2 and all(p.isascii() for p in phrasings)
        # every phrasing is a text of the concept, so the lexicon extractor maps it back
        assert all(vocab.lookup(p).name == name for p in phrasings), phrasings


def test_deterministic_and_independent_of_corpus_size():
    a = S.render_signal(S.sample_spec(3, 17))
    b = S.render_signal(S.sample_spec(3, 17))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, S.render_signal(S.sample_spec(4, 17)))
    small = dict(iter_reports("synthetic", num_records=20, seed=3))
    large = dict(iter_reports("synthetic", num_records=50, seed=3))
    assert all(large[k] == v for k, v in small.items())
    assert all(k.startswith("synthetic-s3-") for k in large)


def test_several_conditions_per_record_and_all_present(corpus):
    counts = {k: 0 for k in S.CONDITION_CODES}
    for spec, _ in corpus:
        assert spec.conditions[0] in S.RHYTHMS and sum(c in S.RHYTHMS for c in spec.conditions) == 1
        for c in spec.conditions:
            counts[c] += 1
        assert not {"LBBB", "RBBB"} <= set(spec.conditions) and not {"STE", "STD"} <= set(spec.conditions)
    assert all(n >= 10 for n in counts.values()), counts
    assert np.mean([len(s.conditions) for s, _ in corpus]) >= 1.8


def test_reports_name_conditions_and_negate_absent_ones(corpus):
    concepts = S.condition_concepts()
    negations = 0
    for spec, _ in corpus[:120]:
        report = S.make_report(spec).lower()
        for key in spec.conditions:
            assert any(p.lower() in report for p in concepts[key][1]), (key, report)
        negations += bool(re.search(r"\bno\b|not seen|without|negative for", report))
    assert negations > 60
    templates = {re.sub(r"\d+", "#", S.make_report(s).split(".")[0]) for s, _ in corpus[:120]}
    assert len(templates) > 10  # phrased in varied ways


# -- the waveforms differ in the ways the labels say -------------------------------------------

def _beats(spec):
    onsets = spec.first_onset + np.concatenate([[0.0], np.cumsum(spec.rr[:-1])])
    return (onsets[(onsets > 0.5) & (onsets < 9.2)] * FS).astype(int)


def _avg(x, idx, offset_s, width_s=0.02):
    return np.mean([x[:, i + int(offset_s * FS): i + int((offset_s + width_s) * FS)].mean(axis=1) for i in idx], axis=0)


def _velocity(x):
    """Spatial velocity of the signal smoothed over 16 ms (noise suppressed)."""
    kernel = np.ones(8) / 8
    smooth = np.array([np.convolve(lead, kernel, mode="same") for lead in x])
    return np.sqrt((np.diff(smooth, axis=1) ** 2).sum(axis=0))


def _r_peaks(x):
    """QRS detections from the spatial velocity (independent of the model's own beat times)."""
    v = _velocity(x)
    thr = 0.4 * np.percentile(v, 99.5)
    peaks, last = [], -FS
    for i in np.flatnonzero(v > thr):
        if i - last > 0.25 * FS:
            peaks.append(i)
        last = i if i - last > 0.25 * FS else last
    return np.asarray(peaks)


def _features(spec, x):
    idx = _beats(spec)
    qrs_ptp = np.mean([np.ptp(x[:, i: i + int(spec.qrs * FS) + 5], axis=1) for i in idx], axis=0)
    ref = _avg(x, idx, -0.03)  # PR segment, just before the QRS
    st = _avg(x, idx, spec.qrs + 0.04) - ref
    t_wave = _avg(x, idx, spec.qt - 0.1) - ref
    v = _velocity(x)
    widths = []
    for i in idx:
        seg = v[i - 20: i + int(0.25 * FS)]
        active = np.flatnonzero(seg > 0.25 * seg.max())
        widths.append((active[-1] - active[0]) / FS)
    rr = np.diff(_r_peaks(x)) / FS
    # beat-averaged atrial activity before the QRS: P waves are time-locked, f waves and noise average out
    # (only beats whose window starts after the previous T wave; NaN if no beat qualifies)
    lead2 = x[LEADS.index("II")]
    clear = [i for prev, i in zip(idx[:-1], idx[1:]) if (i - prev) / FS > spec.qt + 0.4]
    p_energy = (np.ptp(np.mean([lead2[i - int(0.35 * FS): i - int(0.03 * FS)] for i in clear], axis=0))
                if clear else np.nan)
    return {
        "hr": 60.0 / np.median(rr), "rr_cv": np.std(rr) / np.mean(rr), "qrs_width": np.median(widths),
        "limb_qrs": qrs_ptp[:6].max(), "sokolow": qrs_ptp[LEADS.index("V1")] + qrs_ptp[LEADS.index("V5")],
        "st_max": st.max(), "st_min": st.min(), "t_II": t_wave[LEADS.index("II")], "p_II": p_energy,
    }


@pytest.fixture(scope="module")
def features(corpus):
    return [(set(spec.conditions), _features(spec, x)) for spec, x in corpus]


def _split(features, key, name):
    yes = np.array([f[name] for c, f in features if key in c])
    no = np.array([f[name] for c, f in features if key not in c])
    return yes[np.isfinite(yes)], no[np.isfinite(no)]


def _auc(pos, neg):
    """Probability that a random positive scores above a random negative (one feature as a classifier)."""
    return float(np.mean(pos[:, None] > neg[None, :]) + 0.5 * np.mean(pos[:, None] == neg[None, :]))


@pytest.mark.parametrize("key,name,direction,min_auc", [
    ("STACH", "hr", +1, 0.9),         # rate
    ("SBRAD", "hr", -1, 0.95),
    ("AF", "rr_cv", +1, 0.95),        # rhythm regularity
    ("AF", "p_II", -1, 0.9),          # P waves
    ("LBBB", "qrs_width", +1, 0.9),   # QRS width
    ("RBBB", "qrs_width", +1, 0.8),
    ("STE", "st_max", +1, 0.85),      # ST level
    ("STD", "st_min", -1, 0.75),
    ("TINV", "t_II", -1, 0.85),       # T polarity
    ("LQRSV", "limb_qrs", -1, 0.95),  # voltage
    ("LVH", "sokolow", +1, 0.95),
])
def test_each_condition_is_visible_in_the_signal(features, key, name, direction, min_auc):
    yes, no = _split(features, key, name)
    auc = _auc(direction * yes, direction * no)
    assert auc >= min_auc, f"{key} by {name}: AUC {auc:.3f}"


def test_first_degree_av_block_lengthens_pr(corpus):
    pr = {True: [], False: []}
    for spec, _ in corpus:
        if spec.conditions[0] != "AF":
            pr["IAVB" in spec.conditions].append(spec.pr)
    assert min(pr[True]) > 0.22 and max(pr[False]) < 0.2


def test_builder(tmp_path, vocab):
    ds = load_ecg_dataset("synthetic", num_records=30, seed=2, cache_dir=str(tmp_path))
    assert {k: len(v) for k, v in ds.items()} == {"train": 24, "validation": 3, "test": 3}
    ex = ds["validation"][0]
    assert ex["record_id"] == "synthetic-s2-000008" and ex["patient_id"] is None
    spec = S.sample_spec(2, 8)
    assert ex["labels"] == [vocab.by_snomed_code(S.CONDITION_CODES[k]).name for k in spec.conditions]
    np.testing.assert_allclose(ex["signal"], S.render_signal(spec), atol=0.0006)
    assert ex["report"] == dict(iter_reports("synthetic", num_records=30, seed=2))[ex["record_id"]]
    from datasets_scripts.corpora.synthetic import Synthetic

    assert "SYNTHETIC" in Synthetic(num_records=30, seed=2, cache_dir=str(tmp_path)).info.description
    with pytest.raises(ValueError, match="num_records must be a positive integer"):
        Synthetic(num_records=0, cache_dir=str(tmp_path))


def test_lexicon_extractor_recovers_the_labels_from_the_reports():
    import processing.reports.lexicon as lexicon
    specs = [S.sample_spec(0, i) for i in range(150)]
    extracted = lexicon.extract_lexicon([S.make_report(s) for s in specs])
    for spec, entities in zip(specs, extracted):
        present = {e["concept"] for e in entities if e["status"] == "present"}
        absent = {e["concept"] for e in entities if e["status"] == "absent"}
        assert present == set(S.condition_names(spec.conditions)), S.make_report(spec)
        assert not absent & present
