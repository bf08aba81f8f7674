"""Issue 14: the convolutional stem and old-config loading, ontology-aware targets, the not-mentioned
policy, calibration, early stopping, the corpus-size recipe and the zero-shot study's command line."""

import json

import numpy as np
import pytest
import torch

from conftest import load_benchmark, load_example


# -- the convolutional stem ---------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [100, 500])
def test_conv_stem_gives_the_linear_token_grid(rate):
    from modeling_supreme import SuPreMEConfig
    from modeling_supreme.modeling_supreme import SuPreMEConvStem, SuPreMEViTEncoder, _as_rows

    config = SuPreMEConfig(sampling_rate=rate, ecg_num_layers=1)
    assert config.ecg_patch_embedding == "conv"  # the default of a new config
    encoder = SuPreMEViTEncoder(config).eval()
    assert isinstance(encoder.patch_embedding, SuPreMEConvStem)
    # A length that is not a whole number of patches: the stem must not produce a token more than the mask.
    samples = config.num_samples - config.patch_size // 2
    x, mask = torch.randn(2, 12, samples), torch.ones(2, samples, dtype=torch.bool)
    tokens, token_mask = encoder(x, torch.ones(2, 12, dtype=torch.bool), mask)
    assert tokens.shape == (2, samples // config.patch_size, config.ecg_hidden_size)
    assert token_mask.shape == tokens.shape[:2]
    linear = SuPreMEViTEncoder(SuPreMEConfig(sampling_rate=rate, ecg_num_layers=1, ecg_patch_embedding="linear"))
    assert linear.patch_embedding(_as_rows(x)).shape[-1] == tokens.shape[1]


def test_stem_config_is_validated():
    from modeling_supreme import SuPreMEConfig

    with pytest.raises(ValueError, match="ecg_patch_embedding"):
        SuPreMEConfig(ecg_patch_embedding="mlp")
    with pytest.raises(ValueError, match="ecg_stem_channels"):
        SuPreMEConfig(ecg_stem_channels=0)


def test_old_checkpoints_without_the_field_load_as_linear(tmp_path):
    from modeling_supreme import SuPreMEConfig, SuPreMEModel

    old = SuPreMEModel(SuPreMEConfig(sampling_rate=100, ecg_num_layers=1, fusion_num_layers=1, ecg_patch_embedding="linear")).eval()
    old.save_pretrained(tmp_path / "old")
    config_file = tmp_path / "old" / "config.json"
    saved = json.loads(config_file.read_text())
    del saved["ecg_patch_embedding"], saved["ecg_stem_channels"]  # as written before the option existed
    config_file.write_text(json.dumps(saved))
    loaded = SuPreMEModel.from_pretrained(tmp_path / "old").eval()
    assert loaded.config.ecg_patch_embedding == "linear"
    x, q = torch.randn(2, 12, 1000), torch.randn(3, old.config.text_config.hidden_size)
    with torch.no_grad():
        assert torch.allclose(old(x, query_embeds=q).logits, loaded(x, query_embeds=q).logits, atol=1e-6)
    # A new config keeps its conv stem through a save/load round trip.
    SuPreMEConfig(sampling_rate=100).save_pretrained(tmp_path / "new")
    assert SuPreMEConfig.from_pretrained(tmp_path / "new").ecg_patch_embedding == "conv"


# -- ontology and targets -----------------------------------------------------------------------------


def test_committed_ancestor_table_is_the_derivation_of_scp_statements(ptbxl_dir):
    from processing.concepts.ontology import derive_ptbxl_ancestors, load_concept_ancestors

    derived = derive_ptbxl_ancestors(ptbxl_dir / "scp_statements.csv")
    assert {k: tuple(v) for k, v in derived.items()} == load_concept_ancestors()
    assert derived["anteroseptal myocardial infarction"] == ["anterior myocardial infarction", "myocardial infarction"]
    assert "normal ECG" not in derived


def test_every_ancestor_is_a_vocabulary_concept():
    from processing.concepts.ontology import load_concept_ancestors
    from processing.concepts.vocabulary import load_concept_vocabulary

    vocab = load_concept_vocabulary()
    table = load_concept_ancestors()
    assert table and all(c in vocab and all(p in vocab for p in parents) for c, parents in table.items())


def _entities(rows):
    return {rid: {"record_id": rid, "entities": [{"span": c, "concept": c, "status": s} for c, s in items], "error": None}
            for rid, items in rows.items()}


def test_targets_with_ancestors_and_withheld_concepts():
    from modeling_supreme.training import PretrainingError, build_targets
    from processing.concepts.ontology import load_concept_ancestors

    entities = _entities({
        "a": [("anteroseptal myocardial infarction", "present")],
        "b": [("inferior myocardial infarction", "uncertain"), ("myocardial infarction", "absent")],
        "c": [("anteroseptal myocardial infarction", "absent")],
        "d": [("sinus rhythm", "present")],
    })
    ids = list(entities)
    plain = build_targets(ids, ids, entities, min_count=1, uncertain="positive")
    assert "myocardial infarction" not in plain.concepts
    expanded = build_targets(ids, ids, entities, min_count=1, uncertain="positive", ancestors=load_concept_ancestors())
    column = expanded.concepts.index("myocardial infarction")
    # a: implied by its child; b: the report's own "no infarction" stands; c: an absent child implies nothing.
    assert expanded.targets[:, column].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert expanded.targets[0, expanded.concepts.index("anterior myocardial infarction")] == 1.0
    assert expanded.targets[1, expanded.concepts.index("inferior myocardial infarction")] == 1.0
    assert expanded.counts[column] == 1
    withheld = build_targets(ids, ids, entities, min_count=1, uncertain="positive", ancestors=load_concept_ancestors(),
                             withheld=["myocardial infarction", "anteroseptal myocardial infarction"])
    assert "myocardial infarction" not in withheld.concepts and "anteroseptal myocardial infarction" not in withheld.concepts
    assert withheld.report["withheld"] == ["anteroseptal myocardial infarction", "myocardial infarction"]
    # a misspelt name would withhold nothing: refused, with the closest concept named
    with pytest.raises(PretrainingError, match="'myocardial infraction' .*did you mean 'myocardial infarction'"):
        build_targets(ids, ids, entities, min_count=1, withheld=["myocardial infraction"])


def test_not_mentioned_policy():
    from modeling_supreme.training import IGNORE_INDEX, PretrainingError, build_targets

    entities = _entities({"a": [("sinus rhythm", "present")], "b": [("atrial fibrillation", "present"), ("sinus rhythm", "absent")],
                          "c": [("atrial fibrillation", "present")]})
    ids = list(entities)
    negative = build_targets(ids, ids, entities, min_count=1)
    ignored = build_targets(ids, ids, entities, min_count=1, not_mentioned="ignore")
    sr, af = ignored.concepts.index("sinus rhythm"), ignored.concepts.index("atrial fibrillation")
    assert negative.targets[2, sr] == 0.0 and ignored.targets[2, sr] == IGNORE_INDEX  # never mentioned
    assert ignored.targets[1, sr] == 0.0  # said absent: a negative under either policy
    assert ignored.targets[0, af] == IGNORE_INDEX and ignored.targets[1, af] == 1.0
    with pytest.raises(PretrainingError, match="not_mentioned"):
        build_targets(ids, ids, entities, min_count=1, not_mentioned="positive")


# -- calibration, early stopping, recipe --------------------------------------------------------------


def test_calibration_fit_reduces_ece_and_keeps_the_ranking():
    from modeling_supreme.evaluation import (best_f1_thresholds, expected_calibration_error, f1_at_thresholds,
                                             fit_logit_calibration, macro_auroc)

    rng = np.random.default_rng(0)
    true_logit = rng.normal(-1.5, 1.5, size=(600, 3))
    labels = (rng.random((600, 3)) < 1 / (1 + np.exp(-true_logit))).astype(np.int8)
    squashed = 1 / (1 + np.exp(-(0.3 * true_logit - 1.0)))  # too timid and too low, like untrained-for-it queries
    val, test = slice(0, 300), slice(300, 600)
    calibration = fit_logit_calibration(squashed[val], labels[val])
    assert calibration.scale > 2.0  # it undoes the 0.3 squashing
    calibrated = calibration.apply(squashed[test])
    assert expected_calibration_error(calibrated, labels[test]) < 0.5 * expected_calibration_error(squashed[test], labels[test])
    assert macro_auroc(calibrated, labels[test]) == pytest.approx(macro_auroc(squashed[test], labels[test]))
    thresholds = best_f1_thresholds(squashed[val], labels[val])
    tuned = f1_at_thresholds(squashed[test], labels[test], thresholds)
    at_half = f1_at_thresholds(squashed[test], labels[test], [0.5] * 3)
    assert all(t > h for t, h in zip(tuned, at_half))
    per_class = fit_logit_calibration(squashed[val], labels[val], per_class_bias=True)
    assert len(per_class.class_bias) == 3


def test_ece_of_perfectly_calibrated_bins_is_zero():
    from modeling_supreme.evaluation import expected_calibration_error

    scores = np.array([[0.25]] * 4 + [[0.75]] * 4)
    labels = np.array([[1], [0], [0], [0], [1], [1], [1], [0]])
    assert expected_calibration_error(scores, labels) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        expected_calibration_error(scores[:, 0], labels[:, 0])


def test_early_stopping_keeps_the_best_and_counts_patience():
    from modeling_supreme.training import EarlyStopping

    stopper = EarlyStopping(patience=2)
    decisions = [stopper.update(m, s) for s, m in enumerate([0.6, 0.7, 0.65, None, 0.69, 0.8])]
    assert decisions == [False, False, False, False, True, False]
    assert (stopper.best_metric, stopper.best_step) == (0.8, 5)
    never = EarlyStopping(patience=0)
    assert not any(never.update(0.5, s) for s in range(10))
    # During the warm-up (steps before start_step) a new best is kept, but no evaluation counts toward the patience.
    warming = EarlyStopping(patience=2, start_step=4)
    decisions = [warming.update(m, s) for s, m in enumerate([0.7, 0.6, 0.6, 0.6, 0.6, 0.65, 0.75, 0.7, 0.7])]
    assert decisions == [False] * 5 + [True, False, False, True]
    assert (warming.best_metric, warming.best_step) == (0.75, 6)


def _replay_tool():
    return load_benchmark("replay_early_stopping")


def test_replaying_stopping_rules_on_a_recorded_validation_curve(tmp_path):
    replay_tool = _replay_tool()
    # A spike inside the warm-up (step 2), a dip, then a slow rise to the maximum at step 9.
    curve = [(1, 0.50), (2, 0.70), (3, 0.55), (4, 0.56), (5, 0.57), (6, 0.60), (7, 0.62), (8, 0.66), (9, 0.72), (10, 0.60)]
    assert replay_tool.replay(curve, patience=3) == (2, 5, 0.70)  # stops on the spike's patience
    assert replay_tool.replay(curve, patience=3, count_after_step=4) == (2, 7, 0.70)  # steps 3-4 not counted
    assert replay_tool.replay(curve, patience=0) == (9, 10, 0.72)  # no stopping: the validation maximum
    # Mean of 3: the spike's window (0.60) is beaten at step 4 (0.603); patience 3 then stops at 7, patience 4
    # lives to see the windows of steps 8 and 9 rise (0.627, 0.667) and keeps step 9.
    assert replay_tool.replay(curve, patience=3, window=3) == (4, 7, 0.56)
    assert replay_tool.replay(curve, patience=4, window=3) == (9, 10, 0.72)

    run = tmp_path / "run"
    run.mkdir()
    history = [{"step": s, "val_macro_auroc": m} for s, m in curve] + [{"step": 10, "loss": 0.3}]
    (run / "eval_results.json").write_text(json.dumps({"history": history}))
    assert replay_tool.validation_curve(run) == curve
    (run / "eval_results.json").write_text(json.dumps({"history": [{"step": 1, "loss": 0.3}]}))
    with pytest.raises(SystemExit, match="no validation entries"):
        replay_tool.validation_curve(run)
    with pytest.raises(SystemExit, match="missing"):
        replay_tool.validation_curve(tmp_path / "absent")
    (run / "eval_results.json").write_text("not json")
    with pytest.raises(SystemExit, match="not JSON"):
        replay_tool.validation_curve(run)
    (run / "eval_results.json").write_text(json.dumps({"history": [{"step": 1, "val_macro_auroc": "high"}]}))
    with pytest.raises(SystemExit, match="entry 0 has no whole 'step' or numeric"):
        replay_tool.validation_curve(run)
    (run / "eval_results.json").write_text(json.dumps({"history": [{"step": 1, "val_macro_auroc": float("nan")}]}))
    with pytest.raises(SystemExit, match="non-finite"):
        replay_tool.validation_curve(run)


def test_recipe_by_corpus_size():
    from modeling_supreme.training import default_recipe

    small, large = default_recipe(300), default_recipe(800_000)
    assert small.ecg_num_layers < large.ecg_num_layers == 12
    # Peak learning rates chosen per encoder on the study's validation folds (see recipe.py).
    assert small.learning_rate == 2e-4 and default_recipe(300, "resnet1d").learning_rate == 5e-4
    assert small.num_train_epochs > large.num_train_epochs and small.warmup_ratio > large.warmup_ratio
    assert small.mixed_precision == "bf16" and small.early_stopping_patience > 0
    assert small.sampling_rate == 100 and large.sampling_rate is None  # None: the corpus's own rate
    # Dropout chosen per encoder on the same folds: none for the small-corpus ViT, the config's (None) otherwise.
    assert small.dropout == 0.0 and default_recipe(300, "resnet1d").dropout is None and large.dropout is None
    with pytest.raises(ValueError):
        default_recipe(0)
    with pytest.raises(ValueError, match="encoder_type must be one of vit, resnet1d, got 'cnn'"):
        default_recipe(300, "cnn")


# -- the study's command line -------------------------------------------------------------------------


def _study():
    return load_benchmark("zero_shot_study")


def test_study_arguments(capsys):
    study = _study()
    quick = study.parse_args(["--quick"])
    assert quick.sizes == ["50", "all"] and quick.seeds == 1 and quick.encoders == ["vit-conv"] and quick.ablations == []
    assert quick.max_epochs == 20
    full = study.parse_args([])
    assert full.sizes == ["50", "100", "all"] and full.seeds == 3 and "resnet1d" in full.encoders
    for bad in (["--sizes", "50,lots"], ["--encoders", "transformer"], ["--ablations", "no labels"], ["--seeds", "0"]):
        with pytest.raises(SystemExit):
            study.parse_args(bad)
    assert full.dropout is None and study.parse_args(["--dropout", "0"]).dropout == 0.0  # None: the recipe's
    for value in ("1", "-0.5"):
        with pytest.raises(SystemExit):
            study.parse_args(["--dropout", value])
        assert f"--dropout must be in [0, 1), got {float(value)}" in capsys.readouterr().err


@pytest.mark.slow
def test_study_runs_on_the_real_records(ptbxl_dir, tmp_path):
    study = _study()
    assert study.main(["--data_dir", str(ptbxl_dir), "--output_dir", str(tmp_path), "--sizes", "50", "--seeds", "1",
                       "--encoders", "vit-conv", "--ablations", "", "--max_epochs", "1", "--n_bootstrap", "50"]) == 0
    results = json.loads((tmp_path / "study.json").read_text())
    kinds = {(r["kind"], r["size"]) for r in results["results"]}
    assert kinds == {("zero-shot", "50"), ("supervised", "50")}
    assert all(0.0 <= r["test_macro_auroc"] <= 1.0 for r in results["results"])
    assert results["unseen"] and "unseen" in results["unseen"][0]
    assert "| default recipe (vit-conv), pool 50 |" in (tmp_path / "study.md").read_text()


def test_stored_calibration_maps_zero_shot_logits_and_keeps_rankings():
    from modeling_supreme import SuPreMEConfig, SuPreMEModel

    with pytest.raises(ValueError, match="zero_shot_logit_scale"):
        SuPreMEConfig(zero_shot_logit_scale=0.0)
    model = SuPreMEModel(SuPreMEConfig(sampling_rate=100, ecg_num_layers=1, fusion_num_layers=1)).eval()
    x, q = torch.randn(3, 12, 1000), torch.randn(4, model.config.text_config.hidden_size)
    with torch.no_grad():
        raw = model.zero_shot_logits(x, query_embeds=q)
        model.config.zero_shot_logit_scale, model.config.zero_shot_logit_bias = 2.5, -1.0
        calibrated = model.zero_shot_logits(x, query_embeds=q)
        training_logits = model(x, query_embeds=q).logits  # the training path stays uncalibrated
    assert torch.allclose(calibrated, 2.5 * raw - 1.0, atol=1e-5)
    assert torch.allclose(training_logits, raw, atol=1e-6)
    assert torch.equal(calibrated.argsort(0), raw.argsort(0))


# -- signal augmentation ---------------------------------------------------------------------------


def test_signal_augmentation_crops_scales_and_is_seeded():
    from modeling_supreme.training import SignalAugmentation

    signal = np.random.default_rng(0).normal(size=(12, 1000)).astype(np.float32)
    crop = SignalAugmentation(crop_seconds=5)
    window = crop(np.random.default_rng(3), signal, 100)
    assert window.shape == (12, 500)
    starts = [i for i in range(501) if np.array_equal(signal[:, i : i + 500], window)]
    assert len(starts) == 1  # a contiguous window of the record, unchanged
    assert crop(np.random.default_rng(3), signal, 100, length=300).shape == (12, 300)  # shorter than the window: whole
    scaled = SignalAugmentation(amplitude_scale=1.25)(np.random.default_rng(1), signal, 100)
    ratio = scaled[:, 0] / signal[:, 0]
    assert np.all(ratio >= 0.8 - 1e-5) and np.all(ratio <= 1.25 + 1e-5) and np.ptp(ratio) > 0.01
    np.testing.assert_allclose(scaled / ratio[:, None], signal, rtol=1e-4, atol=1e-5)  # one factor per lead
    full = SignalAugmentation(crop_seconds=5, amplitude_scale=1.25, noise_std=0.02, baseline_wander=0.1)
    a, b = full(np.random.default_rng([4, 2, 7]), signal, 100), full(np.random.default_rng([4, 2, 7]), signal, 100)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, full(np.random.default_rng([4, 3, 7]), signal, 100))
    assert not SignalAugmentation().active and full.active
    for bad in ({"crop_seconds": 0}, {"amplitude_scale": 0.5}, {"noise_std": -1}):
        with pytest.raises(ValueError):
            SignalAugmentation(**bad)


