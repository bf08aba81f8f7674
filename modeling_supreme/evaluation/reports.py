"""Evaluation outputs: the per-class Markdown table, JSON without NaN, atomic files, the ROC plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Mapping

import numpy as np

from processing.atomic_files import atomic_write_bytes, atomic_write_text

from .formatting import finite_or_none, format_ci, format_value
from .plots import plot_roc

METRICS_JSON = "metrics.json"
METRICS_MARKDOWN = "metrics.md"
ROC_PLOT = "roc.png"


def markdown_table(report: Mapping) -> str:
    """The per-class table of an `auroc_report`, with the macro row and the excluded classes."""
    lines = [
        f"| class | positives | negatives | AUROC | 95% CI | F1@{report.get('f1_threshold', 0.5):g} |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for entry in report["classes"]:
        if entry["evaluated"]:
            lines.append(
                f"| {entry['name']} | {entry['positives']} | {entry['negatives']} | {format_value(entry['auroc'])} | "
                f"{format_ci(entry['auroc_ci95'])} | {format_value(entry['f1'])} |"
            )
    lines.append(
        f"| **macro ({report['num_classes_evaluated']} of {report['num_classes']} classes)** | | | "
        f"**{format_value(report['macro_auroc'])}** | {format_ci(report['macro_auroc_ci95'])} | {format_value(report['macro_f1'])} |"
    )
    text = "\n".join(lines) + "\n"
    if report["excluded"]:
        text += "\nNot evaluated (AUROC needs positives and negatives):\n\n"
        text += "".join(f"- {e['name']}: {e['reason']}\n" for e in report["excluded"])
    return text


def _evaluation_markdown(report: Mapping) -> str:
    run = report.get("run") or {}
    title = run.get("title", "Evaluation")
    lines = [f"# {title}", ""]
    for key in ("model", "dataset", "split", "num_records", "prompt_source"):
        if key in run:
            lines.append(f"- {key.replace('_', ' ')}: {run[key]}")
    if run:
        lines.append("")
    lines.append(markdown_table(report))
    n_boot = report["bootstrap"]["n_resamples"]
    if n_boot:
        lines.append(f"95% CI: percentile bootstrap over {n_boot} resamples of the records (seed {report['bootstrap']['seed']}).")
    return "\n".join(lines).rstrip() + "\n"


def to_json(data) -> str:
    """JSON text of a report (NaN becomes null, numpy scalars become numbers)."""

    def clean(value):
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float):
            return finite_or_none(value)
        return value

    return json.dumps(clean(data), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_evaluation(report: Mapping, output_dir, scores=None, targets=None) -> Dict[str, str]:
    """Write `metrics.json`, `metrics.md` and (given scores and targets) `roc.png` into `output_dir`.

    Each file is replaced atomically; `metrics.json` is written last, so its presence means the other
    files of the run are complete. An optional `report["run"]` dict (model, dataset, split, ...) is
    kept in the JSON and summarised above the table. Returns `{kind: path}` of the files written.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    if scores is not None and targets is not None:
        plot_roc(report, scores, targets, output_dir / ROC_PLOT)
        written["roc"] = str(output_dir / ROC_PLOT)
    atomic_write_text(output_dir / METRICS_MARKDOWN, _evaluation_markdown(report))
    written["markdown"] = str(output_dir / METRICS_MARKDOWN)
    atomic_write_text(output_dir / METRICS_JSON, to_json(report))
    written["json"] = str(output_dir / METRICS_JSON)
    return written


__all__ = ["atomic_write_bytes", "atomic_write_text", "markdown_table", "to_json", "write_evaluation"]
