"""The zero-shot-ecg-classification pipeline on generated WFDB records (PTB-XL layout at 100/500 Hz,
Challenge .mat) and, where ../shared/data is present, on real PTB-XL and CinC 2021 records."""

import numpy as np
import pytest
from transformers import pipeline

import modeling_supreme  # noqa: F401  (registers the task)
from processing.ecg.wfdb_reader import RecordError, read_wfdb_record
from modeling_supreme import ECGProcessor, SuPreMEConfig, SuPreMEModel

from conftest import TINY_LABELS

LABELS = list(TINY_LABELS)


@pytest.fixture(scope="module")
def classifier(tiny_checkpoint):
    return pipeline("zero-shot-ecg-classification", model=str(tiny_checkpoint))


def _scores(result):
    return {item["label"]: item["score"] for item in result}


def _check_ranked(result):
    assert [item["label"] for item in result] != [] and len(result) == len(LABELS)
    scores = [item["score"] for item in result]
    assert scores == sorted(scores, reverse=True) and all(0.0 < s < 1.0 for s in scores)


def test_path_inputs(classifier, generated_records):
    hr, lr, mat = generated_records["hr"], generated_records["lr"], generated_records["mat"]
    for path in (hr[0], lr[0], str(hr[1]) + ".hea", str(hr[2]) + ".dat", mat[0], str(mat[1]) + ".mat"):
        _check_ranked(classifier(path, candidate_labels=LABELS))


def test_path_inputs_on_real_records(classifier, ptbxl_dir, cinc2021_dir):
    for path in (ptbxl_dir / "records500/00000/00001_hr", ptbxl_dir / "records100/00000/00001_lr",
                 str(ptbxl_dir / "records500/00000/00002_hr.hea"), cinc2021_dir / "E07500", cinc2021_dir / "JS20000"):
        _check_ranked(classifier(path, candidate_labels=LABELS))


def test_all_input_forms_give_the_same_scores(classifier, generated_records):
    record = read_wfdb_record(generated_records["hr"][3])
    reference = _scores(classifier(str(record.path), candidate_labels=LABELS))
    as_dict = {"signal": record.signal, "sampling_rate": record.sampling_rate, "lead_names": record.lead_names}
    as_array = classifier(record.signal.T, sampling_rate=500, lead_names=record.lead_names, layout="time_first",
                          candidate_labels=LABELS)
    for result in (classifier(as_dict, candidate_labels=LABELS), classifier(record, candidate_labels=LABELS), as_array):
        for label, score in _scores(result).items():
            assert score == pytest.approx(reference[label], abs=1e-5)


def test_batched_list_equals_one_by_one(classifier, generated_records):
    paths = [str(path) for path in generated_records["hr"][1:6]] + [str(generated_records["mat"][1])]
    batched = classifier(paths, candidate_labels=LABELS, batch_size=4)
    assert len(batched) == len(paths)
    for path, result in zip(paths, batched):
        single = _scores(classifier(path, candidate_labels=LABELS))
        for label, score in _scores(result).items():
            assert score == pytest.approx(single[label], abs=1e-5)
    spread = np.ptp([_scores(r)["sinus rhythm"] for r in batched])
    assert spread > 0.01  # different records get different scores


def test_a_batch_reaches_the_model_exactly_as_the_feature_extractor_prepares_it(classifier, generated_records, monkeypatch):
    """preprocess hands HF's collator each signal as (leads, samples), so that a batch is joined by one
    concatenation; _forward must view it back as (batch, leads, samples) with every record in its place."""
    import torch

    paths = [str(path) for path in generated_records["hr"][1:4]] + [str(generated_records["lr"][0])]
    seen = []
    score = classifier.model.zero_shot_logits

    def recording(**inputs):
        seen.append(inputs["input_values"].clone())
        return score(**inputs)

    monkeypatch.setattr(classifier.model, "zero_shot_logits", recording)
    classifier(paths, candidate_labels=LABELS, batch_size=4)
    classifier(paths[0], candidate_labels=LABELS)
    expected = classifier.feature_extractor(paths, return_tensors="pt")["input_values"]
    assert seen[0].shape == expected.shape == (4, len(classifier.feature_extractor.lead_names), expected.shape[-1])
    assert torch.equal(seen[0], expected) and torch.equal(seen[1], expected[:1])


