"""Linear-probe evaluation of a SuPreME checkpoint: frozen ECG features, a linear classifier per class
trained on 1%, 10% and 100% of the train split, regularisation chosen on validation, AUROC on test.

Example::

    python examples/linear_probe.py --model runs/supreme --dataset ptbxl --dataset_config super \\
        --data_dir ../shared/data/ptbxl --sampling_rate 100 --output_dir eval/ptbxl_super_probe

Protocol (our choices, written into metrics.json):

- Features: `model.get_ecg_features` (masked mean of the ECG encoder's tokens), extracted once for
  the train, validation and test splits and reused for every fraction; the model is never updated.
- Classifier: one scikit-learn `LogisticRegression` (L2, liblinear solver) per class on standardised
  features: ECG labels are multi-label, so each class is its own binary problem (one-vs-rest). The
  scaler is fitted on the training subset only. liblinear was 20-50x faster than lbfgs on these
  192-dimensional features; it also penalises the intercept, which shifts scores but not their
  ranking, so AUROC is unaffected.
- Training subsets: one seeded permutation of the train split; the fraction f takes its first
  ceil(f * N) records, so the 1% subset lies inside the 10% subset. A class that has positives (or
  negatives) in the train split but none in the subset gets one such record added from the
  permutation's remainder, so small fractions can be a few records larger than f * N (reported).
  A class with a single label value in its subset cannot be fitted and predicts that constant.
- Regularisation: the inverse strength C is chosen from `--C_grid`, the same C for all classes of a
  fraction, by macro AUROC on the validation split (ties: the smaller C). If the validation split
  has no class with both positives and negatives, C = 1 is used and the report says so.
- Test: macro AUROC over the classes with positives and negatives in the test split, with 95%
  percentile-bootstrap intervals, per-class AUROC and positive counts.

Writes ``metrics.json`` and ``metrics.md`` into ``--output_dir``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
REPO = EXAMPLES.parent
for folder in (str(REPO), str(EXAMPLES)):
    if folder not in sys.path:
        sys.path.insert(0, folder)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from ecg_evaluation import add_common_arguments, run_cli, set_num_threads  # noqa: E402

DEFAULT_FRACTIONS = "0.01,0.1,1.0"
DEFAULT_C_GRID = "0.001,0.01,0.1,1,10"


def parse_floats(text: str, what: str, low: float, high: float = math.inf) -> list:
    from ecg_evaluation import EvaluationError

    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise EvaluationError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not values or any(not (low < v <= high) for v in values):
        raise EvaluationError(f"{what} must be numbers in ({low:g}, {high:g}], got {text!r}")
    return sorted(set(values))


def training_subset(targets: np.ndarray, fraction: float, permutation: np.ndarray) -> tuple:
    """Indices of a training subset and how many records were added so every class keeps both label values.

    Takes the first ceil(fraction * N) records of `permutation`; then, for each class that has
    positives (negatives) in the full split but none in the subset, adds the first positive (negative)
    record of the permutation's remainder.
    """
    n_total = len(permutation)
    size = min(n_total, max(1, math.ceil(fraction * n_total)))
    chosen = list(permutation[:size])
    chosen_set = set(chosen)
    added = 0
    for column in range(targets.shape[1]):
        for value in (1, 0):
            if not (targets[:, column] == value).any() or (targets[chosen, column] == value).any():
                continue
            for index in permutation[size:]:
                if index not in chosen_set and targets[index, column] == value:
                    chosen.append(index)
                    chosen_set.add(index)
                    added += 1
                    break
    return np.sort(np.asarray(chosen)), added


class PerClassLogisticRegression:
    """One binary L2 logistic regression per class on standardised features (constant where a class
    has one label value in training)."""

    def __init__(self, C: float, max_iter: int = 2000):
        self.C = float(C)
        self.max_iter = max_iter

    def fit(self, features: np.ndarray, targets: np.ndarray) -> "PerClassLogisticRegression":
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        self.scaler = StandardScaler().fit(features)
        scaled = self.scaler.transform(features)
        self.models = []
        self.not_converged = 0
        for column in range(targets.shape[1]):
            y = targets[:, column]
            if y.min() == y.max():
                self.models.append(float(y[0]))
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                model = LogisticRegression(C=self.C, solver="liblinear", max_iter=self.max_iter).fit(scaled, y)
            self.not_converged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
            self.models.append(model)
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        scaled = self.scaler.transform(features)
        columns = []
        for model in self.models:
            if isinstance(model, float):
                columns.append(np.full(len(features), model))
            else:
                columns.append(model.predict_proba(scaled)[:, 1])
        return np.stack(columns, axis=1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(parser, "metrics.json and metrics.md")
    parser.add_argument("--fractions", default=DEFAULT_FRACTIONS, help=f"train fractions (default {DEFAULT_FRACTIONS})")
    parser.add_argument("--C_grid", default=DEFAULT_C_GRID, help=f"inverse regularisation strengths tried (default {DEFAULT_C_GRID})")
    parser.add_argument("--subset_seed", type=int, default=0, help="seed of the training-subset permutation")
    return parser


def _markdown(results: dict) -> str:
    from ecg_evaluation import _fmt, _fmt_ci

    run = results["run"]
    lines = [
        f"# {run['title']}", "",
        f"- model: {run['model']}",
        f"- dataset: {run['dataset']} (train {run['split_sizes']['train']}, validation {run['split_sizes']['validation']}, "
        f"test {run['split_sizes']['test']} records)",
        f"- classifier: {run['classifier']}",
        "",
        "| train fraction | train records | C | validation macro AUROC | test macro AUROC | 95% CI | classes evaluated |",
        "| ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for entry in results["fractions"]:
        test = entry["test"]
        lines.append(
            f"| {entry['fraction']:g} | {entry['train_records']} | {entry['C']:g} | {_fmt(entry['validation_macro_auroc'])} | "
            f"**{_fmt(test['macro_auroc'])}** | {_fmt_ci(test['macro_auroc_ci95'])} | "
            f"{test['num_classes_evaluated']} of {test['num_classes']} |"
        )
    lines += ["", "Per-class test AUROC:", "",
              "| class | test positives | " + " | ".join(f"{e['fraction']:g}" for e in results["fractions"]) + " |",
              "| --- | ---: |" + " ---: |" * len(results["fractions"])]
    first = results["fractions"][0]["test"]
    for column, entry in enumerate(first["classes"]):
        values = [e["test"]["classes"][column]["auroc"] for e in results["fractions"]]
        lines.append(f"| {entry['name']} | {entry['positives']} | " + " | ".join(_fmt(v) for v in values) + " |")
    if first["excluded"]:
        lines += ["", "Not evaluated on test (AUROC needs positives and negatives):", ""]
        lines += [f"- {e['name']}: {e['reason']}" for e in first["excluded"]]
    notes = [e["C_selection"] for e in results["fractions"] if "fixed" in e["C_selection"]]
    if notes:
        lines += ["", f"Note: {notes[0]}"]
    return "\n".join(lines) + "\n"


def run(args) -> dict:
    from ecg_evaluation import (
        EvaluationError, atomic_write_text, auroc_report, extract_ecg_features, label_matrix, load_checkpoint,
        load_evaluation_dataset, macro_auroc, split_labels, subsample, to_json,
    )

    fractions = parse_floats(args.fractions, "--fractions", 0.0, 1.0)
    c_grid = parse_floats(args.C_grid, "--C_grid", 0.0)
    if args.batch_size < 1:
        raise EvaluationError(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.max_records is not None and args.max_records < 1:
        raise EvaluationError(f"--max_records must be at least 1, got {args.max_records}")
    set_num_threads(args.num_threads)
    model, processor = load_checkpoint(args.model)
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

    train_x, train_y = features["train"], targets["train"]
    permutation = np.random.default_rng(args.subset_seed).permutation(len(train_x))
    results_per_fraction = []
    for fraction in fractions:
        indices, added = training_subset(train_y, fraction, permutation)
        x, y = train_x[indices], train_y[indices]
        validation_scores, probes = {}, {}
        if "validation" in features:
            for c_value in c_grid:
                probes[c_value] = PerClassLogisticRegression(c_value).fit(x, y)
                validation_scores[c_value] = macro_auroc(probes[c_value].predict_proba(features["validation"]), targets["validation"])
        defined = {c: s for c, s in validation_scores.items() if s is not None}
        if defined:
            best = max(defined.values())
            chosen_c = min(c for c, s in defined.items() if s == best)
            selection = f"best validation macro AUROC over C in {c_grid}"
        else:
            chosen_c = 1.0
            selection = ("fixed C=1: the validation split has no class with both positive and negative records"
                         if "validation" in features else "fixed C=1: the validation split is empty")
            print(f"warning: fraction {fraction:g}: {selection}", file=sys.stderr)
        probe = probes.get(chosen_c) or PerClassLogisticRegression(chosen_c).fit(x, y)
        test_scores = probe.predict_proba(features["test"])
        report = auroc_report(test_scores, targets["test"], class_names, n_bootstrap=args.n_bootstrap)
        results_per_fraction.append({
            "fraction": fraction,
            "train_records": int(len(indices)),
            "train_records_added_for_class_coverage": int(added),
            "classes_constant_in_training": [class_names[c] for c in range(len(class_names)) if y[:, c].min() == y[:, c].max()],
            "C": chosen_c,
            "C_selection": selection,
            "validation_macro_auroc_per_C": {f"{c:g}": s for c, s in validation_scores.items()},
            "validation_macro_auroc": validation_scores.get(chosen_c),
            "classes_not_converged": int(probe.not_converged),
            "test": report,
        })

    results = {
        "run": {
            "title": f"Linear probe {dataset_label}",
            "model": str(Path(args.model).resolve()),
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
    markdown = _markdown(results)
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
