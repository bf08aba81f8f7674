"""Metrics: the label matrix, AUROC with percentile-bootstrap intervals, F1, macro averages."""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np

from .errors import EvaluationError


def label_matrix(label_lists: Iterable[Sequence[str]], class_names: Sequence[str]) -> np.ndarray:
    """0/1 matrix (records, classes) from per-record label lists; labels outside `class_names` are ignored."""
    index = {name: i for i, name in enumerate(class_names)}
    rows = list(label_lists)
    targets = np.zeros((len(rows), len(class_names)), dtype=np.int8)
    for r, labels in enumerate(rows):
        for label in labels or ():
            column = index.get(label)
            if column is not None:
                targets[r, column] = 1
    return targets


def _bootstrap_auroc(scores: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUROC of one class under each bootstrap resample, given as record multiplicities.

    `counts[b, i]` is how often record i was drawn in resample b. A resample's AUROC is the weighted
    Mann-Whitney statistic: P(score of a drawn positive > score of a drawn negative), ties counting
    one half. Sorting once and summing weights per tied score group makes this O(N) per resample
    instead of a sort per resample; with all counts 1 it equals `roc_auc_score`.
    """
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    positive = labels[order].astype(bool)
    group_starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    weights = counts[:, order].astype(np.float64)
    positive_weights = np.where(positive, weights, 0.0)
    negative_weights = weights - positive_weights
    pos_per_group = np.add.reduceat(positive_weights, group_starts, axis=1)
    neg_per_group = np.add.reduceat(negative_weights, group_starts, axis=1)
    negatives_below = np.cumsum(neg_per_group, axis=1) - neg_per_group
    wins = (pos_per_group * (negatives_below + 0.5 * neg_per_group)).sum(axis=1)
    pairs = pos_per_group.sum(axis=1) * neg_per_group.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / np.where(pairs > 0, pairs, 1.0), np.nan)


def auroc_report(
    scores, targets, class_names: Sequence[str], n_bootstrap: int = 1000, seed: int = 0, threshold: float = 0.5
) -> dict:
    """Macro and per-class AUROC with 95% percentile-bootstrap intervals, positive counts and F1.

    A class enters the macro average only if the split has both positive and negative records for it;
    other classes are listed in `excluded` with the reason. Intervals come from `n_bootstrap`
    resamples of the records (with replacement, one resample shared by all classes so the macro
    interval accounts for their correlation); a class's interval uses the resamples in which it has
    both positives and negatives, and the macro value of a resample is the mean over the evaluated
    classes defined in it. AUROC point estimates are scikit-learn's `roc_auc_score`; F1 is at score
    >= `threshold` (0.5: the sigmoid's natural cut), macro over the evaluated classes.

    Returns a JSON-ready dict: `macro_auroc`, `macro_auroc_ci95` ([low, high] or None),
    `macro_f1`, `num_records`, `num_classes`, `num_classes_evaluated`, `classes` (one entry per class
    in order: `name`, `positives`, `negatives`, `auroc`, `auroc_ci95`, `f1`, `evaluated`,
    `excluded_reason`), `excluded` ([{name, reason}]) and `bootstrap` (settings).
    """
    from sklearn.metrics import f1_score, roc_auc_score

    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets)
    class_names = list(class_names)
    if scores.ndim != 2 or scores.shape != targets.shape or scores.shape[1] != len(class_names):
        raise EvaluationError(
            f"scores {scores.shape} and targets {targets.shape} must both be (records, {len(class_names)} classes)"
        )
    if scores.shape[0] == 0:
        raise EvaluationError("no records to evaluate")
    if not np.isfinite(scores).all():
        bad = sorted({class_names[c] for c in np.argwhere(~np.isfinite(scores))[:, 1]})
        raise EvaluationError(f"scores contain NaN or infinite values (classes {bad})")
    if not np.isin(targets, (0, 1)).all():
        raise EvaluationError("targets must be 0/1")
    targets = targets.astype(np.int8)
    n_records = scores.shape[0]
    positives = targets.sum(axis=0)

    classes = []
    evaluated = []
    for c, name in enumerate(class_names):
        entry = {
            "name": name, "positives": int(positives[c]), "negatives": int(n_records - positives[c]),
            "auroc": None, "auroc_ci95": None, "f1": None, "evaluated": False, "excluded_reason": None,
        }
        if positives[c] == 0:
            entry["excluded_reason"] = "no positive records in this split"
        elif positives[c] == n_records:
            entry["excluded_reason"] = "no negative records in this split (every record is positive)"
        else:
            entry["evaluated"] = True
            entry["auroc"] = float(roc_auc_score(targets[:, c], scores[:, c]))
            entry["f1"] = float(f1_score(targets[:, c], scores[:, c] >= threshold, zero_division=0))
            evaluated.append(c)
        classes.append(entry)

    macro = float(np.mean([classes[c]["auroc"] for c in evaluated])) if evaluated else None
    macro_f1 = float(np.mean([classes[c]["f1"] for c in evaluated])) if evaluated else None
    macro_ci = None
    if n_bootstrap and evaluated:
        rng = np.random.default_rng(seed)
        per_class = np.full((n_bootstrap, len(evaluated)), np.nan)
        # Chunks keep the (resamples, records) count matrix near 4 million entries.
        chunk = max(1, min(n_bootstrap, 4_000_000 // n_records))
        for start in range(0, n_bootstrap, chunk):
            size = min(chunk, n_bootstrap - start)
            draws = rng.integers(0, n_records, size=(size, n_records))
            offsets = (np.arange(size) * n_records)[:, None]
            counts = np.bincount((draws + offsets).ravel(), minlength=size * n_records).reshape(size, n_records)
            for k, c in enumerate(evaluated):
                per_class[start : start + size, k] = _bootstrap_auroc(scores[:, c], targets[:, c], counts)
        for k, c in enumerate(evaluated):
            defined = per_class[:, k][np.isfinite(per_class[:, k])]
            if defined.size:
                low, high = np.percentile(defined, [2.5, 97.5])
                classes[c]["auroc_ci95"] = [float(low), float(high)]
                classes[c]["bootstrap_resamples_used"] = int(defined.size)
        with np.errstate(invalid="ignore"):
            any_defined = np.isfinite(per_class).any(axis=1)
            macro_samples = np.nanmean(per_class[any_defined], axis=1) if any_defined.any() else np.array([])
        if macro_samples.size:
            low, high = np.percentile(macro_samples, [2.5, 97.5])
            macro_ci = [float(low), float(high)]

    return {
        "macro_auroc": macro,
        "macro_auroc_ci95": macro_ci,
        "macro_f1": macro_f1,
        "f1_threshold": float(threshold),
        "num_records": int(n_records),
        "num_classes": len(class_names),
        "num_classes_evaluated": len(evaluated),
        "classes": classes,
        "excluded": [{"name": e["name"], "reason": e["excluded_reason"]} for e in classes if not e["evaluated"]],
        "bootstrap": {
            "n_resamples": int(n_bootstrap or 0),
            "seed": int(seed),
            "method": "percentile interval (2.5th, 97.5th) over resamples of the records with replacement",
        },
    }


def macro_auroc(scores, targets) -> Optional[float]:
    """Macro AUROC over the classes with both positives and negatives (None if there is none): the
    quick number for model selection, without intervals."""
    from sklearn.metrics import roc_auc_score

    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets)
    values = [
        roc_auc_score(targets[:, c], scores[:, c]) for c in range(targets.shape[1]) if 0 < targets[:, c].sum() < len(targets)
    ]
    return float(np.mean(values)) if values else None


__all__ = ["auroc_report", "label_matrix", "macro_auroc"]
