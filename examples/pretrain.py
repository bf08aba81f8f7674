"""Supervised multimodal pre-training of SuPreME on ECGs and the clinical concepts of their reports.

Targets are the concepts of an entities file (from examples/extract_entities.py): present is
positive, absent or not mentioned is negative, uncertain is configurable. The concepts seen at least
--min_concept_count times form the training vocabulary; their query texts come from the concept
vocabulary. The frozen text encoder embeds every query text once, before the first step.

    accelerate launch examples/pretrain.py --dataset ptbxl --dataset_config reports \\
        --data_dir /data/ptb-xl --sampling_rate 500 --entities ptbxl_entities.jsonl \\
        --eval_dataset ptbxl --eval_dataset_config super --eval_data_dir /data/ptb-xl \\
        --output_dir runs/ptbxl --num_train_epochs 20 --mixed_precision bf16

    # two CPU processes on one machine
    ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 examples/pretrain.py ...

    # continue after an interruption, exactly where the last checkpoint left off
    accelerate launch examples/pretrain.py ... --resume_from_checkpoint latest

The output directory receives a `from_pretrained` checkpoint (model, processor and the concept list),
the training arguments, evaluation results and a model card; `checkpoints/` holds resumable states.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
for _path in (str(REPO), str(Path(__file__).resolve().parent)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import HfArgumentParser  # noqa: E402

UNCERTAIN_POLICIES = ("ignore", "positive", "negative")
QUERY_VARIANTS = ("description", "name", "synonyms")
IGNORE_INDEX = -100


class PretrainError(SystemExit):
    """A problem the user must fix before training can start; the message says what to do."""

    def __init__(self, message: str):
        super().__init__(f"pretrain.py: {message}")


@dataclass
class DataArguments:
    dataset: str = field(metadata={"help": "training corpus (datasets_scripts name, e.g. ptbxl, mimic_iv_ecg, synthetic)"})
    entities: str = field(metadata={"help": "entities JSONL file from examples/extract_entities.py"})
    dataset_config: Optional[str] = field(default=None, metadata={"help": "corpus configuration (e.g. ptbxl: reports)"})
    data_dir: Optional[str] = field(default=None, metadata={"help": "the corpus folder as downloaded"})
    sampling_rate: Optional[int] = field(default=None, metadata={"help": "rate the corpus is read at (Hz); also the model's rate"})
    dataset_arg: list[str] = field(default_factory=list, metadata={"help": "extra corpus argument KEY=VALUE (e.g. num_records=2000)", "nargs": "*"})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "datasets cache folder"})
    min_concept_count: int = field(default=10, metadata={"help": "keep concepts present in at least this many training records"})
    uncertain: str = field(default="ignore", metadata={"help": "uncertain mentions: ignore (masked out of the loss), positive or negative"})
    allow_unknown_entity_records: bool = field(default=False, metadata={"help": "accept entity lines for records the corpus lacks (e.g. records skipped as unreadable)"})
    max_train_records: Optional[int] = field(default=None, metadata={"help": "use only the first N training records (quick trials)"})
    eval_dataset: Optional[str] = field(default=None, metadata={"help": "corpus for zero-shot model selection (its validation split)"})
    eval_dataset_config: Optional[str] = field(default=None, metadata={"help": "its configuration (e.g. ptbxl: super)"})
    eval_data_dir: Optional[str] = field(default=None, metadata={"help": "its folder"})
    eval_dataset_arg: list[str] = field(default_factory=list, metadata={"help": "extra eval corpus argument KEY=VALUE", "nargs": "*"})
    eval_prompts: Optional[str] = field(default=None, metadata={"help": "JSON {class: prompt(s)} overriding the prompt bank"})
    eval_max_records: Optional[int] = field(default=None, metadata={"help": "evaluate on at most N validation records"})
    dataloader_num_workers: int = field(default=0, metadata={"help": "worker processes preparing batches"})


@dataclass
class ModelArguments:
    model_preset: str = field(default="tiny", metadata={"help": "ECG encoder size: tiny, small or base"})
    ecg_encoder_type: str = field(default="vit", metadata={"help": "vit or resnet1d"})
    ecg_num_layers: Optional[int] = field(default=None, metadata={"help": "override the preset's depth"})
    text_encoder: str = field(default="sentence-transformers/all-MiniLM-L6-v2", metadata={"help": "HF id or folder of the text encoder"})
    duration: float = field(default=10.0, metadata={"help": "seconds of ECG the model sees"})
    fusion_num_layers: int = field(default=2, metadata={"help": "Cardiac Fusion Network depth"})
    loss_type: str = field(default="bce", metadata={"help": "bce or asymmetric"})
    lead_subset_prob: float = field(default=0.3, metadata={"help": "probability that a training ECG is shown with a random subset of its leads"})
    query_text_variants: str = field(default="description,name", metadata={"help": "concept texts sampled as queries during training, comma-separated from: description, name, synonyms"})


@dataclass
class TrainArguments:
    output_dir: str = field(metadata={"help": "where the checkpoint, model card and resumable states go"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "allow a non-empty output_dir without resuming"})
    num_train_epochs: float = field(default=10.0, metadata={"help": "epochs (ignored when max_steps > 0)"})
    max_steps: int = field(default=-1, metadata={"help": "optimizer steps; > 0 overrides num_train_epochs"})
    max_train_minutes: Optional[float] = field(default=None, metadata={"help": "stop after this much training time (the schedule still follows max_steps/epochs)"})
    per_device_train_batch_size: int = field(default=64, metadata={"help": "ECGs per process and micro-step"})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "ECGs per evaluation batch"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-steps per optimizer step"})
    learning_rate: float = field(default=5e-4, metadata={"help": "peak learning rate (AdamW)"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay (not on norms, biases, positions)"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "share of steps with linear warm-up before the cosine decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    mixed_precision: str = field(default="no", metadata={"help": "no, bf16 or fp16 (fp16 does nothing on CPU)"})
    seed: int = field(default=42, metadata={"help": "seed of initialisation, data order and augmentation"})
    checkpointing_steps: int = field(default=500, metadata={"help": "save a resumable state every N optimizer steps"})
    save_total_limit: int = field(default=2, metadata={"help": "resumable states kept"})
    resume_from_checkpoint: Optional[str] = field(default=None, metadata={"help": "'latest' or a checkpoint folder"})
    eval_steps: Optional[int] = field(default=None, metadata={"help": "zero-shot validation every N steps (default: checkpointing_steps)"})
    logging_steps: int = field(default=10, metadata={"help": "log the loss every N steps"})
    push_to_hub: bool = field(default=False, metadata={"help": "push the final checkpoint to the Hub (main process)"})
    hub_model_id: Optional[str] = field(default=None, metadata={"help": "repository id for --push_to_hub"})
    hub_private: bool = field(default=False, metadata={"help": "create the Hub repository as private"})


# -- data ------------------------------------------------------------------------------------------


def parse_key_values(pairs) -> dict:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise PretrainError(f"expected KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def load_corpus(name, config, data_dir, sampling_rate, cache_dir, extra):
    from datasets_scripts import load_ecg_dataset

    try:
        return load_ecg_dataset(name, config, data_dir=data_dir, sampling_rate=sampling_rate, cache_dir=cache_dir, **extra)
    except (ValueError, FileNotFoundError) as err:
        raise PretrainError(f"cannot load corpus {name!r} (config {config!r}) from {data_dir!r}: {err}") from None


def record_ids(split) -> list:
    """The record_id column without decoding signals."""
    return list(split.with_format(None)["record_id"])


def load_entities(path: str) -> dict:
    """record_id -> entities line; clear errors for a missing, empty or unreadable file."""
    from processing.entities_file import read_entities_file

    if not path or not os.path.isfile(path):
        raise PretrainError(f"entities file {path!r} not found; create it with examples/extract_entities.py")
    if os.path.getsize(path) == 0:
        raise PretrainError(f"entities file {path} is empty; run examples/extract_entities.py on the training corpus")
    try:
        lines = read_entities_file(path)
    except ValueError as err:
        raise PretrainError(f"entities file {path} is not valid: {err}") from None
    if not lines:
        raise PretrainError(f"entities file {path} holds no records")
    return lines


@dataclass
class TrainingTargets:
    concepts: list  # concept names, in target order
    counts: list  # positives per concept among the used training records
    rows: np.ndarray  # indices into the training split
    targets: np.ndarray  # (rows, concepts) float32 in {0, 1, IGNORE_INDEX}
    report: dict  # what was dropped and why


def build_targets(train_ids, all_ids, entities, min_count, uncertain="ignore", allow_unknown=False) -> TrainingTargets:
    """Turn entity lines into a multi-label target matrix over the frequent concepts."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise PretrainError(f"--uncertain must be one of {UNCERTAIN_POLICIES}, got {uncertain!r}")
    all_ids = set(all_ids)
    unknown = [rid for rid in entities if rid not in all_ids]
    if unknown and len(unknown) == len(entities):
        raise PretrainError(
            f"none of the {len(entities)} records in the entities file belongs to this corpus (for example "
            f"{unknown[:3]}, while the corpus has ids like {sorted(all_ids)[:3]}); was it extracted from another dataset?"
        )
    if unknown and not allow_unknown:
        raise PretrainError(
            f"{len(unknown)} of {len(entities)} entity lines name records the corpus does not have (for example "
            f"{unknown[:3]}); extract entities from the same corpus, or pass --allow_unknown_entity_records if these "
            "records were left out on purpose (e.g. skipped as unreadable)"
        )
    statuses_by_row, rows, missing, errors = [], [], 0, 0
    for row, rid in enumerate(train_ids):
        line = entities.get(rid)
        if line is None:
            missing += 1
            continue
        if line.get("error"):
            errors += 1
            continue
        status = {}
        for entity in line.get("entities") or []:
            concept, state = entity.get("concept"), entity.get("status")
            # A concept mentioned twice keeps its strongest statement: present > uncertain > absent.
            rank = {"absent": 0, "uncertain": 1, "present": 2}.get(state, -1)
            if concept and rank > {"absent": 0, "uncertain": 1, "present": 2}.get(status.get(concept), -1):
                status[concept] = state
        statuses_by_row.append(status)
        rows.append(row)
    if not rows:
        raise PretrainError(
            f"no training record has a usable entities line ({missing} without a line, {errors} with an extraction error)"
        )
    counts = Counter()
    for status in statuses_by_row:
        counts.update(c for c, s in status.items() if s == "present" or (s == "uncertain" and uncertain == "positive"))
    concepts = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
    if not concepts:
        best = counts.most_common(3)
        raise PretrainError(
            f"no concept is positive in at least {min_count} of the {len(rows)} training records "
            f"(most frequent: {best or 'none'}); lower --min_concept_count or check the entities file"
        )
    index = {c: i for i, c in enumerate(concepts)}
    targets = np.zeros((len(rows), len(concepts)), dtype=np.float32)
    value = {"present": 1.0, "absent": 0.0, "uncertain": {"ignore": IGNORE_INDEX, "positive": 1.0, "negative": 0.0}[uncertain]}
    for r, status in enumerate(statuses_by_row):
        for concept, state in status.items():
            if concept in index and state in value:
                targets[r, index[concept]] = value[state]
    report = {"training_records": len(train_ids), "used_records": len(rows), "records_without_entities": missing,
              "records_with_extraction_error": errors, "unknown_entity_records": len(unknown),
              "concepts_seen": len(counts), "concepts_kept": len(concepts), "min_concept_count": min_count}
    return TrainingTargets(concepts, [counts[c] for c in concepts], np.asarray(rows), targets, report)


