"""Linear-probe evaluation of a SuPreME checkpoint: frozen ECG features, a linear classifier per class
trained on 1%, 10% and 100% of the train split, regularisation chosen on validation, AUROC on test.

Example::

    python examples/linear_probe.py --model_name_or_path runs/supreme --dataset ptbxl --dataset_config super \\
        --data_dir ../shared/data/ptbxl --sampling_rate 100 --output_dir eval/ptbxl_super_probe

The protocol is documented in :mod:`modeling_supreme.evaluation.linear_probe` and written into
metrics.json. Writes ``metrics.json`` and ``metrics.md`` into ``--output_dir``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from modeling_supreme.evaluation.cli import add_common_arguments, model_label, resolve_device, run_cli, set_num_threads  # noqa: E402
from modeling_supreme.evaluation.linear_probe import DEFAULT_C_GRID, DEFAULT_FRACTIONS  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(parser, "metrics.json and metrics.md")
    parser.add_argument("--fractions", default=",".join(f"{f:g}" for f in DEFAULT_FRACTIONS), help="train fractions (default %(default)s)")
    parser.add_argument("--C_grid", default=",".join(f"{c:g}" for c in DEFAULT_C_GRID), help="inverse regularisation strengths tried (default %(default)s)")
    parser.add_argument("--subset_seed", type=int, default=0, help="seed of the training-subset permutation")
    return parser


def run(args) -> dict:
    from modeling_supreme.evaluation import (
        EvaluationError, extract_ecg_features, label_matrix, linear_probe_markdown, load_checkpoint,
        load_evaluation_dataset, run_linear_probe, split_labels, subsample, to_json,
    )
    from modeling_supreme.evaluation.linear_probe import parse_floats
    from processing.atomic_files import atomic_write_text

    fractions = parse_floats(args.fractions, "--fractions", 0.0, 1.0)
    c_grid = parse_floats(args.C_grid, "--C_grid", 0.0)
    if args.batch_size < 1:
        raise EvaluationError(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.max_records is not None and args.max_records < 1:
        raise EvaluationError(f"--max_records must be at least 1, got {args.max_records}")
    set_num_threads(args.num_threads)
    device = resolve_device(args.device)
    model, processor = load_checkpoint(args.model_name_or_path, device=device)
    splits, class_names, class_source = load_evaluation_dataset(
        args.dataset, args.dataset_config, data_dir=args.data_dir, sampling_rate=args.sampling_rate,
        cache_dir=args.cache_dir, num_records=args.num_records, seed=args.seed,
    )
    parts = {name: subsample(splits[name], args.max_records) for name in ("train", "validation", "test")}
    dataset_label = f"{args.dataset}/{args.dataset_config or 'default'}"
    for name in ("train", "test"):
        if len(parts[name]) == 0:
            raise EvaluationError(f"the {name} split of {dataset_label} is empty (0 records): a linear probe needs train and test records")

    started = time.perf_counter()
    features, targets = {}, {}
    for name, part in parts.items():
        if len(part) == 0:
            continue
        features[name], _ = extract_ecg_features(
            model, processor, part, batch_size=args.batch_size, bf16=args.bf16, progress=not args.no_progress,
            num_workers=args.num_workers,
        )
        targets[name] = label_matrix(split_labels(part), class_names)
    extraction_seconds = time.perf_counter() - started
    n_extracted = sum(len(f) for f in features.values())

    train_x = features["train"]
    results_per_fraction = run_linear_probe(features, targets, class_names, fractions, c_grid, args.subset_seed,
                                            args.n_bootstrap)
    results = {
        "run": {
            "title": f"Linear probe {dataset_label}",
            "model": model_label(args.model_name_or_path),
            "device": device,
            "dataset": dataset_label,
            "data_dir": args.data_dir,
            "sampling_rate": args.sampling_rate,
            "class_source": class_source,
            "split_sizes": {name: len(part) for name, part in parts.items()},
            "max_records": args.max_records,
            "features": f"model.get_ecg_features, {train_x.shape[1]} dimensions, frozen",
            "classifier": "per-class L2 LogisticRegression (scikit-learn, liblinear) on standardised features; "
                          "one C per fraction chosen on validation macro AUROC",
            "fractions": fractions,
            "C_grid": c_grid,
            "subset_seed": args.subset_seed,
            "bf16": bool(args.bf16),
            "feature_seconds": round(extraction_seconds, 3),
            "ecg_per_second": round(n_extracted / extraction_seconds, 1) if extraction_seconds > 0 else None,
        },
        "fractions": results_per_fraction,
    }
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    markdown = linear_probe_markdown(results)
    atomic_write_text(output_dir / "metrics.md", markdown)
    atomic_write_text(output_dir / "metrics.json", to_json(results))  # last: its presence marks a complete run
    print()
    print(markdown)
    print(f"markdown: {output_dir / 'metrics.md'}")
    print(f"    json: {output_dir / 'metrics.json'}")
    return results


def main(argv=None) -> int:
    return run_cli(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
