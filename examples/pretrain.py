"""Supervised multimodal pre-training of SuPreME on ECGs and the clinical concepts of their reports.

Targets are the concepts of an entities file (from examples/extract_entities.py): present is
positive, absent is negative, not mentioned is negative (--not_mentioned ignore masks it), uncertain
is positive by default; with --target_ancestors (default) a concept also marks its is-a ancestors.
The concepts seen at least --min_concept_count times form the training vocabulary; their query texts
come from the concept vocabulary. The frozen text encoder embeds every query text once, before the
first step. Depth, dropout, learning rate, warm-up, weight decay, epochs, batch size and early-stopping
patience left unset come from modeling_supreme.training.default_recipe for the corpus size, and so
does the model's sampling rate when --sampling_rate is not given (100 Hz below 5,000 records). The
best validated model is kept, training stops early when validation stops improving after the
warm-up, and a logit
scale/bias fitted on validation is stored in the checkpoint; validation is the zero-shot AUROC of an
evaluation corpus (--eval_dataset), else the trained concepts' AUROC on the training corpus's own
validation split against its reports (--concept_validation, default on), else none (the last model).

    # only the required flags: the recipe, concept validation, bf16 where the device runs it natively
    accelerate launch examples/pretrain.py --dataset ptbxl --dataset_config reports --data_dir /data/ptb-xl \\
        --entities ptbxl_entities.jsonl --output_dir runs/ptbxl

    accelerate launch examples/pretrain.py --dataset ptbxl --dataset_config reports \\
        --data_dir /data/ptb-xl --sampling_rate 500 --entities ptbxl_entities.jsonl \\
        --eval_dataset ptbxl --eval_dataset_config super --eval_data_dir /data/ptb-xl \\
        --output_dir runs/ptbxl --num_train_epochs 20 --mixed_precision bf16

    # two CPU processes on one machine
    ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 examples/pretrain.py ...

    # continue after an interruption, exactly where the last checkpoint left off
    accelerate launch examples/pretrain.py ... --resume_from_checkpoint latest

    # the arguments from a JSON file (HF examples' flat form, or a run's training_args.json); flags override it
    accelerate launch --mixed_precision bf16 examples/pretrain.py runs/ptbxl/training_args.json --output_dir runs/again

Precision: `--mixed_precision`, `--bf16` or `--fp16` when given; else the launcher's when it asks for
bf16 or fp16 (`accelerate launch --mixed_precision`, `accelerate config`); else bf16 where the device
runs it natively, else fp32 (`--mixed_precision no` forces fp32: a launcher's "no" is also its default).
`--report_to tensorboard|wandb|trackio|all|none` logs the loss, learning rate and validation AUROC
through accelerate's trackers into OUTPUT_DIR/runs.

The output directory receives a `from_pretrained` checkpoint (model, processor and the concept list),
the training arguments, evaluation results and a model card; `checkpoints/` holds resumable states.
Targets, the dataset, checkpoints, model selection and the model card come from
`modeling_supreme.training`; this script is the training loop.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch
from transformers import HfArgumentParser

from datasets_scripts import parse_corpus_args
from processing.ecg.data_collator import ECGDataCollator
from modeling_supreme.training import (
    STATE_FILE, ConceptValidation, EarlyStopping, EpochSampler, PretrainingDataset, PretrainingError, ZeroShotEvaluator, build_targets,
    check_output_dir, concept_query_texts, load_entities, model_card, push_checkpoint_to_hub, record_ids,
    SignalAugmentation, resolve_resume, save_checkpoint, save_pretrained_atomically, default_recipe, ENCODER_TYPES,
)
from modeling_supreme.training.recipe import DEFAULT_MIXED_PRECISION, bf16_is_native


# transformers.get_scheduler's schedules that need no further arguments (reduce_lr_on_plateau needs a metric each
# step, cosine_with_min_lr and warmup_stable_decay need lr_scheduler_kwargs, which this script does not take).
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt")
# accelerate's trackers that --report_to names; "all" is every installed one.
TRACKERS = ("tensorboard", "wandb", "trackio", "comet_ml", "mlflow", "clearml", "dvclive", "aim", "swanlab")
# Flag aliases (HF Trainer's names) as keys of a JSON config file.
ALIASES = {"save_steps": "checkpointing_steps", "hub_private": "hub_private_repo"}


@dataclass
class DataArguments:
    dataset: str = field(metadata={"help": "training corpus (datasets_scripts name, e.g. ptbxl, mimic_iv_ecg, synthetic)"})
    entities: str = field(metadata={"help": "entities JSONL file from examples/extract_entities.py"})
    dataset_config: Optional[str] = field(default=None, metadata={"help": "corpus configuration (e.g. ptbxl: reports)"})
    data_dir: Optional[str] = field(default=None, metadata={"help": "the corpus folder as downloaded"})
    sampling_rate: Optional[int] = field(default=None, metadata={"help": "rate the corpus is read at (Hz), and then also the model's rate; default: the corpus's own rate, the model's from --ecg_sampling_rate"})
    dataset_arg: list[str] = field(default_factory=list, metadata={"help": "extra corpus argument KEY=VALUE (e.g. num_records=2000)", "nargs": "*"})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "datasets cache folder"})
    min_concept_count: int = field(default=10, metadata={"help": "keep concepts present in at least this many training records"})
    uncertain: str = field(default="positive", metadata={"help": "uncertain mentions: positive, ignore (masked out of the loss) or negative"})
    not_mentioned: str = field(default="negative", metadata={"help": "concepts a report does not mention: negative or ignore (masked; measured much worse)"})
    target_ancestors: bool = field(default=True, metadata={"help": "a present concept also marks its is-a ancestors (processing/concepts/concept_ancestors.json)"})
    withhold_concepts: list[str] = field(default_factory=list, metadata={"help": "concepts kept out of the targets (to test them as unseen)", "nargs": "*"})
    allow_unknown_entity_records: bool = field(default=False, metadata={"help": "accept entity lines for records the corpus lacks (e.g. records skipped as unreadable)"})
    max_train_records: Optional[int] = field(default=None, metadata={"help": "use only the first N training records (quick trials)"})
    eval_dataset: Optional[str] = field(default=None, metadata={"help": "labelled corpus for zero-shot model selection (its validation split); without it, see --concept_validation"})
    eval_dataset_config: Optional[str] = field(default=None, metadata={"help": "its configuration (e.g. ptbxl: super)"})
    eval_data_dir: Optional[str] = field(default=None, metadata={"help": "its folder"})
    eval_dataset_arg: list[str] = field(default_factory=list, metadata={"help": "extra eval corpus argument KEY=VALUE", "nargs": "*"})
    eval_prompts: Optional[str] = field(default=None, metadata={"help": "JSON {class: prompt(s)} overriding the prompt bank"})
    eval_max_records: Optional[int] = field(default=None, metadata={"help": "evaluate on at most N validation records"})
    concept_validation: bool = field(default=True, metadata={"help": "without --eval_dataset: select the model and stop early on the trained concepts' macro AUROC over the training corpus's validation split, against its records' report targets"})
    dataloader_num_workers: int = field(default=0, metadata={"help": "worker processes preparing batches"})


@dataclass
class ModelArguments:
    model_preset: str = field(default="tiny", metadata={"help": "ECG encoder size: tiny, small or base"})
    ecg_encoder_type: str = field(default="vit", metadata={"help": "vit or resnet1d"})
    ecg_num_layers: Optional[int] = field(default=None, metadata={"help": "override the depth (default: ViT by corpus size, see modeling_supreme.training.recipe; ResNet: preset)"})
    ecg_patch_embedding: str = field(default="conv", metadata={"help": "ViT patch embedding: conv (convolutional stem) or linear"})
    text_encoder: str = field(default="sentence-transformers/all-MiniLM-L6-v2", metadata={"help": "HF id or folder of the text encoder"})
    duration: float = field(default=10.0, metadata={"help": "seconds of ECG the model sees"})
    ecg_sampling_rate: Optional[int] = field(default=None, metadata={"help": "the model's rate (Hz; the processor resamples); default: --sampling_rate when given, else by corpus size (100 Hz below 5,000 records), else the corpus's"})
    fusion_num_layers: int = field(default=2, metadata={"help": "Cardiac Fusion Network depth"})
    loss_type: str = field(default="bce", metadata={"help": "bce or asymmetric"})
    lead_subset_prob: float = field(default=0.3, metadata={"help": "probability that a training ECG is shown with a random subset of its leads"})
    dropout: Optional[float] = field(default=None, metadata={"help": "dropout of the ECG encoder and the fusion network (default by corpus size and encoder: 0 for the ViT below 5,000 records, else 0.1)"})
    crop_seconds: Optional[float] = field(default=None, metadata={"help": "train on random windows of this many seconds (whole record at evaluation; 0: off; default by corpus size)"})
    amplitude_scale: Optional[float] = field(default=None, metadata={"help": "scale each lead by a log-uniform factor in [1/s, s] (1: off; default by corpus size)"})
    noise_std: Optional[float] = field(default=None, metadata={"help": "gaussian noise added to training ECGs, mV (0: off; default by corpus size)"})
    baseline_wander: Optional[float] = field(default=None, metadata={"help": "peak mV of a random 0.05-0.5 Hz baseline wander (0: off; default by corpus size)"})
    query_text_variants: str = field(default="description,name", metadata={"help": "concept texts sampled as queries during training, comma-separated from: description, name, synonyms"})


@dataclass
class TrainArguments:
    output_dir: str = field(metadata={"help": "where the checkpoint, model card and resumable states go"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "allow a non-empty output_dir without resuming"})
    num_train_epochs: Optional[float] = field(default=None, metadata={"help": "epochs (ignored when max_steps > 0; default by corpus size)"})
    max_steps: int = field(default=-1, metadata={"help": "optimizer steps; > 0 overrides num_train_epochs"})
    max_train_minutes: Optional[float] = field(default=None, metadata={"help": "stop after this much training time (the schedule still follows max_steps/epochs)"})
    per_device_train_batch_size: Optional[int] = field(default=None, metadata={"help": "ECGs per process and micro-step (default by corpus size)"})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "ECGs per evaluation batch"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-steps per optimizer step"})
    learning_rate: Optional[float] = field(default=None, metadata={"help": "peak learning rate (AdamW; default by corpus size)"})
    weight_decay: Optional[float] = field(default=None, metadata={"help": "AdamW weight decay (not on norms, biases, positions; default by corpus size)"})
    warmup_ratio: Optional[float] = field(default=None, metadata={"help": "share of steps with linear warm-up before the --lr_scheduler_type schedule (default by corpus size)"})
    early_stopping_patience: Optional[int] = field(default=None, metadata={"help": "stop after N validations without improvement, counted from the end of the warm-up (default by corpus size; 0: never)"})
    calibrate_scores: bool = field(default=True, metadata={"help": "fit a zero-shot logit scale/bias on the evaluation validation split and store it in the checkpoint"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    mixed_precision: Optional[str] = field(default=None, metadata={"help": "no, bf16 or fp16 (fp16 does nothing on CPU); default: bf16 or fp16 when the launcher asks for it (accelerate launch --mixed_precision, accelerate config), else bf16 where the device runs it natively, else no"})
    bf16: bool = field(default=False, metadata={"help": "HF Trainer's name for --mixed_precision bf16"})
    fp16: bool = field(default=False, metadata={"help": "HF Trainer's name for --mixed_precision fp16"})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "learning-rate schedule after the warm-up, as HF Trainer names them: " + ", ".join(SCHEDULERS)})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute the ECG encoder's and fusion network's activations in the backward pass (less memory, more time)"})
    report_to: list[str] = field(default_factory=lambda: ["none"], metadata={"help": "trackers through accelerate: tensorboard, wandb, trackio, all (every installed one) or none", "nargs": "+"})
    logging_dir: Optional[str] = field(default=None, metadata={"help": "tracker folder (default: OUTPUT_DIR/runs)"})
    run_name: Optional[str] = field(default=None, metadata={"help": "tracker run name (default: supreme_pretrain)"})
    seed: int = field(default=42, metadata={"help": "seed of initialisation, data order and augmentation"})
    checkpointing_steps: int = field(default=500, metadata={"help": "save a resumable state every N optimizer steps", "aliases": ["--save_steps"]})
    save_total_limit: int = field(default=2, metadata={"help": "resumable states kept"})
    resume_from_checkpoint: Optional[str] = field(default=None, metadata={"help": "'latest' or a checkpoint folder"})
    eval_steps: Optional[int] = field(default=None, metadata={"help": "zero-shot validation every N steps (default: once an epoch, at most checkpointing_steps)"})
    logging_steps: int = field(default=10, metadata={"help": "log the loss every N steps"})
    push_to_hub: bool = field(default=False, metadata={"help": "push the final checkpoint to the Hub (main process)"})
    hub_model_id: Optional[str] = field(default=None, metadata={"help": "repository id for --push_to_hub"})
    hub_private_repo: bool = field(default=False, metadata={"help": "create the Hub repository as private", "aliases": ["--hub_private"]})


def load_corpus(name, config, data_dir, sampling_rate, cache_dir, extra):
    from datasets_scripts import load_ecg_dataset

    try:
        return load_ecg_dataset(name, config, data_dir=data_dir, sampling_rate=sampling_rate, cache_dir=cache_dir, **extra)
    except (ValueError, FileNotFoundError) as err:
        raise PretrainingError(f"cannot load corpus {name!r} (config {config!r}) from {data_dir!r}: {err}") from None


def build_model(model_args, data_args, targets, query_texts):
    from modeling_supreme import ECGProcessor, SuPreMEConfig, SuPreMEModel

    rate = next((r for r in (model_args.ecg_sampling_rate, data_args.sampling_rate) if r is not None), 500)
    config = SuPreMEConfig(
        sampling_rate=rate, num_samples=int(round(model_args.duration * rate)), ecg_encoder_type=model_args.ecg_encoder_type,
        ecg_preset=model_args.model_preset, ecg_num_layers=model_args.ecg_num_layers, ecg_patch_embedding=model_args.ecg_patch_embedding,
        text_encoder_name_or_path=model_args.text_encoder, fusion_num_layers=model_args.fusion_num_layers,
        loss_type=model_args.loss_type, concept_names=list(targets.concepts),
        concept_query_texts=[options[0] for options in query_texts],
        **({} if model_args.dropout is None else {"ecg_dropout": model_args.dropout, "fusion_dropout": model_args.dropout}),
    )
    return SuPreMEModel(config), ECGProcessor.from_config(config)


def apply_recipe(recipe, model_args, train_args, log, corpus_rate=None):
    """Fill the flags left unset from the corpus-size recipe (modeling_supreme.training.recipe).

    ``corpus_rate``: the rate the corpus is read at when the user chose none (the model's rate then
    comes from the recipe, or is that rate); None when --sampling_rate was given, which sets both.
    """
    filled = {}
    if model_args.ecg_sampling_rate is None and corpus_rate is not None:
        model_args.ecg_sampling_rate = recipe.sampling_rate or corpus_rate
        if recipe.sampling_rate:
            filled["ecg_sampling_rate"] = recipe.sampling_rate
    if model_args.ecg_num_layers is None and model_args.ecg_encoder_type == "vit":
        model_args.ecg_num_layers = filled["ecg_num_layers"] = recipe.ecg_num_layers
    for name in ("learning_rate", "weight_decay", "warmup_ratio", "num_train_epochs", "per_device_train_batch_size",
                 "early_stopping_patience"):
        if getattr(train_args, name) is None:
            setattr(train_args, name, getattr(recipe, name))
            filled[name] = getattr(recipe, name)
    if model_args.dropout is None and recipe.dropout is not None:
        model_args.dropout = filled["dropout"] = recipe.dropout
    for name in ("crop_seconds", "amplitude_scale", "noise_std", "baseline_wander"):
        if getattr(model_args, name) is None:
            setattr(model_args, name, getattr(recipe, name))
            filled[name] = getattr(recipe, name)
    if filled:
        log("recipe for this corpus size: " + ", ".join(f"{k}={v}" for k, v in filled.items()))


def optimizer_groups(model, weight_decay):
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "position_embeddings" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def parse_arguments(argv=None):
    """`(DataArguments, ModelArguments, TrainArguments)` from flags, or from a JSON file given first.

    `pretrain.py config.json [--flag value ...]` reads the file (flat, as HF examples take it, or nested
    `{"data", "model", "train"}` as this script writes training_args.json) and lets later flags override it.
    """
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser((DataArguments, ModelArguments, TrainArguments))
    if argv and argv[0].endswith(".json"):
        path = Path(argv.pop(0))
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PretrainingError(f"config file {path} not found") from None
        except json.JSONDecodeError as error:
            raise PretrainingError(f"config file {path} is not valid JSON: {error}") from None
        if not isinstance(values, dict):
            raise PretrainingError(f"config file {path} must hold a JSON object of argument names and values")
        if set(values) and set(values) <= {"data", "model", "train"} and all(isinstance(v, dict) for v in values.values()):
            values = {key: value for part in values.values() for key, value in part.items()}
        values = {ALIASES.get(key, key): value for key, value in values.items()}
        actions = {action.dest: action for action in parser._actions}
        unknown = sorted(key for key in values if key not in actions or key == "help")
        if unknown:
            raise PretrainingError(f"config file {path}: unknown arguments {unknown}")
        for key, value in values.items():  # the file's values become defaults that flags can override
            actions[key].default = value
            actions[key].required = False
    return parser.parse_args_into_dataclasses(args=argv)


def resolve_mixed_precision(train_args, device_type: Optional[str] = None) -> Optional[str]:
    """The precision to pass to `Accelerator`.

    The flags' when given; else None (the launcher's choice) when the launcher asks for bf16 or fp16;
    else the recipe's bf16 where ``device_type`` runs it natively, else "no". `accelerate launch` sets
    "no" when it is given nothing, so a launcher's "no" cannot be told from a default: pass
    `--mixed_precision no` to this script to force fp32.
    """
    chosen = {name for name, flag in (("bf16", train_args.bf16), ("fp16", train_args.fp16)) if flag}
    if train_args.mixed_precision is not None:
        if train_args.mixed_precision not in ("no", "bf16", "fp16"):
            raise PretrainingError(f"--mixed_precision must be no, bf16 or fp16, got {train_args.mixed_precision!r}")
        chosen.add(train_args.mixed_precision)
    if len(chosen) > 1:
        raise PretrainingError(f"conflicting precision flags: {sorted(chosen)} (--bf16/--fp16/--mixed_precision)")
    if chosen:
        return chosen.pop()
    # None lets Accelerator read ACCELERATE_MIXED_PRECISION, which `accelerate launch` sets from its
    # --mixed_precision flag or `accelerate config`.
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if launcher not in ("no", "bf16", "fp16", "fp8"):
        raise PretrainingError(f"ACCELERATE_MIXED_PRECISION={launcher!r} (from the launcher or the environment) must be "
                               "no, bf16, fp16 or fp8")
    if launcher != "no":
        return None
    if device_type is None:
        from accelerate.utils import str_to_bool

        on_cpu = str_to_bool(os.environ.get("ACCELERATE_USE_CPU", "false")) or not torch.cuda.is_available()
        device_type = "cpu" if on_cpu else "cuda"
    return DEFAULT_MIXED_PRECISION if DEFAULT_MIXED_PRECISION != "bf16" or bf16_is_native(device_type) else "no"


def trackers(report_to) -> Optional[list]:
    """`--report_to` as accelerate's `log_with` (None for none), checked against what is installed."""
    from accelerate.tracking import get_available_trackers

    names = [name.strip() for item in report_to for name in str(item).split(",") if name.strip()]
    if not names or names == ["none"]:
        return None
    if "none" in names and len(names) > 1:
        raise PretrainingError(f"--report_to none cannot be combined with other trackers: {names}")
    if names == ["all"]:
        return ["all"]
    bad = [name for name in names if name not in TRACKERS]
    if bad:
        raise PretrainingError(f"--report_to: unknown tracker(s) {bad}; choose from {list(TRACKERS)}, all or none")
    available = {str(getattr(t, "value", t)) for t in get_available_trackers()}
    missing = [name for name in names if name not in available]
    if missing:
        raise PretrainingError(f"--report_to {' '.join(missing)}: not installed (pip install {' '.join(missing)})")
    return names


