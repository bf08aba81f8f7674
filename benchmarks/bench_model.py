"""Speed of the SuPreME model and the zero-shot pipeline on this machine.

Prints, in one run: the matmul peak measured here (fp32, bf16), FLOPs per ECG, encoder+fusion
throughput at batch 64 (fp32 and bf16 autocast) with the achieved fraction of peak, pipeline
throughput over N records with 5 candidate labels, the pipeline/raw-forward ratio, the largest
bf16-vs-fp32 score gap, and peak RSS. Medians over repeats.

    python benchmarks/bench_model.py [--model CHECKPOINT] [--records 1000] [--data_dir ../shared/data]

Without --model a new `tiny` model (random ECG side) is used: speed does not depend on the weights,
but the bf16 score gap of an untrained model says little; pass a trained checkpoint for that.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch


import modeling_supreme  # noqa: F401
from processing.ecg.wfdb_reader import read_wfdb_record
from modeling_supreme import ECGProcessor, SuPreMEConfig, SuPreMEModel

LABELS = ["atrial fibrillation", "sinus rhythm", "left bundle branch block", "ST elevation", "low QRS voltage"]


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 7) -> float:
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    seconds = median_time(lambda: torch.mm(a, b), repeats, warmup=2)
    return 2 * size**3 / seconds


def flops_per_ecg(model, inputs, query_embeds) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(**inputs, query_embeds=query_embeds)
    return counter.get_total_flops() / inputs["input_values"].shape[0]


def load_records(data_dir: Path, count: int) -> list[dict]:
    folder = data_dir / "ptbxl" / "records500"
    paths = sorted(folder.glob("*/*_hr.hea"))
    if not paths:
        raise SystemExit(f"no PTB-XL 500 Hz records under {folder}; pass --data_dir")
    base = [read_wfdb_record(p.with_suffix("")) for p in paths]
    return [
        {"signal": r.signal, "sampling_rate": r.sampling_rate, "lead_names": r.lead_names, "record_id": r.record_id}
        for r in (base[i % len(base)] for i in range(count))
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint folder (default: a new tiny model)")
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data_dir", default=os.environ.get("SUPREME_SHARED_DATA", "../shared/data"))
    args = parser.parse_args()
    torch.manual_seed(0)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU bf16 autocast")
    peak32 = matmul_peak(torch.float32)
    peak16 = matmul_peak(torch.bfloat16)
    print(f"matmul peak (2048^3, median): fp32 {peak32 / 1e12:.3f} TFLOP/s | bf16 {peak16 / 1e12:.3f} TFLOP/s "
          f"| ratio {peak16 / peak32:.1f}x")

    if args.model:
        model = SuPreMEModel.from_pretrained(args.model).eval()
        processor = ECGProcessor.from_pretrained(args.model)
        source = args.model
    else:
        config = SuPreMEConfig()
        model = SuPreMEModel(config).eval()
        processor = ECGProcessor.from_config(config)
        source = "new tiny model (random ECG side)"
    print(f"model: {source}; ECG encoder {model.config.ecg_encoder_type}/{model.config.ecg_preset}, "
          f"{sum(p.numel() for p in model.ecg_encoder.parameters()) / 1e6:.2f}M parameters; input "
          f"{len(model.config.lead_names)} x {model.config.num_samples} at {model.config.sampling_rate} Hz")

    records = load_records(Path(args.data_dir), args.records)
    batch = processor(ecg=records[: args.batch_size], return_tensors="pt")
    queries = processor.tokenize_queries(LABELS)
    query_embeds = model.get_query_embeddings(queries["query_input_ids"], queries["query_attention_mask"])
    flops = flops_per_ecg(model, batch, query_embeds)
    print(f"FLOPs per ECG (encoder + fusion, {len(LABELS)} queries): {flops / 1e9:.3f} GFLOP")

    def forward(autocast: bool):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return model(**batch, query_embeds=query_embeds).logits

    raw = {}
    for name, autocast, peak in (("fp32", False, peak32), ("bf16", True, peak16)):
        seconds = median_time(lambda: forward(autocast), args.repeats)
        raw[name] = args.batch_size / seconds
        print(f"encoder+fusion forward, batch {args.batch_size}, {name}: {raw[name]:8.1f} ECG/s | "
              f"{flops * raw[name] / 1e12:.3f} TFLOP/s = {flops * raw[name] / peak:.0%} of the {name} matmul peak")

    from transformers import pipeline

    classifier = pipeline("zero-shot-ecg-classification", model=model, processor=processor)
    pipe = {}
    scores = {}
    for name, dtype in (("fp32", None), ("bf16", "bfloat16")):
        classifier(records[: args.batch_size], candidate_labels=LABELS, batch_size=args.batch_size, autocast_dtype=dtype)
        start = time.perf_counter()
        results = classifier(records, candidate_labels=LABELS, batch_size=args.batch_size, autocast_dtype=dtype)
        pipe[name] = len(records) / (time.perf_counter() - start)
        scores[name] = np.array([[{r["label"]: r["score"] for r in res}[label] for label in LABELS] for res in results])
        print(f"pipeline, {len(records)} records (in memory, 500 Hz), {len(LABELS)} labels, batch {args.batch_size}, "
              f"{name}: {pipe[name]:8.1f} ECG/s = {pipe[name] / raw[name]:.0%} of the raw forward")
    extract = median_time(lambda: processor.feature_extractor(records[: args.batch_size]), args.repeats)
    print(f"feature extraction alone (500 Hz in, batch {args.batch_size}): {args.batch_size / extract:8.1f} ECG/s")
    gap = np.abs(scores["fp32"] - scores["bf16"])
    print(f"bf16 vs fp32 scores over {len(records)} records x {len(LABELS)} labels: max gap {gap.max():.4f}, "
          f"median {np.median(gap):.5f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {rss:.0f} MB")


if __name__ == "__main__":
    main()
