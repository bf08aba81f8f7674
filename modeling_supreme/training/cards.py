"""The model card that pre-training writes next to the checkpoint (README.md), built with
huggingface_hub's `ModelCard` / `ModelCardData` so that the Hub reads its metadata: licence, library,
task, base model, datasets, tags and a `model-index` with the evaluation results of the run.

`build_model_card` returns the `ModelCard`; `model_card` its text. Both take `extra_sections`
(title -> markdown, placed after the Evaluation section) and `extra_eval_results` (more
`huggingface_hub.EvalResult` entries for the model-index), so that a later study can add its table
and numbers to the same card.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence

from .study_card import zero_shot_study_section
from .targets import TrainingTargets

# No Hub task fits a model that scores a multi-lead physiological time series against conditions
# written as text: `zero-shot-classification` is text-only NLI (the Hub's widget and inference send a
# sentence and candidate labels to an NLI model), `time-series-forecasting` predicts future values,
# and `feature-extraction` would invite text inputs. "other" is the Hub's task id for models outside
# its task list (Chronos' cards used it before time-series forecasting was added to the list: commit
# 476a71b of amazon/chronos-t5-small); it keeps the Hub from offering a widget that cannot work here.
PIPELINE_TAG = "other"
TASK = "zero-shot-ecg-classification"
LICENSE = "apache-2.0"
TAGS = ["ecg", "electrocardiography", "time-series", "multimodal", "supreme", TASK, "custom_code"]


def _hub_id(name: Optional[str]) -> Optional[str]:
    """A Hub id as given, or None for a local folder (the Hub cannot link a path on this machine)."""
    if not name or os.path.isdir(name) or os.path.isabs(name) or name.startswith("."):
        return None
    return name


def _corpus(name: str, config: Optional[str]) -> str:
    return f"{name}/{config}" if config else name


def eval_results(data: Mapping, results: Mapping, model_name: str):
    """The model-index entries of a run: the zero-shot validation macro AUROC of the selected step."""
    from huggingface_hub import EvalResult

    best = results.get("best")
    if not best:
        return []
    name, config = _selection_corpus(data, best)
    concepts = best.get("kind") == "concepts"
    return [EvalResult(
        task_type=TASK, task_name="Zero-shot ECG classification",
        dataset_type=name, dataset_name=_corpus(name, config),
        dataset_config=config, dataset_split=best.get("split", "validation"),
        metric_type="roc_auc",
        metric_name=("macro AUROC of the trained concepts against report targets (validation split, used for model selection)"
                     if concepts else "macro AUROC (zero-shot, validation split, used for model selection)"),
        metric_value=round(float(best["macro_auroc"]), 4),
    )]


def _selection_corpus(data: Mapping, best: Mapping):
    """The corpus the model was selected on: the evaluation corpus, or the training corpus itself."""
    if "eval_dataset" in best:
        return best["eval_dataset"], best.get("eval_dataset_config")
    return data["eval_dataset"], data.get("eval_dataset_config")


def build_model_card(args: dict, targets: TrainingTargets, results: dict, hub_model_id: Optional[str],
                     extra_sections: Optional[Mapping[str, str]] = None,
                     extra_eval_results: Sequence = ()):
    """The card of a pre-training run as a `huggingface_hub.ModelCard`.

    Args:
        args: the run's arguments as saved in training_args.json (`{"data", "model", "train"}`).
        targets: the training concepts and their counts.
        results: what eval_results.json holds (`steps`, `history`, `best`, `mixed_precision`).
        hub_model_id: the repository the card is pushed to, if any (used in the usage snippet).
        extra_sections: more sections, title -> markdown body, placed after "Evaluation".
        extra_eval_results: more `EvalResult` entries for the model-index.
    """
    from huggingface_hub import ModelCard, ModelCardData

    data, model, train = args["data"], args["model"], args["train"]
    model_name = hub_model_id or f"supreme-{model['model_preset']}-{model['ecg_encoder_type']}"
    base_model = _hub_id(model["text_encoder"])
    corpora = [_hub_id(data["dataset"])] + ([_hub_id(data["eval_dataset"])] if data.get("eval_dataset") else [])
    card_data = ModelCardData(
        model_name=model_name, license=LICENSE, library_name="transformers", pipeline_tag=PIPELINE_TAG, tags=list(TAGS),
        base_model=base_model, datasets=sorted({c for c in corpora if c}) or None, metrics=["roc_auc"],
        eval_results=eval_results(data, results, model_name) + list(extra_eval_results) or None,
    )
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n{_body(data, model, train, targets, results, hub_model_id, base_model, extra_sections)}")


def model_card(args: dict, targets: TrainingTargets, results: dict, hub_model_id: Optional[str],
               extra_sections: Optional[Mapping[str, str]] = None, extra_eval_results: Sequence = ()) -> str:
    """The text of `build_model_card` (what README.md holds)."""
    return str(build_model_card(args, targets, results, hub_model_id, extra_sections, extra_eval_results))


def _body(data, model, train, targets, results, hub_model_id, base_model, extra_sections) -> str:
    concept_lines = "\n".join(f"| {c} | {n} |" for c, n in zip(targets.concepts, targets.counts))
    best = results.get("best")
    if best and best.get("kind") == "concepts":
        metric_lines = (f"No labelled evaluation corpus was given: the model was selected (and training stopped early) on "
                        f"the validation split of the training corpus `{_corpus(*_selection_corpus(data, best))}`, by the "
                        f"macro AUROC of {len(best.get('class_names', []))} trained concepts against the targets that those "
                        f"{best.get('records', '?')} records' reports give: **{best['macro_auroc']:.4f}** at step {best['step']} of "
                        f"{results.get('steps', '?')}. This measures the pre-training task on held-out reports, not zero-shot "
                        "classification; report that with examples/zero_shot.py on a labelled test split. The same number "
                        "is in the card's `model-index`.")
    elif best:
        metric_lines = (f"Zero-shot macro AUROC on the validation split of "
                        f"`{_corpus(*_selection_corpus(data, best))}`: "
                        f"**{best['macro_auroc']:.4f}** at step {best['step']} of {results.get('steps', '?')} (used for "
                        "model selection, so it is optimistic; report test-split numbers with examples/zero_shot.py). "
                        "The same number is in the card's `model-index`.")
    else:
        metric_lines = "No evaluation corpus was given: this is the last checkpoint, not a selected one."
    history = [h for h in results.get("history", []) if h.get("val_macro_auroc") is not None]
    if history:
        metric_lines += "\n\n| step | validation macro AUROC |\n| --- | --- |\n" + "\n".join(
            f"| {h['step']} | {h['val_macro_auroc']:.4f} |" for h in history)
    extra = "".join(f"\n## {title}\n\n{body.strip()}\n" for title, body in (extra_sections or {}).items())
    repo = hub_model_id or "path/to/this/folder"
    precision = results.get("mixed_precision") or train.get("mixed_precision") or "no"
    encoder = f"`{model['text_encoder']}`" + (" (the card's `base_model`)" if base_model else "")
    return f"""
