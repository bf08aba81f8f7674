"""The entities file: JSON Lines written append-only, flushed per batch, resumable after any kill.

One line per report::

    {"record_id": "1", "report_sha256": "...", "backend": "lexicon", "model": "lexicon/vocabulary-1.0.0",
     "entities": [{"span": "...", "concept": "...", "status": "present"}], "unmapped": [], "error": null}

Crash safety: a batch's lines are written with one ``write`` call followed by ``flush`` and ``fsync``.
A kill can therefore leave at most one incomplete line, the last one. On start, :func:`run_extraction`
reads the existing file, keeps every complete line, cuts an incomplete last line off (a last line that
parses but lacks its newline gets the newline), and skips every ``record_id`` already present. Records of
the batch that was being written are extracted again; records already on disk are never written twice.

One writer per file: a run holds an exclusive ``flock`` on ``<output>.lock``; a second run on the same
file is refused (:class:`OutputLocked`, a ``ValueError``) instead of writing every record again. A
killed run's lock is released by the kernel. An empty or whitespace-only report is not extracted: its
line has ``"no_report": true`` (no entities, no error) and pre-training leaves the record out.

Identical report texts are extracted once per run: later copies, and reports whose text was already
extracted in an earlier run of the same file, reuse the stored result (their ``record_id`` differs, the
``report_sha256`` is the same).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, Optional, Tuple, Union

from .result import ExtractionResult, ReportInput, decode_report

REQUIRED_FIELDS = ("record_id", "report_sha256", "backend", "model", "entities", "error")
PathLike = Union[str, os.PathLike]


@dataclass
class ExtractionStats:
    """What a :func:`run_extraction` call did."""

    output: str = ""
    already_done: int = 0  # records skipped because the file had them
    duplicate_ids: int = 0  # records skipped because their id came twice in the input
    written: int = 0  # lines appended by this run
    extracted: int = 0  # distinct report texts sent to the backend
    reused: int = 0  # lines whose result came from an identical report text
    errors: int = 0  # lines written with an error
    no_report: int = 0  # lines of records whose report is empty or whitespace-only (marked, not extracted)
    repaired_tail: bool = False  # an incomplete last line was found and removed
    seconds: float = 0.0
    error_examples: list = field(default_factory=list)

    @property
    def dedupe_ratio(self) -> float:
        """Share of written lines whose report text was not extracted again (identical to an earlier one)."""
        return self.reused / self.written if self.written else 0.0

    def summary(self) -> str:
        """One human-readable paragraph."""
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        text = (f"{self.output}: wrote {self.written} records in {self.seconds:.1f} s ({rate:,.0f} reports/s); "
                f"skipped {self.already_done} already done"
                + (f" and {self.duplicate_ids} repeated record ids" if self.duplicate_ids else "")
                + f"; {self.extracted} distinct report texts extracted, {self.reused} reports reused an identical text "
                f"(dedupe ratio {self.dedupe_ratio:.1%}); {self.errors} errors"
                + (f"; {self.no_report} records without a report (marked no_report, left out of pre-training targets)"
                   if self.no_report else ""))
        if self.repaired_tail:
            text += "; an incomplete last line from an interrupted run was removed"
        return text


@dataclass
class _FileState:
    done: Dict[str, bool]  # record_id -> has error
    results: Dict[str, dict]  # report_sha256 -> record of a successful extraction
    backends: set
    repaired_tail: bool


class OutputLocked(ValueError):
    """Another process is writing the same entities file."""


class _WriterLock:
    """An exclusive ``flock`` on ``<output>.lock`` for as long as one run writes ``output``.

    The kernel releases a flock when its process ends, however it ends, so a killed run never
    leaves the file locked. The lock file is removed on a clean exit; a second writer that opened
    the old file just before is caught by comparing inodes after locking.
    """

    def __init__(self, output: Path):
        self.path = output.with_name(output.name + ".lock")
        self.handle = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock (documented)
            return self
        while True:
            handle = open(self.path, "a+")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                handle.close()
                raise OutputLocked(
                    f"{self.path.with_suffix('') if self.path.suffix == '.lock' else self.path}: another extraction "
                    f"(pid {holder}) is writing this file; wait for it to finish or write to another --output"
                ) from None
            try:
                same = os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()  # the lock file was replaced while we waited: lock the current one
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.handle.close()  # releases the flock
            self.handle = None
        return False


def _parse_line(line: str, path: PathLike, number: int) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: line {number} is not valid JSON ({error.msg} at column {error.colno}); "
                         "only the last line of an entities file can be incomplete") from None
    if not isinstance(record, dict) or any(f not in record for f in REQUIRED_FIELDS):
        missing = [f for f in REQUIRED_FIELDS if not isinstance(record, dict) or f not in record]
        raise ValueError(f"{path}: line {number} is not an entities record (missing {missing})")
    return record


def _scan(path: Path, repair: bool) -> _FileState:
    state = _FileState(done={}, results={}, backends=set(), repaired_tail=False)
    if not path.exists():
        return state
    with open(path, "rb") as handle:
        data = handle.read()
    if not data:
        return state
    complete_end = data.rfind(b"\n") + 1  # bytes up to and including the last newline
    tail = data[complete_end:]
    body = data[:complete_end].decode("utf-8")
    lines = body.split("\n")[:-1] if body else []
    tail_record = None
    if tail.strip():
        try:
            tail_record = _parse_line(tail.decode("utf-8"), path, len(lines) + 1)
        except (ValueError, UnicodeDecodeError):
            tail_record = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        _remember(state, _parse_line(line, path, number))
    if tail:
        if tail_record is not None:
            _remember(state, tail_record)
        if repair:
            with open(path, "r+b") as handle:
                if tail_record is not None:
                    handle.seek(len(data))
                    handle.write(b"\n")  # a complete record that lost only its newline
                else:
                    handle.truncate(complete_end)
                    state.repaired_tail = True
                handle.flush()
                os.fsync(handle.fileno())
    return state


def _remember(state: _FileState, record: dict) -> None:
    record_id = str(record["record_id"])
    state.done[record_id] = record.get("error") is not None
    state.backends.add((record["backend"], record["model"]))
    if record.get("error") is None:
        state.results.setdefault(record["report_sha256"], record)


def iter_entities_file(path: PathLike) -> Iterator[dict]:
    """Records of an entities file in file order; an incomplete last line is ignored."""
    path = Path(path)
    with open(path, "rb") as handle:
        data = handle.read()
    complete_end = data.rfind(b"\n") + 1
    for number, line in enumerate(data[:complete_end].decode("utf-8").split("\n")[:-1], start=1):
        if line.strip():
            yield _parse_line(line, path, number)
    tail = data[complete_end:]
    if tail.strip():
        try:
            yield _parse_line(tail.decode("utf-8"), path, data.count(b"\n") + 1)
        except (ValueError, UnicodeDecodeError):
            return


def read_entities_file(path: PathLike) -> Dict[str, dict]:
    """``record_id -> record`` of an entities file; when an id occurs twice (``retry_errors``) the last line wins."""
    return {str(r["record_id"]): r for r in iter_entities_file(path)}


def run_extraction(
    records: Iterable[Tuple[str, ReportInput]],
    output: PathLike,
    backend,
    *,
    batch_size: int = 256,
    progress: bool = True,
    total: Optional[int] = None,
    retry_errors: bool = False,
    allow_mixed: bool = False,
    fsync: bool = True,
    log: Optional[Callable[[str], None]] = None,
) -> ExtractionStats:
    """Extract entities of ``(record_id, report)`` pairs into a resumable JSONL file.

    Args:
        records: ``(record_id, report)`` pairs; reports may be str, bytes or None.
        output: the entities file; created if missing, else resumed.
        backend: a backend object from :func:`processing.entity_extraction.create_backend`.
        batch_size: records per batch; each batch is written and flushed at once.
        progress: show a tqdm bar with reports/s.
        total: number of records, for the progress bar.
        retry_errors: extract again records whose line has an error (a new line is appended; readers
            keep the last line per record).
        allow_mixed: allow appending to a file written by another backend or model.
        fsync: ``os.fsync`` after every batch (durability against power loss, not only kills).
        log: where to print the summary (default: stderr); None-like callables silence it.

    Raises:
        ValueError: the file is corrupt before its last line, or was written by another backend/model.
    """
    path = Path(output)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    with _WriterLock(path):
        return _run_extraction_locked(records, path, backend, batch_size=batch_size, progress=progress, total=total,
                                      retry_errors=retry_errors, allow_mixed=allow_mixed, fsync=fsync, log=log)


def _run_extraction_locked(records, path: Path, backend, *, batch_size, progress, total, retry_errors, allow_mixed,
                           fsync, log) -> ExtractionStats:
    started = time.perf_counter()
    state = _scan(path, repair=True)
    backend_id = (backend.name, backend.model_name)
    others = state.backends - {backend_id}
    if others and not allow_mixed:
        found = ", ".join(f"{b}/{m}" for b, m in sorted(others))
        raise ValueError(f"{path} holds results of {found}, not of {backend_id[0]}/{backend_id[1]}; "
                         "write to another file or pass allow_mixed=True (--allow_mixed)")
    cache: Dict[str, Tuple[list, list]] = {
        sha: (rec["entities"], rec.get("unmapped", [])) for sha, rec in state.results.items()
        if (rec["backend"], rec["model"]) == backend_id
    }
    done = {rid for rid, has_error in state.done.items() if not (retry_errors and has_error)}
    stats = ExtractionStats(output=str(path), repaired_tail=state.repaired_tail)
    emit = log if log is not None else (lambda message: print(message, file=sys.stderr))
    if state.repaired_tail:
        emit(f"{path}: removed an incomplete last line left by an interrupted run; its record is extracted again")
    if state.done:
        emit(f"{path}: resuming, {len(done)} records already done")

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="report", desc=f"entities ({backend.name})", dynamic_ncols=True)
    batch_ids: list = []
    batch_texts: list = []
    batch_shas: list = []
    seen_in_input = set()

    # The file is opened at the first write, so a run that fails before it (a CSV error on its first
    # row, no records) leaves no empty entities file behind.
    opened: list = []

    def handle_for_writing():
        if not opened:
            opened.append(open(path, "a", encoding="utf-8", newline="\n"))
        return opened[0]

    try:

        def flush_batch() -> None:
            if not batch_ids:
                return
            todo = {}
            for text, sha in zip(batch_texts, batch_shas):
                if not text.strip():  # no report: nothing to extract
                    continue
                if sha not in cache and sha not in todo:
                    todo[sha] = text
            fresh: Dict[str, ExtractionResult] = {}
            if todo:
                results = backend.extract_batch(list(todo.values()))
                if len(results) != len(todo):
                    raise RuntimeError(f"backend {backend.name} returned {len(results)} results for {len(todo)} reports")
                fresh = dict(zip(todo.keys(), results))
                stats.extracted += len(todo)
                for sha, result in fresh.items():
                    if result.error is None:
                        cache[sha] = (result.entities, result.unmapped)
            lines = []
            for record_id, sha, text in zip(batch_ids, batch_shas, batch_texts):
                if not text.strip():
                    # Marked as having no report, so that pre-training leaves it out instead of taking it as a
                    # negative for every concept.
                    record = ExtractionResult([], [], None, backend_id[0], backend_id[1]).to_record(record_id, sha)
                    record["no_report"] = True
                    stats.no_report += 1
                    lines.append(json.dumps(record, ensure_ascii=False) + "\n")
                    continue
                if sha in fresh:
                    result = fresh.pop(sha)  # the first record of this text carries the fresh result
                    record = result.to_record(record_id, sha)
                elif sha in cache:
                    entities, unmapped = cache[sha]
                    record = ExtractionResult(entities, unmapped, None, backend_id[0], backend_id[1]).to_record(record_id, sha)
                    stats.reused += 1
                else:  # an identical text in this batch failed: it shares that failure
                    record = previous_errors[sha].to_record(record_id, sha)
                    stats.reused += 1
                if record["error"] is not None:
                    stats.errors += 1
                    previous_errors[sha] = ExtractionResult([], [], record["error"], backend_id[0], backend_id[1])
                    if len(stats.error_examples) < 5:
                        stats.error_examples.append((record_id, record["error"]))
                lines.append(json.dumps(record, ensure_ascii=False) + "\n")
            handle = handle_for_writing()
            handle.write("".join(lines))
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
            stats.written += len(lines)
            done.update(batch_ids)
            if bar is not None:
                bar.update(len(lines))
                bar.set_postfix(errors=stats.errors, dedupe=f"{stats.dedupe_ratio:.0%}", refresh=False)
            batch_ids.clear()
            batch_texts.clear()
            batch_shas.clear()

        previous_errors: Dict[str, ExtractionResult] = {}
        for record_id, report in records:
            record_id = str(record_id)
            if record_id in done:
                stats.already_done += 1
                if bar is not None:
                    bar.update(1)
                continue
            if record_id in seen_in_input:
                stats.duplicate_ids += 1
                continue
            seen_in_input.add(record_id)
            text, raw = decode_report(report)
            batch_ids.append(record_id)
            batch_texts.append(text)
            batch_shas.append(hashlib.sha256(raw).hexdigest())
            if len(batch_ids) >= batch_size:
                flush_batch()
        flush_batch()
    finally:
        if opened:
            opened[0].close()
        if bar is not None:
            bar.close()
    stats.seconds = time.perf_counter() - started
    emit(stats.summary())
    return stats
