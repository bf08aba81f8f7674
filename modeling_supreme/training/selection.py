"""Model selection during pre-training, on a validation split that training never sees.

Two evaluators with one interface (`__call__(model, processor) -> metric or None`, `fit_calibration`,
`class_names`, `describe()`): `ZeroShotEvaluator` scores the class prompts of a labelled evaluation
corpus (`--eval_dataset`); `ConceptValidation` needs no labels beyond the reports: it scores the
trained concepts on the training corpus's own validation split against the targets that its records'
entity lines give, so a run with only the required flags can still keep its best model and stop early.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from datasets_scripts import parse_corpus_args

from ..evaluation import EvaluationError, class_prompts, load_evaluation_dataset, macro_auroc, subsample, zero_shot_scores
from .errors import PretrainingError
from .targets import IGNORE_INDEX, record_ids, record_status, target_matrix


@dataclass
class ZeroShotEvaluator:
    """Zero-shot macro AUROC on the evaluation corpus's validation split (never its test split)."""

    split: object
    class_names: list
    prompts: dict
    batch_size: int
    bf16: bool
    metric_label = "zero-shot validation macro AUROC"  # how the training log names the number

    @classmethod
    def from_args(cls, data_args, train_args, bf16: Optional[bool] = None):
        """From pretrain.py's arguments; ``bf16``: score under bf16 autocast (default: --mixed_precision bf16)."""
        try:
            corpus, names, _ = load_evaluation_dataset(
                data_args.eval_dataset, data_args.eval_dataset_config, data_args.eval_data_dir,
                data_args.sampling_rate, data_args.cache_dir, **parse_corpus_args(data_args.eval_dataset_arg, "--eval_dataset_arg"))
            split = subsample(corpus["validation"], data_args.eval_max_records)
            prompts = class_prompts(names, prompt_file=data_args.eval_prompts)
        except (EvaluationError, ValueError, FileNotFoundError) as err:
            raise PretrainingError(f"evaluation corpus {data_args.eval_dataset!r}: {err}") from None
        if len(split) == 0:
            raise PretrainingError(f"the evaluation corpus {data_args.eval_dataset!r} has an empty validation split")
        return cls(split, names, prompts, train_args.per_device_eval_batch_size,
                   train_args.mixed_precision == "bf16" if bf16 is None else bf16)

    def describe(self) -> dict:
        return {"metric": "zero-shot macro AUROC of the class prompts", "split": "validation", "class_names": self.class_names}

    def __call__(self, model, processor) -> Optional[float]:
        scores, targets, _ = zero_shot_scores(model, processor, self.split, self.class_names, self.prompts,
                                              batch_size=self.batch_size, bf16=self.bf16, progress=False)
        return macro_auroc(scores, targets)

    def fit_calibration(self, model, processor) -> dict:
        """Fit the zero-shot logit scale and bias on this validation split and store them in ``model.config``."""

        def scores_and_targets():
            scores, targets, _ = zero_shot_scores(model, processor, self.split, self.class_names, self.prompts,
                                                  batch_size=self.batch_size, bf16=self.bf16, progress=False)
            return scores, targets

        return _fit_stored_calibration(model, scores_and_targets)


def _fit_stored_calibration(model, scores_and_targets, **extra) -> dict:
    """Fit a logit scale/bias on validation ``scores_and_targets()`` and store it in ``model.config``.

    Scores are computed with the identity calibration first, so refitting never compounds.
    """
    from ..evaluation import expected_calibration_error, fit_logit_calibration

    model.config.zero_shot_logit_scale, model.config.zero_shot_logit_bias = 1.0, 0.0
    scores, targets = scores_and_targets()
    calibration = fit_logit_calibration(scores, targets)
    model.config.zero_shot_logit_scale, model.config.zero_shot_logit_bias = calibration.scale, calibration.bias
    return {"scale": calibration.scale, "bias": calibration.bias, "split": "validation", **extra, **calibration.details,
            "ece_before": expected_calibration_error(scores, targets),
            "ece_after": expected_calibration_error(calibration.apply(scores), targets)}