# SuPreME ECG model ({model['model_preset']} {model['ecg_encoder_type']})

A SuPreME model (supervised multimodal ECG pre-training; Cai et al., arXiv 2502.19668), trained with
this project's open implementation. It scores an ECG against cardiac conditions written as text:
each condition is a query embedded by a frozen text encoder ({encoder}) that attends to the ECG
through the Cardiac Fusion Network and gets an independent probability.

**Not for clinical use.** This is a research model. It has not been validated for diagnosis,
triage or any decision about a patient.

## Use

```python
from transformers import pipeline
clf = pipeline("{TASK}", model="{repo}", trust_remote_code=True)
clf("records500/00000/00001_hr", candidate_labels=["atrial fibrillation", "sinus rhythm"])
```

The checkpoint carries its code (model, processor, WFDB reader, pipeline; `custom_pipelines` in
config.json), so this works without installing this project; with it installed (`import
modeling_supreme`), `trust_remote_code` is not needed. Inputs: WFDB record paths, dicts with
`signal` (leads x samples, mV), `sampling_rate` and `lead_names`, or a `datasets.Dataset` with
those columns.

**Task tag.** The Hub's task list has no entry for zero-shot classification of ECGs (a multi-lead
time series) against text: `zero-shot-classification` is text-only NLI and `time-series-forecasting`
predicts future values, so this card sets `pipeline_tag: {PIPELINE_TAG}` (the Hub's id for tasks outside
its list) and tags the transformers task `{TASK}`. The Hub's inference widget cannot run this model.

## Training data

- Corpus: `{_corpus(data['dataset'], data.get('dataset_config'))}`, training split, {targets.report['used_records']} records
  with extracted entities ({targets.report['records_without_entities']} without an entities line,
  {targets.report['records_with_extraction_error']} with an extraction error left out). The card's `datasets` lists the
  corpora by the names they were loaded with (this project's builders, or Hub ids).
- Entities: `{os.path.basename(data['entities'])}`; uncertain mentions: {data['uncertain']}.
- Input: {data['sampling_rate'] or 'native'} Hz, {model['duration']} s, 12 leads matched by name; random lead
  subsets were shown with probability {model['lead_subset_prob']}.
- {len(targets.concepts)} concepts with at least {data['min_concept_count']} positive records:

| concept | positive training records |
| --- | --- |
{concept_lines}

## Training

{precision} mixed precision, AdamW (lr {train['learning_rate']}, weight decay {train['weight_decay']},
warm-up ratio {train['warmup_ratio']}, {train.get('lr_scheduler_type', 'cosine')} schedule), batch
{train['per_device_train_batch_size']} per device x {train['gradient_accumulation_steps']} accumulation, seed
{train['seed']}; {results.get('steps', '?')} optimizer steps. The full arguments are in `training_args.json`
(`python examples/pretrain.py training_args.json` repeats the run).

## Evaluation

{metric_lines}
{extra}

{zero_shot_study_section()}
## Limitations

The model knows what its training reports say: conditions that reports rarely mention, or that
the entity extractor misses, are learned poorly. Zero-shot scores for conditions that were not
among the training concepts depend on how close their text is to trained concepts. Scores are not
calibrated probabilities: choose thresholds on labelled validation data.

## Licence

Apache-2.0 for the weights and code of this project. The training data keep their own licences
(check them before sharing models trained on restricted corpora such as MIMIC-IV-ECG). The text
encoder keeps its own licence.
"""


__all__ = ["PIPELINE_TAG", "build_model_card", "eval_results", "model_card"]
