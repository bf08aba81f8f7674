"""The ViT stem's fused inference path (batch norms folded, conv + GELU in one oneDNN primitive) against the
plain convolutions, batch norms and GELUs, interleaved in one run on this machine.

Prints the encoder + fusion forward time at batch 64 (12 x 5,000 samples at 500 Hz, 5 queries) with
`SuPreMEConvStem._fused_inference` switched on and off (`modeling_supreme.modeling_supreme._HAS_ONEDNN_CONV`),
in fp32 and, where the CPU runs bf16 natively, under bf16 autocast, with the largest logit difference. Medians
over repeats; state the machine with the figures.

    python benchmarks/bench_fused_stem.py [--repeats 9] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from modeling_supreme import SuPreMEConfig, SuPreMEModel
from modeling_supreme import modeling_supreme as modeling


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not modeling._HAS_ONEDNN_CONV:
        raise SystemExit("this torch build has no oneDNN fused convolution: the stem always runs the plain path")
    torch.manual_seed(0)
    config = SuPreMEConfig()
    model = SuPreMEModel(config).eval()
    signals = torch.randn(args.batch_size, len(config.lead_names), config.num_samples) * 0.3
    queries = torch.randn(5, model.config.text_config.hidden_size)  # stand-in query embeddings (speed only)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; batch {args.batch_size} of {len(config.lead_names)} x "
          f"{config.num_samples}, default tiny ViT (conv stem)")

    def forward(fused: bool, bf16: bool):
        modeling._HAS_ONEDNN_CONV = fused
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(signals, query_embeds=queries).logits.float()

    precisions = [False, True] if modeling._HAS_ONEDNN_BF16 else [False]
    try:
        for bf16 in precisions:
            gap = (forward(True, bf16) - forward(False, bf16)).abs().max().item()
            times = {True: [], False: []}
            for _ in range(args.repeats):
                for fused in (False, True):  # interleaved, so that load from other jobs falls on both
                    start = time.perf_counter()
                    forward(fused, bf16)
                    times[fused].append(time.perf_counter() - start)
            plain, fused = statistics.median(times[False]), statistics.median(times[True])
            print(f"{'bf16' if bf16 else 'fp32'}: plain stem {plain * 1e3:.1f} ms ({args.batch_size / plain:.1f} ECG/s), "
                  f"fused stem {fused * 1e3:.1f} ms ({args.batch_size / fused:.1f} ECG/s): {plain / fused:.2f}x; "
                  f"largest logit difference {gap:.2e}")
    finally:
        modeling._HAS_ONEDNN_CONV = True


if __name__ == "__main__":
    main()
