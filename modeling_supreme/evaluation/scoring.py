"""Scoring a dataset split: zero-shot class scores and frozen ECG features, batched.

The rows go through `ECGDataCollator` (the feature extractor) in DataLoader workers when asked
(overlapping the model's forward); the class logits come from ``SuPreMEModel.zero_shot_logits``, the
same function the pipeline calls.
"""

from __future__ import annotations

import math
from typing import List, Mapping, Sequence, Tuple

import numpy as np

from processing.ecg.data_collator import ECGDataCollator

from .data import split_labels
from .errors import EvaluationError
from .metrics import label_matrix


class _ProcessedBatches:
    """A map-style torch dataset whose item `i` is the i-th batch of records, collated to model inputs.

    Used with `DataLoader(batch_size=None)`: one slice read per batch from the Arrow table, and the
    collator (resampling, normalising) runs in loader workers when `num_workers > 0`, overlapping
    with the model's forward.
    """

    def __init__(self, dataset_split, processor, batch_size: int):
        self.dataset_split = dataset_split
        self.collator = ECGDataCollator(processor, label_column=None, return_record_ids=True)
        self.batch_size = int(batch_size)

    def __len__(self) -> int:
        return math.ceil(len(self.dataset_split) / self.batch_size)

    def __getitem__(self, index: int):
        inputs = self.collator(self.dataset_split[index * self.batch_size : (index + 1) * self.batch_size])
        return inputs, inputs.pop("record_id")


def iterate_processed_batches(dataset_split, processor, batch_size: int = 64, num_workers: int = 0):
    """Yield `(model inputs dict, record_ids)` per batch of a split, in order."""
    import torch

    if batch_size < 1:
        raise EvaluationError(f"batch_size must be at least 1, got {batch_size}")
    loader = torch.utils.data.DataLoader(
        _ProcessedBatches(dataset_split, processor, batch_size), batch_size=None, shuffle=False, num_workers=num_workers
    )
    yield from loader


def _check_split(dataset_split, what: str = "split"):
    if dataset_split is None or len(dataset_split) == 0:
        raise EvaluationError(f"the {what} is empty (0 records): nothing to evaluate")
    columns = set(dataset_split.column_names)
    missing = [c for c in ("sampling_rate", "lead_names", "record_id") if c not in columns]
    if "signal" not in columns and not {"signal_int16", "signal_gain"} <= columns:
        missing.insert(0, "signal")
    if missing:
        raise EvaluationError(
            f"the {what} has no {missing} column(s) (it has {sorted(columns)}); load it with "
            f"datasets_scripts.load_ecg_dataset or give rows of the data contract"
        )


def _autocast(enabled: bool, device_type: str):
    import torch

    return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=bool(enabled))


def zero_shot_scores(
    model,
    processor,
    dataset_split,
    class_names: Sequence[str],
    prompts: Mapping[str, Sequence[str]],
    batch_size: int = 64,
    bf16: bool = False,
    progress: bool = True,
    num_workers: int = 0,
    with_targets: bool = True,
) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Zero-shot scores of every record of a split against every class.

    Every prompt is tokenized and embedded once; each batch of ECGs goes through the model once with
    all prompts as queries; a class's logit is the mean of its prompts' logits, and its score is the
    sigmoid of that mean. The model is put in eval mode for the pass and restored afterwards, so this
    can run inside training for model selection.

    Args:
        model: a `SuPreMEModel` (unwrapped from any accelerate/DDP wrapper).
        processor: its `ECGProcessor`.
        dataset_split: a `datasets.Dataset` of the data contract (`load_ecg_dataset` output, any format).
        class_names: the classes, in column order.
        prompts: `{class: [prompt, ...]}` (from `class_prompts`), covering every class.
        batch_size: ECGs per forward.
        bf16: run the model under bfloat16 autocast (query embeddings stay float32).
        progress: show a tqdm bar.
        num_workers: DataLoader workers for the feature extractor (0: in this process).
        with_targets: read the targets from the split's `labels` column; False for a split without
            labels (targets is then None).

    Returns:
        `(scores, targets, record_ids)`: scores float64 `(N, C)` in (0, 1), targets int8 `(N, C)` 0/1
        from the split's `labels`, and the N record ids in split order.
    """
    import torch
    from tqdm.auto import tqdm

    class_names = list(class_names)
    _check_split(dataset_split)
    missing = [c for c in class_names if not prompts.get(c)]
    if missing:
        raise EvaluationError(f"no prompts given for classes {missing}")
    prompt_texts: List[str] = []
    prompt_class: List[int] = []
    for column, name in enumerate(class_names):
        for text in prompts[name]:
            prompt_texts.append(text)
            prompt_class.append(column)
    device = next(model.parameters()).device
    query_to_class = torch.tensor(prompt_class, dtype=torch.long, device=device)

    was_training = model.training
    model.eval()
    scores = np.empty((len(dataset_split), len(class_names)), dtype=np.float64)
    record_ids: List[str] = []
    # no_grad, not inference_mode: the model caches query embeddings, and an inference-mode tensor in
    # that cache would break a later training step that hits the same cache entry.
    try:
        with torch.no_grad():
            tokens = processor.tokenize_queries(prompt_texts, return_tensors="pt")
            query_embeds = model.get_query_embeddings(
                tokens["query_input_ids"].to(device), tokens["query_attention_mask"].to(device)
            )
            position = 0
            bar = tqdm(total=len(dataset_split), unit="ECG", desc="zero-shot", disable=not progress)
            for inputs, ids in iterate_processed_batches(dataset_split, processor, batch_size, num_workers):
                inputs = {k: v.to(device) for k, v in inputs.items()}
                with _autocast(bf16, device.type):
                    class_logits = model.zero_shot_logits(
                        **inputs, query_embeds=query_embeds, query_to_class=query_to_class, num_classes=len(class_names)
                    )
                scores[position : position + len(ids)] = torch.sigmoid(class_logits).double().cpu().numpy()
                position += len(ids)
                record_ids.extend(ids)
                bar.update(len(ids))
            bar.close()
    finally:
        model.train(was_training)
    targets = label_matrix(split_labels(dataset_split), class_names) if with_targets else None
    return scores, targets, record_ids


def extract_ecg_features(
    model, processor, dataset_split, batch_size: int = 64, bf16: bool = False, progress: bool = True, num_workers: int = 0
) -> Tuple[np.ndarray, List[str]]:
    """Frozen global ECG features `(N, ecg_hidden_size)` float32 (`model.get_ecg_features`) and record ids."""
    import torch
    from tqdm.auto import tqdm

    _check_split(dataset_split)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks, record_ids = [], []
    try:
        with torch.no_grad():
            bar = tqdm(total=len(dataset_split), unit="ECG", desc="features", disable=not progress)
            for inputs, ids in iterate_processed_batches(dataset_split, processor, batch_size, num_workers):
                inputs = {k: v.to(device) for k, v in inputs.items()}
                with _autocast(bf16, device.type):
                    features = model.get_ecg_features(**inputs)
                chunks.append(features.float().cpu().numpy())
                record_ids.extend(ids)
                bar.update(len(ids))
            bar.close()
    finally:
        model.train(was_training)
    return np.concatenate(chunks).astype(np.float32), record_ids


__all__ = ["extract_ecg_features", "iterate_processed_batches", "zero_shot_scores"]