def test_pretraining_dataset_applies_the_augmentation_per_epoch(ptbxl_dir, tmp_path):
    from datasets_scripts import load_ecg_dataset
    from modeling_supreme.training import PretrainingDataset, SignalAugmentation

    split = load_ecg_dataset("ptbxl", "reports", data_dir=str(ptbxl_dir), sampling_rate=100, cache_dir=str(tmp_path))["train"]
    rows, targets = np.arange(4), np.zeros((4, 2), dtype=np.float32)
    plain = PretrainingDataset(split, rows, targets, seed=0, lead_subset_prob=0.0)
    augmented = PretrainingDataset(split, rows, targets, seed=0, lead_subset_prob=0.0,
                                   augmentation=SignalAugmentation(crop_seconds=5, amplitude_scale=1.25))
    items = augmented.__getitems__([0, 1])
    assert all(item["signal"].shape[-1] == 500 for item in items)
    assert plain.__getitems__([0])[0]["signal"].shape[-1] == 1000
    again = augmented.__getitems__([0, 1])
    np.testing.assert_array_equal(items[0]["signal"], again[0]["signal"])  # (seed, epoch, record) only: resumable
    augmented.set_epoch(1)
    assert not np.array_equal(items[0]["signal"], augmented.__getitems__([0])[0]["signal"])


