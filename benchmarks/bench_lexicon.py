"""Speed of the lexicon extractor on one core: reports per second, median of several runs.

The corpus is the real PTB-XL reports of ``../shared/data`` (German, English, Swedish) when present,
else a fixed set of report-like sentences; it is repeated to ``--reports`` reports. Caches inside the
extractor (folded tokens) are warm after the first run, as they are in a long extraction.

Two figures: the extractor alone, and end to end through ``run_extraction`` into a temporary entities
file (hashing, JSON, flush + fsync per batch of 1024). For the end-to-end figure every report is made
unique (a record number is appended), so deduplication does not flatter it.

Run: ``python benchmarks/bench_lexicon.py [--reports 20000] [--runs 5]``
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from processing.reports.entities_file import run_extraction
from processing.reports.extraction import LexiconBackend
from processing.reports.lexicon import LexiconExtractor

FALLBACK_REPORTS = [
    "sinusrhythmus normales ekg",
    "sinus rhythm. left axis deviation. left anterior fascicular block.",
    "vorhofflimmern mit schneller überleitung, kein linksschenkelblock, v.a. inferiorer infarkt",
    "sinusbradykardie sonst normales ekg",
    "Sinus rhythm with 1st degree A-V block. Possible anterior infarct - age undetermined. Abnormal ECG",
    "sinusrytm vänster el-axel inget säkert patologiskt",
]


def load_reports() -> list:
    shared = Path(os.environ.get("SUPREME_SHARED_DATA", REPO.parent / "shared" / "data"))
    path = shared / "ptbxl" / "ptbxl_database.csv"
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as handle:
            reports = [row["report"] for row in csv.DictReader(handle) if row["report"]]
        return reports, f"{len(reports)} PTB-XL reports"
    return FALLBACK_REPORTS, "built-in sentences (PTB-XL not found)"


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as the target says

    base, source = load_reports()
    corpus = (base * (args.reports // len(base) + 1))[: args.reports]
    started = time.perf_counter()
    extractor = LexiconExtractor()
    build_seconds = time.perf_counter() - started
    mean_chars = sum(map(len, corpus)) / len(corpus)
    rates = []
    entities = 0
    for _ in range(args.runs):
        started = time.perf_counter()
        entities = sum(len(extractor.extract(text)) for text in corpus)
        rates.append(len(corpus) / (time.perf_counter() - started))
    median = statistics.median(rates)
    print(f"corpus: {source}, repeated to {len(corpus)} reports, mean {mean_chars:.0f} characters, {entities} entities per pass")
    print(f"extractor build: {build_seconds:.2f} s")
    print("extractor runs (reports/s): " + ", ".join(f"{r:,.0f}" for r in rates))
    print(f"lexicon speed, median of {args.runs} runs on one core: {median:,.0f} reports/s")

    unique = [(str(i), f"{text} #{i}") for i, text in enumerate(corpus)]
    backend = LexiconBackend()
    file_rates = []
    with tempfile.TemporaryDirectory() as folder:
        for run in range(args.runs):
            path = Path(folder) / f"entities{run}.jsonl"
            stats = run_extraction(unique, path, backend, batch_size=1024, progress=False, log=lambda message: None)
            file_rates.append(stats.written / stats.seconds)
    file_median = statistics.median(file_rates)
    print("end-to-end runs into an entities file, all reports unique (reports/s): " + ", ".join(f"{r:,.0f}" for r in file_rates))
    print(f"end-to-end speed, median of {args.runs} runs on one core: {file_median:,.0f} reports/s")
    return median


if __name__ == "__main__":
    main()