def tracker_config(args_record: dict) -> dict:
    """The run's arguments as flat scalars (TensorBoard's hparams take no lists or None)."""
    flat = {}
    for part, values in args_record.items():
        for key, value in values.items():
            if isinstance(value, (list, tuple)):
                value = ",".join(map(str, value))
            flat[f"{part}/{key}"] = "None" if value is None else value
    return flat


def main(argv=None):
    try:
        train(argv)
    except PretrainingError as error:  # input the user must fix: one line, no traceback
        raise SystemExit(f"pretrain.py: {error}") from None


def train(argv=None):
    data_args, model_args, train_args = parse_arguments(argv)
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    for flag, rate in (("--sampling_rate", data_args.sampling_rate), ("--ecg_sampling_rate", model_args.ecg_sampling_rate)):
        if rate is not None and rate <= 0:  # 0 must not fall back to a default rate silently
            raise PretrainingError(f"{flag} must be a positive rate in Hz, got {rate}")
    resume = resolve_resume(train_args.output_dir, train_args.resume_from_checkpoint)
    check_output_dir(train_args, resume)
    if train_args.push_to_hub and not train_args.hub_model_id:
        raise PretrainingError("--push_to_hub needs --hub_model_id")
    if train_args.lr_scheduler_type not in SCHEDULERS:
        raise PretrainingError(f"--lr_scheduler_type must be one of {list(SCHEDULERS)}, got {train_args.lr_scheduler_type!r}")
    if model_args.dropout is not None and not 0 <= model_args.dropout < 1:
        raise PretrainingError(f"--dropout must be in [0, 1), got {model_args.dropout}")
    if model_args.ecg_encoder_type not in ENCODER_TYPES:  # before any data is read
        raise PretrainingError(f"--ecg_encoder_type must be one of {list(ENCODER_TYPES)}, got {model_args.ecg_encoder_type!r}")
    log_with = trackers(train_args.report_to)
    logging_dir = train_args.logging_dir or os.path.join(train_args.output_dir, "runs")
    accelerator = Accelerator(mixed_precision=resolve_mixed_precision(train_args),
                              gradient_accumulation_steps=train_args.gradient_accumulation_steps, log_with=log_with,
                              project_config=ProjectConfiguration(project_dir=train_args.output_dir, logging_dir=logging_dir))
    set_seed(train_args.seed)
    log = (lambda message: accelerator.print(f"[pretrain] {message}"))
    log(f"mixed precision: {accelerator.mixed_precision}; trackers: {', '.join(log_with) if log_with else 'none'}")

    with accelerator.main_process_first():
        try:
            extra = parse_corpus_args(data_args.dataset_arg)
        except ValueError as error:
            raise PretrainingError(str(error)) from None
        corpus = load_corpus(data_args.dataset, data_args.dataset_config, data_args.data_dir, data_args.sampling_rate,
                             data_args.cache_dir, extra)
    train_split = corpus["train"]
    if data_args.max_train_records:
        train_split = train_split.select(range(min(len(train_split), data_args.max_train_records)))
    if len(train_split) == 0:
        raise PretrainingError(f"the training split of {data_args.dataset!r} is empty")
    corpus_rate = None
    if data_args.sampling_rate is None:
        data_args.sampling_rate = corpus_rate = int(train_split[0]["sampling_rate"])
    all_ids = [rid for name in corpus for rid in record_ids(corpus[name])]
    train_ids = record_ids(train_split)
    entities = load_entities(data_args.entities)
    from processing.concepts.ontology import load_concept_ancestors

    ancestors = load_concept_ancestors() if data_args.target_ancestors else None
    targets = build_targets(train_ids, all_ids, entities, data_args.min_concept_count, data_args.uncertain,
                            data_args.allow_unknown_entity_records, not_mentioned=data_args.not_mentioned,
                            ancestors=ancestors, withheld=data_args.withhold_concepts)
    apply_recipe(default_recipe(len(targets.rows), model_args.ecg_encoder_type), model_args, train_args, log, corpus_rate)
    log(f"{targets.report['used_records']} training records, {len(targets.concepts)} concepts "
        f"(>= {data_args.min_concept_count} positives): {', '.join(targets.concepts[:8])}"
        f"{' ...' if len(targets.concepts) > 8 else ''}")
    variants = tuple(v.strip() for v in model_args.query_text_variants.split(",") if v.strip())
    query_texts = concept_query_texts(targets.concepts, variants)

    set_seed(train_args.seed)
    model, processor = build_model(model_args, data_args, targets, query_texts)
    if train_args.gradient_checkpointing:
        model.activation_checkpointing_enable()  # transformers 5 name of gradient_checkpointing_enable
    # Every query text variant is embedded once; each step picks one variant per concept.
    flat = [text for options in query_texts for text in options]
    tokens = processor.tokenize_queries(flat)
    with torch.no_grad():
        flat_embeds = model.get_query_embeddings(tokens["query_input_ids"], tokens["query_attention_mask"])
    variant_counts = torch.tensor([len(options) for options in query_texts])
    variant_offsets = torch.cumsum(variant_counts, 0) - variant_counts
    evaluator = None
    bf16_eval = accelerator.mixed_precision == "bf16"
    if data_args.eval_dataset:
        evaluator = ZeroShotEvaluator.from_args(data_args, train_args, bf16=bf16_eval)
    elif data_args.concept_validation and "validation" in corpus:
        evaluator, why_not = ConceptValidation.from_split(
            corpus["validation"], entities, targets.concepts, query_texts, uncertain=data_args.uncertain,
            not_mentioned=data_args.not_mentioned, ancestors=ancestors, withheld=data_args.withhold_concepts,
            batch_size=train_args.per_device_eval_batch_size, bf16=bf16_eval)
        if evaluator is None:
            log(f"no model selection: the validation split of {data_args.dataset!r} cannot validate the concepts ({why_not}); "
                "the last model is kept")
        else:
            log(f"model selection and early stopping on the validation split of {data_args.dataset!r}: macro AUROC of "
                f"{len(evaluator.scored_concepts())} trained concepts over {len(evaluator.split)} records' report targets")
    else:
        log("no model selection: no --eval_dataset" + ("" if data_args.concept_validation else " and --no_concept_validation")
            + (" and the corpus has no validation split" if "validation" not in corpus else "") + "; the last model is kept")

    try:
        augmentation = SignalAugmentation(crop_seconds=model_args.crop_seconds or None, amplitude_scale=model_args.amplitude_scale,
                                          noise_std=model_args.noise_std, baseline_wander=model_args.baseline_wander)
    except ValueError as err:
        raise PretrainingError(f"augmentation flags (--crop_seconds, --amplitude_scale, --noise_std, --baseline_wander): {err}") from None
    dataset = PretrainingDataset(train_split, targets.rows, targets.targets, train_args.seed, model_args.lead_subset_prob, augmentation)
    sampler = EpochSampler(len(dataset), train_args.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=train_args.per_device_train_batch_size, sampler=sampler,
        collate_fn=ECGDataCollator(processor, label_column="targets"),
        num_workers=data_args.dataloader_num_workers, drop_last=len(dataset) > train_args.per_device_train_batch_size,
    )
    optimizer = torch.optim.AdamW(optimizer_groups(model, train_args.weight_decay), lr=train_args.learning_rate)
    micro_per_epoch = math.ceil(len(loader) / accelerator.num_processes)
    steps_per_epoch = max(1, micro_per_epoch // train_args.gradient_accumulation_steps)
    total_steps = train_args.max_steps if train_args.max_steps > 0 else math.ceil(train_args.num_train_epochs * steps_per_epoch)
    # The prepared scheduler steps once per process per optimizer step: scale the schedule to match.
    warmup_steps = int(train_args.warmup_ratio * total_steps)
    scheduler = get_scheduler(train_args.lr_scheduler_type, optimizer,
                              num_warmup_steps=warmup_steps * accelerator.num_processes,
                              num_training_steps=total_steps * accelerator.num_processes)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    flat_embeds = flat_embeds.to(accelerator.device)

    state = {"global_step": 0, "epoch": 0, "step_in_epoch": 0, "best_metric": None, "best_step": None,
             "history": [], "concepts": targets.concepts}
    if resume is not None:
        from modeling_supreme.training import remove_unfinished_checkpoints

        if accelerator.is_main_process:  # what a kill during a save left behind is never loaded
            for name in remove_unfinished_checkpoints(train_args.output_dir):
                log(f"removed the unfinished checkpoint {name} of the interrupted run")
        accelerator.wait_for_everyone()
        accelerator.load_state(str(resume))
        saved = json.loads((resume / STATE_FILE).read_text())
        if saved.get("concepts") != targets.concepts:
            raise PretrainingError(f"{resume} was trained on other concepts; resume with the same data and arguments")
        state.update(saved)
        log(f"resumed from {resume} at step {state['global_step']} (epoch {state['epoch']})")

    output_dir = Path(train_args.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    args_record = {"data": asdict(data_args), "model": asdict(model_args), "train": asdict(train_args)}
    if log_with:
        accelerator.init_trackers(train_args.run_name or "supreme_pretrain", config=tracker_config(args_record))
    eval_steps = train_args.eval_steps or max(1, min(train_args.checkpointing_steps, steps_per_epoch))
    best_dir = output_dir / "best_model"
    started = time.perf_counter()
    stop = state["global_step"] >= total_steps
    progress = tqdm(total=total_steps, initial=state["global_step"], desc="pre-training",
                    disable=not accelerator.is_local_main_process)
    running_loss, running_count = 0.0, 0

    # Validations during the warm-up keep a new best but do not count toward the patience (measured in the README).
    stopper = EarlyStopping(patience=train_args.early_stopping_patience, start_step=warmup_steps)
    stopper.load_state_dict(state)

    def evaluate_and_select() -> bool:
        """Validate, keep the best model; True (on every process) when early stopping says stop."""
        should_stop = False
        if evaluator is not None and accelerator.is_main_process:
            metric = evaluator(unwrapped, processor)
            state["history"].append({"step": state["global_step"], "val_macro_auroc": metric})
            if metric is None:
                log(f"step {state['global_step']}: no validation class has both positives and negatives; nothing to select on")
            should_stop = stopper.update(metric, state["global_step"])
            state.update(stopper.state_dict())
            if metric is not None:
                accelerator.log({"eval/val_macro_auroc": metric}, step=state["global_step"])
                log(f"step {state['global_step']}: {evaluator.metric_label} {metric:.4f}"
                    f"{' (best so far)' if stopper.improved else ''}")
            if stopper.improved:
                save_pretrained_atomically(unwrapped, processor, best_dir, {"concepts.json": json.dumps(concepts_record(), indent=2)})
        if evaluator is None or not train_args.early_stopping_patience:
            return False
        from accelerate.utils import broadcast

        return bool(broadcast(torch.tensor([float(should_stop)], device=accelerator.device)).item())

    def concepts_record():
        return {"concepts": [{"name": c, "positive_records": n, "query_texts": q}
                             for c, n, q in zip(targets.concepts, targets.counts, query_texts)],
                "selection": targets.report}

    model.train()
    while not stop:
        epoch = state["epoch"]
        # The prepared loader sets its sampler's epoch from its own counter when iterated, and that
        # counter starts at 0 in a resumed process: set it (and so the sampler's) from the saved state.
        loader.set_epoch(epoch)
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
                accelerator.log({"train/loss": loss, "train/learning_rate": scheduler.get_last_lr()[0],
                                 "train/epoch": state["epoch"]}, step=step)
                running_loss, running_count = 0.0, 0
            out_of_time = train_args.max_train_minutes is not None and \
                (time.perf_counter() - started) / 60 >= train_args.max_train_minutes
            stop = step >= total_steps or out_of_time
            if step % eval_steps == 0 or stop:
                if evaluate_and_select() and not stop:
                    stop = True
                    log(f"early stopping at step {step}: no validation improvement in {train_args.early_stopping_patience} "
                        f"evaluations (best at step {state['best_step']})")
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
        results = {"steps": state["global_step"], "history": state["history"], "mixed_precision": accelerator.mixed_precision}
        if evaluator is not None and best_dir.is_dir():
            from modeling_supreme import SuPreMEModel

            final_model = SuPreMEModel.from_pretrained(best_dir)
            if train_args.calibrate_scores:
                results["calibration"] = evaluator.fit_calibration(final_model, processor)
                log(f"zero-shot score calibration on validation: scale {results['calibration']['scale']:.3f}, bias "
                    f"{results['calibration']['bias']:.3f}, ECE {results['calibration']['ece_before']:.3f} -> "
                    f"{results['calibration']['ece_after']:.3f}")
            # The corpus the model was selected on: the evaluation corpus, else the training corpus itself.
            selected_on = ({"eval_dataset": data_args.eval_dataset, "eval_dataset_config": data_args.eval_dataset_config}
                           if data_args.eval_dataset else
                           {"eval_dataset": data_args.dataset, "eval_dataset_config": data_args.dataset_config})
            results["best"] = {"step": state["best_step"], "macro_auroc": state["best_metric"], **selected_on,
                               **evaluator.describe()}
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
            push_checkpoint_to_hub(output_dir, train_args.hub_model_id, train_args.hub_private_repo)
            log(f"pushed {output_dir} to the Hub as {train_args.hub_model_id}")
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main()
