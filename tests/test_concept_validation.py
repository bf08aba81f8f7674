"""ConceptValidation: the label-free model selection of pre-training runs without an evaluation corpus."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def validation_setup(synthetic_pretraining_corpus):
    import torch

    from datasets_scripts import load_ecg_dataset
    from modeling_supreme import ECGProcessor, SuPreMEConfig, SuPreMEModel
    from modeling_supreme.training import build_targets, concept_query_texts, load_entities, record_ids

    corpus = load_ecg_dataset("synthetic", num_records=160, seed=1, sampling_rate=100,
                              cache_dir=synthetic_pretraining_corpus["cache"])
    entities = load_entities(synthetic_pretraining_corpus["entities"])
    all_ids = [rid for name in corpus for rid in record_ids(corpus[name])]
    targets = build_targets(record_ids(corpus["train"]), all_ids, entities, min_count=3)
    queries = concept_query_texts(targets.concepts)
    torch.manual_seed(0)
    config = SuPreMEConfig(sampling_rate=100, ecg_num_layers=2, fusion_num_layers=1, concept_names=targets.concepts,
                           concept_query_texts=[q[0] for q in queries])
    model = SuPreMEModel(config).eval()
    with torch.no_grad():  # a new head scores everything near 0.5; spread the scores so that rankings exist
        model.logit_head.weight.mul_(5.0)
    return {"corpus": corpus, "entities": entities, "targets": targets, "model": model,
            "processor": ECGProcessor.from_config(config), "queries": queries}


def _validation(setup, entities=None, **kwargs):
    from modeling_supreme.training import ConceptValidation

    options = dict(uncertain="positive", not_mentioned="negative", ancestors=None, withheld=(), batch_size=32, bf16=False)
    options.update(kwargs)
    return ConceptValidation.from_split(setup["corpus"]["validation"], setup["entities"] if entities is None else entities,
                                        setup["targets"].concepts, setup["queries"], **options)


def test_metric_is_the_masked_macro_auroc_of_the_concept_scores(validation_setup):
    from sklearn.metrics import roc_auc_score

    from modeling_supreme.evaluation import zero_shot_scores

    evaluator, why_not = _validation(validation_setup)
    assert why_not is None and evaluator.scored_concepts()
    model, processor = validation_setup["model"], validation_setup["processor"]
    metric = evaluator(model, processor)
    # the same number computed independently: scores of the canonical query texts, AUROC per scored concept
    prompts = {c: [q[0]] for c, q in zip(validation_setup["targets"].concepts, validation_setup["queries"])}
    scores, _, ids = zero_shot_scores(model, processor, evaluator.split, evaluator.class_names, prompts, progress=False,
                                      with_targets=False)
    assert ids == list(evaluator.split.with_format(None)["record_id"])
    expected = np.mean([roc_auc_score(evaluator.targets[:, i], scores[:, i])
                        for i, c in enumerate(evaluator.class_names) if c in evaluator.scored_concepts()])
    assert metric == pytest.approx(expected, abs=1e-12)
    described = evaluator.describe()
    assert described["split"] == "validation" and described["records"] == len(evaluator.split)


def test_records_without_a_usable_line_are_left_out_and_none_says_why(validation_setup):
    from modeling_supreme.training import record_ids

    ids = record_ids(validation_setup["corpus"]["validation"])
    entities = dict(validation_setup["entities"])
    entities[ids[0]] = {**entities[ids[0]], "error": "timeout"}
    del entities[ids[1]]
    evaluator, _ = _validation(validation_setup, entities)
    kept = evaluator.split.with_format(None)["record_id"]
    assert ids[0] not in kept and ids[1] not in kept and len(kept) == len(ids) - 2
    assert len(evaluator.targets) == len(kept)

    no_lines = {rid: line for rid, line in validation_setup["entities"].items() if rid not in set(ids)}
    evaluator, why_not = _validation(validation_setup, no_lines)
    assert evaluator is None and f"none of its {len(ids)} records has a usable entities line" in why_not

    evaluator, why_not = _validation(validation_setup, min_each=10_000)
    assert evaluator is None and "no trained concept has 10000 positive" in why_not


def test_calibration_is_fitted_on_the_observed_concept_targets(validation_setup):
    from modeling_supreme.evaluation.calibration import MIN_LOGIT_SCALE

    evaluator, _ = _validation(validation_setup, not_mentioned="ignore")
    model = validation_setup["model"]
    before = evaluator(model, validation_setup["processor"])
    try:
        result = evaluator.fit_calibration(model, validation_setup["processor"])
        # this untrained model's scores carry no signal: the fit wants a scale of 0, and gets the floor
        assert result["fitted_on"] == "trained concepts' report targets" and result["scale"] == pytest.approx(MIN_LOGIT_SCALE, abs=1e-3)
        assert result["validation_log_loss_after"] < result["validation_log_loss_before"]
        # a positive scale and a shared bias keep every ranking: the selection metric does not move
        assert evaluator(model, validation_setup["processor"]) == pytest.approx(before, abs=1e-9)
    finally:
        model.config.zero_shot_logit_scale, model.config.zero_shot_logit_bias = 1.0, 0.0