def concept_query_texts(concepts, variants=("description", "name")):
    """Per concept, the texts sampled as its query: the vocabulary's description, its name and/or its
    spelled-out synonyms. The first text of each concept (the description) is its canonical query."""
    from processing.concepts import load_concept_vocabulary

    vocab = load_concept_vocabulary()
    texts = []
    for name in concepts:
        concept = vocab.get(name) if name in vocab else None
        options = []
        for variant in variants:
            if variant == "description" and concept is not None and concept.description:
                options.append(concept.description)
            elif variant == "name":
                options.append(name)
            elif variant == "synonyms" and concept is not None:
                # Spelled-out synonyms only: abbreviations ("lbbb", "sr") say little to a text encoder.
                options.extend(s for s in concept.synonyms if len(s) > 5 and " " in s)
            elif variant not in QUERY_VARIANTS:
                raise PretrainError(f"unknown query text variant {variant!r}; choose from {', '.join(QUERY_VARIANTS)}")
        unique = list(dict.fromkeys(options))
        texts.append(unique or [name])
    return texts


def _random_lead_subset(rng: np.random.Generator, leads: list) -> list:
    """Which leads to keep: lead I alone, the six limb leads, or a random non-empty subset."""
    choice = rng.integers(3)
    if choice == 0 and "I" in leads:
        return ["I"]
    if choice == 1:
        limb = [lead for lead in leads if lead in ("I", "II", "III", "aVR", "aVL", "aVF")]
        if limb:
            return limb
    keep = [lead for lead in leads if rng.random() < 0.5]
    return keep or [leads[int(rng.integers(len(leads)))]]


