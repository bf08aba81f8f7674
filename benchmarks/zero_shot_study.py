"""Zero-shot study on the shared real PTB-XL records: how well does report-supervised pre-training
classify the 5 PTB-XL super classes without ever seeing their labels, against a supervised model?

    python benchmarks/zero_shot_study.py                 # the study (about 30 CPU minutes on a quiet 2-core machine)
    python benchmarks/zero_shot_study.py --quick         # fewer sizes/seeds/epochs, under 5 minutes
    python benchmarks/zero_shot_study.py --output_dir outputs/zero_shot_study

Protocol (all in one run, every number below from the same process):

* Records: ``ptbxl/reports`` at 100 Hz. Pre-training pool: folds 1-6; inner validation: folds 7-8 (model
  selection, early stopping, thresholds, calibration); test: folds 9-10, touched once per trained model.
* Targets: lexicon entities of each record's own report (``processing.reports.lexicon``), built by
  ``modeling_supreme.training.build_targets`` with the default policies (ancestors on, uncertain
  positive, not mentioned negative) unless an ablation says otherwise. The super-class labels are
  never used for zero-shot training, only for validation and test.
* Recipe: ``modeling_supreme.training.default_recipe`` for the pool size (what pretrain.py uses by
  default), model built from the same SuPreMEConfig fields, same loss, same lead-subset augmentation
  and query-variant sampling; the loop here trains on tensors held in memory instead of pretrain.py's
  accelerate loop, so that dozens of models fit in the time budget.
* Supervised reference: the same encoder and fusion network trained on the TRUE super-class labels of
  the same records, with the class prompts as its queries, selected the same way.
* Learning curve: pool sizes 50, 100, all (nested subsets drawn per seed), 3 seeds, mean and spread; 200
  exceeds the 152-record pool of the shared data and is skipped (a size >= the pool is 'all').
* Encoder variants at the full pool: ViT-4 with the conv stem (default), ViT-4 linear patches, MERL's
  ViT-12 linear (the old default), ResNet-1d.
* Ablations at the full pool: ancestors off, not-mentioned ignored, uncertain ignored.
* Calibration (default recipe, full pool): ECE and F1 at 0.5 on test; F1 at the per-class threshold
  chosen on validation; ECE after a logit scale/bias fitted on validation.
* Unseen concepts: a fixed set of concepts (with their synonyms, since they map to the same concept
  name, and their descendants) is withheld from the targets; the model is then scored zero-shot on them
  and on the seen concepts, against the SCP-derived concept labels of folds 9-10.

Speed figures are wall-clock on this machine; the CPU may be shared with other jobs (say so when
quoting them).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The issue asks for 50, 100, 200 and all; the shared data's pool (folds 1-6) has 152 records, so 200 would
# repeat "all": sizes at or above the pool are skipped with a note.
SIZES = ("50", "100", "all")
POOL_FOLDS, VALIDATION_FOLDS, TEST_FOLDS = [1, 2, 3, 4, 5, 6], [7, 8], [9, 10]
ENCODERS = {
    # name: (SuPreMEConfig overrides, whether the recipe's depth applies)
    "vit-conv": {"ecg_encoder_type": "vit", "ecg_patch_embedding": "conv"},
    "vit-linear": {"ecg_encoder_type": "vit", "ecg_patch_embedding": "linear"},
    "vit12-linear": {"ecg_encoder_type": "vit", "ecg_patch_embedding": "linear", "ecg_num_layers": 12, "learning_rate": 5e-4},
    "resnet1d": {"ecg_encoder_type": "resnet1d"},
    # Exploration (issue 14, validation folds only): tokens of 0.2 s instead of 0.1 s, half as many.
    "vit-conv-p20": {"ecg_encoder_type": "vit", "ecg_patch_embedding": "conv", "patch_size": 20},
}
DEFAULT_ENCODER = "vit-conv"
STUDY_ENCODERS = ("vit-conv", "vit-linear", "vit12-linear", "resnet1d")  # the full study's; the rest are explorations
TARGET_DEFAULTS = {"ancestors": True, "uncertain": "positive", "not_mentioned": "negative"}
ABLATIONS = {
    "no ancestors": {"ancestors": False},
    "not mentioned ignored": {"not_mentioned": "ignore"},
    "uncertain ignored": {"uncertain": "ignore"},
}
# Withheld for the unseen-concept protocol, chosen before any run for being distinct findings with
# PTB-XL statements of their own; their descendants are withheld with them.
WITHHELD = ("left ventricular hypertrophy", "atrial fibrillation", "left anterior fascicular block",
            "right bundle branch block", "sinus bradycardia")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = Path(os.environ.get("SUPREME_SHARED_DATA", REPO.parent / "shared" / "data")) / "ptbxl"
    parser.add_argument("--data_dir", default=str(default_data), help="PTB-XL folder (ptbxl_database.csv, records100/)")
    parser.add_argument("--output_dir", default=str(REPO / "outputs" / "zero_shot_study"))
    parser.add_argument("--quick", action="store_true", help="sizes 50 and all, 1 seed, 20 epochs at most, default encoder only, no ablations")
    parser.add_argument("--sizes", default=",".join(SIZES), help="pre-training pool sizes of the learning curve, comma-separated "
                        "(numbers or 'all'; '' skips the curve, e.g. to run only encoder variants or ablations)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first_seed", type=int, default=0, help="seeds are first_seed .. first_seed + seeds - 1 (to split a study over processes)")
    parser.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                        help="print the tables of several finished runs' study.json together (e.g. one per seed) and exit")
    parser.add_argument("--encoders", default=",".join(STUDY_ENCODERS), help=f"encoder variants at the full pool, from {', '.join(ENCODERS)}")
    parser.add_argument("--ablations", default=",".join(ABLATIONS), help="ablations at the full pool ('' for none)")
    parser.add_argument("--max_epochs", type=int, default=None, help="cap on the recipe's epochs")
    parser.add_argument("--early_stopping_patience", type=int, default=None, help="override the recipe's patience (epochs)")
    parser.add_argument("--learning_rate", type=float, default=None, help="override the recipe's peak learning rate "
                        "(encoders with their own rate, vit12-linear, keep it)")
    parser.add_argument("--warmup_ratio", type=float, default=None, help="override the recipe's warm-up fraction of the steps")
    parser.add_argument("--crop_seconds", type=float, default=None, help="random training window (s); default: the recipe's; 0: off")
    parser.add_argument("--amplitude_scale", type=float, default=None, help="per-lead amplitude factor bound (1: off); default: the recipe's")
    parser.add_argument("--noise_std", type=float, default=None, help="gaussian noise (mV); default: the recipe's")
    parser.add_argument("--baseline_wander", type=float, default=None, help="baseline wander peak (mV); default: the recipe's")
    parser.add_argument("--dropout", type=float, default=None,
                        help="the ECG encoder's and fusion network's dropout (default: the recipe's, else SuPreMEConfig's 0.1)")
    parser.add_argument("--patience_from_start", action="store_true",
                        help="count evaluations during the learning-rate warm-up toward the early-stopping patience (before "
                             "2026-12-08 the recipe did; since then the patience starts when the warm-up ends)")
    parser.add_argument("--ema", type=float, default=0.0, help="select on an exponential moving average of the weights with this decay per step (0: off)")
    parser.add_argument("--zero_shot_only", action="store_true", help="skip the supervised references (exploration on validation)")
    parser.add_argument("--no_unseen", action="store_true", help="skip the unseen-concept protocol")
    parser.add_argument("--cross_fit", action="store_true",
                        help="also train the cross-fitted ensemble of folds 1-8 per seed (4 models per kind: each pair of "
                             "folds 1-2, 3-4, 5-6, 7-8 validates the model trained on the other six; test scores averaged, "
                             "thresholds from the out-of-fold scores)")
    parser.add_argument("--max_records", type=int, default=None, help="use only the first N records of the corpus, its train, validation and test splits in that order (smoke tests)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--n_bootstrap", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.seeds, args.encoders, args.ablations = "50,all", 1, DEFAULT_ENCODER, ""
        args.max_epochs = args.max_epochs or 20
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for size in sizes:
        if size != "all" and not (size.isdigit() and int(size) > 0):
            parser.error(f"--sizes: {size!r} is neither a positive number nor 'all'")
    args.sizes = sizes
    args.encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    unknown = [e for e in args.encoders if e not in ENCODERS]
    if unknown:
        parser.error(f"--encoders: unknown {unknown}; choose from {', '.join(ENCODERS)}")
    args.ablations = [a.strip() for a in args.ablations.split(",") if a.strip()]
    unknown = [a for a in args.ablations if a not in ABLATIONS]
    if unknown:
        parser.error(f"--ablations: unknown {unknown}; choose from {', '.join(ABLATIONS)}")
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.learning_rate is not None and not args.learning_rate > 0:
        parser.error(f"--learning_rate must be positive, got {args.learning_rate}")
    if args.dropout is not None and not 0 <= args.dropout < 1:
        parser.error(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.warmup_ratio is not None and not 0 <= args.warmup_ratio < 1:
        parser.error(f"--warmup_ratio must be in [0, 1), got {args.warmup_ratio}")
    return args


# -- data ------------------------------------------------------------------------------------------


def read_folds(data_dir: Path) -> dict:
    with open(data_dir / "ptbxl_database.csv", newline="", encoding="utf-8") as handle:
        return {str(int(float(row["ecg_id"]))): int(float(row["strat_fold"])) for row in csv.DictReader(handle)}


class Records:
    """Every record of ptbxl/reports, prepared once by the model's feature extractor, as tensors."""

    def __init__(self, data_dir: Path, cache_dir: Path, max_records=None):
        import datasets
        import torch

        from datasets_scripts import load_ecg_dataset
        from datasets_scripts.corpora.ptbxl import Ptbxl
        from modeling_supreme import ECGProcessor, SuPreMEConfig
        from processing.ecg.data_collator import ECGDataCollator

        splits = load_ecg_dataset("ptbxl", "reports", data_dir=str(data_dir), sampling_rate=100, cache_dir=str(cache_dir))
        table = datasets.concatenate_datasets([splits[name] for name in splits])
        if max_records:
            table = table.select(range(min(max_records, len(table))))
        supers = load_ecg_dataset("ptbxl", "super", data_dir=str(data_dir), sampling_rate=100, cache_dir=str(cache_dir))
        self.class_names = Ptbxl(config_name="super", data_dir=str(data_dir), sampling_rate=100).class_names()
        super_labels = {}
        for name in supers:
            plain = supers[name].with_format(None)
            super_labels.update(zip(plain["record_id"], plain["labels"]))
        plain = table.with_format(None)
        self.ids = list(plain["record_id"])
        self.reports = list(plain["report"])
        self.concept_labels = [list(x) for x in plain["labels"]]
        folds = read_folds(data_dir)
        self.fold = np.array([folds[rid] for rid in self.ids])
        self.super = np.zeros((len(self.ids), len(self.class_names)), dtype=np.float32)
        self.has_super = np.zeros(len(self.ids), dtype=bool)
        for i, rid in enumerate(self.ids):
            if rid in super_labels:
                self.has_super[i] = True
                for label in super_labels[rid]:
                    self.super[i, self.class_names.index(label)] = 1.0
        processor = ECGProcessor.from_config(SuPreMEConfig(sampling_rate=100))
        collator = ECGDataCollator(processor, label_column=None)
        parts = [collator(table[i : i + 64]) for i in range(0, len(table), 64)]
        self.inputs = {key: torch.cat([p[key] for p in parts]) for key in ("input_values", "lead_mask", "attention_mask")}
        self.lead_names = list(processor.feature_extractor.lead_names) if hasattr(processor.feature_extractor, "lead_names") \
            else list(SuPreMEConfig(sampling_rate=100).lead_names)

    def rows(self, folds, need_super=False):
        keep = np.isin(self.fold, folds) & (self.has_super if need_super else True)
        return np.flatnonzero(keep)