@dataclass
class ConceptValidation:
    """Macro AUROC of the trained concepts on held-out records, with targets from their entity lines.

    Built like the training targets (same uncertain / not-mentioned policies, ancestors and withheld
    concepts); each concept is queried with its canonical text. A concept counts when its observed
    targets have at least ``min_each`` positives and ``min_each`` negatives (fewer make an AUROC of
    one or two records).
    """

    split: object
    class_names: list  # the trained concepts
    prompts: dict  # {concept: [canonical query text]}
    targets: object  # (records, concepts) float32 in {0, 1, IGNORE_INDEX}
    batch_size: int
    bf16: bool
    min_each: int = 2
    metric_label = "validation macro AUROC of the trained concepts (report targets)"

    @classmethod
    def from_split(cls, split, entities, concepts, query_texts, *, uncertain, not_mentioned, ancestors, withheld,
                   batch_size, bf16, min_each=2):
        """None (with the reason) when the split has no record with a usable entities line or no
        concept to score; else the evaluator over those records."""
        ids = record_ids(split)
        keep, statuses = [], []
        for row, rid in enumerate(ids):
            line = entities.get(rid)
            if line is None or line.get("error") or line.get("no_report"):
                continue
            keep.append(row)
            statuses.append(record_status(line, ancestors, withheld))
        if not keep:
            return None, f"none of its {len(ids)} records has a usable entities line"
        targets = target_matrix(statuses, concepts, uncertain, not_mentioned)
        evaluator = cls(split.select(keep), list(concepts), {c: [q[0]] for c, q in zip(concepts, query_texts)},
                        targets, batch_size, bf16, min_each)
        if not evaluator.scored_concepts():
            return None, (f"no trained concept has {min_each} positive and {min_each} negative targets among its "
                          f"{len(keep)} records with entities")
        return evaluator, None

    def scored_concepts(self) -> list:
        observed = self.targets != IGNORE_INDEX
        positives = ((self.targets == 1) & observed).sum(0)
        negatives = ((self.targets == 0) & observed).sum(0)
        return [c for c, p, n in zip(self.class_names, positives, negatives) if p >= self.min_each and n >= self.min_each]

    def _scores(self, model, processor):
        scores, _, _ = zero_shot_scores(model, processor, self.split, self.class_names, self.prompts,
                                        batch_size=self.batch_size, bf16=self.bf16, progress=False, with_targets=False)
        return scores

    def __call__(self, model, processor) -> Optional[float]:
        from sklearn.metrics import roc_auc_score

        scores = self._scores(model, processor)
        wanted = set(self.scored_concepts())
        aurocs = []
        for column, name in enumerate(self.class_names):
            if name in wanted:
                observed = self.targets[:, column] != IGNORE_INDEX
                aurocs.append(roc_auc_score(self.targets[observed, column], scores[observed, column]))
        return float(sum(aurocs) / len(aurocs)) if aurocs else None

    def fit_calibration(self, model, processor) -> dict:
        """The shared logit scale/bias fitted on every observed (record, concept) target of this split."""

        def observed_scores_and_targets():
            observed = self.targets != IGNORE_INDEX
            return self._scores(model, processor)[observed][:, None], self.targets[observed][:, None]

        return _fit_stored_calibration(model, observed_scores_and_targets, fitted_on="trained concepts' report targets")

    def describe(self) -> dict:
        return {"metric": "macro AUROC of the trained concepts against the validation records' report targets",
                "kind": "concepts", "split": "validation", "records": len(self.split),
                "class_names": self.scored_concepts()}


@dataclass
class EarlyStopping:
    """Keeps the best validation metric (higher is better) and says when to stop.

    ``patience``: evaluations without an improvement of more than ``min_delta`` after which
    :meth:`update` returns True; None or 0 never stops. ``start_step``: evaluations before this step
    still keep a new best but never count toward the patience (the trainers pass the end of the
    learning-rate warm-up: a run is not judged while its rate is still rising).
    """

    patience: Optional[int] = None
    min_delta: float = 0.0
    start_step: int = 0
    best_metric: Optional[float] = None
    best_step: Optional[int] = None
    bad_evaluations: int = 0

    def update(self, metric: Optional[float], step: int) -> bool:
        """Record one evaluation; returns whether training should stop. ``self.improved`` says if it was a new best."""
        self.improved = metric is not None and (self.best_metric is None or metric > self.best_metric + self.min_delta)
        if self.improved:
            self.best_metric, self.best_step, self.bad_evaluations = float(metric), int(step), 0
        elif metric is not None and step >= self.start_step:
            self.bad_evaluations += 1
        return bool(self.patience) and self.bad_evaluations >= self.patience

    def state_dict(self) -> dict:
        return {"best_metric": self.best_metric, "best_step": self.best_step, "bad_evaluations": self.bad_evaluations}

    def load_state_dict(self, state: dict) -> None:
        self.best_metric = state.get("best_metric")
        self.best_step = state.get("best_step")
        self.bad_evaluations = int(state.get("bad_evaluations", 0))


__all__ = ["ConceptValidation", "EarlyStopping", "ZeroShotEvaluator"]