class PretrainingDataset(torch.utils.data.Dataset):
    """Training rows with their targets; batches are decoded and feature-extracted together.

    Augmentation randomness depends only on (seed, epoch, record), never on worker or resume state,
    so a resumed run sees exactly the batches an uninterrupted run would have seen.
    """

    def __init__(self, split, rows, targets, feature_extractor, seed, lead_subset_prob):
        self.split, self.rows, self.targets = split, rows, targets
        self.feature_extractor, self.seed, self.lead_subset_prob = feature_extractor, seed, lead_subset_prob
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return self.__getitems__([index])

    def __getitems__(self, indices):
        batch = self.split[[int(self.rows[i]) for i in indices]]
        records = []
        for k, i in enumerate(indices):
            signal, leads = np.asarray(batch["signal"][k]), list(batch["lead_names"][k])
            rng = np.random.default_rng([self.seed, self.epoch, int(i)])
            if self.lead_subset_prob > 0 and rng.random() < self.lead_subset_prob:
                keep = _random_lead_subset(rng, leads)
                signal = signal[[leads.index(lead) for lead in keep]]
                leads = keep
            records.append({"signal": signal, "sampling_rate": int(batch["sampling_rate"][k]), "lead_names": leads,
                            "record_id": batch["record_id"][k]})
        features = self.feature_extractor(records, return_tensors="pt")
        features["labels"] = torch.from_numpy(self.targets[list(indices)])
        return dict(features)


