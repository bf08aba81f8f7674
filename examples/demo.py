"""The end-to-end SuPreME demo: corpus -> entities -> pre-training -> zero-shot evaluation -> a drawing.

    make demo                                   # synthetic corpus (default), about 5-6 minutes here
    make demo DEMO_ARGS="--ptbxl_dir /data/ptb-xl-1.0.3"   # your PTB-XL download instead

Each step runs the project's own command-line script, and the demo prints each command so that you
can run the steps yourself:

1. builds the corpus: the SYNTHETIC ECG corpus (generated 12-lead ECGs with English reports; not
   patient data) or, with --ptbxl_dir, PTB-XL's records and their German/English reports;
2. extracts clinical entities from the reports with the deterministic lexicon backend;
3. pre-trains a tiny SuPreME model for a few minutes on the training split (bf16 where the CPU runs it natively), selecting
   the checkpoint by zero-shot macro AUROC on the validation split;
4. evaluates zero-shot on the held-out test split. For the synthetic corpus the class prompts come
   from examples/demo_prompts.json, worded unlike any training report and unlike the training
   queries; for PTB-XL the project's prompt bank scores the 5 diagnostic superclasses;
5. draws one test ECG (12 leads) on standard ECG paper (processing.ecg.save_ecg: 25 mm/s, 10 mm/mV)
   with its true labels and the model's top predictions.

`make app` then opens the same checkpoint in the interactive Gradio app (examples/app.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
REPO = EXAMPLES.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def step(title: str):
    print(f"\n=== {title} ===", flush=True)


def run(script: str, *args, env=None):
    command = [sys.executable, str(EXAMPLES / script), *map(str, args)]
    shown = ["python", f"examples/{script}", *map(str, args)]
    print("$ " + " ".join(shlex.quote(part) for part in shown), flush=True)
    result = subprocess.run(command, cwd=REPO, env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise SystemExit(f"demo: examples/{script} failed with exit code {result.returncode}; see its messages above")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default=str(REPO / "demo_output"), help="where every output goes")
    parser.add_argument("--ptbxl_dir", default=None, help="a PTB-XL folder (ptbxl_database.csv, records100/) instead of the synthetic corpus")
    parser.add_argument("--num_records", type=int, default=2000, help="synthetic corpus size")
    parser.add_argument("--train_minutes", type=float, default=4.0, help="pre-training time budget")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "datasets_cache"
    model_dir = out / "model"
    entities = out / "entities.jsonl"
    started = time.perf_counter()

    if args.ptbxl_dir:
        corpus = ["--dataset", "ptbxl", "--data_dir", args.ptbxl_dir]
        train_data = corpus + ["--dataset_config", "reports", "--sampling_rate", "100"]
        extract = ["--dataset", "ptbxl", "--data_dir", args.ptbxl_dir]
        evaluation = ["--dataset", "ptbxl", "--dataset_config", "super", "--data_dir", args.ptbxl_dir, "--sampling_rate", "100"]
        selection = ["--eval_dataset", "ptbxl", "--eval_dataset_config", "super", "--eval_data_dir", args.ptbxl_dir]
        prompts, min_count = [], "10"
        step("1. Corpus: PTB-XL from " + args.ptbxl_dir)
        print("pre-training reads the 'reports' configuration (every record with its report) at 100 Hz;")
        print("zero-shot evaluation uses the 'super' configuration (5 diagnostic superclasses), test fold 10.")
    else:
        synthetic = [f"num_records={args.num_records}", f"seed={args.seed}"]
        train_data = ["--dataset", "synthetic", "--dataset_arg", *synthetic, "--sampling_rate", "100"]
        extract = ["--dataset", "synthetic", "--dataset_arg", synthetic[0], "--dataset_arg", synthetic[1]]
        evaluation = ["--dataset", "synthetic", "--num_records", args.num_records, "--seed", args.seed, "--sampling_rate", "100"]
        selection = ["--eval_dataset", "synthetic", "--eval_dataset_arg", *synthetic]
        prompts, min_count = ["--prompts", EXAMPLES / "demo_prompts.json"], "20"
        step(f"1. Corpus: {args.num_records} SYNTHETIC 12-lead ECGs with English reports (generated; not patient data)")
        from datasets_scripts import load_ecg_dataset

        splits = load_ecg_dataset("synthetic", num_records=args.num_records, seed=args.seed, sampling_rate=100,
                                  cache_dir=str(cache))
        print({name: len(split) for name, split in splits.items()}, "records per split")
        print("a training report:", repr(splits["train"][0]["report"]))

    step("2. Entity extraction from the reports (lexicon backend, no model needed)")
    if entities.exists():
        entities.unlink()  # a fresh demo; extract_entities.py itself would resume an existing file
    run("extract_entities.py", *extract, "--output", entities, "--no_progress")
    with open(entities) as handle:
        print("an entities line:", handle.readline().strip()[:300])

    from modeling_supreme.training import bf16_is_native

    # Emulated bf16 (a CPU without AVX-512 BF16/AMX) is slower than fp32: bf16 only where it is native.
    bf16 = ["--bf16"] if bf16_is_native("cpu") else []
    precision = "bf16 autocast" if bf16 else "fp32: this CPU has no native bf16"
    step(f"3. Pre-training a small SuPreME model for at most {args.train_minutes:g} minutes ({precision})")
    print("The demo uses the 1-D ResNet ECG encoder at 100 Hz: on a few minutes of CPU it learns far faster than")
    print("the default ViT-tiny, which needs much more data and time (see the README).")
    if model_dir.exists():
        import shutil

        shutil.rmtree(model_dir)
    run("pretrain.py", *train_data, "--entities", entities, "--cache_dir", cache, "--output_dir", model_dir,
        "--min_concept_count", min_count, "--model_preset", "tiny", "--ecg_encoder_type", "resnet1d",
        *bf16, "--per_device_train_batch_size", 32, "--learning_rate", "1e-3", "--num_train_epochs", 30,
        "--max_train_minutes", args.train_minutes, "--checkpointing_steps", 50, "--eval_steps", 25,
        "--seed", args.seed, *selection, "--eval_max_records", 200)

    step("4. Zero-shot evaluation on the held-out test split")
    zero_shot_dir = out / "zero_shot"
    if prompts:
        print("Prompts: examples/demo_prompts.json, paraphrases that appear in no training report and in no")
        print("training query, so the model must match them through the text encoder alone.")
    run("zero_shot.py", "--model", model_dir, *evaluation, "--split", "test", "--cache_dir", cache,
        "--output_dir", zero_shot_dir, *bf16, "--no_progress", *prompts)
    metrics = json.loads((zero_shot_dir / "metrics.json").read_text())
    bank_metrics = None
    if prompts:
        print("\nFor comparison, the project's prompt bank (each concept's vocabulary description and name,")
        print("the texts the model was trained with as queries; still unlike the reports' wording):")
        bank_dir = out / "zero_shot_prompt_bank"
        run("zero_shot.py", "--model", model_dir, *evaluation, "--split", "test", "--cache_dir", cache,
            "--output_dir", bank_dir, *bf16, "--no_progress", "--n_bootstrap", "200")
        bank_metrics = json.loads((bank_dir / "metrics.json").read_text())

    step("5. One test ECG with the model's top predictions")
    import modeling_supreme  # noqa: F401  (registers the pipeline task)
    from transformers import pipeline

    from datasets_scripts import load_ecg_dataset

    if args.ptbxl_dir:
        test = load_ecg_dataset("ptbxl", "super", data_dir=args.ptbxl_dir, sampling_rate=100, cache_dir=str(cache))["test"]
    else:
        test = load_ecg_dataset("synthetic", num_records=args.num_records, seed=args.seed, sampling_rate=100,
                                cache_dir=str(cache))["test"]
    record = test[0]
    # The way a user calls the pipeline: the conditions written plainly, here the class names.
    class_names = [c["name"] for c in metrics["classes"]]
    classifier = pipeline("zero-shot-ecg-classification", model=str(model_dir))
    predictions = classifier(record, candidate_labels=class_names, autocast_dtype="bfloat16", top_k=4)
    from processing.ecg import save_ecg

    figure = out / "ecg_example.png"
    truth = ", ".join(record["labels"]) or "none"
    save_ecg(record, figure, dpi=110, title=f"{record['record_id']}: true labels: {truth}", scores=predictions, top_k=4)
    print(f"{record['record_id']}: true labels {list(record['labels'])}")
    print("pipeline top predictions (candidate labels = the class names):",
          ", ".join(f"{p['label']} ({p['score']:.2f})" for p in predictions))

    minutes = (time.perf_counter() - started) / 60
    step(f"Done in {minutes:.1f} minutes. Outputs")
    print(f"zero-shot macro AUROC on the test split: {metrics['macro_auroc']:.3f} over {metrics['num_classes_evaluated']} classes"
          + (" (paraphrased prompts)" if prompts else ""))
    if bank_metrics:
        print(f"with the prompt bank instead: {bank_metrics['macro_auroc']:.3f}")
    for what, where in (
        ("entities file", entities),
        ("trained checkpoint (from_pretrained / pipeline)", model_dir),
        ("model card", model_dir / "README.md"),
        ("AUROC table", zero_shot_dir / "metrics.md"),
        ("metrics with 95% bootstrap intervals", zero_shot_dir / "metrics.json"),
        ("ROC curves", zero_shot_dir / "roc.png"),
        ("12-lead drawing on ECG paper with predictions", figure),
    ):
        print(f"  {what:50s} {where}")


if __name__ == "__main__":
    main()
