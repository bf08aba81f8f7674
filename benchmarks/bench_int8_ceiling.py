"""How fast could an int8 path be on this CPU? The int8 products against bf16 ones, and the ceiling they set.

Issue 12 asks for a quantised CPU path at 2x MERL's bf16 forward. Only the Linear layers can run int8
products; the convolutional stem, attention, layer norms, residual adds and copies keep their bf16 cost.
This script measures, in one run:

1. matmul peaks: fp32 and bf16 (`torch.mm`) and int8 (`torch._int_mm`, int8 x int8 -> int32) at 2048^3;
2. for each Linear shape of the default encoder at batch 64 (6,400 tokens): the bf16 product as the model
   runs it (oneDNN's fused linear + bias [+ GELU]), the int8 product with the same fused epilogue and a
   bf16 output (oneDNN's `qlinear_pointwise`, per-channel int8 weights, uint8 activations), and the
   dynamic quantisation of the activations that must precede it (per tensor, the cheapest form);
3. the default model's bf16 forward split by a profile into its Linear products and everything else,
   timed beside MERL's bare encoder (bf16) in the same run, and from these:
   - the int8 forward this CPU could reach if every Linear product ran at the measured int8 speed,
     activation quantisation included, and without it (as if fused into the preceding operation);
   - the bound if the Linear products cost nothing at all.

    python benchmarks/bench_int8_ceiling.py [--batch_size 64] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import modeling_supreme  # noqa: F401
from modeling_supreme import SuPreMEConfig, SuPreMEModel

# benchmarks/ is sys.path[0] when this script runs
from bench_model import median_time
from merl_reference_vit import ReferenceViT1d


def median_ms(fn, repeats: int, warmup: int = 2) -> float:
    return 1e3 * median_time(fn, repeats, warmup)


def peaks(repeats: int, size: int = 2048) -> dict:
    """Matmul throughput at size^3 in GFLOP/s (GOP/s for int8)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a16, b16 = a.bfloat16(), b.bfloat16()
    ai = torch.randint(-127, 128, (size, size), dtype=torch.int8)
    bi = torch.randint(-127, 128, (size, size), dtype=torch.int8)
    flops = 2 * size**3
    return {"fp32": flops / median_ms(lambda: torch.mm(a, b), repeats) / 1e6,
            "bf16": flops / median_ms(lambda: torch.mm(a16, b16), repeats) / 1e6,
            "int8": flops / median_ms(lambda: torch._int_mm(ai, bi), repeats) / 1e6}


def quantize_activations(x: torch.Tensor):
    """Per-tensor asymmetric uint8 quantisation of `x` (what a dynamic int8 Linear does before its product)."""
    low, high = torch.aminmax(x)
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    scale = max(high - low, 1e-8) / 255.0
    zero_point = int(round(-low / scale))
    return torch.clamp(torch.round(x / scale) + zero_point, 0, 255).to(torch.uint8), scale, zero_point


def linear_shapes(config: SuPreMEConfig) -> list[tuple[str, int, int, str, int]]:
    """(name, in, out, fused activation, calls per forward) of the ViT encoder's Linear products."""
    width, depth = config.ecg_hidden_size, config.ecg_num_layers
    hidden = int(width * config.ecg_mlp_ratio)
    return [("qkv", width, 3 * width, "none", depth), ("attention out", width, width, "none", depth),
            ("mlp fc1 + GELU", width, hidden, "gelu", depth), ("mlp fc2", hidden, width, "none", depth)]


def time_linear(tokens: int, n_in: int, n_out: int, activation: str, repeats: int) -> dict:
    torch.manual_seed(0)
    x = torch.randn(tokens, n_in).bfloat16()
    weight, bias = torch.randn(n_out, n_in) * n_in**-0.5, torch.randn(n_out) * 0.1
    bf16 = median_ms(lambda: torch.ops.mkldnn._linear_pointwise(x, weight.bfloat16(), bias.bfloat16(), activation, [], "none"),
                     repeats)
    w_scale = weight.abs().amax(1).clamp_min(1e-8) / 127.0
    packed = torch.ops.onednn.qlinear_prepack(torch.round(weight / w_scale[:, None]).to(torch.int8), [tokens, n_in])
    w_zero = torch.zeros(n_out, dtype=torch.int64)
    qx, x_scale, x_zero = quantize_activations(x)

    def int8_product():
        return torch.ops.onednn.qlinear_pointwise(qx, x_scale, x_zero, packed, w_scale, w_zero, bias, 1.0, 0, torch.bfloat16,
                                                  activation, [], "none")

    reference = torch.ops.mkldnn._linear_pointwise(x.float(), weight, bias, activation, [], "none")
    error = (int8_product().float() - reference).abs().max().item() / reference.abs().max().item()
    return {"bf16_ms": bf16, "int8_ms": median_ms(int8_product, repeats),
            "quantize_ms": median_ms(lambda: quantize_activations(x), repeats), "relative_error": error}


