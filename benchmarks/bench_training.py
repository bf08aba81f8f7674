"""Pre-training throughput: samples/s of a training step, the data loader alone, and the fraction of peak.

For each ECG encoder asked for (default: ViT tiny and ResNet tiny) it times the pre-training step of
``examples/pretrain.py`` (forward over a batch and the concept queries, the multi-label loss, backward,
AdamW) under bf16 autocast, counts its FLOPs (``torch.utils.flop_counter``) and prints the achieved
fraction of the bf16 matmul peak measured in the same run. Separately it times the same kind of data
loader alone (a synthetic corpus's Arrow split through ``ECGDataCollator``, ``--num_workers``), so that
it is visible which of the two limits training. Medians over steps.

    python benchmarks/bench_training.py [--encoders vit:tiny resnet1d:tiny] [--batch_size 64] [--device cpu]

``benchmarks/gpu_check.sh`` runs it on CUDA (``--device cuda --batch_size 256``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 7) -> float:
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    times = []
    for step in range(repeats + 2):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        if step >= 2:
            times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def make_loader(records: int, batch_size: int, num_workers: int, cache_dir: str):
    from datasets_scripts import load_ecg_dataset
    from modeling_supreme import ECGProcessor, SuPreMEConfig
    from processing.ecg.data_collator import ECGDataCollator

    splits = load_ecg_dataset("synthetic", num_records=records, cache_dir=cache_dir)
    train = splits["train"]
    processor = ECGProcessor.from_config(SuPreMEConfig())
    loader = torch.utils.data.DataLoader(
        train, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=num_workers,
        collate_fn=ECGDataCollator(processor, label_column="multi_hot"),
        persistent_workers=num_workers > 0,
    )
    class_names = train.features["label_ids"].feature.names
    return loader, processor, class_names


def time_loader(loader, batches: int) -> float:
    """Samples/s of the loader alone over ``batches`` batches (after one warm-up batch)."""
    iterator = iter(loader)
    next(iterator)
    seen, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        seen += batch["input_values"].shape[0]
    return seen / (time.perf_counter() - start)


def time_training(encoder: str, preset: str, batch, class_names, processor, device, steps: int, dtype, dropout=None) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from modeling_supreme import SuPreMEConfig, SuPreMEModel

    torch.manual_seed(0)
    config = SuPreMEConfig(ecg_encoder_type=encoder, ecg_preset=preset,
                           **({} if dropout is None else {"ecg_dropout": dropout, "fusion_dropout": dropout}))
    model = SuPreMEModel(config).to(device).train()
    tokens = processor.tokenize_queries(list(class_names))
    with torch.no_grad():
        query_embeds = model.get_query_embeddings(tokens["query_input_ids"].to(device),
                                                  tokens["query_attention_mask"].to(device))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    inputs = {k: batch[k].to(device) for k in ("input_values", "lead_mask", "attention_mask")}
    labels = batch["labels"].to(device).float()

    def step():
        with torch.autocast(device.type, dtype=dtype):
            loss = model(**inputs, query_embeds=query_embeds, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops()
    times = []
    for index in range(steps + 2):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        if index >= 2:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    size = inputs["input_values"].shape[0]
    params = sum(p.numel() for p in model.ecg_encoder.parameters()) / 1e6
    return {"samples_per_s": size / seconds, "flops_per_sample": flops / size, "tflops": flops / seconds / 1e12,
            "params_m": params}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="+", default=["vit:tiny", "resnet1d:tiny"],
                        help="encoder_type:preset pairs (vit or resnet1d; tiny, small or base)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--records", type=int, default=400, help="synthetic records for the loader")
    parser.add_argument("--loader_batches", type=int, default=5)
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dropouts", nargs="+", type=float, default=[0.1],
                        help="time each encoder at each of these dropout rates (encoder and fusion network; the config's "
                             "default is 0.1, the small-corpus ViT recipe's 0): on a CPU, drawing the masks is costly")
    args = parser.parse_args()
    bad = [d for d in args.dropouts if not 0 <= d < 1]
    if bad:
        parser.error(f"--dropouts must be in [0, 1), got {bad}")
    device = torch.device(args.device)
    dtype = torch.bfloat16

    peak = matmul_peak(device, dtype, 8192 if device.type == "cuda" else 2048)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {name} (CPU shared with other jobs where it is a CPU run); "
          f"bf16 matmul peak {peak / 1e12:.3f} TFLOP/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="supreme-train-bench-") as cache:
        loader, processor, class_names = make_loader(max(args.records, 2 * args.batch_size), args.batch_size,
                                                     args.num_workers, cache)
        batch = next(iter(loader))
        loader_rate = time_loader(loader, args.loader_batches)
    rows = []
    for spec, dropout in ((spec, dropout) for spec in args.encoders for dropout in args.dropouts):
        encoder, preset = spec.split(":")
        result = time_training(encoder, preset, batch, class_names, processor, device, args.steps, dtype, dropout)
        rows.append((f"pre-training step, {encoder} {preset} ({result['params_m']:.1f}M), bf16, dropout {dropout:g}",
                     f"{result['samples_per_s']:.1f}",
                     f"{result['flops_per_sample'] / 1e9:.2f} GFLOP", f"{result['tflops'] * 1e12 / peak:.0%}"))
        print(rows[-1], flush=True)
    rows.append((f"data loader alone ({args.num_workers} workers, ECGDataCollator)", f"{loader_rate:.1f}", "-", "-"))
    print(f"\nbatch {args.batch_size}, {len(class_names)} concept queries, {len(batch['input_values'])} ECGs a step; "
          f"medians of {args.steps} steps\n")
    header = ("what", "samples/s", "FLOPs per sample (fwd+bwd)", "of bf16 peak")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
