"""The model card that pre-training writes next to the checkpoint (README.md)."""

from __future__ import annotations

import os
from typing import Optional

from .targets import TrainingTargets


def model_card(args: dict, targets: TrainingTargets, results: dict, hub_model_id: Optional[str]) -> str:
    data, model, train = args["data"], args["model"], args["train"]
    concept_lines = "\n".join(f"| {c} | {n} |" for c, n in zip(targets.concepts, targets.counts))
    metric_lines = ""
    if results.get("best"):
        best = results["best"]
        metric_lines = (f"Zero-shot macro AUROC on the validation split of `{data['eval_dataset']}`"
                        f"{'/' + data['eval_dataset_config'] if data['eval_dataset_config'] else ''}: "
                        f"**{best['macro_auroc']:.4f}** at step {best['step']} (used for model selection; "
                        "report test-split numbers with examples/zero_shot.py).")
    else:
        metric_lines = "No evaluation corpus was given: this is the last checkpoint, not a selected one."
    repo = hub_model_id or "path/to/this/folder"
    return f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: zero-shot-classification
tags: [ecg, electrocardiography, supreme, zero-shot-ecg-classification, multimodal]
---

# SuPreME ECG model ({model['model_preset']} {model['ecg_encoder_type']})

A SuPreME model (supervised multimodal ECG pre-training; Cai et al., arXiv 2502.19668), trained with
this project's open implementation. It scores an ECG against cardiac conditions written as text:
each condition is a query embedded by a frozen text encoder (`{model['text_encoder']}`) that attends
to the ECG through the Cardiac Fusion Network and gets an independent probability.

**Not for clinical use.** This is a research model. It has not been validated for diagnosis,
triage or any decision about a patient.

## Use

```python
import modeling_supreme  # pip install this project; registers the task
from transformers import pipeline
clf = pipeline("zero-shot-ecg-classification", model="{repo}")
clf("records500/00000/00001_hr", candidate_labels=["atrial fibrillation", "sinus rhythm"])
```

Without the package: `AutoModel.from_pretrained("{repo}", trust_remote_code=True)`.

## Training data

- Corpus: `{data['dataset']}`{' / ' + data['dataset_config'] if data['dataset_config'] else ''}, training split,
  {targets.report['used_records']} records with extracted entities ({targets.report['records_without_entities']}
  without an entities line, {targets.report['records_with_extraction_error']} with an extraction error left out).
- Entities: `{os.path.basename(data['entities'])}`; uncertain mentions: {data['uncertain']}.
- Input: {data['sampling_rate'] or 'native'} Hz, {model['duration']} s, 12 leads matched by name; random lead
  subsets were shown with probability {model['lead_subset_prob']}.
- {len(targets.concepts)} concepts with at least {data['min_concept_count']} positive records:

| concept | positive training records |
| --- | --- |
{concept_lines}

## Training

{train['mixed_precision']} precision, AdamW (lr {train['learning_rate']}, weight decay {train['weight_decay']},
warm-up ratio {train['warmup_ratio']}, cosine decay), batch {train['per_device_train_batch_size']} per device x
{train['gradient_accumulation_steps']} accumulation, seed {train['seed']}; {results.get('steps', '?')} optimizer steps.
The full arguments are in `training_args.json`.

## Evaluation

{metric_lines}

## Limitations

The model knows what its training reports say: conditions that reports rarely mention, or that
the entity extractor misses, are learned poorly. Zero-shot scores for conditions that were not
among the training concepts depend on how close their text is to trained concepts. Scores are not
calibrated probabilities.

## Licence

Apache-2.0 for the weights and code of this project. The training data keep their own licences
(check them before sharing models trained on restricted corpora such as MIMIC-IV-ECG).
"""


__all__ = ["model_card"]
