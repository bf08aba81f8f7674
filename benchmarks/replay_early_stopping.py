"""Replay early-stopping rules on the validation curves that pre-training runs recorded.

pretrain.py validates every epoch and writes the curve to `eval_results.json` (`history`). A run made
with a large patience (`--early_stopping_patience 1000`) records the whole curve, so other rules can be
compared after the fact on VALIDATION numbers alone: for each rule and run this prints the step the rule
would have kept, the step it would have stopped at, and the (raw) validation metric at the kept step.
No test data is read; which rule is better is decided on these numbers, not on test scores.

    python benchmarks/replay_early_stopping.py RUN_DIR [RUN_DIR ...] [--warmup_steps 36]

Rules: patience P on the raw metric (`modeling_supreme.training.EarlyStopping`, what pretrain.py does),
patience counted only after the warm-up, and patience on a trailing moving average of K evaluations
(the kept step is the last of the best window).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from modeling_supreme.training import EarlyStopping


def validation_curve(run_dir: Path) -> list[tuple[int, float]]:
    path = run_dir / "eval_results.json"
    if not path.is_file():
        raise SystemExit(f"{path}: missing; pass the --output_dir of a pretrain.py run")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SystemExit(f"{path}: not JSON ({err})") from None
    history = results.get("history") if isinstance(results, dict) else None
    if not isinstance(history, list):
        raise SystemExit(f"{path}: no 'history' list (written by pretrain.py with a validation split)")
    curve = []
    for number, row in enumerate(history):
        if not isinstance(row, dict) or "val_macro_auroc" not in row:
            continue
        try:
            step, metric = int(row["step"]), float(row["val_macro_auroc"])
        except (KeyError, TypeError, ValueError):
            raise SystemExit(f"{path}: history entry {number} has no whole 'step' or numeric 'val_macro_auroc': {row}") from None
        if not math.isfinite(metric):
            raise SystemExit(f"{path}: history entry {number} (step {step}) has a non-finite val_macro_auroc {metric}")
        curve.append((step, metric))
    if not curve:
        raise SystemExit(f"{path}: the history has no validation entries (val_macro_auroc)")
    return curve


def replay(curve, patience: int, window: int = 1, count_after_step: int = 0) -> tuple[int, int, float]:
    """(kept step, stop step, raw validation metric at the kept step) for one rule."""
    stopper = EarlyStopping(patience=patience)
    raw = dict(curve)
    recent: list[float] = []
    for step, metric in curve:
        recent = (recent + [metric])[-window:]
        smoothed = sum(recent) / len(recent)
        if step <= count_after_step:
            # Inside the warm-up an improvement still counts, a non-improvement does not.
            bad = stopper.bad_evaluations
            stopper.update(smoothed, step)
            stopper.bad_evaluations = 0 if stopper.improved else bad
            continue
        if stopper.update(smoothed, step):
            return stopper.best_step, step, raw[stopper.best_step]
    return stopper.best_step, curve[-1][0], raw[stopper.best_step]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--patience", type=int, default=8, help="the recipe's patience to compare against")
    parser.add_argument("--warmup_steps", type=int, default=36,
                        help="steps of warm-up (10%% of 360 for the 200-record PTB-XL run)")
    args = parser.parse_args()
    p = args.patience
    rules = [(f"patience {p}", dict(patience=p)),
             (f"patience {p} after warm-up", dict(patience=p, count_after_step=args.warmup_steps)),
             (f"patience {2 * p}", dict(patience=2 * p)),
             (f"patience {p}, mean of 3", dict(patience=p, window=3)),
             (f"patience {p}, mean of 5", dict(patience=p, window=5)),
             ("no stopping", dict(patience=0))]
    curves = {run_dir: validation_curve(run_dir) for run_dir in args.run_dirs}  # every run checked before printing
    print("| run | validations (max at step) | " + " | ".join(name for name, _ in rules) + " |")
    print("| --- | --- |" + " --- |" * len(rules))
    for run_dir, curve in curves.items():
        best_step, best = max(curve, key=lambda item: item[1])
        cells = []
        for _, rule in rules:
            kept, stopped, metric = replay(curve, **rule)
            cells.append(f"kept {kept}, stop {stopped}: {metric:.3f}")
        print(f"| {run_dir.name} | {len(curve)} ({best:.3f} at {best_step}) | " + " | ".join(cells) + " |")
    print("cells: the step kept, the step training would stop at, and the raw validation metric at the kept step")


if __name__ == "__main__":
    main()
