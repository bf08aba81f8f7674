"""Evaluation library (modeling_supreme.evaluation): prompt bank, AUROC report, output files, scoring."""

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import modeling_supreme.evaluation as ev
from modeling_supreme.evaluation.metrics import _bootstrap_auroc as bootstrap_auroc
import processing.atomic_files as atomic_files
from processing.concepts.vocabulary import load_concept_vocabulary

SUPER = ["conduction disturbance", "hypertrophy", "myocardial infarction", "normal ECG", "ST/T change"]


# -- prompt bank -----------------------------------------------------------------------------------


def test_prompt_bank_from_vocabulary_is_description_then_name():
    vocab = load_concept_vocabulary()
    prompts = ev.class_prompts(SUPER)
    assert list(prompts) == SUPER
    for name in SUPER:
        concept = vocab.get(name)
        assert prompts[name] == [concept.description, concept.name]


def test_prompt_bank_finds_a_class_written_as_a_synonym():
    prompts = ev.class_prompts(["afib"])
    assert prompts["afib"][1] == "atrial fibrillation"


def test_prompt_bank_class_without_concept_is_an_error_listing_classes():
    with pytest.raises(ev.EvaluationError) as info:
        ev.class_prompts(["normal ECG", "purple wave syndrome", "zebra rhythm"])
    message = str(info.value)
    assert "purple wave syndrome" in message and "zebra rhythm" in message and "--prompts" in message
    with pytest.raises(ev.EvaluationError, match="duplicate"):
        ev.class_prompts(["normal ECG", "normal ECG"])
    with pytest.raises(ev.EvaluationError, match="no classes"):
        ev.class_prompts([])


def test_prompt_file_overrides_and_accepts_strings_and_lists(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"normal ECG": "a healthy heart tracing",
                                "hypertrophy": ["thick heart walls", "big voltages", "thick heart walls"],
                                "unused class": "ignored"}))
    prompts = ev.class_prompts(["normal ECG", "hypertrophy"], prompt_file=path)
    assert prompts == {"normal ECG": ["a healthy heart tracing"], "hypertrophy": ["thick heart walls", "big voltages"]}


def test_prompt_file_errors(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"normal ECG": "fine", "hypertrophyy": "typo"}))
    with pytest.raises(ev.EvaluationError) as info:
        ev.class_prompts(["normal ECG", "hypertrophy"], prompt_file=path)
    assert "hypertrophy" in str(info.value) and "hypertrophyy" in str(info.value)  # the missing class and the near miss
    for content in ("not json", "[1, 2]", "{}", json.dumps({"normal ECG": []}), json.dumps({"normal ECG": ["", "x"]})):
        path.write_text(content)
        with pytest.raises(ev.EvaluationError, match=str(path.name)):
            ev.class_prompts(["normal ECG"], prompt_file=path)
    with pytest.raises(ev.EvaluationError, match="not found"):
        ev.class_prompts(["normal ECG"], prompt_file=tmp_path / "missing.json")


# -- AUROC report ----------------------------------------------------------------------------------


def _random_case(n, rng, classes=3, signal=1.0):
    targets = (rng.random((n, classes)) < 0.3).astype(int)
    targets[0], targets[1] = 1, 0  # both label values in every class
    scores = rng.normal(size=(n, classes)) + signal * targets
    return 1 / (1 + np.exp(-scores)), targets


def test_auroc_perfect_reversed_and_excluded_classes():
    targets = np.array([[1, 0, 0, 1], [1, 1, 0, 1], [0, 1, 0, 1], [0, 0, 0, 1]])
    scores = np.array([[0.9, 0.9, 0.1, 0.5], [0.8, 0.2, 0.2, 0.5], [0.3, 0.1, 0.3, 0.5], [0.1, 0.7, 0.4, 0.5]])
    # class b: positives 0.2, 0.1 against negatives 0.9, 0.7: every pair reversed
    report = ev.auroc_report(scores, targets, ["a", "b", "none", "all"], n_bootstrap=200)
    by_name = {c["name"]: c for c in report["classes"]}
    assert by_name["a"]["auroc"] == 1.0 and by_name["b"]["auroc"] == 0.0
    assert report["macro_auroc"] == 0.5 and report["num_classes_evaluated"] == 2 and report["num_classes"] == 4
    assert by_name["none"]["evaluated"] is False and "no positive" in by_name["none"]["excluded_reason"]
    assert by_name["all"]["evaluated"] is False and "no negative" in by_name["all"]["excluded_reason"]
    assert [e["name"] for e in report["excluded"]] == ["none", "all"]
    assert (by_name["a"]["positives"], by_name["a"]["negatives"], by_name["all"]["positives"]) == (2, 2, 4)
    # a perfect class stays perfect in every resample that has both label values
    assert by_name["a"]["auroc_ci95"] == [1.0, 1.0] and by_name["b"]["auroc_ci95"] == [0.0, 0.0]
    json.loads(ev.to_json(report))  # JSON-ready, no NaN


