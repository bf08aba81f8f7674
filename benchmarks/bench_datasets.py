"""Benchmark of the ECG dataset layer on PTB-XL at 500 Hz: reader, Arrow cache build, batched reading, size.

    python benchmarks/bench_datasets.py [--copies 10] [--repeats 3] [--num-proc 2]

It multiplies the shared PTB-XL sample (``$SUPREME_SHARED_DATA/ptbxl``, default ``../shared/data``)
``--copies`` times into a temporary PTB-XL folder (metadata rewritten, record files linked, so the
page cache is warm after the first pass) and prints the medians of ``--repeats`` runs:

- reader: records/s of the numpy fast path and of ``wfdb.rdsamp`` (one process), and their
  largest difference in mV over every record of the sample;
- build: records/s of ``download_and_prepare`` into a fresh cache (1 and ``--num-proc`` processes;
  the float32 default and the compact ``signal_storage="int16"`` option);
- read: records/s of slices of ``--batch-size`` as float32 mV, numpy and torch, for every signal
  layout measured on the same records: the default fixed ``Array2D`` (what PTB-XL uses), the
  variable-length ``List(List(float32))`` (what CPSC2018 and the Challenge tranches use; the same
  Arrow data, cast), the int16 option with its conversion, and the storage before the native
  columns (int16 bytes in a ``binary`` column decoded by a ``set_transform``, reproduced here) as
  the baseline; then a ``DataLoader`` with ``ECGDataCollator`` (model inputs at 500 Hz x 10 s) and
  with torch's default collate over ``with_format("torch")``;
- footprint: Arrow cache and Parquet export bytes / WFDB source bytes (``.dat`` + ``.hea`` +
  metadata), for both storages.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]


def _median_rate(times, n):
    return n / statistics.median(times)


def _time(repeats, fn):
    fn()  # warm-up: the first pass pages the memory-mapped Arrow file in
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


class BinaryDecoder:
    """The read path before native columns: int16 bytes + per-lead gain, decoded per batch by a transform."""

    def __init__(self, output):
        self.output = output

    def __call__(self, batch):
        import numpy as np

        raws, gains = batch["signal_bytes"], batch["signal_gain"]
        leads = len(gains[0])
        counts = np.frombuffer(b"".join(raws), dtype="<i2").reshape(len(raws), leads, -1)
        signal = np.divide(counts, np.asarray(gains, dtype=np.float32)[:, :, None], dtype=np.float32)
        if self.output == "torch":
            import torch

            signal = torch.from_numpy(signal)
        return {"signal": signal, "record_id": batch["record_id"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("SUPREME_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--copies", type=int, default=10, help="copies of the 300-record sample (default 10)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    import datasets
    import numpy as np
    import torch
    import wfdb

    datasets.disable_progress_bars()
    from datasets_scripts import load_ecg_dataset
    from datasets_scripts.corpora.ptbxl import Ptbxl
    from datasets_scripts.testing import make_ptbxl_tree
    from processing.ecg.data_collator import ECGDataCollator
    from processing.ecg.feature_extraction_supreme import ECGFeatureExtractor
    from processing.ecg.wfdb_reader import read_digital

    source = Path(args.data) / "ptbxl"
    if not (source / "ptbxl_database.csv").is_file():
        print(f"PTB-XL sample not found at {source}; set SUPREME_SHARED_DATA or --data", file=sys.stderr)
        return 2
    print(f"machine: {os.cpu_count()} cores visible; other processes may be loading it (numbers are medians "
          f"of {args.repeats} runs)")

    # -- reader: fast path vs wfdb on the 300 real records --------------------------------------------
    records = sorted(p.with_suffix("") for p in (source / "records500").glob("*/*.hea"))
    worst = 0.0
    for base in records:
        rec = read_digital(base, warn=False)
        ref, _ = wfdb.rdsamp(str(base))
        worst = max(worst, float(np.max(np.abs(rec.digital / rec.gain[:, None] - ref.T))))
    fast = _time(args.repeats, lambda: [read_digital(base, warn=False) for base in records])
    slow = _time(args.repeats, lambda: [wfdb.rdsamp(str(base)) for base in records[:100]])
    print(f"reader  fast path {_median_rate(fast, len(records)):8.0f} records/s   wfdb.rdsamp "
          f"{_median_rate(slow, 100):6.0f} records/s   max |fast - wfdb| = {worst:.2e} mV over {len(records)} records")

    work = Path(tempfile.mkdtemp(prefix="bench_datasets_"))
    try:
        data = make_ptbxl_tree(source, work / "ptbxl", copies=args.copies)
        n_records = 300 * args.copies
        for p in (data / "records500").rglob("*.dat"):  # warm the page cache
            p.read_bytes()

        # -- build ----------------------------------------------------------------------------------
        caches = {}
        for storage in ("float32", "int16"):
            for num_proc in sorted({1, args.num_proc}):
                build = []
                for r in range(args.repeats):
                    cache = work / f"cache-{storage}-{num_proc}-{r}"
                    builder = Ptbxl(config_name="reports", data_dir=str(data), cache_dir=str(cache), signal_storage=storage)
                    start = time.perf_counter()
                    builder.download_and_prepare(num_proc=num_proc if num_proc > 1 else None)
                    build.append(time.perf_counter() - start)
                    if r == 0 and num_proc == args.num_proc:
                        caches[storage] = cache
                    else:
                        shutil.rmtree(cache)
                print(f"build   {_median_rate(build, n_records):8.0f} records/s   ({n_records} PTB-XL 500 Hz records, "
                      f"signal_storage={storage}, num_proc={num_proc}, fresh cache each run)")

        arrow_bytes = {storage: sum(p.stat().st_size for p in cache.rglob("*.arrow")) for storage, cache in caches.items()}

        # -- read -----------------------------------------------------------------------------------
        f32 = load_ecg_dataset("ptbxl", "reports", data_dir=str(data), cache_dir=str(caches["float32"]), output=None)["train"]
        i16 = load_ecg_dataset("ptbxl", "reports", data_dir=str(data), cache_dir=str(caches["int16"]), output=None,
                               signal_storage="int16")["train"]
        n = len(f32)
        nested = f32.cast_column("signal", datasets.List(datasets.List(datasets.Value("float32"))))
        old_features = datasets.Features({"record_id": datasets.Value("string"), "signal_bytes": datasets.Value("binary"),
                                          "signal_gain": datasets.List(datasets.Value("float64"))})
        binary = i16.with_format("numpy", columns=["signal_int16"], output_all_columns=True).map(
            lambda b: {"record_id": b["record_id"], "signal_bytes": [c.astype("<i2").tobytes() for c in b["signal_int16"]],
                       "signal_gain": b["signal_gain"]},
            batched=True, remove_columns=i16.column_names, features=old_features)
        batch = args.batch_size

        def slices(ds, convert=None):
            def run():
                for i in range(0, n, batch):
                    out = ds[i: i + batch]
                    signal = convert(out) if convert else out["signal"]
                    assert signal.shape[-1] == 5000
            return run

        def from_int16(kind):
            def convert(out):
                if kind == "torch":
                    return (out["signal_int16"].double() / out["signal_gain"][:, :, None]).float()
                return (out["signal_int16"] / out["signal_gain"][:, :, None]).astype(np.float32)
            return convert

        rates = {}
        for kind in ("numpy", "torch"):
            rates[("binary", kind)] = _median_rate(_time(args.repeats, slices(binary.with_transform(BinaryDecoder(kind)))), n)
            rates[("array2d", kind)] = _median_rate(_time(args.repeats, slices(f32.with_format(kind, columns=["signal"]))), n)
            rates[("nested", kind)] = _median_rate(_time(args.repeats, slices(nested.with_format(kind, columns=["signal"]))), n)
            rates[("int16", kind)] = _median_rate(_time(args.repeats, slices(
                i16.with_format(kind, columns=["signal_int16", "signal_gain"]), from_int16(kind))), n)
        layouts = (("binary", "before: int16 bytes in a binary column + decoding transform"),
                   ("array2d", "now: Array2D((12, 5000), float32), fixed-length corpora"),
                   ("nested", "now: List(List(float32)), variable-length corpora"),
                   ("int16", "option: Array2D int16 + gain, one-line conversion"))
        for key, label in layouts:
            print(f"read    numpy {rates[(key, 'numpy')]:7.0f}  torch {rates[(key, 'torch')]:7.0f} records/s "
                  f"({rates[(key, 'torch')] / rates[('binary', 'torch')]:.2f}x the binary baseline, torch)   "
                  f"slices of {batch}, {n} records   {label}")

        collator = ECGDataCollator(ECGFeatureExtractor(sampling_rate=500, num_samples=5000))
        torch_f32 = f32.with_format("torch")

        def loader_run(loader):
            def run():
                for _ in loader:
                    pass
            return run

        with_collator = _median_rate(_time(args.repeats, loader_run(
            torch.utils.data.DataLoader(torch_f32, batch_size=batch, collate_fn=collator))), n)
        default = _median_rate(_time(args.repeats, loader_run(torch.utils.data.DataLoader(
            f32.with_format("torch", columns=["signal", "multi_hot"]), batch_size=batch))), n)
        print(f"loader  ECGDataCollator {with_collator:7.0f} records/s (model inputs: lead matching, baseline "
              f"normalisation, 500 Hz x 10 s)   torch default collate over with_format('torch') {default:7.0f} records/s")

        # -- footprint ------------------------------------------------------------------------------
        src = sum(os.stat(p).st_size for p in (data / "records500").rglob("*") if p.suffix in (".dat", ".hea"))
        src += sum((data / f).stat().st_size for f in ("ptbxl_database.csv", "scp_statements.csv"))
        for storage, ds in (("float32", f32), ("int16", i16)):
            arrow = arrow_bytes[storage]  # measured before the benchmark derived datasets from the caches
            parquet_path = work / f"{storage}.parquet"
            ds.to_parquet(str(parquet_path))
            parquet = parquet_path.stat().st_size
            arrow_train = sum(os.path.getsize(f["filename"]) for f in ds.cache_files)
            print(f"disk    signal_storage={storage:7s}  Arrow cache / WFDB {arrow / src:.2f}  "
                  f"(Arrow {arrow / 2**20:.0f} MiB / source {src / 2**20:.0f} MiB)   Parquet export (snappy) / WFDB "
                  f"{parquet / arrow_train * arrow / src:.2f} (measured on the train split)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
