"""The feature extractor's costs per record, on real PTB-XL records at 500 Hz: the figures its comments quote.

Prints, in one run: the fp32 matmul peak (to name the machine's speed), the 500 -> 100 Hz decimation of a
12 x 5,000 record (the extractor's matrix product against ``scipy.signal.resample_poly`` with the same
filter, on one record repeated and over distinct records), the amplitude check, and the whole extractor per
record at 100 Hz and 500 Hz model rates. Medians over repeats.

    python benchmarks/bench_feature_extraction.py [--records 64] [--repeats 300] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from processing.ecg.feature_extraction_supreme import ECGFeatureExtractor, _decimate, _resampling_taps
from processing.ecg.wfdb_reader import amplitude_issues, read_wfdb_record


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=os.environ.get("SUPREME_SHARED_DATA", "../shared/data"))
    parser.add_argument("--records", type=int, default=64, help="distinct 500 Hz PTB-XL records")
    parser.add_argument("--repeats", type=int, default=300, help="timed calls per single-record figure")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.records < 1 or args.repeats < 1:
        parser.error("--records and --repeats must be at least 1")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    folder = Path(args.data_dir) / "ptbxl" / "records500"
    paths = sorted(folder.glob("*/*_hr.hea"))[: args.records]
    if not paths:
        parser.error(f"no PTB-XL 500 Hz records under {folder}; pass --data_dir")
    records = [read_wfdb_record(path.with_suffix(""), warn=False) for path in paths]
    signals = [record.signal for record in records]
    rows = [{"signal": r.signal, "sampling_rate": r.sampling_rate, "lead_names": list(r.lead_names)} for r in records]

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    peak = 2 * 2048**3 / (median_ms(lambda: torch.mm(a, b), 7) / 1e3)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; fp32 matmul peak {peak / 1e12:.3f} TFLOP/s; "
          f"{len(records)} PTB-XL records at 500 Hz")

    from scipy.signal import resample_poly

    one, taps = signals[0], _resampling_taps(1, 5)
    ours = median_ms(lambda: _decimate(one, 5), args.repeats)
    scipy_ms = median_ms(lambda: resample_poly(one, 1, 5, axis=1, window=taps.astype(one.dtype)), args.repeats)
    gap = float(np.abs(_decimate(one, 5) - resample_poly(one, 1, 5, axis=1, window=taps.astype(one.dtype))).max())
    print(f"500 -> 100 Hz decimation, one 12 x 5,000 record repeated: matrix product {ours:.3f} ms, "
          f"resample_poly {scipy_ms:.3f} ms ({scipy_ms / ours:.1f}x); largest difference {gap:.1e} mV")

    def over_records(fn) -> float:
        return statistics.median(median_ms(lambda: [fn(s) for s in signals], 1) for _ in range(5)) / len(signals)

    print(f"500 -> 100 Hz decimation over the {len(signals)} distinct records: "
          f"{over_records(lambda s: _decimate(s, 5)):.3f} ms per record")
    names = list(records[0].lead_names)
    print(f"amplitude check (`amplitude_issues`), one record repeated: "
          f"{median_ms(lambda: amplitude_issues(one, names), args.repeats) * 1e3:.1f} us")
    for rate in (100, 500):
        extractor = ECGFeatureExtractor(sampling_rate=rate, num_samples=10 * rate)
        per_record = statistics.median(
            median_ms(lambda: [extractor(row, return_tensors="pt") for row in rows], 1) for _ in range(5)
        ) / len(rows)
        print(f"whole feature extractor per record, 500 Hz in, model at {rate} Hz: {per_record:.3f} ms "
              f"({1e3 / per_record:,.0f} records/s)")


if __name__ == "__main__":
    main()
