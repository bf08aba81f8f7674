"""Evaluation shared by `zero_shot.py`, `linear_probe.py` and `pretrain.py` (model selection).

The examples folder is the script directory of those scripts, so they import this module as
`from ecg_evaluation import ...`; tests add `examples/` to `sys.path`.

What is here:

- the prompt bank: `class_prompts` gives each class its zero-shot query texts, from the concept
  vocabulary or from a JSON prompt file;
- `zero_shot_scores`: every prompt embedded once, ECGs batched, logits averaged over a class's
  prompts, then a sigmoid;
- `extract_ecg_features`: frozen global ECG features for linear probes;
- `auroc_report`: macro and per-class AUROC with percentile-bootstrap 95% intervals;
- `write_evaluation`: `metrics.json`, `metrics.md` and `roc.png`, each written atomically;
- helpers for the scripts: `load_checkpoint`, `load_evaluation_dataset`, `label_matrix`.

The prompt bank (our design; the paper's prompts are not available to us)
-------------------------------------------------------------------------
A class that is a concept of the vocabulary gets two prompts, in this order:

1. its one-sentence `description`: the text the design uses as the concept's training query, so a
   model sees it in the form it was trained on;
2. its canonical `name` ("atrial fibrillation", "normal ECG"): the short wording a clinician would
   type, which tests whether the model's text side generalises beyond the exact training query.

The model's logits for a class's prompts are averaged before the sigmoid (averaging logits, not
probabilities, keeps the result an ordinary logit whose sigmoid is a score in (0, 1)). A prompt
file (`{"class": "text" | ["text", ...]}`) replaces the bank: then every class must be in the file.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
import uuid
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]

METRICS_JSON = "metrics.json"
METRICS_MARKDOWN = "metrics.md"
ROC_PLOT = "roc.png"


class EvaluationError(ValueError):
    """Bad evaluation input (prompts, checkpoint, dataset, split); the message says what to fix."""


# --------------------------------------------------------------------------------------------------
# Prompt bank
# --------------------------------------------------------------------------------------------------


def concept_prompts(concept) -> List[str]:
    """The bank's prompts for one vocabulary concept: its description, then its name (duplicates dropped)."""
    prompts: List[str] = []
    for text in (concept.description, concept.name):
        text = (text or "").strip()
        if text and text.casefold() not in {p.casefold() for p in prompts}:
            prompts.append(text)
    return prompts


