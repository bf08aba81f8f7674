"""Zero-shot evaluation of a SuPreME checkpoint: each class of a labelled ECG corpus is written as text
prompts, scored against every ECG of a split, and measured by AUROC.

Examples::

    python examples/zero_shot.py --model runs/supreme --dataset ptbxl --dataset_config super \\
        --data_dir ../shared/data/ptbxl --sampling_rate 100 --split test --output_dir eval/ptbxl_super

    # your own wording of the classes instead of the concept vocabulary's prompt bank
    python examples/zero_shot.py --model runs/supreme --dataset synthetic --num_records 500 \\
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

EXAMPLES = Path(__file__).resolve().parent
REPO = EXAMPLES.parent
for folder in (str(REPO), str(EXAMPLES)):
    if folder not in sys.path:
        sys.path.insert(0, folder)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SPLITS = ("train", "validation", "test")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="checkpoint folder (model + processor, from pretrain.py)")
    parser.add_argument("--dataset", required=True, help="corpus: ptbxl, cpsc2018, csn, physionet2021, synthetic, ...")
    parser.add_argument("--dataset_config", default=None, help="corpus configuration, e.g. super/sub/form/rhythm for ptbxl")
    parser.add_argument("--data_dir", default=None, help="the corpus folder as downloaded (not for synthetic)")
    parser.add_argument("--sampling_rate", type=int, default=None, help="rate the corpus is read at (ptbxl: 100 or 500)")
    parser.add_argument("--split", default="test", choices=SPLITS + ("all",), help="split to evaluate (default: test)")
    parser.add_argument("--output_dir", required=True, help="folder for metrics.json, metrics.md and roc.png")
    parser.add_argument("--batch_size", type=int, default=64, help="ECGs per forward pass")
    parser.add_argument("--bf16", action="store_true", help="run the model under bfloat16 autocast")
    parser.add_argument("--prompts", default=None, metavar="FILE", help='JSON {"class": "prompt" | ["prompt", ...]} replacing the prompt bank')
    parser.add_argument("--cache_dir", default=None, help="datasets cache folder")
    parser.add_argument("--max_records", type=int, default=None, help="evaluate at most this many records per split (seeded sample)")
    parser.add_argument("--num_records", type=int, default=None, help="synthetic corpus: number of records")
    parser.add_argument("--seed", type=int, default=None, help="synthetic corpus: generator seed")
    parser.add_argument("--n_bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals (0: none)")
    parser.add_argument("--num_workers", type=int, default=0, help="DataLoader workers preparing ECGs (0: main process)")
    parser.add_argument("--num_threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); 1 can be faster on a CPU shared with other jobs")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def run(args) -> dict:
    from ecg_evaluation import (
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
    if args.num_threads is not None:
        if args.num_threads < 1:
            raise EvaluationError(f"--num_threads must be at least 1, got {args.num_threads}")
        import torch

        torch.set_num_threads(args.num_threads)
    model, processor = load_checkpoint(args.model)
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
        "model": str(Path(args.model).resolve()),
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
    from ecg_evaluation import EvaluationError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from datasets_scripts.wfdb_reader import RecordError

        run(args)
    except (EvaluationError, RecordError, FileNotFoundError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    except ValueError as error:  # dataset arguments (unknown config, wrong data_dir, ...)
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
