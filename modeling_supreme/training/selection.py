"""Model selection during pre-training: zero-shot macro AUROC on a corpus's validation split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from datasets_scripts import parse_corpus_args

from ..evaluation import EvaluationError, class_prompts, load_evaluation_dataset, macro_auroc, subsample, zero_shot_scores
from .errors import PretrainingError


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
        return cls(split, names, prompts, train_args.per_device_eval_batch_size, train_args.mixed_precision == "bf16")

    def __call__(self, model, processor) -> Optional[float]:
        scores, targets, _ = zero_shot_scores(model, processor, self.split, self.class_names, self.prompts,
                                              batch_size=self.batch_size, bf16=self.bf16, progress=False)
        return macro_auroc(scores, targets)




    def fit_calibration(self, model, processor) -> dict:
        """Fit the zero-shot logit scale and bias on this validation split and store them in ``model.config``.

        Scores are computed with the identity calibration first, so refitting never compounds.
        """
        from ..evaluation import expected_calibration_error, fit_logit_calibration

        model.config.zero_shot_logit_scale, model.config.zero_shot_logit_bias = 1.0, 0.0
        scores, targets, _ = zero_shot_scores(model, processor, self.split, self.class_names, self.prompts,
                                              batch_size=self.batch_size, bf16=self.bf16, progress=False)
        calibration = fit_logit_calibration(scores, targets)
        model.config.zero_shot_logit_scale, model.config.zero_shot_logit_bias = calibration.scale, calibration.bias
        return {"scale": calibration.scale, "bias": calibration.bias, "split": "validation", **calibration.details,
                "ece_before": expected_calibration_error(scores, targets),
                "ece_after": expected_calibration_error(calibration.apply(scores), targets)}


@dataclass
class EarlyStopping:
    """Keeps the best validation metric (higher is better) and says when to stop.

    ``patience``: evaluations without an improvement of more than ``min_delta`` after which
    :meth:`update` returns True; None or 0 never stops.
    """

    patience: Optional[int] = None
    min_delta: float = 0.0
    best_metric: Optional[float] = None
    best_step: Optional[int] = None
    bad_evaluations: int = 0

    def update(self, metric: Optional[float], step: int) -> bool:
        """Record one evaluation; returns whether training should stop. ``self.improved`` says if it was a new best."""
        self.improved = metric is not None and (self.best_metric is None or metric > self.best_metric + self.min_delta)
        if self.improved:
            self.best_metric, self.best_step, self.bad_evaluations = float(metric), int(step), 0
        elif metric is not None:
            self.bad_evaluations += 1
        return bool(self.patience) and self.bad_evaluations >= self.patience

    def state_dict(self) -> dict:
        return {"best_metric": self.best_metric, "best_step": self.best_step, "bad_evaluations": self.bad_evaluations}

    def load_state_dict(self, state: dict) -> None:
        self.best_metric = state.get("best_metric")
        self.best_step = state.get("best_step")
        self.bad_evaluations = int(state.get("bad_evaluations", 0))


__all__ = ["EarlyStopping", "ZeroShotEvaluator"]
