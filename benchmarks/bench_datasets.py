"""Benchmark of the ECG dataset layer on PTB-XL at 500 Hz: reader, Arrow cache build, batched reading.

    python benchmarks/bench_datasets.py [--copies 10] [--repeats 3] [--num-proc 2]

It multiplies the shared PTB-XL sample (``$SUPREME_SHARED_DATA/ptbxl``, default ``../shared/data``)
``--copies`` times into a temporary PTB-XL folder (metadata rewritten, record files linked, so the
page cache is warm after the first pass) and prints the medians of ``--repeats`` runs:

- reader: records/s of the numpy fast path and of ``wfdb.rdsamp`` (one process), and their
  largest difference in mV over every record of the sample;
- build: records/s of ``download_and_prepare`` into a fresh cache (1 and ``--num-proc`` processes);
- read: records/s of batches of ``--batch-size`` decoded to float32 mV torch tensors;
- footprint: Arrow cache bytes / source bytes (``.dat`` + ``.hea`` of the records + metadata).
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
    import wfdb

    datasets.disable_progress_bars()
    from datasets_scripts import load_ecg_dataset
    from datasets_scripts.corpora.ptbxl import Ptbxl
    from datasets_scripts.testing import make_ptbxl_tree
    from processing.ecg.wfdb_reader import read_digital

    source = Path(args.data) / "ptbxl"
    if not (source / "ptbxl_database.csv").is_file():
        print(f"PTB-XL sample not found at {source}; set SUPREME_SHARED_DATA or --data", file=sys.stderr)
        return 2
    print(f"machine: {os.cpu_count()} cores visible; other processes may be loading it (numbers are medians)")

    # -- reader: fast path vs wfdb on the 300 real records --------------------------------------------
    records = sorted(p.with_suffix("") for p in (source / "records500").glob("*/*.hea"))
    worst = 0.0
    for base in records:
        rec = read_digital(base, warn=False)
        ref, _ = wfdb.rdsamp(str(base))
        worst = max(worst, float(np.max(np.abs(rec.digital / rec.gain[:, None] - ref.T))))
    fast, slow = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        for base in records:
            read_digital(base, warn=False)
        fast.append(time.perf_counter() - t)
        t = time.perf_counter()
        for base in records[:100]:
            wfdb.rdsamp(str(base))
        slow.append(time.perf_counter() - t)
    print(f"reader  fast path {_median_rate(fast, len(records)):8.0f} records/s   wfdb.rdsamp "
          f"{_median_rate(slow, 100):6.0f} records/s   max |fast - wfdb| = {worst:.2e} mV over {len(records)} records")

    work = Path(tempfile.mkdtemp(prefix="bench_datasets_"))
    try:
        data = make_ptbxl_tree(source, work / "ptbxl", copies=args.copies)
        n_records = 300 * args.copies
        for p in (data / "records500").rglob("*.dat"):  # warm the page cache
            p.read_bytes()

        # -- build ----------------------------------------------------------------------------------
        for num_proc in sorted({1, args.num_proc}):
            build = []
            for r in range(args.repeats):
                cache = work / f"cache{r}-{num_proc}"
                builder = Ptbxl(config_name="reports", data_dir=str(data), cache_dir=str(cache))
                t = time.perf_counter()
                builder.download_and_prepare(num_proc=num_proc if num_proc > 1 else None)
                build.append(time.perf_counter() - t)
                if r or num_proc != args.num_proc:
                    shutil.rmtree(cache)
            print(f"build   {_median_rate(build, n_records):8.0f} records/s   ({n_records} PTB-XL 500 Hz records, "
                  f"num_proc={num_proc}, fresh cache each run)")

        # -- read -----------------------------------------------------------------------------------
        ds = load_ecg_dataset("ptbxl", "reports", data_dir=str(data), cache_dir=str(work / f"cache0-{args.num_proc}"), output="torch")
        split = ds["train"]
        n = len(split)
        reads = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            for i in range(0, n, args.batch_size):
                batch = split[i: i + args.batch_size]
                assert batch["signal"].dtype.is_floating_point
            reads.append(time.perf_counter() - t)
        import torch

        loader = torch.utils.data.DataLoader(split, batch_size=args.batch_size, collate_fn=lambda rows: rows)
        loads = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            for rows in loader:
                pass
            loads.append(time.perf_counter() - t)
        print(f"read    {_median_rate(reads, n):8.0f} records/s   (slices of {args.batch_size}, float32 mV torch, "
              f"{n} records)   DataLoader {_median_rate(loads, n):6.0f} records/s")

        # -- footprint ------------------------------------------------------------------------------
        arrow = sum(p.stat().st_size for p in (work / f"cache0-{args.num_proc}").rglob("*.arrow"))
        src = sum(os.stat(p).st_size for p in (data / "records500").rglob("*") if p.suffix in (".dat", ".hea"))
        src += sum((data / f).stat().st_size for f in ("ptbxl_database.csv", "scp_statements.csv"))
        print(f"disk    footprint ratio {arrow / src:.3f}  (Arrow {arrow / 2**20:.1f} MiB / source {src / 2**20:.1f} MiB; "
              f"float32 would be about 2x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