def _identity_collate(batch):
    return batch


class EpochSampler(torch.utils.data.Sampler):
    """A permutation of the rows that depends only on (seed, epoch)."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.size).tolist())

    def __len__(self):
        return self.size


# -- checkpoints -----------------------------------------------------------------------------------

STATE_FILE = "trainer_state.json"


def checkpoint_root(output_dir) -> Path:
    return Path(output_dir) / "checkpoints"


def complete_checkpoints(output_dir) -> list:
    """Finished resumable states, oldest first (a state is finished once its folder has its final name)."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def save_checkpoint(accelerator, output_dir, state: dict, limit: int):
    """Write a resumable state atomically: into a temporary folder, renamed when complete."""
    root = checkpoint_root(output_dir)
    final = root / f"step_{state['global_step']:08d}"
    partial = root / f".partial_step_{state['global_step']:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / STATE_FILE).write_text(json.dumps(state, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for old in complete_checkpoints(output_dir)[:-limit] if limit > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def resolve_resume(output_dir, value) -> Optional[Path]:
    if not value:
        return None
    if value == "latest":
        found = complete_checkpoints(output_dir)
        if not found:
            raise PretrainError(f"--resume_from_checkpoint latest: no finished checkpoint under {checkpoint_root(output_dir)}")
        return found[-1]
    path = Path(value)
    if not (path / STATE_FILE).is_file():
        raise PretrainError(f"{path} is not a finished checkpoint of this script (no {STATE_FILE})")
    return path


def save_pretrained_atomically(model, processor, folder: Path, extra_files: dict):
    partial = folder.with_name(f".partial_{folder.name}")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    processor.save_pretrained(partial)
    for name, content in extra_files.items():
        (partial / name).write_text(content)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(partial, folder)


# -- evaluation --------------------------------------------------------------------------------------


