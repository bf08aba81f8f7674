"""Evaluation of SuPreME checkpoints: the prompt bank, batched zero-shot scoring and feature
extraction over dataset splits, AUROC with bootstrap intervals, the linear probe, tables and plots.

The command lines ``examples/zero_shot.py`` and ``examples/linear_probe.py`` are thin layers over
these functions. Modules: ``prompts``, ``scoring``, ``metrics``, ``linear_probe``, ``data``
(checkpoints and datasets), ``reports`` (Markdown/JSON files), ``plots``, ``formatting``, ``cli``
(shared script flags), ``errors``, ``merl`` (MERL's split folder and
protocol) and ``benchmark`` (the six-set benchmark, ``examples/benchmark.py``). Names are imported lazily.
"""

from processing._lazy import lazy_exports

_EXPORTS = {
    "EvaluationError": "errors",
    "class_prompts": "prompts",
    "concept_prompts": "prompts",
    "load_prompt_file": "prompts",
    "zero_shot_scores": "scoring",
    "extract_ecg_features": "scoring",
    "iterate_processed_batches": "scoring",
    "auroc_report": "metrics",
    "LogitCalibration": "calibration",
    "best_f1_thresholds": "calibration",
    "expected_calibration_error": "calibration",
    "f1_at_thresholds": "calibration",
    "fit_logit_calibration": "calibration",
    "label_matrix": "metrics",
    "macro_auroc": "metrics",
    "PerClassLogisticRegression": "linear_probe",
    "run_linear_probe": "linear_probe",
    "training_subset": "linear_probe",
    "linear_probe_markdown": "linear_probe",
    "load_checkpoint": "data",
    "load_evaluation_dataset": "data",
    "dataset_class_names": "data",
    "split_labels": "data",
    "subsample": "data",
    "markdown_table": "reports",
    "to_json": "reports",
    "write_evaluation": "reports",
    "plot_roc": "plots",
    "run_benchmark": "benchmark",
    "benchmark_prompts": "benchmark",
    "benchmark_markdown": "benchmark",
    "load_protocol": "merl",
    "read_split_file": "merl",
    "RecordLocator": "merl",
    "protocol_crop": "merl",
    "protocol_signal": "merl",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
