"""Zero-shot evaluation of a SuPreME checkpoint: each class of a labelled ECG corpus is written as text
prompts, scored against every ECG of a split, and measured by AUROC.

Examples::

    python examples/zero_shot.py --model_name_or_path runs/supreme --dataset ptbxl --dataset_config super \\
        --data_dir ../shared/data/ptbxl --sampling_rate 100 --split test --output_dir eval/ptbxl_super

    # your own wording of the classes instead of the concept vocabulary's prompt bank
    python examples/zero_shot.py --model_name_or_path runs/supreme --dataset synthetic --num_records 500 \\
        --prompts my_prompts.json --output_dir eval/synthetic

Classes: the corpus's own class list where its builder defines one (PTB-XL configs, CPSC2018,
synthetic), otherwise every label seen in the corpus's splits. Prompts: two per class from the concept
vocabulary (its description and its name; logits averaged), unless ``--prompts FILE`` gives a JSON
object ``{"class name": "prompt" | ["prompt", ...]}`` that covers every class.

Writes into ``--output_dir``: ``metrics.json`` (macro AUROC, per-class AUROC with 95% bootstrap
intervals and positive counts, the prompts used, run settings and measured speed), ``metrics.md``
(the table) and ``roc.png`` (ROC curves).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from modeling_supreme.evaluation.cli import add_common_arguments, model_label, resolve_device, run_cli, set_num_threads  # noqa: E402

SPLITS = ("train", "validation", "test")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(parser, "metrics.json, metrics.md and roc.png")
    parser.add_argument("--split", default="test", choices=SPLITS + ("all",), help="split to evaluate (default: test)")
    parser.add_argument("--prompts", default=None, metavar="FILE", help='JSON {"class": "prompt" | ["prompt", ...]} replacing the prompt bank')
    return parser


def run(args) -> dict:
    from modeling_supreme.evaluation import (
        EvaluationError, auroc_report, class_prompts, load_checkpoint, load_evaluation_dataset, markdown_table,
        subsample, write_evaluation, zero_shot_scores,
    )

    if args.batch_size < 1:
        raise EvaluationError(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.max_records is not None and args.max_records < 1:
        raise EvaluationError(f"--max_records must be at least 1, got {args.max_records}")
    if args.n_bootstrap < 0:
        raise EvaluationError(f"--n_bootstrap must be 0 or more, got {args.n_bootstrap}")
    if args.prompts is not None and not Path(args.prompts).is_file():
        raise EvaluationError(f"--prompts {args.prompts}: file not found")
    # The checkpoint is checked first: it is the cheapest input to get wrong and to verify.
    set_num_threads(args.num_threads)
    device = resolve_device(args.device)
    model, processor = load_checkpoint(args.model_name_or_path, device=device)
    splits, class_names, class_source = load_evaluation_dataset(
        args.dataset, args.dataset_config, data_dir=args.data_dir, sampling_rate=args.sampling_rate,
        cache_dir=args.cache_dir, num_records=args.num_records, seed=args.seed,
    )
    prompts = class_prompts(class_names, prompt_file=args.prompts)
    names = SPLITS if args.split == "all" else (args.split,)
    parts = [(name, subsample(splits[name], args.max_records)) for name in names]
    parts = [(name, part) for name, part in parts if len(part)]
    if not parts:
        raise EvaluationError(
            f"split {args.split!r} of {args.dataset} ({args.dataset_config or 'default'}) is empty: 0 records "
            f"(split sizes: {', '.join(f'{k} {len(v)}' for k, v in splits.items())})"
        )

    import numpy as np

    started = time.perf_counter()
    all_scores, all_targets, all_ids = [], [], []
    for name, part in parts:
        scores, targets, ids = zero_shot_scores(
            model, processor, part, class_names, prompts, batch_size=args.batch_size, bf16=args.bf16,
            progress=not args.no_progress, num_workers=args.num_workers,
        )
        all_scores.append(scores)
        all_targets.append(targets)
        all_ids.extend(ids)
    seconds = time.perf_counter() - started
    scores = np.concatenate(all_scores)
    targets = np.concatenate(all_targets)

    report = auroc_report(scores, targets, class_names, n_bootstrap=args.n_bootstrap)
    dataset_label = f"{args.dataset}/{args.dataset_config or 'default'}"
    report["run"] = {
        "title": f"Zero-shot {dataset_label}, split {args.split}",
        "model": model_label(args.model_name_or_path),
        "device": device,
        "dataset": dataset_label,
        "data_dir": args.data_dir,
        "sampling_rate": args.sampling_rate,
        "split": args.split,
        "splits_evaluated": {name: len(part) for name, part in parts},
        "num_records": int(len(all_ids)),
        "max_records": args.max_records,
        "class_source": class_source,
        "prompt_source": args.prompts or "concept vocabulary prompt bank (description, name)",
        "prompts": prompts,
        "bf16": bool(args.bf16),
        "batch_size": args.batch_size,
        "scoring_seconds": round(seconds, 3),
        "ecg_per_second": round(len(all_ids) / seconds, 1) if seconds > 0 else None,
    }
    written = write_evaluation(report, args.output_dir, scores=scores, targets=targets)
    print(f"\nZero-shot {dataset_label}, split {args.split}: {len(all_ids)} records, {len(class_names)} classes, "
          f"{len(all_ids) / seconds:.1f} ECG/s\n")
    print(markdown_table(report))
    for kind, path in written.items():
        print(f"{kind:>8}: {path}")
    return report


def main(argv=None) -> int:
    return run_cli(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