def load_prompt_file(path) -> Dict[str, List[str]]:
    """Read a prompt file: a JSON object mapping class names to a prompt or a list of prompts."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"prompt file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise EvaluationError(f"prompt file {path}: not valid UTF-8 JSON ({error})") from None
    if not isinstance(data, dict) or not data:
        raise EvaluationError(
            f'prompt file {path}: expected a non-empty JSON object {{"class name": "prompt" or ["prompt", ...]}}, '
            f"got {type(data).__name__}"
        )
    prompts: Dict[str, List[str]] = {}
    for name, value in data.items():
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise EvaluationError(
                f"prompt file {path}: class {name!r} must map to a non-empty string or a non-empty list of "
                f"non-empty strings, got {value!r}"
            )
        unique: List[str] = []
        for text in texts:
            if text.strip() not in unique:
                unique.append(text.strip())
        prompts[str(name)] = unique
    return prompts


def class_prompts(class_names: Sequence[str], vocab=None, prompt_file=None) -> Dict[str, List[str]]:
    """Zero-shot prompts for each class, in class order.

    Args:
        class_names: the classes to score (concept names of the vocabulary for the bank).
        vocab: a `ConceptVocabulary` (default: the one shipped in `processing/`). A class is found by
            its exact concept name, else by `vocab.lookup` (name or synonym after normalisation).
        prompt_file: a JSON file `{class: str | [str, ...]}` that replaces the bank; it must name
            every class (extra entries are ignored).

    Returns:
        `{class_name: [prompt, ...]}`, every list non-empty.

    Raises:
        EvaluationError: no classes, duplicate classes, a bad prompt file, or classes without prompts
            (all of them listed).
    """
    class_names = list(class_names)
    if not class_names:
        raise EvaluationError("no classes to evaluate")
    duplicates = sorted({c for c in class_names if class_names.count(c) > 1})
    if duplicates:
        raise EvaluationError(f"duplicate class names: {duplicates}")

    if prompt_file is not None:
        from_file = load_prompt_file(prompt_file)
        missing = [c for c in class_names if c not in from_file]
        if missing:
            unused = sorted(set(from_file) - set(class_names))
            hint = f"; entries in the file that match no class: {unused}" if unused else ""
            raise EvaluationError(
                f"prompt file {prompt_file} has no prompts for {len(missing)} of {len(class_names)} classes: {missing}. "
                f"The classes are: {class_names}{hint}"
            )
        return {c: list(from_file[c]) for c in class_names}

    if vocab is None:
        from processing.concepts import load_concept_vocabulary

        vocab = load_concept_vocabulary()
    prompts: Dict[str, List[str]] = {}
    missing = []
    for name in class_names:
        concept = vocab.lookup(name)
        texts = concept_prompts(concept) if concept is not None else []
        if texts:
            prompts[name] = texts
        else:
            missing.append(name)
    if missing:
        raise EvaluationError(
            f"no prompt for {len(missing)} of {len(class_names)} classes: {missing} (not concepts of the concept "
            f"vocabulary {getattr(vocab, 'version', '')}). Pass --prompts FILE with a JSON object "
            f'{{"class": ["prompt", ...]}} covering every class: {class_names}'
        )
    return prompts


# --------------------------------------------------------------------------------------------------
# Data and checkpoints
# --------------------------------------------------------------------------------------------------


def label_matrix(label_lists: Iterable[Sequence[str]], class_names: Sequence[str]) -> np.ndarray:
    """0/1 matrix (records, classes) from per-record label lists; labels outside `class_names` are ignored."""
    index = {name: i for i, name in enumerate(class_names)}
    rows = list(label_lists)
    targets = np.zeros((len(rows), len(class_names)), dtype=np.int8)
    for r, labels in enumerate(rows):
        for label in labels or ():
            column = index.get(label)
            if column is not None:
                targets[r, column] = 1
    return targets


def split_labels(dataset_split) -> List[List[str]]:
    """The `labels` column of a split, read without the ECG-decoding transform (no signal is decoded)."""
    return [list(labels or ()) for labels in dataset_split.with_format(None)["labels"]]


def add_common_arguments(parser, outputs: str) -> None:
    """The corpus, model and run flags shared by `zero_shot.py` and `linear_probe.py`."""
    parser.add_argument("--model", required=True, help="checkpoint folder (model + processor, from pretrain.py)")
    parser.add_argument("--dataset", required=True, help="corpus: ptbxl, cpsc2018, csn, physionet2021, synthetic, ...")
    parser.add_argument("--dataset_config", default=None, help="corpus configuration, e.g. super/sub/form/rhythm for ptbxl")
    parser.add_argument("--data_dir", default=None, help="the corpus folder as downloaded (not for synthetic)")
    parser.add_argument("--sampling_rate", type=int, default=None, help="rate the corpus is read at (ptbxl: 100 or 500)")
    parser.add_argument("--output_dir", required=True, help=f"folder for {outputs}")
    parser.add_argument("--batch_size", type=int, default=64, help="ECGs per forward pass")
    parser.add_argument("--bf16", action="store_true", help="run the model under bfloat16 autocast")
    parser.add_argument("--cache_dir", default=None, help="datasets cache folder")
    parser.add_argument("--max_records", type=int, default=None, help="use at most this many records per split (seeded sample)")
    parser.add_argument("--num_records", type=int, default=None, help="synthetic corpus: number of records")
    parser.add_argument("--seed", type=int, default=None, help="synthetic corpus: generator seed")
    parser.add_argument("--n_bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals (0: none)")
    parser.add_argument("--num_workers", type=int, default=0, help="DataLoader workers preparing ECGs (0: main process)")
    parser.add_argument("--num_threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); 1 can be faster on a CPU shared with other jobs")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")


def set_num_threads(num_threads: Optional[int]) -> None:
    """Apply `--num_threads` (None keeps torch's choice)."""
    if num_threads is None:
        return
    if num_threads < 1:
        raise EvaluationError(f"--num_threads must be at least 1, got {num_threads}")
    import torch

    torch.set_num_threads(num_threads)


def run_cli(parser, run, argv=None) -> int:
    """Parse, run, and turn input errors into a one-line message with exit code 2."""
    from datasets_scripts.wfdb_reader import RecordError

    args = parser.parse_args(argv)
    try:
        run(args)
    except (EvaluationError, RecordError, FileNotFoundError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    return 0


def load_checkpoint(model_path, device: Optional[str] = None):
    """`(SuPreMEModel, ECGProcessor)` from a folder written by `save_pretrained`, in eval mode.

    Checks, before loading weights, that the folder is a SuPreME checkpoint with its processor, so that
    a wrong folder fails with a message instead of a stack of loader errors.
    """
    import modeling_supreme  # noqa: F401  (registers the Auto classes)
    from modeling_supreme import ECGProcessor, SuPreMEModel

    path = Path(model_path)
    if not path.is_dir():
        raise EvaluationError(
            f"model {model_path}: not a folder. Pass the output folder of pretrain.py (or of "
            f"SuPreMEModel.save_pretrained + ECGProcessor.save_pretrained)"
        )
    config_file = path / "config.json"
    if not config_file.is_file():
        raise EvaluationError(f"model {path}: no config.json, so it is not a from_pretrained checkpoint folder")
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise EvaluationError(f"model {path}: config.json is not a valid JSON object ({error})") from None
    if model_type != "supreme":
        raise EvaluationError(
            f"model {path}: config.json has model_type {model_type!r}, not 'supreme'; this folder holds another "
            f"kind of model"
        )
    if not any((path / name).is_file() for name in ("processor_config.json", "preprocessor_config.json")):
        raise EvaluationError(
            f"model {path}: no processor_config.json; save the ECGProcessor next to the model "
            f"(processor.save_pretrained(folder)) so that inputs are prepared as in training"
        )
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise EvaluationError(f"model {path}: no weight file (*.safetensors)")
    model = SuPreMEModel.from_pretrained(str(path))
    processor = ECGProcessor.from_pretrained(str(path))
    if device is not None:
        model.to(device)
    model.eval()
    return model, processor


def dataset_class_names(name: str, config: Optional[str], data_dir, cache_dir, builder_kwargs: Mapping, splits) -> Tuple[List[str], str]:
    """The classes to score for a corpus, and where they came from.

    A builder with `class_names()` (PTB-XL, CPSC2018, synthetic) defines the label set itself, which
    keeps the class list identical across splits and subsets. Otherwise (CSN, PhysioNet 2021, MIMIC)
    the classes are the labels seen in any split, sorted by name.
    """
    from datasets_scripts.loading import get_builder_class

    builder_class = get_builder_class(name)
    if hasattr(builder_class, "class_names"):
        builder = builder_class(config_name=config, data_dir=data_dir, cache_dir=cache_dir, **dict(builder_kwargs))
        return list(builder.class_names()), f"{builder_class.__name__}.class_names()"
    seen = set()
    for split in splits.values():
        for labels in split_labels(split):
            seen.update(labels or ())
    return sorted(seen), "labels seen in the dataset's splits"


def load_evaluation_dataset(name: str, config=None, data_dir=None, sampling_rate=None, cache_dir=None, **builder_kwargs):
    """`(DatasetDict, class_names, class_source)`: the corpus through `load_ecg_dataset` and its classes."""
    from datasets_scripts.loading import get_builder_class, load_ecg_dataset

    try:
        get_builder_class(name)
    except ValueError as error:
        raise EvaluationError(str(error)) from None
    kwargs = {k: v for k, v in builder_kwargs.items() if v is not None}
    splits = load_ecg_dataset(name, config, data_dir=data_dir, sampling_rate=sampling_rate, cache_dir=cache_dir, **kwargs)
    if sampling_rate is not None:
        kwargs["sampling_rate"] = sampling_rate
    class_names, source = dataset_class_names(name, config, data_dir, cache_dir, kwargs, splits)
    if not class_names:
        raise EvaluationError(f"dataset {name!r} (config {config!r}) has no labels to evaluate")
    return splits, class_names, source


def subsample(dataset_split, max_records: Optional[int], seed: int = 0):
    """At most `max_records` records of a split: a seeded random sample kept in the split's order."""
    if max_records is None or len(dataset_split) <= max_records:
        return dataset_split
    if max_records < 1:
        raise EvaluationError(f"max_records must be at least 1, got {max_records}")
    chosen = np.sort(np.random.default_rng(seed).choice(len(dataset_split), size=max_records, replace=False))
    return dataset_split.select(chosen.tolist())


# --------------------------------------------------------------------------------------------------
# Batching ECGs through the processor
# --------------------------------------------------------------------------------------------------


class _ProcessedBatches:
    """A map-style torch dataset whose item `i` is the i-th batch of records, already processed.

    Used with `DataLoader(batch_size=None)`: the feature extractor (resampling, normalising) then runs
    in loader workers when `num_workers > 0`, overlapping with the model's forward.
    """

    def __init__(self, dataset_split, processor, batch_size: int):
        self.dataset_split = dataset_split
        self.processor = processor
        self.batch_size = int(batch_size)

    def __len__(self) -> int:
        return math.ceil(len(self.dataset_split) / self.batch_size)

    def __getitem__(self, index: int):
        rows = self.dataset_split[index * self.batch_size : (index + 1) * self.batch_size]
        inputs = self.processor(
            ecg=rows["signal"], sampling_rate=list(rows["sampling_rate"]), lead_names=list(rows["lead_names"]),
            return_tensors="pt",
        )
        return dict(inputs), list(rows["record_id"])


def iterate_processed_batches(dataset_split, processor, batch_size: int = 64, num_workers: int = 0):
    """Yield `(model inputs dict, record_ids)` per batch of a decoded split, in order."""
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
    missing = [c for c in ("signal", "sampling_rate", "lead_names", "record_id") if c not in dataset_split[0:1]]
    if missing:
        raise EvaluationError(
            f"the {what} does not decode ECGs (no {missing} in its rows); load it with load_ecg_dataset or "
            f"datasets_scripts.encoding.set_ecg_format"
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
) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Zero-shot scores of every record of a decoded split against every class.

    Every prompt is tokenized and embedded once; each batch of ECGs goes through the model once with
    all prompts as queries; a class's logit is the mean of its prompts' logits, and its score is the
    sigmoid of that mean. The model is put in eval mode for the pass and restored afterwards, so this
    can run inside training for model selection.

    Args:
        model: a `SuPreMEModel` (unwrapped from any accelerate/DDP wrapper).
        processor: its `ECGProcessor`.
        dataset_split: a `datasets.Dataset` decoded to the data contract (`load_ecg_dataset` output).
        class_names: the classes, in column order.
        prompts: `{class: [prompt, ...]}` (from `class_prompts`), covering every class.
        batch_size: ECGs per forward.
        bf16: run the model under bfloat16 autocast (query embeddings stay float32).
        progress: show a tqdm bar.
        num_workers: DataLoader workers for the feature extractor (0: in this process).

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
    # Logit averaging as one matrix product: (B, prompts) @ (prompts, classes).
    averaging = torch.zeros(len(prompt_texts), len(class_names), dtype=torch.float32)
    counts = np.bincount(prompt_class, minlength=len(class_names))
    for row, column in enumerate(prompt_class):
        averaging[row, column] = 1.0 / counts[column]
    averaging = averaging.to(device)

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
                    logits = model(**inputs, query_embeds=query_embeds).logits
                class_logits = logits.float() @ averaging
                scores[position : position + len(ids)] = torch.sigmoid(class_logits).double().cpu().numpy()
                position += len(ids)
                record_ids.extend(ids)
                bar.update(len(ids))
            bar.close()
    finally:
        model.train(was_training)
    targets = label_matrix(split_labels(dataset_split), class_names)
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


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------


def _bootstrap_auroc(scores: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUROC of one class under each bootstrap resample, given as record multiplicities.

    `counts[b, i]` is how often record i was drawn in resample b. A resample's AUROC is the weighted
    Mann-Whitney statistic: P(score of a drawn positive > score of a drawn negative), ties counting
    one half. Sorting once and summing weights per tied score group makes this O(N) per resample
    instead of a sort per resample; with all counts 1 it equals `roc_auc_score`.
    """
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    positive = labels[order].astype(bool)
    group_starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    weights = counts[:, order].astype(np.float64)
    positive_weights = np.where(positive, weights, 0.0)
    negative_weights = weights - positive_weights
    pos_per_group = np.add.reduceat(positive_weights, group_starts, axis=1)
    neg_per_group = np.add.reduceat(negative_weights, group_starts, axis=1)
    negatives_below = np.cumsum(neg_per_group, axis=1) - neg_per_group
    wins = (pos_per_group * (negatives_below + 0.5 * neg_per_group)).sum(axis=1)
    pairs = pos_per_group.sum(axis=1) * neg_per_group.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / np.where(pairs > 0, pairs, 1.0), np.nan)


def _finite_or_none(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def auroc_report(
    scores, targets, class_names: Sequence[str], n_bootstrap: int = 1000, seed: int = 0, threshold: float = 0.5
) -> dict:
    """Macro and per-class AUROC with 95% percentile-bootstrap intervals, positive counts and F1.

    A class enters the macro average only if the split has both positive and negative records for it;
    other classes are listed in `excluded` with the reason. Intervals come from `n_bootstrap`
    resamples of the records (with replacement, one resample shared by all classes so the macro
    interval accounts for their correlation); a class's interval uses the resamples in which it has
    both positives and negatives, and the macro value of a resample is the mean over the evaluated
    classes defined in it. AUROC point estimates are scikit-learn's `roc_auc_score`; F1 is at score
    >= `threshold` (0.5: the sigmoid's natural cut), macro over the evaluated classes.

    Returns a JSON-ready dict: `macro_auroc`, `macro_auroc_ci95` ([low, high] or None),
    `macro_f1`, `num_records`, `num_classes`, `num_classes_evaluated`, `classes` (one entry per class
    in order: `name`, `positives`, `negatives`, `auroc`, `auroc_ci95`, `f1`, `evaluated`,
    `excluded_reason`), `excluded` ([{name, reason}]) and `bootstrap` (settings).
    """
    from sklearn.metrics import f1_score, roc_auc_score

    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets)
    class_names = list(class_names)
    if scores.ndim != 2 or scores.shape != targets.shape or scores.shape[1] != len(class_names):
        raise EvaluationError(
            f"scores {scores.shape} and targets {targets.shape} must both be (records, {len(class_names)} classes)"
        )
    if scores.shape[0] == 0:
        raise EvaluationError("no records to evaluate")
    if not np.isfinite(scores).all():
        bad = sorted({class_names[c] for c in np.argwhere(~np.isfinite(scores))[:, 1]})
        raise EvaluationError(f"scores contain NaN or infinite values (classes {bad})")
    if not np.isin(targets, (0, 1)).all():
        raise EvaluationError("targets must be 0/1")
    targets = targets.astype(np.int8)
    n_records = scores.shape[0]
    positives = targets.sum(axis=0)

    classes = []
    evaluated = []
    for c, name in enumerate(class_names):
        entry = {
            "name": name, "positives": int(positives[c]), "negatives": int(n_records - positives[c]),
            "auroc": None, "auroc_ci95": None, "f1": None, "evaluated": False, "excluded_reason": None,
        }
        if positives[c] == 0:
            entry["excluded_reason"] = "no positive records in this split"
        elif positives[c] == n_records:
            entry["excluded_reason"] = "no negative records in this split (every record is positive)"
        else:
            entry["evaluated"] = True
            entry["auroc"] = float(roc_auc_score(targets[:, c], scores[:, c]))
            entry["f1"] = float(f1_score(targets[:, c], scores[:, c] >= threshold, zero_division=0))
            evaluated.append(c)
        classes.append(entry)

    macro = float(np.mean([classes[c]["auroc"] for c in evaluated])) if evaluated else None
    macro_f1 = float(np.mean([classes[c]["f1"] for c in evaluated])) if evaluated else None
    macro_ci = None
    if n_bootstrap and evaluated:
        rng = np.random.default_rng(seed)
        per_class = np.full((n_bootstrap, len(evaluated)), np.nan)
        # Chunks keep the (resamples, records) count matrix near 4 million entries.
        chunk = max(1, min(n_bootstrap, 4_000_000 // n_records))
        for start in range(0, n_bootstrap, chunk):
            size = min(chunk, n_bootstrap - start)
            draws = rng.integers(0, n_records, size=(size, n_records))
            offsets = (np.arange(size) * n_records)[:, None]
            counts = np.bincount((draws + offsets).ravel(), minlength=size * n_records).reshape(size, n_records)
            for k, c in enumerate(evaluated):
                per_class[start : start + size, k] = _bootstrap_auroc(scores[:, c], targets[:, c], counts)
        for k, c in enumerate(evaluated):
            defined = per_class[:, k][np.isfinite(per_class[:, k])]
            if defined.size:
                low, high = np.percentile(defined, [2.5, 97.5])
                classes[c]["auroc_ci95"] = [float(low), float(high)]
                classes[c]["bootstrap_resamples_used"] = int(defined.size)
        with np.errstate(invalid="ignore"):
            any_defined = np.isfinite(per_class).any(axis=1)
            macro_samples = np.nanmean(per_class[any_defined], axis=1) if any_defined.any() else np.array([])
        if macro_samples.size:
            low, high = np.percentile(macro_samples, [2.5, 97.5])
            macro_ci = [float(low), float(high)]

    return {
        "macro_auroc": macro,
        "macro_auroc_ci95": macro_ci,
        "macro_f1": macro_f1,
        "f1_threshold": float(threshold),
        "num_records": int(n_records),
        "num_classes": len(class_names),
        "num_classes_evaluated": len(evaluated),
        "classes": classes,
        "excluded": [{"name": e["name"], "reason": e["excluded_reason"]} for e in classes if not e["evaluated"]],
        "bootstrap": {
            "n_resamples": int(n_bootstrap or 0),
            "seed": int(seed),
            "method": "percentile interval (2.5th, 97.5th) over resamples of the records with replacement",
        },
    }


def macro_auroc(scores, targets) -> Optional[float]:
    """Macro AUROC over the classes with both positives and negatives (None if there is none): the
    quick number for model selection, without intervals."""
    from sklearn.metrics import roc_auc_score

    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets)
    values = [
        roc_auc_score(targets[:, c], scores[:, c]) for c in range(targets.shape[1]) if 0 < targets[:, c].sum() < len(targets)
    ]
    return float(np.mean(values)) if values else None


# --------------------------------------------------------------------------------------------------
# Output files
# --------------------------------------------------------------------------------------------------


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _fmt_ci(ci) -> str:
    return "n/a" if not ci else f"{ci[0]:.3f}-{ci[1]:.3f}"


def markdown_table(report: Mapping) -> str:
    """The per-class table of an `auroc_report`, with the macro row and the excluded classes."""
    lines = [
        f"| class | positives | negatives | AUROC | 95% CI | F1@{report.get('f1_threshold', 0.5):g} |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for entry in report["classes"]:
        if entry["evaluated"]:
            lines.append(
                f"| {entry['name']} | {entry['positives']} | {entry['negatives']} | {_fmt(entry['auroc'])} | "
                f"{_fmt_ci(entry['auroc_ci95'])} | {_fmt(entry['f1'])} |"
            )
    lines.append(
        f"| **macro ({report['num_classes_evaluated']} of {report['num_classes']} classes)** | | | "
        f"**{_fmt(report['macro_auroc'])}** | {_fmt_ci(report['macro_auroc_ci95'])} | {_fmt(report['macro_f1'])} |"
    )
    text = "\n".join(lines) + "\n"
    if report["excluded"]:
        text += "\nNot evaluated (AUROC needs positives and negatives):\n\n"
        text += "".join(f"- {e['name']}: {e['reason']}\n" for e in report["excluded"])
    return text


def _evaluation_markdown(report: Mapping) -> str:
    run = report.get("run") or {}
    title = run.get("title", "Evaluation")
    lines = [f"# {title}", ""]
    for key in ("model", "dataset", "split", "num_records", "prompt_source"):
        if key in run:
            lines.append(f"- {key.replace('_', ' ')}: {run[key]}")
    if run:
        lines.append("")
    lines.append(markdown_table(report))
    n_boot = report["bootstrap"]["n_resamples"]
    if n_boot:
        lines.append(f"95% CI: percentile bootstrap over {n_boot} resamples of the records (seed {report['bootstrap']['seed']}).")
    return "\n".join(lines).rstrip() + "\n"


def atomic_write_bytes(path, data: bytes) -> None:
    """Write a file so that readers see the old file or the complete new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = str(path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    # os.open with 0o666 lets the umask decide the mode, as for any new file (mkstemp would force 0600).
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def to_json(data) -> str:
    """JSON text of a report (NaN becomes null, numpy scalars become numbers)."""

    def clean(value):
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float):
            return _finite_or_none(value)
        return value

    return json.dumps(clean(data), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def plot_roc(report: Mapping, scores, targets, path) -> None:
    """ROC curves of the evaluated classes into a PNG.

    Up to 10 classes share one panel (legend sorted by AUROC); more classes get one small panel each,
    so that 20-40 curves stay readable.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    scores = np.asarray(scores)
    targets = np.asarray(targets)
    entries = [(c, e) for c, e in enumerate(report["classes"]) if e["evaluated"]]
    macro = _fmt(report["macro_auroc"])
    title = (report.get("run") or {}).get("title", "ROC")
    if not entries:
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.text(0.5, 0.5, "no class has both positives and negatives", ha="center", va="center")
        ax.set_axis_off()
    elif len(entries) <= 10:
        fig, ax = plt.subplots(figsize=(7, 6))
        colors = plt.get_cmap("tab10").colors
        for k, (c, entry) in enumerate(sorted(entries, key=lambda item: -item[1]["auroc"])):
            fpr, tpr, _ = roc_curve(targets[:, c], scores[:, c])
            ax.plot(fpr, tpr, color=colors[k % 10], lw=1.6,
                    label=f"{entry['name']} ({entry['auroc']:.3f}, n+={entry['positives']})")
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_title(f"{title}\nmacro AUROC {macro} over {len(entries)} classes", fontsize=10)
        ax.legend(loc="lower right", fontsize=8)
        ax.set_aspect("equal")
    else:
        columns = math.ceil(math.sqrt(len(entries)))
        rows = math.ceil(len(entries) / columns)
        fig, axes = plt.subplots(rows, columns, figsize=(2.3 * columns, 2.3 * rows + 0.6), squeeze=False,
                                 sharex=True, sharey=True)
        for ax, (c, entry) in zip(axes.ravel(), entries):
            fpr, tpr, _ = roc_curve(targets[:, c], scores[:, c])
            ax.plot(fpr, tpr, color="tab:blue", lw=1.2)
            ax.plot([0, 1], [0, 1], color="0.6", lw=0.6, ls="--")
            name = "\n".join(textwrap.wrap(entry["name"], 26, max_lines=2, placeholder=".."))
            ax.set_title(f"{name}\nAUROC {entry['auroc']:.3f}, n+={entry['positives']}", fontsize=7)
            ax.tick_params(labelsize=6, labelbottom=True)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.01)
        for ax in axes.ravel()[len(entries):]:
            ax.set_axis_off()
        fig.suptitle(f"{title}: macro AUROC {macro} over {len(entries)} classes (x: FPR, y: TPR)", fontsize=10)
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def write_evaluation(report: Mapping, output_dir, scores=None, targets=None) -> Dict[str, str]:
    """Write `metrics.json`, `metrics.md` and (given scores and targets) `roc.png` into `output_dir`.

    Each file is replaced atomically; `metrics.json` is written last, so its presence means the other
    files of the run are complete. An optional `report["run"]` dict (model, dataset, split, ...) is
    kept in the JSON and summarised above the table. Returns `{kind: path}` of the files written.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    if scores is not None and targets is not None:
        plot_roc(report, scores, targets, output_dir / ROC_PLOT)
        written["roc"] = str(output_dir / ROC_PLOT)
    atomic_write_text(output_dir / METRICS_MARKDOWN, _evaluation_markdown(report))
    written["markdown"] = str(output_dir / METRICS_MARKDOWN)
    atomic_write_text(output_dir / METRICS_JSON, to_json(report))
    written["json"] = str(output_dir / METRICS_JSON)
    return written


__all__ = [
    "EvaluationError",
    "auroc_report",
    "atomic_write_text",
    "class_prompts",
    "concept_prompts",
    "extract_ecg_features",
    "iterate_processed_batches",
    "label_matrix",
    "load_checkpoint",
    "load_evaluation_dataset",
    "load_prompt_file",
    "split_labels",
    "macro_auroc",
    "markdown_table",
    "subsample",
    "to_json",
    "write_evaluation",
    "zero_shot_scores",
]