def test_a_list_is_batched_by_default(classifier, generated_records, monkeypatch):
    """transformers' pipelines score a list one input at a time unless given batch_size; this one batches by
    DEFAULT_BATCH_SIZE, and a batch_size given to pipeline() or to the call still wins."""
    from modeling_supreme.pipeline_supreme import DEFAULT_BATCH_SIZE

    paths = [str(path) for path in generated_records["hr"]] * 8
    assert len(paths) > DEFAULT_BATCH_SIZE
    sizes = []
    score = classifier.model.zero_shot_logits

    def recording(**inputs):
        sizes.append(inputs["input_values"].shape[0])
        return score(**inputs)

    monkeypatch.setattr(classifier.model, "zero_shot_logits", recording)
    assert len(classifier(paths, candidate_labels=LABELS)) == len(paths)
    assert sizes == [DEFAULT_BATCH_SIZE] * (len(paths) // DEFAULT_BATCH_SIZE) + [len(paths) % DEFAULT_BATCH_SIZE] * bool(
        len(paths) % DEFAULT_BATCH_SIZE)
    sizes.clear()
    classifier(paths[:5], candidate_labels=LABELS, batch_size=2)
    assert sizes == [2, 2, 1]
    sizes.clear()
    own = pipeline("zero-shot-ecg-classification", model=classifier.model, processor=ECGProcessor(
        feature_extractor=classifier.feature_extractor, tokenizer=classifier.tokenizer), batch_size=3)
    own(paths[:5], candidate_labels=LABELS)
    assert sizes == [3, 2]


def test_shuffled_leads_with_their_names_give_the_same_scores(classifier, generated_records):
    record = read_wfdb_record(generated_records["hr"][4])
    order = np.random.default_rng(0).permutation(12)
    shuffled = {"signal": record.signal[order], "sampling_rate": 500,
                "lead_names": [record.lead_names[i].upper() for i in order]}
    a = _scores(classifier(record, candidate_labels=LABELS))
    b = _scores(classifier(shuffled, candidate_labels=LABELS))
    for label in LABELS:
        assert a[label] == pytest.approx(b[label], abs=1e-6)


def _rate_gaps(classifier, high_paths, low_paths):
    gaps, spreads = [], []
    records = range(len(high_paths))
    high = {i: _scores(classifier(high_paths[i], candidate_labels=LABELS)) for i in records}
    low = {i: _scores(classifier(low_paths[i], candidate_labels=LABELS)) for i in records}
    for label in LABELS:
        gaps += [abs(high[i][label] - low[i][label]) for i in records]
        spreads += [abs(high[i][label] - high[j][label]) for i in records for j in records if i < j]
    return gaps, spreads


def test_100_and_500_hz_files_of_a_record_score_close(classifier, generated_records):
    gaps, spreads = _rate_gaps(classifier, generated_records["hr"], generated_records["lr"])
    # The same ECG at two rates must be much closer than two different ECGs.
    assert np.median(gaps) < 0.25 * np.median(spreads)
    assert max(gaps) < 0.1


def test_100_and_500_hz_files_of_a_real_record_score_close(classifier, ptbxl_dir):
    records = range(1, 9)
    gaps, spreads = _rate_gaps(classifier, [ptbxl_dir / f"records500/00000/{i:05d}_hr" for i in records],
                               [ptbxl_dir / f"records100/00000/{i:05d}_lr" for i in records])
    assert np.median(gaps) < 0.25 * np.median(spreads)
    assert max(gaps) < 0.1


