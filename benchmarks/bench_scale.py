"""Scale rehearsal at MIMIC-IV-ECG's size: data build, streaming, memory and report extraction.

Writes a corpus in MIMIC-IV-ECG's exact layout (``record_list.csv``, ``machine_measurements.csv`` with
``report_0`` .. ``report_17``, ``files/pNNNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN.{hea,dat}``, WFDB format 16,
500 Hz, 12 leads x 5,000 samples in MIMIC's lead order) to a temporary folder, then measures:

- the Arrow build (``load_ecg_dataset("mimic_iv_ecg", ...)``) in records/s with 1 and 2 processes,
  each build in its own subprocess, with that subprocess's peak RSS;
- peak RSS of the 1-process build at three corpus sizes (it must stay flat, not grow with the corpus);
- streaming records/s from the source folder into a training ``DataLoader`` (``ECGDataCollator``);
- entity extraction of distinct reports through the corpus runner (``run_extraction``, as the command
  line) against a loopback OpenAI-compatible server, in its own process, that answers every request at
  once with a valid entity list, so that the client's own cost shows: the ``openai`` client
  (``OpenAIBackend``) against the old ``ThreadingHTTPServer`` and against a one-thread asyncio server, and the
  asyncio ``aiohttp`` client (``HTTPChatBackend``) with 1 and 8 reports per request against the asyncio server.
  Client and server share the CPU, so besides wall reports/s each row gives the client process's own CPU
  time (``time.process_time``, all its threads) as reports per client-CPU-second, and the server's share;

and extrapolates each to 800,000 records (the size of MIMIC-IV-ECG). Medians are not needed here: each
figure is one long pass. The CPU is shared with other jobs; rates are what this machine gave then.

    python benchmarks/bench_scale.py                      # 50,000 records, 100,000 reports
    python benchmarks/bench_scale.py --records 2000 --reports 5000   # a quick run
    python benchmarks/bench_scale.py --only extraction --profile     # the extraction clients only

Every record's header is its own file; the signal files are hard links to a pool of distinct
signals (``--distinct_signals``), which keeps the corpus on disk small without changing its layout:
the reader opens, parses and converts every record exactly as it would a real one.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing import Process, Queue
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

FULL_SCALE = 800_000

# Statements in the style of MIMIC-IV-ECG's machine reports (written for this benchmark).
STATEMENTS = [
    "Sinus rhythm", "Sinus tachycardia", "Sinus bradycardia", "Atrial fibrillation", "Atrial flutter",
    "with rapid ventricular response", "with premature ventricular complexes", "Left axis deviation",
    "Right axis deviation", "Left ventricular hypertrophy", "Right bundle branch block",
    "Left bundle branch block", "Incomplete right bundle branch block", "Left anterior fascicular block",
    "1st degree A-V block", "Prolonged QT interval", "Low QRS voltages in limb leads",
    "Possible anterior infarct - age undetermined", "Inferior infarct - age undetermined",
    "ST elevation, consider acute injury", "Nonspecific T wave abnormality", "Lateral ST-T changes",
    "Poor R wave progression", "Possible right atrial abnormality", "Left atrial abnormality",
    "Pacemaker rhythm", "Junctional rhythm", "Premature atrial complexes", "Borderline ECG",
    "Abnormal ECG", "Normal ECG", "Otherwise normal ECG", "Baseline wander", "Artifact in lead(s) V2",
]


# ------------------------------------------------------------------------------------------ the corpus
def _reports(count: int, seed: int) -> list[list[str]]:
    """``count`` distinct statement lists of 1 to 6 statements."""
    rng = random.Random(seed)
    seen, out = set(), []
    while len(out) < count:
        statements = rng.sample(STATEMENTS, rng.randint(1, 6))
        key = tuple(statements)
        if key not in seen:
            seen.add(key)
            out.append(statements)
    return out


def write_corpus(root: Path, records: int, distinct_signals: int, seed: int = 0) -> Path:
    """A MIMIC-IV-ECG tree of ``records`` studies (see the module docstring)."""
    from datasets_scripts.testing import make_mimic_tree

    reports = _reports(records, seed)
    pool = [{"subject_id": 10000000 + i, "study_id": 40000000 + i, "reports": reports[i]}
            for i in range(min(distinct_signals, records))]
    make_mimic_tree(root, pool)
    pool_files = []
    for study in pool:
        subject, study_id = study["subject_id"], study["study_id"]
        folder = root / "files" / f"p{str(subject)[:4]}" / f"p{subject}" / f"s{study_id}"
        pool_files.append((str(study_id), (folder / f"{study_id}.hea").read_text(), folder / f"{study_id}.dat"))
    studies = list(pool)
    # Ten studies per subject, as MIMIC-IV-ECG has several ECGs per patient.
    for i in range(len(pool), records):
        subject, study_id = 11000000 + i // 10, 40000000 + i
        name, header, dat = pool_files[i % len(pool_files)]
        folder = root / "files" / f"p{str(subject)[:4]}" / f"p{subject}" / f"s{study_id}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{study_id}.hea").write_text(header.replace(name, str(study_id)))
        os.link(dat, folder / f"{study_id}.dat")
        studies.append({"subject_id": subject, "study_id": study_id, "reports": reports[i]})
    with open(root / "record_list.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["subject_id", "study_id", "file_name", "ecg_time", "path"])
        for st in studies:
            rel = f"files/p{str(st['subject_id'])[:4]}/p{st['subject_id']}/s{st['study_id']}/{st['study_id']}"
            writer.writerow([st["subject_id"], st["study_id"], st["study_id"], "2180-01-01 00:00:00", rel])
    with open(root / "machine_measurements.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["subject_id", "study_id", "cart_id", "ecg_time", *[f"report_{k}" for k in range(18)],
                         "bandwidth", "filtering", "rr_interval"])
        for st in studies:
            cells = list(st["reports"]) + [""] * (18 - len(st["reports"]))
            writer.writerow([st["subject_id"], st["study_id"], 6848296, "2180-01-01 00:00:00", *cells,
                             "0.005-150 Hz", "60 Hz notch Baseline filter", 800])
    return root


def _subset(root: Path, records: int, out: Path) -> Path:
    """The first ``records`` rows of the corpus's two CSV files, sharing its ``files`` folder."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("record_list.csv", "machine_measurements.csv"):
        with open(root / name) as src, open(out / name, "w") as dst:
            for number, line in enumerate(src):
                if number > records:
                    break
                dst.write(line)
    if not (out / "files").exists():
        (out / "files").symlink_to(root / "files")
    return out