@dataclass
class ZeroShotEvaluator:
    """Zero-shot macro AUROC on the evaluation corpus's validation split (never its test split)."""

    split: object
    class_names: list
    prompts: dict
    batch_size: int
    bf16: bool

    @classmethod
    def from_args(cls, data_args, train_args):
        from ecg_evaluation import EvaluationError, class_prompts, load_evaluation_dataset, subsample

        try:
            corpus, names, _ = load_evaluation_dataset(
                data_args.eval_dataset, data_args.eval_dataset_config, data_args.eval_data_dir,
                data_args.sampling_rate, data_args.cache_dir, **parse_key_values(data_args.eval_dataset_arg))
            split = subsample(corpus["validation"], data_args.eval_max_records)
            prompts = class_prompts(names, prompt_file=data_args.eval_prompts)
        except (EvaluationError, ValueError, FileNotFoundError) as err:
            raise PretrainError(f"evaluation corpus {data_args.eval_dataset!r}: {err}") from None
        if len(split) == 0:
            raise PretrainError(f"the evaluation corpus {data_args.eval_dataset!r} has an empty validation split")
        return cls(split, names, prompts, train_args.per_device_eval_batch_size, train_args.mixed_precision == "bf16")

    def __call__(self, model, processor) -> Optional[float]:
        from ecg_evaluation import macro_auroc, zero_shot_scores

        scores, targets, _ = zero_shot_scores(model, processor, self.split, self.class_names, self.prompts,
                                              batch_size=self.batch_size, bf16=self.bf16, progress=False)
        return macro_auroc(scores, targets)


# -- model card ----------------------------------------------------------------------------------------


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


def push_to_hub(folder: Path, repo_id: str, private: bool):
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), ignore_patterns=["checkpoints/*", ".partial*", "best_model/*"],
                      commit_message="Upload SuPreME checkpoint")


# -- main ----------------------------------------------------------------------------------------------


def check_output_dir(train_args, resume):
    out = Path(train_args.output_dir)
    if out.exists() and any(out.iterdir()) and not resume and not train_args.overwrite_output_dir:
        raise PretrainError(f"output_dir {out} is not empty; pass --resume_from_checkpoint latest to continue, "
                            "or --overwrite_output_dir to start over")
    config_file = out / "config.json"
    if resume and config_file.is_file():
        model_type = json.loads(config_file.read_text()).get("model_type")
        if model_type != "supreme":
            raise PretrainError(f"{out} holds a checkpoint of another model (model_type {model_type!r}); use another output_dir")


def build_model(model_args, data_args, targets, query_texts):
    from modeling_supreme import ECGProcessor, SuPreMEConfig, SuPreMEModel
    from modeling_supreme.configuration_supreme import ECG_ENCODER_PRESETS

    rate = data_args.sampling_rate or 500
    preset = ECG_ENCODER_PRESETS[model_args.ecg_encoder_type][model_args.model_preset]
    patch = preset["patch_size"]
    if model_args.ecg_encoder_type == "vit":
        patch = max(1, round(preset["patch_size"] * rate / 500))  # the same 0.1 s per token at any rate
    num_samples = int(round(model_args.duration * rate))
    num_samples -= num_samples % patch if model_args.ecg_encoder_type == "vit" else 0
    config = SuPreMEConfig(
        sampling_rate=rate, num_samples=num_samples, ecg_encoder_type=model_args.ecg_encoder_type,
        ecg_preset=model_args.model_preset, patch_size=patch, ecg_num_layers=model_args.ecg_num_layers,
        text_encoder_name_or_path=model_args.text_encoder, fusion_num_layers=model_args.fusion_num_layers,
        loss_type=model_args.loss_type, concept_names=list(targets.concepts),
        concept_query_texts=[options[0] for options in query_texts],
    )
    return SuPreMEModel(config), ECGProcessor.from_config(config)


