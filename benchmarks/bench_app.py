"""Latency of the demo app's pieces on the CPU: drawing one 12-lead record on ECG paper (PNG at the
app's 90 dpi and at 200 dpi, SVG) and one whole request of the app's handler (copy the upload, read
it, score it, draw it), medians of several runs.

The record is a real PTB-XL record of ``../shared/data`` (100 Hz and 500 Hz) when present, else a
synthetic one written as WFDB. The model is ``--model`` (for instance ``demo_output/model``) or, by
default, an untrained model of the default configuration (ViT-tiny encoder at 500 Hz), whose latency
is that of a trained one of the same shape.

Run: ``python benchmarks/bench_app.py [--model CKPT] [--runs 7]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SUPREME_SHARED_DATA", REPO.parent / "shared" / "data"))


def median_ms(function, runs: int) -> float:
    function()  # warm-up (font cache, first forward pass)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def records(folder: Path) -> dict:
    ptbxl = SHARED / "ptbxl"
    if (ptbxl / "records500").is_dir():
        return {"PTB-XL 00001 at 100 Hz": ptbxl / "records100/00000/00001_lr",
                "PTB-XL 00001 at 500 Hz": ptbxl / "records500/00000/00001_hr"}
    from datasets_scripts.testing import example_signal, write_wfdb_dat

    return {"synthetic at 500 Hz": write_wfdb_dat(folder, "synthetic", example_signal(0))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a checkpoint folder (default: an untrained default model)")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)

    from modeling_supreme.app import INDEPENDENT, DEFAULT_CONDITIONS, ECGDemo
    from processing.ecg import draw_ecg, ecg_image_bytes, read_wfdb_record

    import torch

    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if model is None:
            from modeling_supreme import ECGProcessor, SuPreMEConfig, SuPreMEModel

            torch.manual_seed(0)
            config = SuPreMEConfig()
            SuPreMEModel(config).save_pretrained(scratch + "/model")
            ECGProcessor.from_config(config).save_pretrained(scratch + "/model")
            model = scratch + "/model"
        demo = ECGDemo(model, temp_dir=scratch)
        conditions = "\n".join(DEFAULT_CONDITIONS)
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs visible, torch {torch.__version__} with "
              f"{torch.get_num_threads()} threads; the CPU may be shared with other jobs")
        print(f"model: {args.model or 'untrained default configuration'}; {len(DEFAULT_CONDITIONS)} conditions; "
              f"median of {args.runs} runs")
        for name, path in records(Path(scratch) / "records").items():
            record = read_wfdb_record(path)
            files = [str(path) + ".hea", str(path) + ".dat"]
            png90 = median_ms(lambda: ecg_image_bytes(draw_ecg(record), "png", dpi=90), args.runs)
            png200 = median_ms(lambda: ecg_image_bytes(draw_ecg(record), "png", dpi=200), args.runs)
            svg = median_ms(lambda: ecg_image_bytes(draw_ecg(record), "svg"), args.runs)
            request = median_ms(lambda: demo.analyse(files, None, conditions, INDEPENDENT), args.runs)
            print(f"{name}: draw + PNG 90 dpi {png90:.0f} ms, PNG 200 dpi {png200:.0f} ms, SVG {svg:.0f} ms; "
                  f"one app request (read + score + draw) {request:.0f} ms")
        demo.close()


if __name__ == "__main__":
    main()
