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


__all__ = ["ZeroShotEvaluator"]