# ------------------------------------------------------------------------------- measured in subprocesses
def _build(data_dir: str, cache_dir: str, num_proc: int, signal_storage: str) -> dict:
    from datasets_scripts import load_ecg_dataset

    start = time.perf_counter()
    splits = load_ecg_dataset("mimic_iv_ecg", data_dir=data_dir, cache_dir=cache_dir, num_proc=num_proc,
                              signal_storage=signal_storage)
    seconds = time.perf_counter() - start
    rows = sum(len(split) for split in splits.values())
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"rows": rows, "seconds": seconds, "rss_mb": own, "worker_rss_mb": workers}


def _stream(data_dir: str, records: int, batch_size: int, num_workers: int) -> dict:
    import torch

    from datasets_scripts import load_ecg_dataset
    from modeling_supreme import ECGProcessor, SuPreMEConfig
    from processing.ecg.data_collator import ECGDataCollator

    splits = load_ecg_dataset("mimic_iv_ecg", data_dir=data_dir, streaming=True, output=None,
                              validation_fraction=0.0, test_fraction=0.0)
    train = splits["train"]
    collator = ECGDataCollator(ECGProcessor.from_config(SuPreMEConfig()), label_column=None)
    loader = torch.utils.data.DataLoader(train, batch_size=batch_size, collate_fn=collator, num_workers=num_workers)
    seen, start = 0, time.perf_counter()
    for batch in loader:
        seen += batch["input_values"].shape[0]
        if seen >= records:
            break
    seconds = time.perf_counter() - start
    return {"rows": seen, "seconds": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _in_subprocess(kind: str, **kwargs) -> dict:
    command = [sys.executable, __file__, "--_measure", json.dumps({"kind": kind, **kwargs})]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------- the loopback LLM servers
ANSWER = json.dumps({"entities": [{"span": "sinus rhythm", "concept": "sinus rhythm", "status": "present"}]})
_BATCH_ID = re.compile(r"^\[(r\d+)\] ", re.MULTILINE)


def _instant_reply(body: bytes) -> bytes:
    """A chat completion for one request: the single-report answer, or one item per id of a batched request."""
    request = json.loads(body)  # a malformed request would be a client bug: fail loudly
    user = request["messages"][-1]["content"]
    ids = _BATCH_ID.findall(user) if user.startswith("ECG reports:") else []
    content = json.dumps({"reports": [{"id": i, "entities": json.loads(ANSWER)["entities"]} for i in ids]}) if ids else ANSWER
    return json.dumps({
        "id": "loopback", "object": "chat.completion", "created": 0, "model": "loopback",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }).encode()


class _InstantChatCompletions(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 (http.server's name)
        reply = _instant_reply(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


class _AsyncioChatCompletions:
    """A minimal HTTP/1.1 keep-alive server on one asyncio loop: one thread, no per-request thread or
    handler object, so that much less of the shared CPU goes to the server than with ThreadingHTTPServer.
    It understands exactly what the two clients send (Content-Length bodies, no chunking)."""

    def __init__(self):
        self.buffer = b""
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            length = 0
            for line in self.buffer[:head_end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            reply = _instant_reply(self.buffer[head_end + 4:end])
            self.buffer = self.buffer[end:]
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                                 % len(reply) + reply)

    def connection_lost(self, exc):
        self.transport = None

    def eof_received(self):
        return False


def _serve(port_queue: Queue, kind: str) -> None:
    if kind == "threading":
        server = ThreadingHTTPServer(("127.0.0.1", 0), _InstantChatCompletions)
        server.daemon_threads = True
        port_queue.put(server.server_address[1])
        server.serve_forever()
        return
    import asyncio

    async def main():
        server = await asyncio.get_running_loop().create_server(
            lambda: type("P", (_AsyncioChatCompletions, asyncio.Protocol), {})(), "127.0.0.1", 0, backlog=1024)
        port_queue.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


def _cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_extraction(count: int, concurrency: int, client: str = "aiohttp", server_kind: str = "asyncio",
                       reports_per_request: int = 1, profile: bool = False) -> dict:
    """Extract ``count`` distinct reports through the corpus runner (the command line's path: hashing,
    dedupe, the JSONL file) against a loopback server in its own process; wall time and the CPU time
    of the client process (all its threads) and of the server process."""
    from datasets_scripts.corpora.mimic_iv_ecg import join_machine_statements
    from processing.reports.entities_file import run_extraction
    from processing.reports.extraction import create_backend

    texts = [join_machine_statements(statements) for statements in _reports(count, seed=1)]
    ports: Queue = Queue()
    server = Process(target=_serve, args=(ports, server_kind), daemon=True)
    server.start()
    work = Path(tempfile.mkdtemp(prefix="supreme-extract-"))
    profilers = []
    try:
        base_url = f"http://127.0.0.1:{ports.get(timeout=30)}/v1"
        kwargs = dict(model="loopback", base_url=base_url, api_key="loopback", concurrency=concurrency,
                      use_encoder=False, max_retries=0, client=client)
        if client == "aiohttp":
            kwargs["reports_per_request"] = reports_per_request
        backend = create_backend("openai", **kwargs)
        batch_size = max(64, concurrency * reports_per_request * 8)  # as examples/extract_entities.py
        try:
            backend.extract_batch(texts[:50])  # warm-up: connections, vocabulary, mapper
            if profile:
                import cProfile

                profilers = [cProfile.Profile()]
                if client == "aiohttp":  # the event loop's thread needs a profiler of its own
                    async def start_loop_profiler():
                        profilers[-1].enable()

                    profilers.append(cProfile.Profile())
                    backend._call(start_loop_profiler())
                profilers[0].enable()
            server_cpu, client_cpu, start = _cpu_seconds(server.pid), time.process_time(), time.perf_counter()
            stats = run_extraction(((str(i), t) for i, t in enumerate(texts)), work / "entities.jsonl", backend,
                                   batch_size=batch_size, progress=False, fsync=False, log=lambda message: None)
            seconds = time.perf_counter() - start
            client_cpu, server_cpu = time.process_time() - client_cpu, _cpu_seconds(server.pid) - server_cpu
            if profilers:
                profilers[0].disable()
                if len(profilers) > 1:
                    async def stop_loop_profiler():
                        profilers[1].disable()

                    backend._call(stop_loop_profiler())
        finally:
            backend.close()
    finally:
        server.terminate()
        server.join()
        shutil.rmtree(work, ignore_errors=True)
    if stats.errors or stats.written != count:
        raise SystemExit(f"{stats.errors} of {count} extractions failed against the loopback server: {stats.error_examples}")
    result = {"rows": count, "seconds": seconds, "client_cpu": client_cpu, "server_cpu": server_cpu}
    if profilers:
        import io
        import pstats

        buffer = io.StringIO()
        merged = pstats.Stats(profilers[0], stream=buffer)
        for extra in profilers[1:]:
            merged.add(extra)
        merged.sort_stats("tottime").print_stats(25)
        result["profile"] = buffer.getvalue()
    return result


EXTRACTION_CONFIGS = (  # (label, client, server, reports per request)
    ("openai client, threading server (before)", "openai", "threading", 1),
    ("openai client, asyncio server", "openai", "asyncio", 1),
    ("aiohttp client, asyncio server", "aiohttp", "asyncio", 1),
    ("aiohttp client, 8 reports/request, asyncio server", "aiohttp", "asyncio", 8),
)


def extraction_table(count: int, concurrency: int, slow_count: int, profile: bool) -> list:
    rows = []
    for label, client, server_kind, per_request in EXTRACTION_CONFIGS:
        n = slow_count if client == "openai" else count
        result = measure_extraction(n, concurrency, client, server_kind, per_request)
        rows.append((label, result))
        wall = n / result["seconds"]
        print(f"{label}: {n:,} reports, {wall:,.0f} reports/s wall, {n / result['client_cpu']:,.0f} per client-CPU-second, "
              f"client CPU {result['client_cpu']:.1f} s, server CPU {result['server_cpu']:.1f} s", flush=True)
    if profile:  # a separate, smaller run: the profiler's own overhead must not enter the table
        result = measure_extraction(min(count, 10_000), concurrency, "aiohttp", "asyncio", 1, profile=True)
        print(f"cProfile of the aiohttp client (1 report/request, {min(count, 10_000):,} reports; both of the client's "
              f"threads, sorted by own time):\n{result['profile']}", flush=True)
    return rows


class _SkipCorpus(Exception):
    """--only extraction: leave out the corpus measurements."""


# ---------------------------------------------------------------------------------------------- the table
def _row(table: list, what: str, result: dict, note: str = "") -> None:
    rate = result["rows"] / result["seconds"]
    hours = FULL_SCALE / rate / 3600
    rss = f"{result['rss_mb']:.0f}" if "rss_mb" in result else "-"
    table.append((what, f"{result['rows']:,}", f"{rate:,.0f}", f"{hours:.2f} h", rss, note))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--_measure":
        spec = json.loads(sys.argv[2])
        kind = spec.pop("kind")
        print(json.dumps(_build(**spec) if kind == "build" else _stream(**spec)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=50_000, help="corpus size (at least 50,000 for the rehearsal)")
    parser.add_argument("--reports", type=int, default=100_000, help="distinct reports for the extraction pass")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight for the extraction client")
    parser.add_argument("--distinct_signals", type=int, default=256)
    parser.add_argument("--stream_records", type=int, default=None, help="records streamed (default: all)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--signal_storage", choices=("float32", "int16"), default="int16",
                        help="Arrow signal column (int16 keeps an 800k-record cache at WFDB size)")
    parser.add_argument("--workdir", default=None, help="where to write the corpus (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the corpus and caches")
    parser.add_argument("--only", choices=("all", "extraction"), default="all",
                        help="extraction: measure the extraction clients only (no corpus)")
    parser.add_argument("--openai_reports", type=int, default=20_000,
                        help="reports for the (slow) openai-client rows of the extraction table")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the aiohttp client's run")
    args = parser.parse_args()

    import torch

    work = Path(tempfile.mkdtemp(prefix="supreme-scale-", dir=args.workdir))
    table: list = []
    try:
        if args.only == "extraction":
            raise _SkipCorpus
        start = time.perf_counter()
        corpus = write_corpus(work / "mimic", args.records, args.distinct_signals)
        print(f"corpus: {args.records:,} records in MIMIC-IV-ECG's layout at {corpus} "
              f"({time.perf_counter() - start:.0f} s to write)", flush=True)
        sizes = sorted({max(args.records // 4, 1), max(args.records // 2, 1), args.records})
        for size in sizes:
            data_dir = corpus if size == args.records else _subset(corpus, size, work / f"subset-{size}")
            result = _in_subprocess("build", data_dir=str(data_dir), cache_dir=str(work / f"cache-{size}-1"),
                                    num_proc=1, signal_storage=args.signal_storage)
            _row(table, "Arrow build, 1 process", result, f"{args.signal_storage} signals")
            print(table[-1], flush=True)
            shutil.rmtree(work / f"cache-{size}-1", ignore_errors=True)
        result = _in_subprocess("build", data_dir=str(corpus), cache_dir=str(work / "cache-2"), num_proc=2,
                                signal_storage=args.signal_storage)
        _row(table, "Arrow build, 2 processes", result, f"worker peak RSS {result['worker_rss_mb']:.0f} MB")
        print(table[-1], flush=True)
        shutil.rmtree(work / "cache-2", ignore_errors=True)
        stream_records = args.stream_records or args.records
        for workers in (0, 2):
            result = _in_subprocess("stream", data_dir=str(corpus), records=stream_records,
                                    batch_size=args.batch_size, num_workers=workers)
            _row(table, f"streaming into a DataLoader, {workers} workers", result,
                 f"batch {args.batch_size}, ECGDataCollator")
            print(table[-1], flush=True)
    except _SkipCorpus:
        pass
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    extraction = extraction_table(args.reports, args.concurrency, args.openai_reports, args.profile)
    for label, result in extraction:
        share = result["server_cpu"] / (result["server_cpu"] + result["client_cpu"])
        _row(table, f"entity extraction, {label}", result,
             f"concurrency {args.concurrency}; {result['rows'] / result['client_cpu']:,.0f} reports per client-CPU-s "
             f"({FULL_SCALE / (result['rows'] / result['client_cpu']) / 3600:.2f} client-CPU-h for 800k); "
             f"server's share of the CPU {share:.0%}")

    print(f"\ntorch {torch.__version__}, {os.cpu_count()} CPUs (shared with other jobs); "
          f"extrapolated to {FULL_SCALE:,} records\n")
    header = ("what", "records", "records/s", f"{FULL_SCALE // 1000}k at this rate", "peak RSS MB", "notes")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in table:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