def test_auroc_ties_count_half_and_match_sklearn():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random((300, 4)), 1)  # many ties
    targets = (rng.random((300, 4)) < 0.25).astype(int)
    report = ev.auroc_report(scores, targets, list("abcd"), n_bootstrap=0)
    for c, entry in enumerate(report["classes"]):
        assert entry["auroc"] == pytest.approx(roc_auc_score(targets[:, c], scores[:, c]))
        # the vectorised bootstrap statistic equals sklearn on the original and on a resample
        ones = np.ones((1, 300), dtype=np.int64)
        assert bootstrap_auroc(scores[:, c], targets[:, c], ones)[0] == pytest.approx(entry["auroc"])
        draw = rng.integers(0, 300, 300)
        counts = np.bincount(draw, minlength=300)[None]
        assert bootstrap_auroc(scores[:, c], targets[:, c], counts)[0] == pytest.approx(
            roc_auc_score(targets[draw, c], scores[draw, c]))
    assert report["macro_auroc_ci95"] is None and report["classes"][0]["auroc_ci95"] is None


def test_bootstrap_interval_contains_estimate_narrows_with_records_and_is_seeded():
    rng = np.random.default_rng(1)
    small = ev.auroc_report(*_random_case(60, rng), ["a", "b", "c"], n_bootstrap=500, seed=3)
    large = ev.auroc_report(*_random_case(2000, rng), ["a", "b", "c"], n_bootstrap=500, seed=3)
    for report in (small, large):
        low, high = report["macro_auroc_ci95"]
        assert low <= report["macro_auroc"] <= high
        for entry in report["classes"]:
            assert entry["auroc_ci95"][0] <= entry["auroc"] <= entry["auroc_ci95"][1]
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(large["macro_auroc_ci95"]) < 0.5 * width(small["macro_auroc_ci95"])
    for s, l in zip(small["classes"], large["classes"]):
        assert width(l["auroc_ci95"]) < width(s["auroc_ci95"])
    scores, targets = _random_case(60, np.random.default_rng(5))
    again = [ev.auroc_report(scores, targets, list("abc"), n_bootstrap=100, seed=7)["macro_auroc_ci95"] for _ in range(2)]
    assert again[0] == again[1]


def test_f1_at_threshold_and_bad_inputs():
    targets = np.array([[1], [1], [0], [0]])
    report = ev.auroc_report(np.array([[0.9], [0.4], [0.6], [0.1]]), targets, ["a"], n_bootstrap=0)
    assert report["classes"][0]["f1"] == pytest.approx(0.5)  # one TP, one FN, one FP
    with pytest.raises(ev.EvaluationError, match="NaN"):
        ev.auroc_report(np.array([[np.nan], [0.1]]), np.array([[1], [0]]), ["a"])
    with pytest.raises(ev.EvaluationError, match="classes"):
        ev.auroc_report(np.zeros((2, 2)), np.zeros((2, 2)), ["a"])
    with pytest.raises(ev.EvaluationError, match="no records"):
        ev.auroc_report(np.zeros((0, 1)), np.zeros((0, 1)), ["a"])
    assert ev.macro_auroc(np.array([[0.1, 0.2]]), np.array([[1, 1]])) is None


def test_label_matrix_ignores_labels_outside_the_classes():
    matrix = ev.label_matrix([["a", "x"], [], ["b", "a"]], ["a", "b"])
    assert matrix.tolist() == [[1, 0], [0, 0], [1, 1]]


# -- output files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [3, 14])
def test_write_evaluation_files(tmp_path, num_classes):
    rng = np.random.default_rng(num_classes)
    scores, targets = _random_case(80, rng, classes=num_classes)
    targets[:, -1] = 0  # one excluded class
    names = [f"class {i}" for i in range(num_classes)]
    report = ev.auroc_report(scores, targets, names, n_bootstrap=50)
    report["run"] = {"title": "Test run", "model": "m", "split": "test"}
    written = ev.write_evaluation(report, tmp_path / "out", scores=scores, targets=targets)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "metrics.md", "roc.png"]  # no temporary files left
    data = json.loads((out / "metrics.json").read_text())
    assert data["macro_auroc"] == pytest.approx(report["macro_auroc"]) and data["run"]["model"] == "m"
    markdown = (out / "metrics.md").read_text()
    assert "| class 0 |" in markdown and "macro" in markdown and f"class {num_classes - 1}: no positive" in markdown
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert written["json"] == str(out / "metrics.json")


def test_write_evaluation_without_scores_writes_no_plot(tmp_path):
    report = ev.auroc_report(np.array([[0.9], [0.1]]), np.array([[1], [0]]), ["a"], n_bootstrap=0)
    ev.write_evaluation(report, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "metrics.md"]


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic_files.os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_files.atomic_write_text(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