def test_reduced_lead_inputs(classifier, generated_records):
    record = read_wfdb_record(generated_records["hr"][5])
    lead_one = {"signal": record.signal[:1], "sampling_rate": 500, "lead_names": ["I"]}
    limb = {"signal": record.signal[:6], "sampling_rate": 500, "lead_names": record.lead_names[:6]}
    full = _scores(classifier(record, candidate_labels=LABELS))
    for reduced in (lead_one, limb):
        scores = _scores(classifier(reduced, candidate_labels=LABELS))
        assert set(scores) == set(LABELS)
        assert any(abs(scores[label] - full[label]) > 1e-3 for label in LABELS)


def test_multi_label_softmax_and_top_k(classifier, generated_records):
    path = generated_records["hr"][1]
    softmax = classifier(path, candidate_labels=LABELS, multi_label=False)
    assert sum(item["score"] for item in softmax) == pytest.approx(1.0, abs=1e-5)
    top = classifier(path, candidate_labels=LABELS, top_k=2)
    assert len(top) == 2 and top == classifier(path, candidate_labels=LABELS)[:2]
    templated = classifier(path, candidate_labels=LABELS, hypothesis_template="An ECG showing {}.")
    assert _scores(templated) != _scores(classifier(path, candidate_labels=LABELS))


def test_queries_are_embedded_once_per_call_and_cached_across_calls(classifier, generated_records):
    calls = []
    handle = classifier.model.text_encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        classifier.model.clear_query_cache()
        paths = list(generated_records["hr"]) + list(generated_records["mat"])
        classifier(paths, candidate_labels=LABELS, batch_size=4)
        assert len(calls) == 1
        classifier(paths[:3], candidate_labels=LABELS, batch_size=2)
        assert len(calls) == 1
        classifier(paths[0], candidate_labels=LABELS[:2])
        assert len(calls) == 2
    finally:
        handle.remove()


def test_bf16_autocast_scores_stay_close(classifier, generated_records):
    paths = generated_records["hr"]
    fp32 = classifier(paths, candidate_labels=LABELS, batch_size=8)
    bf16 = classifier(paths, candidate_labels=LABELS, batch_size=8, autocast_dtype="bfloat16")
    gaps = [abs(_scores(a)[label] - _scores(b)[label]) for a, b in zip(fp32, bf16) for label in LABELS]
    assert max(gaps) > 0  # autocast really ran in bf16
    # This fixture's head is scaled 20x, which amplifies rounding 20x; the 0.01 target for trained
    # checkpoints is measured by benchmarks/bench_model.py.
    assert max(gaps) < 0.03 and np.median(gaps) < 0.01


def test_pipeline_from_objects(generated_records):
    config = SuPreMEConfig(ecg_num_layers=1, fusion_num_layers=1)
    clf = pipeline("zero-shot-ecg-classification", model=SuPreMEModel(config), processor=ECGProcessor.from_config(config))
    assert len(clf(generated_records["lr"][0], candidate_labels=LABELS[:2])) == 2


def test_bad_inputs_raise_clear_errors(classifier, generated_records, tmp_path):
    path = generated_records["hr"][1]
    with pytest.raises(RecordError, match="no_such_record"):
        classifier(tmp_path / "no_such_record", candidate_labels=LABELS)
    with pytest.raises(ValueError, match="candidate_labels is required"):
        classifier(path)
    with pytest.raises(ValueError, match="duplicates"):
        classifier(path, candidate_labels=["a", "a"])
    with pytest.raises(ValueError, match="hypothesis_template"):
        classifier(path, candidate_labels=["a"], hypothesis_template="no placeholder")
    with pytest.raises(ValueError, match="no sampling rate"):
        classifier(np.zeros((12, 5000)), lead_names=["I"] * 12, candidate_labels=["a"])
    with pytest.raises(ValueError, match="duplicated lead"):
        classifier(np.zeros((2, 5000)), sampling_rate=500, lead_names=["I", "i"], candidate_labels=["a"])
    with pytest.raises(TypeError, match="unexpected arguments"):
        classifier(path, candidate_labels=["a"], labels=["b"])
