"""ROC curves of an evaluation, as a PNG written atomically."""

from __future__ import annotations

import math
import textwrap
from typing import Mapping

import numpy as np

from processing.atomic_files import atomic_write_bytes

from .formatting import format_value


def plot_roc(report: Mapping, scores, targets, path) -> None:
    """ROC curves of the evaluated classes into a PNG.

    Up to 10 classes share one panel (legend sorted by AUROC); more classes get one small panel each,
    so that 20-40 curves stay readable.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    scores = np.asarray(scores)
    targets = np.asarray(targets)
    entries = [(c, e) for c, e in enumerate(report["classes"]) if e["evaluated"]]
    macro = format_value(report["macro_auroc"])
    title = (report.get("run") or {}).get("title", "ROC")
    if not entries:
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.text(0.5, 0.5, "no class has both positives and negatives", ha="center", va="center")
        ax.set_axis_off()
    elif len(entries) <= 10:
        fig, ax = plt.subplots(figsize=(7, 6))
        colors = plt.get_cmap("tab10").colors
        for k, (c, entry) in enumerate(sorted(entries, key=lambda item: -item[1]["auroc"])):
            fpr, tpr, _ = roc_curve(targets[:, c], scores[:, c])
            ax.plot(fpr, tpr, color=colors[k % 10], lw=1.6,
                    label=f"{entry['name']} ({entry['auroc']:.3f}, n+={entry['positives']})")
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_title(f"{title}\nmacro AUROC {macro} over {len(entries)} classes", fontsize=10)
        ax.legend(loc="lower right", fontsize=8)
        ax.set_aspect("equal")
    else:
        columns = math.ceil(math.sqrt(len(entries)))
        rows = math.ceil(len(entries) / columns)
        fig, axes = plt.subplots(rows, columns, figsize=(2.3 * columns, 2.3 * rows + 0.6), squeeze=False,
                                 sharex=True, sharey=True)
        for ax, (c, entry) in zip(axes.ravel(), entries):
            fpr, tpr, _ = roc_curve(targets[:, c], scores[:, c])
            ax.plot(fpr, tpr, color="tab:blue", lw=1.2)
            ax.plot([0, 1], [0, 1], color="0.6", lw=0.6, ls="--")
            name = "\n".join(textwrap.wrap(entry["name"], 26, max_lines=2, placeholder=".."))
            ax.set_title(f"{name}\nAUROC {entry['auroc']:.3f}, n+={entry['positives']}", fontsize=7)
            ax.tick_params(labelsize=6, labelbottom=True)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.01)
        for ax in axes.ravel()[len(entries):]:
            ax.set_axis_off()
        fig.suptitle(f"{title}: macro AUROC {macro} over {len(entries)} classes (x: FPR, y: TPR)", fontsize=10)
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
