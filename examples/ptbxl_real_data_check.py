"""Real-data check: pre-train on PTB-XL folds 1-8 with entities from the real reports, then evaluate
zero-shot on folds 9-10 for the 5 diagnostic superclasses, and print the macro AUROC.

    python examples/ptbxl_real_data_check.py --data_dir ../shared/data/ptbxl --train_minutes 3

With the 300-record PTB-XL sample in ../shared/data this trains on about 240 records for a few
minutes on CPU: the number says that the whole path works on real files (German free-text reports,
100 Hz WFDB records, the PTB-XL label derivation), not what SuPreME reaches on 800k MIMIC-IV-ECG
records. No checkpoint is selected on folds 9-10: the last training step is evaluated.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
REPO = EXAMPLES.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = Path(os.environ.get("SUPREME_SHARED_DATA", REPO.parent / "shared" / "data")) / "ptbxl"
    parser.add_argument("--data_dir", default=str(default_data), help="PTB-XL folder (ptbxl_database.csv, records100/)")
    parser.add_argument("--output_dir", default=str(REPO / "outputs" / "ptbxl_real_data_check"))
    parser.add_argument("--train_minutes", type=float, default=3.0)
    parser.add_argument("--ecg_encoder_type", default="resnet1d", choices=("vit", "resnet1d"))
    parser.add_argument("--min_concept_count", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir)
    if not (data_dir / "ptbxl_database.csv").is_file():
        print(f"real-data check SKIPPED: no PTB-XL folder at {data_dir} (pass --data_dir or set SUPREME_SHARED_DATA)")
        return 0
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache, entities, model_dir = out / "datasets_cache", out / "entities.jsonl", out / "model"
    started = time.perf_counter()

    from datasets_scripts import iter_reports
    from processing.reports.entities_file import run_extraction
    from processing.reports.extraction import create_backend

    if entities.exists():
        entities.unlink()
    stats = run_extraction(iter_reports("ptbxl", str(data_dir)), entities, create_backend("lexicon"), progress=False)
    print(f"entities: {stats.written} reports extracted with the lexicon into {entities}")

    command = [
        sys.executable, str(EXAMPLES / "pretrain.py"), "--dataset", "ptbxl", "--dataset_config", "reports",
        "--data_dir", str(data_dir), "--sampling_rate", "100", "--cache_dir", str(cache), "--entities", str(entities),
        "--output_dir", str(model_dir), "--overwrite_output_dir", "--min_concept_count", str(args.min_concept_count),
        "--ecg_encoder_type", args.ecg_encoder_type,
        "--per_device_train_batch_size", "32", "--learning_rate", "1e-3",  # precision: bf16 where native
        "--num_train_epochs", "1000", "--max_train_minutes", str(args.train_minutes), "--checkpointing_steps", "100000",
        "--logging_steps", "20", "--seed", str(args.seed),
    ]
    if model_dir.exists():
        import shutil

        shutil.rmtree(model_dir)
    result = subprocess.run(command, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"real-data check: pretrain.py failed (exit code {result.returncode})")

    import datasets

    from datasets_scripts import load_ecg_dataset
    from datasets_scripts.corpora.ptbxl import Ptbxl
    from modeling_supreme.evaluation import auroc_report, class_prompts, load_checkpoint, write_evaluation, zero_shot_scores

    splits = load_ecg_dataset("ptbxl", "super", data_dir=str(data_dir), sampling_rate=100, cache_dir=str(cache))
    held_out = datasets.concatenate_datasets([splits["validation"], splits["test"]])
    class_names = Ptbxl(config_name="super", data_dir=str(data_dir), sampling_rate=100).class_names()
    model, processor = load_checkpoint(model_dir)
    scores, targets, _ = zero_shot_scores(model, processor, held_out, class_names, class_prompts(class_names),
                                          batch_size=64, progress=False)
    report = auroc_report(scores, targets, class_names, n_bootstrap=1000, seed=args.seed)
    report.update({"dataset": "ptbxl/super", "split": "folds 9-10 (validation + test)", "train_minutes": args.train_minutes,
                   "ecg_encoder_type": args.ecg_encoder_type})
    write_evaluation(report, out / "zero_shot", scores, targets)
    trained = json.loads((model_dir / "concepts.json").read_text())
    steps = json.loads((model_dir / "eval_results.json").read_text())["steps"]
    print(f"\ntrained on {trained['selection']['used_records']} PTB-XL records (folds 1-8), {len(trained['concepts'])} "
          f"concepts, {steps} steps in at most {args.train_minutes:g} minutes")
    print((out / "zero_shot" / "metrics.md").read_text())
    ci = report.get("macro_auroc_ci95")
    print(f"REAL-DATA CHECK: zero-shot macro AUROC on PTB-XL super, folds 9-10 ({report['num_records']} records): "
          f"{report['macro_auroc']:.3f}" + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else "")
          + f"; {(time.perf_counter() - started) / 60:.1f} minutes in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