def forward_split(model, signals, lead_mask, attention_mask) -> float:
    """Share of the bf16 encoder forward's CPU time in Linear products (profile of 3 forwards)."""
    from torch.profiler import profile

    def forward():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            model.ecg_encoder(signals, lead_mask, attention_mask)

    forward()
    with profile() as prof:
        for _ in range(3):
            forward()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    linear = sum(e.self_cpu_time_total for e in events if e.key in ("mkldnn::_linear_pointwise", "aten::addmm", "aten::mm",
                                                                     "aten::linear"))
    return linear / total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=64, help="ECGs per forward (default 64, as bench_model.py)")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per figure (medians)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    from modeling_supreme.training import bf16_is_native

    if not bf16_is_native("cpu"):
        raise SystemExit("this CPU has no native bf16 (AVX-512 BF16 or AMX): the bf16 side of the comparison would be "
                         "emulated and meaningless; run on an AVX-512 BF16 machine")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, AMX: {bool(torch.cpu._is_amx_tile_supported())}")
    peak = peaks(max(3, args.repeats // 2))
    print(f"matmul peak (2048^3, median): fp32 {peak['fp32']:.0f} | bf16 {peak['bf16']:.0f} GFLOP/s | "
          f"int8 {peak['int8']:.0f} GOP/s | int8/bf16 {peak['int8'] / peak['bf16']:.2f}x")

    torch.manual_seed(0)
    config = SuPreMEConfig()
    model = SuPreMEModel(config).eval()
    tokens = args.batch_size * (config.num_samples // config.patch_size)
    linear_bf16 = linear_int8 = products_int8 = 0.0
    print(f"Linear products of the default encoder at batch {args.batch_size} ({tokens} tokens), ms per call:")
    for name, n_in, n_out, activation, calls in linear_shapes(config):
        t = time_linear(tokens, n_in, n_out, activation, args.repeats)
        linear_bf16 += calls * t["bf16_ms"]
        linear_int8 += calls * (t["int8_ms"] + t["quantize_ms"])
        products_int8 += calls * t["int8_ms"]
        print(f"  {name:15s} {n_in:4d} -> {n_out:4d}: bf16 {t['bf16_ms']:6.2f} | int8 product {t['int8_ms']:6.2f} "
              f"({t['bf16_ms'] / t['int8_ms']:.2f}x bf16) + activation quantisation {t['quantize_ms']:5.2f} "
              f"= {t['bf16_ms'] / (t['int8_ms'] + t['quantize_ms']):.2f}x bf16 | int8 error {t['relative_error']:.1e} of max")
    print(f"  all {sum(c for *_, c in linear_shapes(config))} products per forward: bf16 {linear_bf16:.1f} ms, "
          f"int8 with quantisation {linear_int8:.1f} ms ({linear_bf16 / linear_int8:.2f}x)")

    signals = torch.randn(args.batch_size, len(config.lead_names), config.num_samples)
    lead_mask = torch.ones(args.batch_size, len(config.lead_names), dtype=torch.bool)
    attention_mask = torch.ones(args.batch_size, config.num_samples, dtype=torch.bool)
    reference = ReferenceViT1d(leads=len(config.lead_names), samples=config.num_samples).eval()

    def ours():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            model.ecg_encoder(signals, lead_mask, attention_mask)

    def merl():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            reference(signals)

    ours_times, merl_times = [], []
    ours(), merl()
    for _ in range(args.repeats):  # interleaved, medians
        for fn, times in ((ours, ours_times), (merl, merl_times)):
            start = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - start))
    ours_ms, merl_ms = statistics.median(ours_times), statistics.median(merl_times)
    share = forward_split(model, signals, lead_mask, attention_mask)
    rest_ms = ours_ms * (1 - share)
    target = 2 * args.batch_size / merl_ms * 1e3
    projected_ms = rest_ms + ours_ms * share * linear_int8 / linear_bf16
    fused_ms = rest_ms + ours_ms * share * products_int8 / linear_bf16
    print(f"bf16 forward, batch {args.batch_size}: ours (encoder) {ours_ms:.1f} ms = {args.batch_size / ours_ms * 1e3:.1f} ECG/s, "
          f"MERL bare encoder {merl_ms:.1f} ms = {args.batch_size / merl_ms * 1e3:.1f} ECG/s; "
          f"Linear products {share:.0%} of ours (profile), the rest {rest_ms:.1f} ms")
    print(f"target, 2x MERL bf16: {target:.1f} ECG/s")
    print(f"projected int8 forward (Linear products at the measured int8 speed, the rest bf16): "
          f"{args.batch_size / projected_ms * 1e3:.1f} ECG/s = {args.batch_size / projected_ms * 1e3 / target * 2:.2f}x MERL bf16")
    print(f"projected with the activation quantisation fused away (int8 products only, the rest bf16): "
          f"{args.batch_size / fused_ms * 1e3:.1f} ECG/s = {args.batch_size / fused_ms * 1e3 / target * 2:.2f}x MERL bf16")
    print(f"bound with free Linear products: {args.batch_size / rest_ms * 1e3:.1f} ECG/s = "
          f"{args.batch_size / rest_ms * 1e3 / target * 2:.2f}x MERL bf16")


if __name__ == "__main__":
    main()
