"""Whether zero-shot scores can be thresholded: calibration error, F1 at a validation-chosen threshold,
and a logit scale and bias fitted on the validation split.

All thresholds and calibration parameters are fitted on validation scores and then applied,
unchanged, to test scores. The affine logit map (``scale * logit + bias``, shared by all classes, or
with one bias per class) keeps every class's ranking, so AUROC is unchanged by it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Optional

import numpy as np


def _logit(scores: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def expected_calibration_error(scores, targets, num_bins: int = 10) -> Optional[float]:
    """Macro (over classes) expected calibration error with equal-width bins of the score.

    Per class: sum over bins of (records in bin / records) * |mean score - positive rate|. Classes
    without records are skipped; None when no class has records.
    """
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores and targets must both be (records, classes); got {scores.shape} and {targets.shape}")
    if scores.shape[0] == 0:
        return None
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    errors = []
    for c in range(scores.shape[1]):
        bins = np.clip(np.digitize(scores[:, c], edges[1:-1]), 0, num_bins - 1)
        error = 0.0
        for b in range(num_bins):
            inside = bins == b
            if inside.any():
                error += inside.mean() * abs(scores[inside, c].mean() - targets[inside, c].mean())
        errors.append(error)
    return float(np.mean(errors))


def best_f1_thresholds(scores, targets) -> List[Optional[float]]:
    """Per class, the score threshold (score >= t is positive) with the best F1 on these (validation) scores.

    The candidates are the midpoints between consecutive distinct scores; None for a class without positives.
    """
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets).astype(bool)
    thresholds = []
    for c in range(scores.shape[1]):
        s, y = scores[:, c], targets[:, c]
        if not y.any():
            thresholds.append(None)
            continue
        distinct = np.unique(s)
        candidates = np.concatenate([[distinct[0]], (distinct[1:] + distinct[:-1]) / 2]) if len(distinct) > 1 else distinct
        best_t, best_f1 = float(candidates[0]), -1.0
        for t in candidates:
            predicted = s >= t
            tp = float((predicted & y).sum())
            f1 = 2 * tp / (predicted.sum() + y.sum()) if (predicted.sum() + y.sum()) else 0.0
            if f1 > best_f1:
                best_t, best_f1 = float(t), f1
        thresholds.append(best_t)
    return thresholds


def f1_at_thresholds(scores, targets, thresholds) -> List[Optional[float]]:
    """Per class F1 of ``score >= threshold`` (None where the threshold is None or the class has no positives)."""
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets).astype(bool)
    out = []
    for c, t in enumerate(thresholds):
        y = targets[:, c]
        if t is None or not y.any():
            out.append(None)
            continue
        predicted = scores[:, c] >= t
        denominator = predicted.sum() + y.sum()
        out.append(float(2 * (predicted & y).sum() / denominator) if denominator else 0.0)
    return out


@dataclass
class LogitCalibration:
    """``sigmoid(scale * logit + bias [+ class_bias[c]])``, fitted by minimising the validation log loss."""

    scale: float = 1.0
    bias: float = 0.0
    class_bias: Optional[List[float]] = None
    details: dict = field(default_factory=dict)

    def apply(self, scores) -> np.ndarray:
        z = self.scale * _logit(scores) + self.bias
        if self.class_bias is not None:
            z = z + np.asarray(self.class_bias)[None, :]
        return _sigmoid(z)

    def to_dict(self) -> dict:
        return asdict(self)


# The smallest scale a fit may return. A model whose validation scores carry no signal fits a scale
# near 0 (seen: 1.5e-6 on an untrained model), which maps every logit to one float32 score and so
# destroys the rankings that AUROC measures; above the floor the fit's optimum is unchanged.
MIN_LOGIT_SCALE = 0.05


def fit_logit_calibration(scores, targets, per_class_bias: bool = False, l2: float = 1e-3, steps: int = 500) -> LogitCalibration:
    """Fit a shared scale and bias (and optionally one bias per class) on validation scores.

    L-BFGS on the (convex in scale, bias) log loss of the few parameters; the scale is parametrised
    as MIN_LOGIT_SCALE + exp(.) so that it stays positive (rankings kept) and float32 scores stay
    distinct; ``l2`` keeps per-class biases finite for classes that are all-negative in a small
    validation split.
    """
    import torch

    z = torch.tensor(_logit(scores), dtype=torch.float64)
    y = torch.tensor(np.asarray(targets, dtype=np.float64))
    if z.shape != y.shape or z.ndim != 2:
        raise ValueError(f"scores and targets must both be (records, classes); got {tuple(z.shape)} and {tuple(y.shape)}")
    log_scale = torch.tensor(np.log(1.0 - MIN_LOGIT_SCALE), dtype=torch.float64, requires_grad=True)  # scale 1 at the start
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    class_bias = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=per_class_bias)
    params = [log_scale, bias] + ([class_bias] if per_class_bias else [])
    optimizer = torch.optim.LBFGS(params, lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logits = (MIN_LOGIT_SCALE + torch.exp(log_scale)) * z + bias + class_bias[None, :]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y) + l2 * (class_bias**2).sum()
        loss.backward()
        return loss

    before = float(torch.nn.functional.binary_cross_entropy_with_logits(z, y))
    optimizer.step(closure)  # returns the loss before the step, not after
    with torch.no_grad():
        scale = MIN_LOGIT_SCALE + torch.exp(log_scale)
        after = float(torch.nn.functional.binary_cross_entropy_with_logits(scale * z + bias + class_bias[None, :], y))
    return LogitCalibration(
        scale=float(scale), bias=float(bias.detach()),
        class_bias=[float(b) for b in class_bias.detach()] if per_class_bias else None,
        details={"validation_log_loss_before": before, "validation_log_loss_after": after, "records": int(z.shape[0])},
    )


__all__ = ["MIN_LOGIT_SCALE", "LogitCalibration", "best_f1_thresholds", "expected_calibration_error", "f1_at_thresholds", "fit_logit_calibration"]
