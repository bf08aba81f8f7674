"""Diagnostic for the zero-shot study: is a class's F1 held down by the threshold rule or by the ranking?

For one seed, trains the study's default zero-shot model and its supervised reference (the same encoder on the
true super-class labels) on the full pool, then prints per class: test AUROC, F1 at the threshold chosen on the
validation folds (what the study reports), and the best F1 that any threshold reaches on the test folds. The
last column is an upper bound read off the test data, for diagnosis only: nothing here is selected on it.

    python benchmarks/class_ceiling_diagnostic.py --seed 0 [--data_dir ../shared/data/ptbxl]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path


def load_study():
    spec = importlib.util.spec_from_file_location("zero_shot_study", Path(__file__).with_name("zero_shot_study.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["zero_shot_study"] = module
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    study = load_study()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default=None, help="PTB-XL folder (default: the study's)")
    parser.add_argument("--output_dir", default="outputs/class_ceiling")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed must be a whole number of at least 0, got {args.seed}")
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    study_argv = ["--threads", str(args.threads), "--no_unseen", "--output_dir", args.output_dir]
    if args.data_dir:
        study_argv += ["--data_dir", args.data_dir]
    study_args = study.parse_args(study_argv)
    data_dir = Path(study_args.data_dir)
    if not (data_dir / "ptbxl_database.csv").is_file():
        raise SystemExit(f"no PTB-XL folder at {data_dir} (ptbxl_database.csv missing); pass --data_dir")

    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    from modeling_supreme.evaluation import best_f1_thresholds, f1_at_thresholds

    torch.set_num_threads(args.threads)
    records = study.Records(data_dir, Path(args.output_dir) / "datasets_cache", None)
    entities = study.lexicon_entities(records)
    table = {}
    for kind in ("zero-shot", "supervised"):
        result, _, (val_scores, val_labels, test_scores, test_labels) = study.run_one(
            records, entities, kind, study.DEFAULT_ENCODER, "all", args.seed, study_args)
        at_val = f1_at_thresholds(test_scores, test_labels, best_f1_thresholds(val_scores, val_labels))
        best = f1_at_thresholds(test_scores, test_labels, best_f1_thresholds(test_scores, test_labels))
        table[kind] = {"macro_auroc": result["test_macro_auroc"], "classes": {
            name: {"positives": int(np.sum(test_labels[:, i])), "auroc": float(roc_auc_score(test_labels[:, i], test_scores[:, i])),
                   "f1_at_validation_threshold": at_val[i], "best_f1_on_test": best[i]}
            for i, name in enumerate(records.class_names)}}
    print(f"| class | test positives | zero-shot AUROC | F1 at val threshold | best F1 on test | "
          f"supervised AUROC | F1 at val threshold | best F1 on test |  (seed {args.seed})")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, zs in table["zero-shot"]["classes"].items():
        sup = table["supervised"]["classes"][name]
        print(f"| {name} | {zs['positives']} | {zs['auroc']:.3f} | {zs['f1_at_validation_threshold']:.2f} | {zs['best_f1_on_test']:.2f} "
              f"| {sup['auroc']:.3f} | {sup['f1_at_validation_threshold']:.2f} | {sup['best_f1_on_test']:.2f} |")
    print(f"macro AUROC: zero-shot {table['zero-shot']['macro_auroc']:.3f}, supervised {table['supervised']['macro_auroc']:.3f}")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"class_ceiling_seed{args.seed}.json").write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