def lexicon_entities(records: Records) -> dict:
    from processing.reports.lexicon import LexiconExtractor

    extractor = LexiconExtractor()
    return {rid: {"record_id": rid, "entities": extractor.extract(report), "error": None}
            for rid, report in zip(records.ids, records.reports) if report.strip()}


# -- training --------------------------------------------------------------------------------------


def build_model(encoder: str, recipe, concepts, query_texts, seed: int):
    import torch

    from modeling_supreme import SuPreMEConfig, SuPreMEModel

    overrides = {k: v for k, v in ENCODERS[encoder].items() if k != "learning_rate"}
    if recipe.dropout is not None:  # None: the config's own
        overrides.update(ecg_dropout=recipe.dropout, fusion_dropout=recipe.dropout)
    if overrides.get("ecg_encoder_type") == "vit":
        overrides.setdefault("ecg_num_layers", recipe.ecg_num_layers)
    torch.manual_seed(seed)
    config = SuPreMEConfig(sampling_rate=100, concept_names=list(concepts), concept_query_texts=[q[0] for q in query_texts], **overrides)
    return SuPreMEModel(config)


def embed_texts(model, texts):
    from modeling_supreme import ECGProcessor

    processor = ECGProcessor.from_config(model.config)
    tokens = processor.tokenize_queries(list(texts))
    return model.get_query_embeddings(tokens["query_input_ids"], tokens["query_attention_mask"])


