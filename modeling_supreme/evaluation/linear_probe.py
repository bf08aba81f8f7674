"""The linear probe: per-class logistic regression on frozen ECG features, at several train fractions.

Protocol (our choices; ``examples/linear_probe.py`` writes them into its ``metrics.json``):

- Features: ``model.get_ecg_features`` (masked mean of the ECG encoder's tokens), extracted once per
  split and reused for every fraction; the model is never updated.
- Classifier: one scikit-learn ``LogisticRegression`` (L2, liblinear solver) per class on standardised
  features: ECG labels are multi-label, so each class is its own binary problem (one-vs-rest). The
  scaler is fitted on the training subset only. liblinear was 20-50x faster than lbfgs on these
  192-dimensional features; it also penalises the intercept, which shifts scores but not their
  ranking, so AUROC is unaffected.
- Training subsets: one seeded permutation of the train split; the fraction f takes its first
  ceil(f * N) records, so the 1% subset lies inside the 10% subset. A class that has positives (or
  negatives) in the train split but none in the subset gets one such record added from the
  permutation's remainder, so small fractions can be a few records larger than f * N (reported).
  A class with a single label value in its subset cannot be fitted and predicts that constant.
- Regularisation: the inverse strength C is chosen from a grid, the same C for all classes of a
  fraction, by macro AUROC on the validation split (ties: the smaller C). If the validation split
  has no class with both positives and negatives, C = 1 is used and the result says so.
- Test: macro AUROC over the classes with positives and negatives in the test split, with 95%
  percentile-bootstrap intervals, per-class AUROC and positive counts.
"""

from __future__ import annotations

import math
import warnings
from typing import Dict, Sequence

import numpy as np

from .errors import EvaluationError
from .formatting import format_ci, format_value
from .metrics import auroc_report, macro_auroc

DEFAULT_FRACTIONS = (0.01, 0.1, 1.0)
DEFAULT_C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)


def parse_floats(text: str, what: str, low: float, high: float = math.inf) -> list:
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


def run_linear_probe(
    features: Dict[str, np.ndarray],
    targets: Dict[str, np.ndarray],
    class_names: Sequence[str],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    subset_seed: int = 0,
    n_bootstrap: int = 1000,
) -> list:
    """The probe at every train fraction: subset, C chosen on validation, test AUROC report.

    Args:
        features: ``{"train", "test"[, "validation"]}`` -> float features ``(records, dims)``.
        targets: the same splits -> 0/1 label matrices ``(records, classes)``.
        class_names: the classes, in column order.

    Returns one dict per fraction (``fraction``, ``train_records``, ``C``, ``C_selection``,
    validation AUROC per C, ``test``: an :func:`auroc_report`, ...).
    """
    for name in ("train", "test"):
        if name not in features or len(features[name]) == 0:
            raise EvaluationError(f"the linear probe needs {name} records; the {name} split is empty")
    class_names = list(class_names)
    fractions = sorted({float(f) for f in fractions})
    c_grid = sorted({float(c) for c in c_grid})
    train_x, train_y = features["train"], targets["train"]
    permutation = np.random.default_rng(subset_seed).permutation(len(train_x))
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
            warnings.warn(f"linear probe, train fraction {fraction:g}: {selection}", stacklevel=2)
        probe = probes.get(chosen_c) or PerClassLogisticRegression(chosen_c).fit(x, y)
        test_scores = probe.predict_proba(features["test"])
        report = auroc_report(test_scores, targets["test"], class_names, n_bootstrap=n_bootstrap)
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

    return results_per_fraction


def linear_probe_markdown(results: dict) -> str:
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
            f"| {entry['fraction']:g} | {entry['train_records']} | {entry['C']:g} | {format_value(entry['validation_macro_auroc'])} | "
            f"**{format_value(test['macro_auroc'])}** | {format_ci(test['macro_auroc_ci95'])} | "
            f"{test['num_classes_evaluated']} of {test['num_classes']} |"
        )
    lines += ["", "Per-class test AUROC:", "",
              "| class | test positives | " + " | ".join(f"{e['fraction']:g}" for e in results["fractions"]) + " |",
              "| --- | ---: |" + " ---: |" * len(results["fractions"])]
    first = results["fractions"][0]["test"]
    for column, entry in enumerate(first["classes"]):
        values = [e["test"]["classes"][column]["auroc"] for e in results["fractions"]]
        lines.append(f"| {entry['name']} | {entry['positives']} | " + " | ".join(format_value(v) for v in values) + " |")
    if first["excluded"]:
        lines += ["", "Not evaluated on test (AUROC needs positives and negatives):", ""]
        lines += [f"- {e['name']}: {e['reason']}" for e in first["excluded"]]
    notes = [e["C_selection"] for e in results["fractions"] if "fixed" in e["C_selection"]]
    if notes:
        lines += ["", f"Note: {notes[0]}"]
    return "\n".join(lines) + "\n"


__all__ = ["PerClassLogisticRegression", "linear_probe_markdown", "parse_floats", "run_linear_probe", "training_subset"]