def test_class_ceiling_diagnostic_refuses_bad_arguments_before_any_work(tmp_path, capsys):
    tool = load_benchmark("class_ceiling_diagnostic")
    for argv, message in ((["--seed", "-1"], "--seed must be a whole number of at least 0, got -1"),
                          (["--threads", "0"], "--threads must be at least 1, got 0")):
        with pytest.raises(SystemExit):
            tool.main(argv + ["--output_dir", str(tmp_path / "out")])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no PTB-XL folder at .*ptbxl_database.csv missing"):
        tool.main(["--data_dir", str(tmp_path), "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()  # nothing written


def test_cross_fit_standardisation_is_label_free_and_keeps_each_members_ranking():
    study = _study()
    rng = np.random.default_rng(0)
    val, test = rng.uniform(0.01, 0.2, (40, 3)), rng.uniform(0.01, 0.3, (10, 3))
    z_val, z_test = study.standardised(val, test)
    np.testing.assert_allclose(z_val.mean(0), 0.0, atol=1e-9)
    np.testing.assert_allclose(z_val.std(0), 1.0, atol=1e-4)
    for c in range(3):  # a monotone map per class: every ranking (and so every AUROC) is the member's own
        assert (np.argsort(z_val[:, c]) == np.argsort(val[:, c])).all()
        assert (np.argsort(z_test[:, c]) == np.argsort(test[:, c])).all()


@pytest.mark.slow
@pytest.mark.parametrize("protocol, argv", [
    ("--cross_fit", ["--sizes", "", "--encoders", "", "--ablations", "", "--no_unseen", "--zero_shot_only", "--cross_fit"]),
    ("test", ["--quick", "--no_unseen"]),  # the per-configuration runs (it crashed formatting a None AUROC after training)
])
def test_study_refuses_folds_without_labelled_records_before_training(ptbxl_dir, tmp_path, protocol, argv):
    study = _study()
    with pytest.raises(SystemExit, match=rf"{protocol}: no records with super-class labels in folds \[9, 10\] .*--max_records 30"):
        study.main(["--data_dir", str(ptbxl_dir), "--output_dir", str(tmp_path), "--max_records", "30", *argv])
    assert not (tmp_path / "study.json").exists() and not (tmp_path / "study.md").exists()


@pytest.mark.slow
def test_study_cross_fit_holds_out_each_pair_of_folds_once(ptbxl_dir, tmp_path):
    study = _study()
    assert study.main(["--data_dir", str(ptbxl_dir), "--output_dir", str(tmp_path), "--sizes", "", "--seeds", "1",
                       "--encoders", "", "--ablations", "", "--no_unseen", "--zero_shot_only", "--cross_fit",
                       "--max_epochs", "1", "--n_bootstrap", "50"]) == 0
    results = json.loads((tmp_path / "study.json").read_text())
    assert results["results"] == [] and len(results["cross_fits"]) == 1
    run = results["cross_fits"][0]
    held_out = [tuple(m["held_out_folds"]) for m in run["members"]]
    assert held_out == [(1, 2), (3, 4), (5, 6), (7, 8)]
    folds = study.read_folds(ptbxl_dir)
    validated = [rid for m in run["members"] for rid in m["validation_ids"]]
    # Each member is validated only on its own pair of folds, and every labelled record of folds 1-8 once.
    assert all(folds[rid] in m["held_out_folds"] for m in run["members"] for rid in m["validation_ids"])
    assert len(validated) == len(set(validated)) == run["out_of_fold_records"] > 100
    labelled = run["calibration"]["per_class"]
    assert all(0.0 <= a <= 1.0 for a in run["member_test_macro_auroc"]) and 0.0 <= run["test_macro_auroc"] <= 1.0
    assert len(labelled) == 5 and all("f1_at_val_threshold" in c for c in labelled)
    text = (tmp_path / "study.md").read_text()
    assert "Cross-fitted ensemble of folds 1-8" in text and "| zero-shot |" in text and "out-of-fold threshold" in text
