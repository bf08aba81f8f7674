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
from torch.utils.flop_counter import FlopCounterMode


import modeling_supreme  # noqa: F401
from processing.ecg.wfdb_reader import read_wfdb_record
from modeling_supreme import ECGProcessor, SuPreMEConfig, SuPreMEModel
from modeling_supreme.pipeline_supreme import quantize_for_cpu

from merl_reference_vit import ReferenceViT1d  # benchmarks/ is sys.path[0] when this script runs

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
    counter = FlopCounterMode(display=False)
    # With autograd on, the model takes its nn.Linear path, which the counter knows (it does not count
    # the oneDNN fused kernels of the no-grad path, which do the same products).
    with counter:
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
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the int8 path (dynamic quantisation of the Linear layers)")
    parser.add_argument("--pipeline_repeats", type=int, default=3)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="also time bf16 autocast (default: where this CPU runs bf16 natively; emulated bf16 on "
                             "an AVX2-only CPU took minutes for one 2048^3 matmul)")
    parser.add_argument("--patch_embedding", choices=("conv", "linear"), default=None,
                        help="the new model's ViT patch embedding (default: SuPreMEConfig's, the conv stem); "
                             "linear is MERL's layout")
    # 0 is the pipeline's own default. On this 2-core CPU a worker process competes with the model's two
    # threads: 1 worker gave 65-74% of the raw forward, 0 workers 88-93% (same day, quiet machine).
    parser.add_argument("--num_workers", type=int, default=0, help="the pipeline's DataLoader workers")
    parser.add_argument("--data_dir", default=os.environ.get("SUPREME_SHARED_DATA", "../shared/data"))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice; on a CPU shared with other jobs 1 can be faster)")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)

    from modeling_supreme.training import bf16_is_native

    native = bf16_is_native("cpu")
    bf16 = native if args.bf16 is None else args.bf16
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {native}; bf16 rows: {'yes' if bf16 else 'skipped'}")
    peak32 = matmul_peak(torch.float32)
    peak16 = matmul_peak(torch.bfloat16) if bf16 else float("nan")
    print(f"matmul peak (2048^3, median): fp32 {peak32 / 1e12:.3f} TFLOP/s | bf16 {peak16 / 1e12:.3f} TFLOP/s "
          f"| ratio {peak16 / peak32:.1f}x")

    if args.model:
        model = SuPreMEModel.from_pretrained(args.model).eval()
        processor = ECGProcessor.from_pretrained(args.model)
        source = args.model
    else:
        config = SuPreMEConfig() if args.patch_embedding is None else SuPreMEConfig(ecg_patch_embedding=args.patch_embedding)
        model = SuPreMEModel(config).eval()
        processor = ECGProcessor.from_config(config)
        source = "new tiny model (random ECG side)"
    records = load_records(Path(args.data_dir), args.records)
    if not args.model:
        # An untrained logit head gives every score about 0.5, which would hide score differences
        # between fp32, bf16 and int8: spread the scores as the tests' tiny checkpoint does (head x20,
        # bias centred on these records), so that the largest difference means something.
        batch = processor(ecg=records[: args.batch_size], text=LABELS, return_tensors="pt")
        with torch.no_grad():
            model.logit_head.weight.mul_(20.0)
            model.logit_head.bias.sub_(model(**batch).logits.mean())
        model.clear_query_cache()
        source += ", logit head spread x20 and centred"
    print(f"model: {source}; ECG encoder {model.config.ecg_encoder_type}/{model.config.ecg_preset}, "
          f"{sum(p.numel() for p in model.ecg_encoder.parameters()) / 1e6:.2f}M parameters; input "
          f"{len(model.config.lead_names)} x {model.config.num_samples} at {model.config.sampling_rate} Hz")

    batch = processor(ecg=records[: args.batch_size], return_tensors="pt")
    queries = processor.tokenize_queries(LABELS)
    query_embeds = model.get_query_embeddings(queries["query_input_ids"], queries["query_attention_mask"])
    flops = flops_per_ecg(model, batch, query_embeds)
    print(f"FLOPs per ECG (encoder + fusion, {len(LABELS)} queries): {flops / 1e9:.3f} GFLOP")

    # MERL's layout at this model's token grid and depth, so that a checkpoint at another rate or depth
    # (pretrain.py's small-corpus recipe: 100 Hz, 4 layers) is compared with the same amount of work.
    layout = {"patch": model.config.patch_size, "depth": model.config.ecg_num_layers} \
        if model.config.ecg_encoder_type == "vit" else {}
    reference = ReferenceViT1d(leads=len(model.config.lead_names), samples=model.config.num_samples, **layout).eval()
    print(f"MERL reference layout: patch {reference.patch_embedding.kernel_size[0]}, depth {len(reference.blocks)}, "
          f"width 192, 3 heads, linear patch embedding")
    signals = batch["input_values"]
    counter = FlopCounterMode(display=False)
    with counter:  # MERL's encoder is plain PyTorch: every product is counted
        reference(signals)
    reference_flops = counter.get_total_flops() / signals.shape[0]
    print(f"FLOPs per ECG of MERL's bare encoder: {reference_flops / 1e9:.3f} GFLOP "
          f"(ours do {flops / reference_flops:.2f}x its work)")

    def ours(autocast: bool):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return model(**batch, query_embeds=query_embeds).logits

    def merl(autocast: bool):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return reference(signals)

    candidates = {("ours", "fp32"): lambda: ours(False), ("merl", "fp32"): lambda: merl(False)}
    if bf16:
        candidates.update({("ours", "bf16"): lambda: ours(True), ("merl", "bf16"): lambda: merl(True)})
    if args.int8:
        quantized = quantize_for_cpu(model)

        def ours_int8():
            with torch.no_grad():
                return quantized(**batch, query_embeds=query_embeds).logits

        candidates[("ours", "int8")] = ours_int8
    # Interleaved: every repeat times each candidate once, so that load from other jobs on this shared
    # machine falls on all of them alike; medians over repeats.
    times = {key: [] for key in candidates}
    for fn in candidates.values():
        fn()
    for _ in range(args.repeats):
        for key, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    raw = {key: args.batch_size / statistics.median(values) for key, values in times.items()}
    # int8 against the bf16 peak where there is one (VNNI int8 and bf16 matmuls peak alike on AVX-512).
    peaks = {"fp32": peak32, "bf16": peak16, "int8": peak16 if bf16 else peak32}
    work = {"ours": flops, "merl": reference_flops}  # each model's own FLOPs per ECG
    for (who, name), rate in raw.items():
        label = "SuPreME encoder+fusion" if who == "ours" else "MERL bare ViT-tiny    "
        print(f"{label} forward, batch {args.batch_size}, {name}: {rate:8.1f} ECG/s | "
              f"{work[who] * rate / 1e12:.3f} TFLOP/s = {work[who] * rate / peaks[name]:.0%} of the {'bf16' if name != 'fp32' and bf16 else 'fp32'} matmul peak")
    for name in ("fp32", "bf16") if bf16 else ("fp32",):
        print(f"ratio ours/MERL, {name}: {raw[('ours', name)] / raw[('merl', name)]:.2f}x")
    if args.int8:
        best_merl = "bf16" if bf16 else "fp32"
        print(f"ratio ours int8 / MERL {best_merl}: {raw[('ours', 'int8')] / raw[('merl', best_merl)]:.2f}x "
              f"(target 2x MERL bf16) | ours int8 / ours fp32: {raw[('ours', 'int8')] / raw[('ours', 'fp32')]:.2f}x")
    raw = {name: raw[("ours", name)] for who, name in raw if who == "ours"}

    from transformers import pipeline

    classifier = pipeline("zero-shot-ecg-classification", model=model, processor=processor)
    modes = {"fp32": {}, "bf16": {"autocast_dtype": "bfloat16"}} if bf16 else {"fp32": {}}
    if args.int8:
        modes["int8"] = {"quantization": "int8"}
    # The raw forward over the same records, batched as the pipeline batches them, against the pipeline
    # end to end (preparation in its DataLoader workers, forward, post-processing); interleaved repeats.
    prepared = [processor(ecg=records[i : i + args.batch_size], return_tensors="pt")
                for i in range(0, len(records), args.batch_size)]
    models = {"fp32": (model, False), "bf16": (model, True)} if bf16 else {"fp32": (model, False)}
    if args.int8:
        models["int8"] = (quantized, False)

    def raw_pass(name):
        net, autocast = models[name]
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            for inputs in prepared:
                net.zero_shot_logits(**inputs, query_embeds=query_embeds)

    scores, results = {}, {}
    pipe_times = {name: [] for name in modes}
    raw_times = {name: [] for name in modes}
    for name, extra in modes.items():  # warm-up (and the quantised copy is made here)
        classifier(records[: args.batch_size], candidate_labels=LABELS, batch_size=args.batch_size, **extra)
    for _ in range(args.pipeline_repeats):
        for name, extra in modes.items():
            start = time.perf_counter()
            raw_pass(name)
            raw_times[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            results[name] = classifier(records, candidate_labels=LABELS, batch_size=args.batch_size,
                                       num_workers=args.num_workers, **extra)
            pipe_times[name].append(time.perf_counter() - start)
    for name in modes:
        rate = len(records) / statistics.median(pipe_times[name])
        raw_rate = len(records) / statistics.median(raw_times[name])
        scores[name] = np.array([[{r["label"]: r["score"] for r in res}[label] for label in LABELS]
                                 for res in results[name]])
        print(f"pipeline, {len(records)} records (in memory, 500 Hz), {len(LABELS)} labels, batch {args.batch_size}, "
              f"{args.num_workers} worker(s), {name}: {rate:8.1f} ECG/s = {rate / raw_rate:.0%} of the raw forward "
              f"over the same records ({raw_rate:.1f} ECG/s)")
    # What a call without batch_size gets: the pipeline's DEFAULT_BATCH_SIZE, against transformers' default of 1.
    from modeling_supreme.pipeline_supreme import DEFAULT_BATCH_SIZE

    by_batch = {}
    for size in (DEFAULT_BATCH_SIZE, 1):
        start = time.perf_counter()
        classifier(records, candidate_labels=LABELS, batch_size=size)
        by_batch[size] = len(records) / (time.perf_counter() - start)
    print(f"pipeline fp32 without batch_size (batch {DEFAULT_BATCH_SIZE}): {by_batch[DEFAULT_BATCH_SIZE]:.1f} ECG/s, "
          f"batch 1 (transformers' default): {by_batch[1]:.1f} ECG/s = {by_batch[DEFAULT_BATCH_SIZE] / by_batch[1]:.1f}x")
    extract = median_time(lambda: processor.feature_extractor(records[: args.batch_size]), args.repeats)
    print(f"feature extraction alone (500 Hz in, batch {args.batch_size}): {args.batch_size / extract:8.1f} ECG/s")
    for name in modes:
        if name != "fp32":
            gap = np.abs(scores["fp32"] - scores[name])
            print(f"{name} vs fp32 scores over {len(records)} records x {len(LABELS)} labels: max gap {gap.max():.4f}, "
                  f"median {np.median(gap):.5f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {rss:.0f} MB")


if __name__ == "__main__":
    main()
