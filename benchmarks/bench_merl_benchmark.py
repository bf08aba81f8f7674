"""Speed of the MERL benchmark's scoring against the pipeline, and of one pre-training step, on this machine.

Prints, in one run (medians over repeats):

1. the matmul peak measured here (fp32, bf16);
2. zero-shot scoring the way ``run_benchmark`` does it (``split_dataset`` -> ``zero_shot_scores``: Arrow rows,
   the collator, ``SuPreMEModel.zero_shot_logits``) over N copies of the PTB-XL records that are in MERL's
   PTB-XL super test split, with the 10 bank prompts of its 5 classes; the pipeline over the same records
   (in memory, the same 10 prompts as candidate labels); the raw forward of prepared batches; the ratios;
   and the time to read the records into the benchmark's dataset;
3. one pre-training step (forward, BCE over Q concept queries, backward, AdamW), fp32 and bf16 autocast:
   ECG/s, FLOPs per ECG counted by torch's FlopCounterMode, and the achieved fraction of the peak; these are
   the measured inputs of the time and cost estimates in docs/pretraining_recipe.md.

    python benchmarks/bench_merl_benchmark.py [--model CKPT] [--records 512] [--data_dir ../shared/data]

Without --model a new default model (ViT-tiny, 12 layers, random ECG side) is used: speed does not depend
on the weights.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import modeling_supreme  # noqa: F401  (registers the pipeline task)
from modeling_supreme import ECGProcessor, SuPreMEConfig, SuPreMEModel
from modeling_supreme.evaluation.benchmark import benchmark_prompts
from modeling_supreme.evaluation.merl import RecordLocator, load_protocol, present_rows, read_split_file, split_dataset
from modeling_supreme.evaluation.scoring import zero_shot_scores

# The timing helpers of the model benchmark (run as a script, this folder is on sys.path).
from bench_model import matmul_peak, median_time


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint folder (default: a new ViT-tiny model)")
    parser.add_argument("--records", type=int, default=512, help="records scored (copies of the ones on disk)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--train_batch_size", type=int, default=32)
    parser.add_argument("--train_queries", type=int, default=171, help="concept queries per training step")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parts", default="scoring,training", help="which parts to run: scoring, training or both")
    parser.add_argument("--data_dir", default=os.environ.get("SUPREME_SHARED_DATA", "../shared/data"))
    args = parser.parse_args()
    torch.manual_seed(0)
    data_dir = Path(args.data_dir)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs visible")
    peak = {"fp32": matmul_peak(torch.float32, repeats=5), "bf16": matmul_peak(torch.bfloat16, repeats=5)}
    print(f"matmul peak (2048^3): fp32 {peak['fp32'] / 1e12:.3f} TFLOP/s | bf16 {peak['bf16'] / 1e12:.3f} TFLOP/s")

    if args.model:
        model, processor = SuPreMEModel.from_pretrained(args.model).eval(), ECGProcessor.from_pretrained(args.model)
    else:
        config = SuPreMEConfig()
        model, processor = SuPreMEModel(config).eval(), ECGProcessor.from_config(config)
    print(f"model: {args.model or 'new default model'}; {model.config.ecg_encoder_type}/{model.config.ecg_preset}, "
          f"{sum(p.numel() for p in model.ecg_encoder.parameters()) / 1e6:.2f}M ECG-encoder parameters, "
          f"input {len(model.config.lead_names)} x {model.config.num_samples} at {model.config.sampling_rate} Hz")

    merl_set = load_protocol()["ptbxl_super"]
    rows = read_split_file(merl_set, data_dir / "merl" / "data_split", "test")
    found, coverage = present_rows(rows, RecordLocator("ptbxl", data_dir / "ptbxl"))
    if not found:
        raise SystemExit(f"no record of MERL's PTB-XL super test split under {data_dir / 'ptbxl'}")
    copies = [found[i % len(found)] for i in range(args.records)]
    prompts, _ = benchmark_prompts({"ptbxl_super": merl_set}, "bank")
    prompts = prompts["ptbxl_super"]
    texts = [t for code in merl_set.codes for t in prompts[code]]
    print(f"records: {args.records} copies of the {coverage.present} PTB-XL records of MERL's super test split on disk; "
          f"{len(merl_set.codes)} classes, {len(texts)} prompts; batch {args.batch_size}")

    parts = {p.strip() for p in args.parts.split(",")}
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        dataset = split_dataset(merl_set, rows, copies, Path(cache) / "d")
        read = time.perf_counter() - start
        print(f"benchmark dataset built (WFDB read, MERL crop, Arrow): {args.records / read:8.1f} records/s")
        records = [{"signal": r["signal"], "sampling_rate": int(r["sampling_rate"]), "lead_names": list(r["lead_names"])}
                   for r in dataset]
        batch = processor(ecg=records[: args.batch_size], return_tensors="pt")
        tokens = processor.tokenize_queries(texts)
        with torch.no_grad():
            query_embeds = model.get_query_embeddings(tokens["query_input_ids"], tokens["query_attention_mask"])
        from transformers import pipeline

        classifier = pipeline("zero-shot-ecg-classification", model=model, processor=processor)
        for name, bf16 in (("fp32", False), ("bf16", True)) if "scoring" in parts else ():
            def raw():
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    model(**batch, query_embeds=query_embeds)

            raw_rate = args.batch_size / median_time(raw, args.repeats)
            bench_rate = args.records / median_time(
                lambda: zero_shot_scores(model, processor, dataset, merl_set.codes, prompts, batch_size=args.batch_size,
                                         bf16=bf16, progress=False), args.repeats, warmup=0)
            dtype = "bfloat16" if bf16 else None
            pipe_rate = args.records / median_time(
                lambda: classifier(records, candidate_labels=texts, batch_size=args.batch_size, autocast_dtype=dtype),
                args.repeats, warmup=0)
            print(f"{name}: raw forward {raw_rate:7.1f} ECG/s | benchmark scoring {bench_rate:7.1f} ECG/s "
                  f"({bench_rate / raw_rate:.0%} of raw) | pipeline {pipe_rate:7.1f} ECG/s ({pipe_rate / raw_rate:.0%} of raw) "
                  f"| benchmark/pipeline {bench_rate / pipe_rate:.2f}x")

    if "training" not in parts:
        return
    # One pre-training step: the concept vocabulary's descriptions as queries, random multi-hot targets.
    from torch.utils.flop_counter import FlopCounterMode

    from processing.concepts.vocabulary import load_concept_vocabulary

    descriptions = [c.description for c in load_concept_vocabulary()][: args.train_queries]
    model.train()
    train_batch = processor(ecg=records[: args.train_batch_size], text=descriptions, return_tensors="pt")
    labels = (torch.rand(args.train_batch_size, len(descriptions)) < 0.05).float()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(bf16: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**train_batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # Warm the query cache first (the text encoder is frozen, so training reuses the query embeddings after the
    # first step): the count is then that of a steady-state step.
    model(**train_batch, labels=labels).loss.backward()
    optimizer.zero_grad(set_to_none=True)
    counter = FlopCounterMode(display=False)
    with counter:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
            model(**train_batch, labels=labels).loss.backward()
    optimizer.zero_grad(set_to_none=True)
    flops = counter.get_total_flops() / args.train_batch_size
    print(f"pre-training step, batch {args.train_batch_size}, {len(descriptions)} queries: "
          f"{flops / 1e9:.2f} GFLOP per ECG (forward + backward, FlopCounterMode)")
    for name, bf16 in (("fp32", False), ("bf16", True)):
        rate = args.train_batch_size / median_time(lambda: step(bf16), args.repeats)
        print(f"  {name}: {rate:7.1f} ECG/s | {flops * rate / 1e12:.3f} TFLOP/s = {flops * rate / peak[name]:.0%} of the "
              f"{name} matmul peak | {800_035 / rate / 3600:7.1f} h per MIMIC-IV-ECG epoch (800,035 ECGs) at this rate")
    np.random.seed(0)


if __name__ == "__main__":
    main()
