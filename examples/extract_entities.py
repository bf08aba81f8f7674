"""Extract cardiac entities from the reports of a corpus into a resumable JSON Lines file.

Examples::

    # deterministic, no model (default backend)
    python examples/extract_entities.py --dataset ptbxl --data_dir ../shared/data/ptbxl --output entities.jsonl

    # any OpenAI-compatible server (vLLM, llama.cpp, Ollama, hosted); the key is read from an env variable
    python examples/extract_entities.py --dataset mimic_iv_ecg --data_dir /data/mimic-iv-ecg \\
        --backend openai --base_url http://localhost:8000/v1 --model meta-llama/Llama-3.3-70B-Instruct \\
        --concurrency 64 --timeout 120 --max_retries 3 --output mimic_entities.jsonl
    # (--client openai uses the official openai client; --reports_per_request 8 puts 8 reports in a request)

    # a local causal LM through transformers
    python examples/extract_entities.py --reports_csv reports.csv --id_column id --text_column text \\
        --backend transformers --model /models/qwen2.5-7b-instruct --batch_size 16 --output entities.jsonl

Run the same command again after an interruption: records already in the file are skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Iterator, Optional, Tuple

from datasets_scripts import parse_corpus_args
from processing.reports.entities_file import run_extraction
from processing.reports.extraction import BACKENDS, OPENAI_CLIENTS, create_backend


def iter_csv_reports(path: str, id_column: str, text_column: str) -> Iterator[Tuple[str, str]]:
    """``(record_id, report)`` rows of a CSV file; the header is checked before the first row is yielded.

    The file is read as UTF-8; bytes that are not UTF-8 reach the extractor as escaped bytes and are
    decoded there per report (Windows-1252, then Latin-1), so one legacy-encoded row does not stop a run.
    """
    from processing.csv_files import CSVRows

    try:
        reader = CSVRows(path, errors="surrogateescape")
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    missing = [c for c in (id_column, text_column) if c not in reader.fieldnames]
    if missing:
        reader.close()
        raise SystemExit(f"{path}: no column(s) {missing}; columns are {reader.fieldnames}")

    def rows() -> Iterator[Tuple[str, str]]:
        for _, row in reader:  # an over-long field is a ValueError naming the file and line
            yield row[id_column], row[text_column] or ""

    return rows()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    source = parser.add_argument_group("reports")
    source.add_argument("--dataset", help="corpus name for datasets_scripts.iter_reports: ptbxl, mimic_iv_ecg, synthetic")
    source.add_argument("--data_dir", help="the corpus folder as downloaded")
    source.add_argument("--dataset_arg", action="append", metavar="KEY=VALUE", help="extra iter_reports argument (e.g. num_records=100)")
    source.add_argument("--reports_csv", help="read reports from this CSV instead of a corpus")
    source.add_argument("--id_column", default="record_id", help="CSV column with the record id")
    source.add_argument("--text_column", default="report", help="CSV column with the report text")
    source.add_argument("--limit", type=int, help="stop after this many records (for trials)")
    out = parser.add_argument_group("output")
    out.add_argument("--output", required=True, help="entities JSONL file (resumed if it exists)")
    out.add_argument("--batch_size", type=int, default=None, help="records per written batch (lexicon 1024, LLMs 64)")
    out.add_argument("--retry_errors", action="store_true", help="extract again the records whose line has an error")
    out.add_argument("--allow_mixed", action="store_true", help="allow appending to a file of another backend/model")
    out.add_argument("--no_progress", action="store_true")
    llm = parser.add_argument_group("backend")
    llm.add_argument("--backend", choices=BACKENDS, default="lexicon")
    llm.add_argument("--model", help="LLM: model folder (transformers) or served model name (openai)")
    llm.add_argument("--base_url", help="openai: server URL, e.g. http://localhost:8000/v1")
    llm.add_argument("--api_key_env", default="OPENAI_API_KEY",
                     help="openai: name of the environment variable holding the API key (never pass a key on the command line)")
    llm.add_argument("--client", choices=OPENAI_CLIENTS, default="aiohttp",
                     help="openai: the lean asyncio aiohttp client (default) or the official openai client")
    llm.add_argument("--reports_per_request", type=int, default=1,
                     help="openai, aiohttp client: reports per request (answers keyed by id, checked strictly)")
    llm.add_argument("--no_batch_fallback", action="store_true",
                     help="openai, aiohttp client: do not ask again alone a report a batched answer got wrong")
    llm.add_argument("--concurrency", type=int, default=8, help="openai: requests in flight")
    llm.add_argument("--timeout", type=float, default=60.0, help="openai: seconds per request")
    llm.add_argument("--max_retries", type=int, default=2, help="openai: retries per request (exponential back-off)")
    llm.add_argument("--json_mode", action="store_true", help="openai: ask the server for response_format=json_object")
    llm.add_argument("--max_new_tokens", type=int, default=512, help="LLM: answer budget in tokens")
    llm.add_argument("--llm_batch_size", type=int, default=8, help="transformers: reports generated together")
    llm.add_argument("--device", help="transformers: device, e.g. cuda:0")
    llm.add_argument("--similarity_threshold", type=float, default=0.80, help="LLM concept mapping: cosine threshold")
    llm.add_argument("--no_encoder_mapping", action="store_true", help="LLM concept mapping: synonyms and lexicon only")
    llm.add_argument("--no_vocabulary_in_prompt", action="store_true", help="LLM: do not list the vocabulary names in the prompt")
    return parser


def make_backend(args):
    if args.backend == "lexicon":
        return create_backend("lexicon")
    common = dict(similarity_threshold=args.similarity_threshold, use_encoder=not args.no_encoder_mapping,
                  include_vocabulary=not args.no_vocabulary_in_prompt)
    if not args.model:
        raise SystemExit(f"--backend {args.backend} needs --model")
    if args.backend == "openai":
        if args.client == "aiohttp":
            common.update(reports_per_request=args.reports_per_request, batch_fallback=not args.no_batch_fallback)
        elif args.reports_per_request != 1:
            raise SystemExit("--reports_per_request needs --client aiohttp")
        try:
            return create_backend("openai", client=args.client, model=args.model, base_url=args.base_url,
                                  api_key=os.environ.get(args.api_key_env), concurrency=args.concurrency,
                                  timeout=args.timeout, max_retries=args.max_retries, max_tokens=args.max_new_tokens,
                                  json_mode=args.json_mode, **common)
        except ValueError as error:
            raise SystemExit(f"error: {error}")
    return create_backend("transformers", model=args.model, batch_size=args.llm_batch_size,
                          max_new_tokens=args.max_new_tokens, device=args.device, **common)


def record_source(args) -> Tuple[Iterator[Tuple[str, str]], Optional[int]]:
    if args.reports_csv:
        return iter_csv_reports(args.reports_csv, args.id_column, args.text_column), None
    if not args.dataset:
        raise SystemExit("give --dataset (with --data_dir) or --reports_csv")
    from datasets_scripts import iter_reports

    try:
        return iter_reports(args.dataset, args.data_dir, **parse_corpus_args(args.dataset_arg)), None
    except ValueError as error:
        raise SystemExit(str(error))


def limited(records, limit):
    for index, record in enumerate(records):
        if limit is not None and index >= limit:
            return
        yield record


def main(argv=None):
    args = build_parser().parse_args(argv)
    records, total = record_source(args)
    backend = make_backend(args)
    # openai: enough records per written batch to keep every connection busy (a batch waits for its slowest request)
    per_request = args.reports_per_request if args.backend == "openai" and args.client == "aiohttp" else 1
    batch_size = args.batch_size or (1024 if args.backend == "lexicon" else max(64, args.concurrency * per_request * 8))
    try:
        stats = run_extraction(limited(records, args.limit), args.output, backend, batch_size=batch_size,
                               progress=not args.no_progress, total=args.limit or total, retry_errors=args.retry_errors,
                               allow_mixed=args.allow_mixed)
    except ValueError as error:
        raise SystemExit(f"error: {error}")
    finally:
        backend.close()
    for record_id, message in stats.error_examples:
        print(f"  error in record {record_id}: {message}", file=sys.stderr)
    return stats


if __name__ == "__main__":
    main()
