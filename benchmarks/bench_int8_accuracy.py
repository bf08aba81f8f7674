"""How far the int8 path's scores are from float32 for a checkpoint, on the real records of ../shared/data.

For each choice of which ECG-encoder Linear layers are quantised (dynamic, per-channel int8, as
`modeling_supreme.pipeline_supreme.quantize_for_cpu` does for "all"), prints the largest and the 99th
percentile score gap against float32 over every real PTB-XL record x every label, and the encoder's
median time at one batch against float32 in the same run. Speed depends on the CPU's int8 kernels
(VNNI or not): state the machine with the figures.

    python benchmarks/bench_int8_accuracy.py --model CHECKPOINT [--data_dir ../shared/data] [--threads 2]

Pass a trained checkpoint (for example the output of pretrain.py with only the required flags): the
gap of an untrained model with an artificially spread logit head says little about a real one.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from pathlib import Path

import torch

import modeling_supreme  # noqa: F401
from modeling_supreme import ECGProcessor, SuPreMEModel

LABELS = ["atrial fibrillation", "sinus rhythm", "left bundle branch block", "ST elevation", "low QRS voltage",
          "normal ECG", "myocardial infarction", "ST/T change", "conduction disturbance", "hypertrophy"]


def quantized_copy(model, layer_filter):
    """`model` with the ECG encoder's Linear layers chosen by ``layer_filter(name)`` in dynamic int8."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    copy_ = copy.deepcopy(model).eval()
    names = {name for name, module in copy_.ecg_encoder.named_modules()
             if isinstance(module, torch.nn.Linear) and layer_filter(name)}
    copy_.ecg_encoder = quantize_dynamic(copy_.ecg_encoder, {name: per_channel_dynamic_qconfig for name in names},
                                         dtype=torch.qint8)
    return copy_, len(names)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint folder")
    parser.add_argument("--data_dir", default=os.environ.get("SUPREME_SHARED_DATA", "../shared/data"))
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = SuPreMEModel.from_pretrained(args.model).eval()
    processor = ECGProcessor.from_pretrained(args.model)
    paths = sorted((Path(args.data_dir) / "ptbxl" / "records500").glob("*/*_hr.hea"))
    if not paths:
        raise SystemExit(f"no PTB-XL 500 Hz records under {args.data_dir}/ptbxl/records500; pass --data_dir")
    batches = [processor(ecg=[str(p.with_suffix("")) for p in paths[i : i + args.batch_size]], return_tensors="pt")
               for i in range(0, len(paths), args.batch_size)]
    tokens = processor.tokenize_queries(LABELS)
    with torch.no_grad():
        queries = model.get_query_embeddings(tokens["query_input_ids"], tokens["query_attention_mask"])

    def scores(net):
        with torch.no_grad():
            return torch.cat([torch.sigmoid(net.zero_shot_logits(**batch, query_embeds=queries)) for batch in batches])

    def encoder_seconds(net):
        first = batches[0]

        def forward():
            with torch.no_grad():
                net.encode_ecg(first["input_values"], first["lead_mask"], first["attention_mask"])

        forward()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            forward()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    depth = model.config.ecg_num_layers
    variants = {
        "all Linear layers (quantization='int8')": lambda name: True,
        "MLP layers only": lambda name: ".mlp." in name,
        f"all but the last layer ({depth - 1})": lambda name: not name.startswith(f"layers.{depth - 1}."),
    }
    reference = scores(model)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {args.model}: "
          f"{model.config.ecg_encoder_type} depth {depth}, {model.config.sampling_rate} Hz; {len(paths)} real records x "
          f"{len(LABELS)} labels; float32 scores {float(reference.min()):.3f}-{float(reference.max()):.3f}")
    quantized = {name: quantized_copy(model, keep) for name, keep in variants.items()}
    # Interleaved timing, so that a load change on a shared machine hits every variant alike.
    seconds = {name: [] for name in ["float32", *quantized]}
    for _ in range(3):
        seconds["float32"].append(encoder_seconds(model))
        for name, (net, _) in quantized.items():
            seconds[name].append(encoder_seconds(net))
    base = statistics.median(seconds["float32"])
    print(f"| Linear layers in int8 | layers | max score gap | p99 gap | encoder, batch {args.batch_size} | vs float32 |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| none (float32) | 0 | 0 | 0 | {base * 1e3:.0f} ms | 1.00x |")
    for name, (net, count) in quantized.items():
        gap = (scores(net) - reference).abs().flatten()
        took = statistics.median(seconds[name])
        print(f"| {name} | {count} | {float(gap.max()):.4f} | {float(gap.quantile(0.99)):.4f} | {took * 1e3:.0f} ms | "
              f"{base / took:.2f}x |")


if __name__ == "__main__":
    main()