def class_query_embeds(model, names):
    """Prompt-bank queries for ``names``: (embeds, query_to_class)."""
    import torch

    from modeling_supreme.evaluation import class_prompts

    prompts = class_prompts(names)
    texts, owner = [], []
    for column, name in enumerate(names):
        texts.extend(prompts[name])
        owner.extend([column] * len(prompts[name]))
    return embed_texts(model, texts), torch.tensor(owner)


def score(model, inputs, rows, embeds, owner, num_classes, bf16=True):
    import torch

    model.eval()
    out = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, len(rows), 128):
            index = torch.as_tensor(rows[start : start + 128])
            logits = model.zero_shot_logits(inputs["input_values"][index], inputs["lead_mask"][index], inputs["attention_mask"][index],
                                            query_embeds=embeds, query_to_class=owner, num_classes=num_classes)
            out.append(torch.sigmoid(logits.float()).double().numpy())
    model.train()
    return np.concatenate(out) if out else np.zeros((0, num_classes))


def auc_text(value):
    """An AUROC for a progress line; n/a where it is undefined (a class set with one label value only)."""
    return "n/a" if value is None else f"{value:.3f}"


def macro_auc(scores, targets):
    from modeling_supreme.evaluation import macro_auroc

    return macro_auroc(scores, targets)


def augmentation_for(recipe, args):
    from modeling_supreme.training import SignalAugmentation

    crop = recipe.crop_seconds if args.crop_seconds is None else (args.crop_seconds or None)
    pick = lambda flag, default: default if flag is None else flag  # noqa: E731
    return SignalAugmentation(crop_seconds=crop, amplitude_scale=pick(args.amplitude_scale, recipe.amplitude_scale),
                              noise_std=pick(args.noise_std, recipe.noise_std), baseline_wander=pick(args.baseline_wander, recipe.baseline_wander))