def optimizer_groups(model, weight_decay):
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "position_embeddings" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def main(argv=None):
    parser = HfArgumentParser((DataArguments, ModelArguments, TrainArguments))
    data_args, model_args, train_args = parser.parse_args_into_dataclasses(args=argv)
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    resume = resolve_resume(train_args.output_dir, train_args.resume_from_checkpoint)
    check_output_dir(train_args, resume)
    if train_args.push_to_hub and not train_args.hub_model_id:
        raise PretrainError("--push_to_hub needs --hub_model_id")
    accelerator = Accelerator(mixed_precision=train_args.mixed_precision,
                              gradient_accumulation_steps=train_args.gradient_accumulation_steps)
    set_seed(train_args.seed)
    log = (lambda message: accelerator.print(f"[pretrain] {message}"))

    with accelerator.main_process_first():
        corpus = load_corpus(data_args.dataset, data_args.dataset_config, data_args.data_dir, data_args.sampling_rate,
                             data_args.cache_dir, parse_key_values(data_args.dataset_arg))
    train_split = corpus["train"]
    if data_args.max_train_records:
        train_split = train_split.select(range(min(len(train_split), data_args.max_train_records)))
    if len(train_split) == 0:
        raise PretrainError(f"the training split of {data_args.dataset!r} is empty")
    if data_args.sampling_rate is None:
        data_args.sampling_rate = int(train_split[0]["sampling_rate"])
    all_ids = [rid for name in corpus for rid in record_ids(corpus[name])]
    train_ids = record_ids(train_split)
    entities = load_entities(data_args.entities)
    targets = build_targets(train_ids, all_ids, entities, data_args.min_concept_count, data_args.uncertain,
                            data_args.allow_unknown_entity_records)
    log(f"{targets.report['used_records']} training records, {len(targets.concepts)} concepts "
        f"(>= {data_args.min_concept_count} positives): {', '.join(targets.concepts[:8])}"
        f"{' ...' if len(targets.concepts) > 8 else ''}")
    variants = tuple(v.strip() for v in model_args.query_text_variants.split(",") if v.strip())
    query_texts = concept_query_texts(targets.concepts, variants)

    set_seed(train_args.seed)
    model, processor = build_model(model_args, data_args, targets, query_texts)
    # Every query text variant is embedded once; each step picks one variant per concept.
    flat = [text for options in query_texts for text in options]
    tokens = processor.tokenize_queries(flat)
    with torch.no_grad():
        flat_embeds = model.get_query_embeddings(tokens["query_input_ids"], tokens["query_attention_mask"])
    variant_counts = torch.tensor([len(options) for options in query_texts])
    variant_offsets = torch.cumsum(variant_counts, 0) - variant_counts
    evaluator = ZeroShotEvaluator.from_args(data_args, train_args) if data_args.eval_dataset else None

    dataset = PretrainingDataset(train_split, targets.rows, targets.targets, processor.feature_extractor,
                                 train_args.seed, model_args.lead_subset_prob)
    sampler = EpochSampler(len(dataset), train_args.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=train_args.per_device_train_batch_size, sampler=sampler, collate_fn=_identity_collate,
        num_workers=data_args.dataloader_num_workers, drop_last=len(dataset) > train_args.per_device_train_batch_size,
    )
    optimizer = torch.optim.AdamW(optimizer_groups(model, train_args.weight_decay), lr=train_args.learning_rate)
    micro_per_epoch = math.ceil(len(loader) / accelerator.num_processes)
    steps_per_epoch = max(1, micro_per_epoch // train_args.gradient_accumulation_steps)
    total_steps = train_args.max_steps if train_args.max_steps > 0 else math.ceil(train_args.num_train_epochs * steps_per_epoch)
    # The prepared scheduler steps once per process per optimizer step: scale the schedule to match.
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(train_args.warmup_ratio * total_steps) * accelerator.num_processes,
                                                total_steps * accelerator.num_processes)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    flat_embeds = flat_embeds.to(accelerator.device)

    state = {"global_step": 0, "epoch": 0, "step_in_epoch": 0, "best_metric": None, "best_step": None,
             "history": [], "concepts": targets.concepts}
    if resume is not None:
        accelerator.load_state(str(resume))
        saved = json.loads((resume / STATE_FILE).read_text())
        if saved.get("concepts") != targets.concepts:
            raise PretrainError(f"{resume} was trained on other concepts; resume with the same data and arguments")
        state.update(saved)
        log(f"resumed from {resume} at step {state['global_step']} (epoch {state['epoch']})")

    output_dir = Path(train_args.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    args_record = {"data": asdict(data_args), "model": asdict(model_args), "train": asdict(train_args)}
    eval_steps = train_args.eval_steps or train_args.checkpointing_steps
    best_dir = output_dir / "best_model"
    started = time.perf_counter()
    stop = state["global_step"] >= total_steps
    progress = tqdm(total=total_steps, initial=state["global_step"], desc="pre-training",
                    disable=not accelerator.is_local_main_process)
    running_loss, running_count = 0.0, 0

    def evaluate_and_select():
        if evaluator is None or not accelerator.is_main_process:
            return
        metric = evaluator(unwrapped, processor)
        state["history"].append({"step": state["global_step"], "val_macro_auroc": metric})
        if metric is None:
            log(f"step {state['global_step']}: no validation class has both positives and negatives; nothing to select on")
            return
        improved = state["best_metric"] is None or metric > state["best_metric"]
        log(f"step {state['global_step']}: zero-shot validation macro AUROC {metric:.4f}"
            f"{' (best so far)' if improved else ''}")
        if improved:
            state["best_metric"], state["best_step"] = metric, state["global_step"]
            save_pretrained_atomically(unwrapped, processor, best_dir, {"concepts.json": json.dumps(concepts_record(), indent=2)})

    def concepts_record():
        return {"concepts": [{"name": c, "positive_records": n, "query_texts": q}
                             for c, n, q in zip(targets.concepts, targets.counts, query_texts)],
                "selection": targets.report}

    model.train()
    while not stop:
        epoch = state["epoch"]
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        batches = accelerator.skip_first_batches(loader, state["step_in_epoch"] * train_args.gradient_accumulation_steps) \
            if state["step_in_epoch"] else loader
        micro = 0  # micro-step within the current optimizer step
        for batch in batches:
            # Dropout draws from a generator seeded by the step, so that resuming reproduces it exactly.
            torch.manual_seed(hash((train_args.seed, state["global_step"], micro, accelerator.process_index)) % (2**63))
            micro += 1
            with accelerator.accumulate(model):
                # One text variant per concept, uniformly among that concept's variants.
                choice = (torch.rand(len(variant_counts)) * variant_counts).long()
                query_embeds = flat_embeds[(variant_offsets + choice).to(flat_embeds.device)]
                outputs = model(input_values=batch["input_values"], lead_mask=batch["lead_mask"],
                                attention_mask=batch["attention_mask"], query_embeds=query_embeds, labels=batch["labels"])
                accelerator.backward(outputs.loss)
                if accelerator.sync_gradients and train_args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), train_args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            running_loss += outputs.loss.detach().float().item()
            running_count += 1
            if not accelerator.sync_gradients:
                continue
            micro = 0
            state["global_step"] += 1
            state["step_in_epoch"] += 1
            progress.update(1)
            step = state["global_step"]
            if step % train_args.logging_steps == 0:
                loss = accelerator.gather(torch.tensor([running_loss / max(running_count, 1)], device=accelerator.device)).mean().item()
                progress.set_postfix(loss=f"{loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                state["history"].append({"step": step, "loss": loss})
                running_loss, running_count = 0.0, 0
            out_of_time = train_args.max_train_minutes is not None and \
                (time.perf_counter() - started) / 60 >= train_args.max_train_minutes
            stop = step >= total_steps or out_of_time
            if step % eval_steps == 0 or stop:
                evaluate_and_select()
                accelerator.wait_for_everyone()
            if step % train_args.checkpointing_steps == 0 or stop:
                save_checkpoint(accelerator, output_dir, dict(state), train_args.save_total_limit)
            if stop:
                if out_of_time:
                    log(f"stopping after {train_args.max_train_minutes} minutes at step {step}")
                break
        else:
            state["epoch"] += 1
            state["step_in_epoch"] = 0
    progress.close()

    # The final checkpoint: the best validated model when there was an evaluation corpus, else the last.
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        results = {"steps": state["global_step"], "history": state["history"]}
        if evaluator is not None and best_dir.is_dir():
            from modeling_supreme import SuPreMEModel

            final_model = SuPreMEModel.from_pretrained(best_dir)
            results["best"] = {"step": state["best_step"], "macro_auroc": state["best_metric"],
                               "eval_dataset": data_args.eval_dataset, "eval_dataset_config": data_args.eval_dataset_config,
                               "split": "validation", "class_names": evaluator.class_names}
        else:
            final_model = unwrapped
        files = {
            "concepts.json": json.dumps(concepts_record(), indent=2),
            "training_args.json": json.dumps(args_record, indent=2, default=str),
            "eval_results.json": json.dumps(results, indent=2),
            "README.md": model_card(args_record, targets, results, train_args.hub_model_id),
        }
        final_tmp = output_dir / "final"
        save_pretrained_atomically(final_model, processor, final_tmp, files)
        for item in final_tmp.iterdir():
            os.replace(item, output_dir / item.name)
        final_tmp.rmdir()
        log(f"saved the {'best validated' if 'best' in results else 'last'} model to {output_dir} "
            f"({state['global_step']} steps)")
        if train_args.push_to_hub:
            push_to_hub(output_dir, train_args.hub_model_id, train_args.hub_private)
            log(f"pushed {output_dir} to the Hub as {train_args.hub_model_id}")
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main()