def train(model, records: Records, rows, targets, variant_texts, recipe, lr, seed, max_epochs, val, augmentation=None, ema=0.0,
          patience_from_start=False):
    """Train on ``rows`` with ``targets`` (rows x queries); keep the weights of the best validation AUROC.

    ``variant_texts``: per target column, the texts sampled as its query. ``val``: (rows, embeds,
    owner, labels) scored zero-shot after every epoch for selection and early stopping.
    """
    import torch
    from transformers import get_cosine_schedule_with_warmup

    from modeling_supreme.training import EarlyStopping, bf16_is_native, random_lead_subset

    flat = [t for options in variant_texts for t in options]
    flat_embeds = embed_texts(model, flat)
    counts = torch.tensor([len(o) for o in variant_texts])
    offsets = torch.cumsum(counts, 0) - counts
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2 and "position_embeddings" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and (p.ndim < 2 or "position_embeddings" in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    batch = min(recipe.per_device_train_batch_size, len(rows))
    steps_per_epoch = max(1, len(rows) // batch)
    epochs = int(min(recipe.num_train_epochs, max_epochs or recipe.num_train_epochs))
    total = epochs * steps_per_epoch
    warmup = int(recipe.warmup_ratio * total)
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, total)
    stopper = EarlyStopping(patience=recipe.early_stopping_patience, start_step=0 if patience_from_start else warmup)
    best_state, rng, step = None, np.random.default_rng(seed), 0
    targets_t = torch.as_tensor(targets, dtype=torch.float32)
    inputs = records.inputs
    leads = records.lead_names
    # As pretrain.py: the recipe's bf16 only where this CPU runs it natively (emulated bf16 is slower than fp32).
    bf16 = recipe.mixed_precision == "bf16" and bf16_is_native("cpu")
    val_rows, val_embeds, val_owner, val_labels = val
    averaged = {k: v.detach().clone() for k, v in model.state_dict().items() if v.dtype.is_floating_point} if ema else None
    model.train()
    started = time.perf_counter()
    for epoch in range(epochs):
        order = rng.permutation(len(rows))
        for b in range(steps_per_epoch):
            pick = order[b * batch : (b + 1) * batch]
            index = torch.as_tensor(rows[pick])
            x = inputs["input_values"][index].clone()
            lead_mask = inputs["lead_mask"][index].clone()
            attention = inputs["attention_mask"][index].clone()
            if augmentation is not None and augmentation.active:
                # SignalAugmentation of PretrainingDataset, here on the prepared (baseline-removed, mV) tensors.
                for k in range(len(pick)):
                    length = int(attention[k].sum())
                    signal = augmentation(rng, x[k].numpy(), 100, length)
                    x[k] = 0.0
                    x[k, :, : signal.shape[-1]] = torch.from_numpy(signal)
                    attention[k] = False
                    attention[k, : signal.shape[-1]] = True
                x *= lead_mask[:, :, None].to(x.dtype)
            for k in range(len(pick)):  # the lead-subset augmentation of PretrainingDataset
                if rng.random() < 0.3:
                    keep = set(random_lead_subset(rng, leads))
                    drop = torch.tensor([name not in keep for name in leads])
                    x[k, drop] = 0.0
                    lead_mask[k, drop] = False
            choice = (torch.rand(len(counts)) * counts).long()
            query_embeds = flat_embeds[offsets + choice]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(input_values=x, lead_mask=lead_mask, attention_mask=attention,
                            query_embeds=query_embeds, labels=targets_t[pick])
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if averaged is not None:
                with torch.no_grad():
                    current = model.state_dict()
                    for k, v in averaged.items():
                        v.lerp_(current[k], 1.0 - ema)
        if averaged is not None:  # validate (and keep) the averaged weights
            live = copy.deepcopy(model.state_dict())
            model.load_state_dict(averaged, strict=False)
        metric = macro_auc(score(model, inputs, val_rows, val_embeds, val_owner, len(val_labels[0]), bf16), val_labels)
        stop = stopper.update(metric, step)
        if stopper.improved:
            best_state = copy.deepcopy(model.state_dict())
        if averaged is not None:
            model.load_state_dict(live)
        if stop:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {"steps": step, "epochs_run": epoch + 1, "best_step": stopper.best_step, "val_macro_auroc": stopper.best_metric,
            "train_seconds": time.perf_counter() - started, "lr": lr}


# -- one configuration -----------------------------------------------------------------------------


def pool_rows(records, seed, size, pool):
    order = np.random.default_rng([seed, 17]).permutation(pool)
    return order if size == "all" else order[: min(int(size), len(order))]


def run_one(records, entities, kind, encoder, size, seed, args, policies=None, withheld=(), pool_folds=POOL_FOLDS,
            validation_folds=VALIDATION_FOLDS):
    """Train one model (kind: zero-shot or supervised) on ``pool_folds``, select it on ``validation_folds``, and
    score it once on the test folds."""
    from modeling_supreme.training import bf16_is_native, build_targets, concept_query_texts, default_recipe
    from processing.concepts.ontology import load_concept_ancestors

    policies = {**TARGET_DEFAULTS, **(policies or {})}
    pool = records.rows(pool_folds, need_super=kind == "supervised")
    rows = pool_rows(records, seed, size, pool)
    val_rows, test_rows = records.rows(validation_folds, need_super=True), records.rows(TEST_FOLDS, need_super=True)
    recipe = default_recipe(len(rows), ENCODERS[encoder]["ecg_encoder_type"])
    if args.early_stopping_patience is not None:
        recipe = dataclasses.replace(recipe, early_stopping_patience=args.early_stopping_patience)
    if args.learning_rate is not None:
        recipe = dataclasses.replace(recipe, learning_rate=args.learning_rate)
    if args.warmup_ratio is not None:
        recipe = dataclasses.replace(recipe, warmup_ratio=args.warmup_ratio)
    if args.dropout is not None:
        recipe = dataclasses.replace(recipe, dropout=args.dropout)
    if kind == "zero-shot":
        ancestors = load_concept_ancestors() if policies["ancestors"] else None
        ids = [records.ids[r] for r in rows]
        targets = build_targets(ids, records.ids, entities, min_count=10 if len(rows) >= 100 else 5,
                                uncertain=policies["uncertain"], allow_unknown=True,
                                not_mentioned=policies["not_mentioned"], ancestors=ancestors, withheld=withheld)
        train_rows, target_matrix, concepts = rows[targets.rows], targets.targets, targets.concepts
        variant_texts = concept_query_texts(concepts, ("description", "name"))
    else:
        from modeling_supreme.evaluation import class_prompts

        prompts = class_prompts(records.class_names)
        train_rows, target_matrix, concepts = rows, records.super[rows], list(records.class_names)
        variant_texts = [prompts[c] for c in concepts]
    model = build_model(encoder, recipe, concepts, variant_texts, seed)
    embeds, owner = class_query_embeds(model, records.class_names)
    val = (val_rows, embeds, owner, records.super[val_rows])
    lr = ENCODERS[encoder].get("learning_rate", recipe.learning_rate)
    augmentation = augmentation_for(recipe, args)
    fit = train(model, records, train_rows, target_matrix, variant_texts, recipe, lr, seed, args.max_epochs, val, augmentation, args.ema,
                args.patience_from_start)
    fit["augmentation"], fit["ema"] = augmentation.to_dict(), args.ema
    # As pretrain.py: the recipe's bf16 only where this CPU runs it natively (emulated bf16 is slower than fp32).
    bf16 = recipe.mixed_precision == "bf16" and bf16_is_native("cpu")
    test_scores = score(model, records.inputs, test_rows, embeds, owner, len(records.class_names), bf16)
    val_scores = score(model, records.inputs, val_rows, embeds, owner, len(records.class_names), bf16)
    result = {"kind": kind, "encoder": encoder, "size": size, "seed": seed, "train_records": int(len(train_rows)),
              "concepts": len(concepts), "policies": policies if kind == "zero-shot" else None, **fit,
              "test_macro_auroc": macro_auc(test_scores, records.super[test_rows])}
    return result, model, (val_scores, records.super[val_rows], test_scores, records.super[test_rows])


# Cross-fitting over the pool and validation folds together: each pair of folds validates (early stopping) the
# model trained on the other six, so every record of folds 1-8 is both trained on and held out once.
CROSS_FIT_GROUPS = ([1, 2], [3, 4], [5, 6], [7, 8])


def standardised(val_scores, test_scores):
    """A member's scores on a shared scale: per class, its logits minus their mean over the member's own held-out
    records, divided by their standard deviation there (no labels used). Returns the standardised logits of the
    held-out and the test records.

    Members differ in scale and offset (different data, different stopping epochs); pooled raw, their out-of-fold
    scores ranked worse than each member's own (out-of-fold macro AUROC 0.71 against 0.75-0.81 per member, seeds 0
    and 1), and thresholds chosen on the pool then suit none of them.
    """
    def logit(p):
        p = np.clip(p, 1e-7, 1 - 1e-7)
        return np.log(p) - np.log1p(-p)

    z_val, z_test = logit(val_scores), logit(test_scores)
    mean, spread = z_val.mean(0), z_val.std(0) + 1e-6
    return (z_val - mean) / spread, (z_test - mean) / spread


def cross_fit(records, entities, kind, seed, args):
    """The cross-fitted ensemble of folds 1-8: one model per held-out pair of folds, test scores averaged.

    Thresholds and the calibration come from the out-of-fold validation scores of all four pairs (every
    record of folds 1-8 scored by the one model that did not train on it): about four times as many
    validation positives per class as folds 7-8 alone give. Each member's logits are standardised on its
    own held-out records first (``standardised``) and the ensemble averages them. The test folds are scored
    once per member.
    """
    members, raw_val, val_z, val_labels, test_z = [], [], [], [], []
    for held_out in CROSS_FIT_GROUPS:
        pool = [f for group in CROSS_FIT_GROUPS if group is not held_out for f in group]
        result, _, (val_scores, val_y, test_scores, test_y) = run_one(
            records, entities, kind, DEFAULT_ENCODER, "all", seed, args, pool_folds=pool, validation_folds=held_out)
        result["held_out_folds"] = held_out
        result["validation_ids"] = [records.ids[r] for r in records.rows(held_out, need_super=True)]
        members.append(result)
        z_val, z_test = standardised(val_scores, test_scores)
        raw_val.append(val_scores)
        val_z.append(z_val)
        val_labels.append(val_y)
        test_z.append(z_test)
        print(f"[study] cross-fit {kind:9s} seed {seed} held out {held_out}: member test macro AUROC "
              f"{auc_text(result['test_macro_auroc'])} (val {auc_text(result['val_macro_auroc'])}, {result['epochs_run']} epochs, "
              f"{result['train_seconds']:.0f} s)", flush=True)
    sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    test_scores = sigmoid(np.mean(test_z, axis=0))
    oof_scores, oof_labels = sigmoid(np.concatenate(val_z)), np.concatenate(val_labels)
    return {"kind": kind, "seed": seed, "members": members,
            "member_test_macro_auroc": [m["test_macro_auroc"] for m in members],
            "test_macro_auroc": macro_auc(test_scores, test_y),
            "out_of_fold_records": int(len(oof_labels)),
            "out_of_fold_macro_auroc": macro_auc(oof_scores, oof_labels),
            "out_of_fold_macro_auroc_unstandardised": macro_auc(np.concatenate(raw_val), oof_labels),
            "train_seconds": sum(m["train_seconds"] for m in members),
            # Kept so that other threshold or calibration rules can be replayed without training again.
            "scores": {"out_of_fold": oof_scores.round(6).tolist(), "out_of_fold_labels": oof_labels.astype(int).tolist(),
                       "test": test_scores.round(6).tolist(), "test_labels": np.asarray(test_y).astype(int).tolist()},
            # Standardised scores centre every class at 0.5 whatever its prevalence: the calibration needs a bias per class.
            "calibration": calibration_summary(oof_scores, oof_labels, test_scores, test_y, records.class_names,
                                               args.n_bootstrap, seed, per_class_bias=True)}


def calibration_summary(val_scores, val_labels, test_scores, test_labels, class_names, n_bootstrap, seed, per_class_bias=False):
    from modeling_supreme.evaluation import (auroc_report, best_f1_thresholds, expected_calibration_error, f1_at_thresholds,
                                             fit_logit_calibration)

    thresholds = best_f1_thresholds(val_scores, val_labels)
    calibration = fit_logit_calibration(val_scores, val_labels, per_class_bias=per_class_bias)
    calibrated = calibration.apply(test_scores)
    report = auroc_report(test_scores, test_labels, class_names, n_bootstrap=n_bootstrap, seed=seed)
    return {
        "per_class": [{"name": c["name"], "positives": c["positives"], "auroc": c["auroc"], "auroc_ci95": c["auroc_ci95"],
                       "f1_at_0.5": c["f1"], "threshold": t, "f1_at_val_threshold": f}
                      for c, t, f in zip(report["classes"], thresholds, f1_at_thresholds(test_scores, test_labels, thresholds))],
        "macro_auroc": report["macro_auroc"], "macro_auroc_ci95": report["macro_auroc_ci95"],
        "ece": expected_calibration_error(test_scores, test_labels),
        "ece_calibrated": expected_calibration_error(calibrated, test_labels),
        "calibration": calibration.to_dict(),
        "f1_calibrated_at_0.5": f1_at_thresholds(calibrated, test_labels, [0.5] * len(class_names)),
    }


def unseen_protocol(records, entities, seed, args):
    """Withhold WITHHELD (and descendants) from the targets; AUROC on withheld vs seen concepts (folds 9-10)."""
    import torch

    from modeling_supreme.evaluation import auroc_report, class_prompts
    from processing.concepts.ontology import load_concept_ancestors

    ancestors = load_concept_ancestors()
    withheld = set(WITHHELD) | {c for c, parents in ancestors.items() if set(parents) & set(WITHHELD)}
    result, model, _ = run_one(records, entities, "zero-shot", DEFAULT_ENCODER, "all", seed, args, withheld=sorted(withheld))
    test_rows = records.rows([9, 10])
    labels = []
    for r in test_rows:
        present = set(records.concept_labels[r])
        for c in list(present):
            present.update(ancestors.get(c, ()))
        labels.append(present)
    trained = list(model.config.concept_names)
    candidates = [c for c in trained if c not in records.class_names] + list(WITHHELD)
    # Scored: concepts with at least 5 positive and 5 negative test records (fixed before any run).
    names = [c for c in candidates if sum(c in s for s in labels) >= 5 and sum(c not in s for s in labels) >= 5]
    matrix = np.array([[c in s for c in names] for s in labels], dtype=np.int8)
    prompts = class_prompts(names)
    texts, owner = [], []
    for column, name in enumerate(names):
        texts.extend(prompts[name])
        owner.extend([column] * len(prompts[name]))
    scores = score(model, records.inputs, test_rows, embed_texts(model, texts), torch.tensor(owner), len(names))
    unseen = [i for i, c in enumerate(names) if c in WITHHELD]
    seen = [i for i, c in enumerate(names) if c not in WITHHELD]
    out = {"seed": seed, "withheld": sorted(withheld), "test_records": int(len(test_rows)), "train": result}
    for label, columns in (("unseen", unseen), ("seen", seen)):
        if columns:
            rep = auroc_report(scores[:, columns], matrix[:, columns], [names[i] for i in columns], n_bootstrap=args.n_bootstrap, seed=seed)
            out[label] = {"macro_auroc": rep["macro_auroc"], "macro_auroc_ci95": rep["macro_auroc_ci95"],
                          "classes": [{"name": c["name"], "positives": c["positives"], "auroc": c["auroc"], "auroc_ci95": c["auroc_ci95"]}
                                      for c in rep["classes"]]}
    return out


# -- summary ---------------------------------------------------------------------------------------


def mean_spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None, None, None
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, float(arr.min()), float(arr.max())


def fmt(values):
    mean, sd, low, high = mean_spread(values)
    if mean is None:
        return "n/a"
    return f"{mean:.3f} ± {sd:.3f} ({low:.3f}-{high:.3f})" if len(values) > 1 else f"{mean:.3f}"


def summarise(results, seeds):
    lines = [f"| run | records | zero-shot macro AUROC (mean ± sd, min-max, {seeds} seed{'s' * (seeds > 1)}) | supervised | ratio | minutes per model |",
             "| --- | --- | --- | --- | --- | --- |"]

    def pick(kind, encoder, size, policy=None):
        return [r for r in results if r["kind"] == kind and r["encoder"] == encoder and r["size"] == size
                and (kind == "supervised" or r.get("ablation") == policy)]

    rows = []
    for size in dict.fromkeys(r["size"] for r in results):
        rows.append((f"default recipe ({DEFAULT_ENCODER}), pool {size}", DEFAULT_ENCODER, size, None))
    for encoder in dict.fromkeys(r["encoder"] for r in results):
        if encoder != DEFAULT_ENCODER:
            rows.append((f"encoder {encoder}, pool all", encoder, "all", None))
    for ablation in dict.fromkeys(r.get("ablation") for r in results if r.get("ablation")):
        rows.append((f"ablation: {ablation}, pool all", DEFAULT_ENCODER, "all", ablation))
    for title, encoder, size, policy in rows:
        zs = pick("zero-shot", encoder, size, policy)
        if not zs:
            continue
        sup = pick("supervised", encoder, size) if policy is None else []
        zs_auc = [r["test_macro_auroc"] for r in zs]
        sup_auc = [r["test_macro_auroc"] for r in sup]
        ratio = fmt([a / b for a, b in zip(zs_auc, sup_auc) if a and b]) if sup_auc else "-"
        minutes = np.mean([r["train_seconds"] for r in zs]) / 60
        lines.append(f"| {title} | {zs[0]['train_records']} | {fmt(zs_auc)} | {fmt(sup_auc) if sup_auc else '-'} | {ratio} | {minutes:.1f} |")
    return "\n".join(lines)


def calibration_table(calibration, class_names):
    if not calibration:
        return ""
    lines = ["| class | test positives | AUROC (95% CI) | F1 at 0.5 | F1 at validation threshold |", "| --- | --- | --- | --- | --- |"]
    first = calibration[0]
    for c_index, name in enumerate(class_names):
        entries = [c["per_class"][c_index] for c in calibration]
        ci = entries[0]["auroc_ci95"]
        lines.append(f"| {name} | {entries[0]['positives']} | {fmt([e['auroc'] for e in entries])}"
                     f"{f' [{ci[0]:.2f}-{ci[1]:.2f}]' if ci else ''} | {fmt([e['f1_at_0.5'] for e in entries])} | "
                     f"{fmt([e['f1_at_val_threshold'] for e in entries])} |")
    lines.append("")
    lines.append(f"ECE on test: {fmt([c['ece'] for c in calibration])} raw, {fmt([c['ece_calibrated'] for c in calibration])} after the "
                 f"logit scale/bias fitted on validation (seed 0: scale {first['calibration']['scale']:.2f}, bias {first['calibration']['bias']:.2f}).")
    return "\n".join(lines)


def unseen_table(unseen):
    if not unseen:
        return ""
    lines = ["| concepts | zero-shot macro AUROC on folds 9-10 (seed 0 with 95% CI; mean over seeds) | concepts scored |", "| --- | --- | --- |"]
    for label in ("unseen", "seen"):
        runs = [u[label] for u in unseen if label in u]
        if not runs:
            continue
        ci = runs[0]["macro_auroc_ci95"]
        names = ", ".join(f"{c['name']} ({c['positives']}+: {c['auroc']:.2f})" for c in runs[0]["classes"] if c["auroc"] is not None)
        lines.append(f"| {label} | {runs[0]['macro_auroc']:.3f}{f' [{ci[0]:.3f}-{ci[1]:.3f}]' if ci else ''}; {fmt([r['macro_auroc'] for r in runs])} | {names} |")
    return "\n".join(lines)


def cross_fit_table(cross_fits, class_names):
    if not cross_fits:
        return ""
    zs = [c for c in cross_fits if c["kind"] == "zero-shot"]
    sup = {c["seed"]: c for c in cross_fits if c["kind"] == "supervised"}
    lines = ["| kind | ensemble test macro AUROC (mean ± sd, min-max) | its members (mean of 4) | out-of-fold validation "
             "macro AUROC, standardised (unstandardised) | minutes per ensemble |", "| --- | --- | --- | --- | --- |"]
    for kind, runs in (("zero-shot", zs), ("supervised", list(sup.values()))):
        if runs:
            lines.append(f"| {kind} | {fmt([r['test_macro_auroc'] for r in runs])} | "
                         f"{fmt([float(np.mean(r['member_test_macro_auroc'])) for r in runs])} | "
                         f"{fmt([r['out_of_fold_macro_auroc'] for r in runs])} "
                         f"({fmt([r.get('out_of_fold_macro_auroc_unstandardised') for r in runs])}) | {np.mean([r['train_seconds'] for r in runs]) / 60:.1f} |")
    pairs = [(z["test_macro_auroc"], sup[z["seed"]]["test_macro_auroc"]) for z in zs if z["seed"] in sup]
    if pairs:
        lines.append(f"\nzero-shot / supervised ensemble: {fmt([a / b for a, b in pairs])}")
    if zs:
        lines.append("\nZero-shot ensemble per class (test folds 9-10; thresholds chosen on the out-of-fold scores of folds 1-8):\n")
        lines.append(calibration_table([z["calibration"] for z in zs], class_names).replace(
            "F1 at validation threshold", "F1 at out-of-fold threshold").replace("fitted on validation", "fitted on the out-of-fold scores")
            # sigmoid(standardised logit) is a ranking score, not a probability: only the calibrated ECE means anything.
            .replace(" raw, ", " for the standardised scores before calibration (not probabilities), "))
    return "\n".join(lines)


def report_text(header, results, calibration, unseen, class_names, seeds, cross_fits=()):
    return "\n\n".join(part for part in (
        header, summarise(results, seeds),
        "Default recipe at the full pool, per class (test folds 9-10):\n\n" + calibration_table(calibration, class_names)
        if calibration else "",
        "Unseen concepts (withheld from the targets with their synonyms and descendants):\n\n" + unseen_table(unseen) if unseen else "",
        "Cross-fitted ensemble of folds 1-8 (4 members per seed, the default recipe):\n\n" + cross_fit_table(cross_fits, class_names)
        if cross_fits else "",
    ) if part)


def merge(folders):
    runs = [json.loads((Path(f) / "study.json").read_text()) for f in folders]
    results = [r for run in runs for r in run["results"]]
    calibration = [c for run in runs for c in run["calibration"]]
    unseen = [u for run in runs for u in run["unseen"]]
    cross_fits = [c for run in runs for c in run.get("cross_fits", [])]
    seeds = len({r["seed"] for r in results} | {u["seed"] for u in unseen} | {c["seed"] for c in cross_fits})
    header = (f"Merged from {len(runs)} runs ({', '.join(str(f) for f in folders)}; "
              f"{sum(run['minutes'] for run in runs):.1f} process-minutes in all).")
    print(report_text(header, results, calibration, unseen, runs[0]["class_names"], seeds, cross_fits))
    return 0


def main(argv=None):
    args = parse_args(argv)
    if args.merge:
        return merge(args.merge)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir)
    if not (data_dir / "ptbxl_database.csv").is_file():
        print(f"zero-shot study SKIPPED: no PTB-XL folder at {data_dir} (pass --data_dir or set SUPREME_SHARED_DATA)")
        return 0
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    records = Records(data_dir, out / "datasets_cache", args.max_records)
    entities = lexicon_entities(records)
    print(f"[study] {len(records.ids)} records prepared, {len(entities)} reports read by the lexicon "
          f"({time.perf_counter() - started:.0f} s); pool folds 1-6: {len(records.rows(POOL_FOLDS))}, "
          f"validation folds 7-8: {len(records.rows(VALIDATION_FOLDS, True))}, test folds 9-10: {len(records.rows(TEST_FOLDS, True))}", flush=True)
    results, calibration, unseen, cross_fits = [], [], [], []

    def record(result):
        results.append(result)
        print(f"[study] {result['kind']:9s} {result['encoder']:12s} pool {result['size']:>4s} seed {result['seed']}"
              f"{' [' + result['ablation'] + ']' if result.get('ablation') else ''}: test macro AUROC "
              f"{auc_text(result['test_macro_auroc'])} (val {auc_text(result['val_macro_auroc'])}, {result['epochs_run']} epochs, "
              f"{result['train_seconds']:.0f} s)", flush=True)

    # Refused before any training: every protocol this run uses scores folds that must hold super-labelled records
    # (with too few, a metric is undefined and the run would stop after minutes of training).
    per_config = bool(args.sizes or [e for e in args.encoders if e != DEFAULT_ENCODER] or args.ablations or not args.no_unseen)
    needed = [("pool", POOL_FOLDS, False), ("validation", VALIDATION_FOLDS, True), ("test", TEST_FOLDS, True)] if per_config else []
    needed += [("--cross_fit", folds, True) for folds in (*CROSS_FIT_GROUPS, TEST_FOLDS)] if args.cross_fit else []
    read = f"{len(records.ids)} records read{', --max_records ' + str(args.max_records) if args.max_records else ''}"
    for role, folds, labelled in needed:
        if not len(records.rows(folds, need_super=labelled)):
            raise SystemExit(f"{role}: no {'records with super-class labels' if labelled else 'records'} in folds {folds} "
                             f"of {data_dir} ({read})")
    pool_size = len(records.rows(POOL_FOLDS))
    skipped = [s for s in args.sizes if s != "all" and int(s) >= pool_size]
    if skipped:
        print(f"[study] sizes {', '.join(skipped)} skipped: not smaller than the pool ({pool_size} records), so the same as 'all'", flush=True)
    args.sizes = [s for s in args.sizes if s not in skipped]
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for size in args.sizes:
            for kind in ("zero-shot",) if args.zero_shot_only else ("zero-shot", "supervised"):
                result, _, scored = run_one(records, entities, kind, DEFAULT_ENCODER, size, seed, args)
                record(result)
                if kind == "zero-shot" and size == "all":
                    calibration.append(calibration_summary(*scored, records.class_names, args.n_bootstrap, seed))
        for encoder in args.encoders:
            if encoder == DEFAULT_ENCODER:
                continue
            for kind in ("zero-shot",) if args.zero_shot_only else ("zero-shot", "supervised"):
                record(run_one(records, entities, kind, encoder, "all", seed, args)[0])
        for ablation in args.ablations:
            result = run_one(records, entities, "zero-shot", DEFAULT_ENCODER, "all", seed, args, policies=ABLATIONS[ablation])[0]
            result["ablation"] = ablation
            record(result)
        if not args.no_unseen:
            unseen.append(unseen_protocol(records, entities, seed, args))
            u = unseen[-1]
            print(f"[study] unseen concepts seed {seed}: unseen {u.get('unseen', {}).get('macro_auroc')}, seen {u.get('seen', {}).get('macro_auroc')}", flush=True)
        if args.cross_fit:
            for kind in ("zero-shot",) if args.zero_shot_only else ("zero-shot", "supervised"):
                cross_fits.append(cross_fit(records, entities, kind, seed, args))
                c = cross_fits[-1]
                print(f"[study] cross-fitted {kind} ensemble seed {seed}: test macro AUROC {auc_text(c['test_macro_auroc'])} (members "
                      f"{', '.join(auc_text(a) for a in c['member_test_macro_auroc'])}; out-of-fold {auc_text(c['out_of_fold_macro_auroc'])})", flush=True)

    minutes = (time.perf_counter() - started) / 60
    header = (f"Zero-shot study on {len(records.ids)} real PTB-XL records (pool folds 1-6, validation folds 7-8, test folds 9-10 = "
              f"{len(records.rows(TEST_FOLDS, True))} records; 5 super classes), {minutes:.1f} minutes in all"
              f"{' (--quick)' if args.quick else ''}.")
    text = report_text(header, results, calibration, unseen, records.class_names, args.seeds, cross_fits)
    print("\n" + text)
    (out / "study.md").write_text(text + "\n")
    (out / "study.json").write_text(json.dumps({"args": {k: v for k, v in vars(args).items()}, "minutes": minutes, "results": results,
                                                "calibration": calibration, "unseen": unseen, "cross_fits": cross_fits,
                                                "class_names": records.class_names},
                                               indent=1, default=str))
    print(f"\n[study] wrote {out / 'study.md'} and {out / 'study.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
