"""The resumable entities file and the extraction script: kills at any moment, resume, dedupe, refusals."""

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from processing.reports.entities_file import iter_entities_file, read_entities_file, run_extraction
from processing.reports.extraction import LexiconBackend, report_sha256

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "extract_entities.py"

SENTENCES = ["Sinusrhythmus, normales EKG.", "Vorhofflimmern. Kein LSB.", "V.a. Hinterwandinfarkt", "sinus rhythm. normal ecg.",
             "sinusrytm vänster el-axel", "ST-Senkung in V5, V6; QT-Verlängerung", "premature ventricular contraction(s).",
             "AV-Block I. Grades", "", "Linksschenkelblock, überdrehter Linkstyp"]


def corpus(n, seed=0):
    rng = random.Random(seed)
    return [(f"rec{i}", rng.choice(SENTENCES) + ("" if i % 4 else f" Befund {i}")) for i in range(n)]


@pytest.fixture(scope="module")
def backend():
    return LexiconBackend()


def quiet(message):
    pass


def reference(records, backend):
    return {rid: backend.extract_one(text).entities for rid, text in records}


class Killed(Exception):
    pass


def killed_after(records, n):
    """Yield records, then die after ``n`` of them, like a process killed mid-batch."""
    for index, record in enumerate(records):
        if index == n:
            raise Killed()
        yield record


def check_complete(path, records, backend):
    lines = list(iter_entities_file(path))
    ids = [line["record_id"] for line in lines]
    assert len(ids) == len(set(ids)), "a record was written twice"
    assert sorted(ids) == sorted(rid for rid, _ in records), "a record was lost"
    expected = reference(records, backend)
    texts = dict(records)
    for line in lines:
        assert line["entities"] == expected[line["record_id"]]
        assert line["report_sha256"] == report_sha256(texts[line["record_id"]])
        assert line["error"] is None and line["backend"] == "lexicon"
    assert Path(path).read_bytes().endswith(b"\n")


def test_first_run_writes_one_line_per_record_with_the_design_fields(tmp_path, backend):
    records = corpus(120)
    out = tmp_path / "e.jsonl"
    stats = run_extraction(records, out, backend, batch_size=25, progress=False, log=quiet)
    check_complete(out, records, backend)
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert list(first) == ["record_id", "report_sha256", "backend", "model", "entities", "unmapped", "error"]
    assert stats.written == 120 and stats.extracted + stats.reused + stats.no_report == 120 and stats.no_report > 0
    # 10 sentences, three quarters of the records without a numbered suffix: many identical reports.
    assert stats.extracted < 50 and stats.dedupe_ratio > 0.5


def test_resume_after_a_kill_between_and_inside_batches(tmp_path, backend):
    records = corpus(300)
    out = tmp_path / "e.jsonl"
    with pytest.raises(Killed):
        run_extraction(killed_after(records, 137), out, backend, batch_size=40, progress=False, log=quiet)
    written = list(iter_entities_file(out))
    assert len(written) == 120  # three complete batches; the batch in progress was not written
    messages = []
    stats = run_extraction(records, out, backend, batch_size=40, progress=False, log=messages.append)
    assert stats.already_done == 120 and stats.written == 180
    assert any("resuming, 120 records already done" in m for m in messages)
    assert any("dedupe ratio" in m for m in messages)
    check_complete(out, records, backend)


def test_resume_after_a_kill_in_the_middle_of_any_line(tmp_path, backend):
    records = corpus(40, seed=1)
    full = tmp_path / "full.jsonl"
    run_extraction(records, full, backend, batch_size=7, progress=False, log=quiet)
    data = full.read_bytes()
    newline_positions = [i for i, b in enumerate(data) if b == 10]
    cuts = set(random.Random(3).sample(range(1, len(data)), 60))
    for position in newline_positions[:5] + newline_positions[-3:]:
        cuts.update({position - 1, position, position + 1})  # around line ends: no newline, bare newline
    for cut in sorted(c for c in cuts if 0 < c < len(data)):
        out = tmp_path / f"cut{cut}.jsonl"
        out.write_bytes(data[:cut])
        messages = []
        run_extraction(records, out, backend, batch_size=7, progress=False, log=messages.append)
        check_complete(out, records, backend)
        if data[cut - 1:cut] != b"\n" and data[cut:cut + 1] != b"\n":
            assert any("incomplete last line" in m for m in messages), cut


def test_complete_last_line_without_newline_is_kept(tmp_path, backend):
    records = corpus(10)
    out = tmp_path / "e.jsonl"
    run_extraction(records, out, backend, batch_size=3, progress=False, log=quiet)
    out.write_bytes(out.read_bytes().rstrip(b"\n"))
    stats = run_extraction(records, out, backend, batch_size=3, progress=False, log=quiet)
    assert stats.written == 0 and stats.already_done == 10 and not stats.repaired_tail
    check_complete(out, records, backend)


def test_corrupt_line_before_the_end_is_refused(tmp_path, backend):
    records = corpus(10)
    out = tmp_path / "e.jsonl"
    run_extraction(records, out, backend, batch_size=3, progress=False, log=quiet)
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[3] = lines[3][:20] + "\n"
    out.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(ValueError, match=r"e\.jsonl: line 4 is not valid JSON"):
        run_extraction(records, out, backend, progress=False, log=quiet)
    lines[3] = json.dumps({"record_id": "x"}) + "\n"
    out.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 4 is not an entities record \(missing \['report_sha256'"):
        read_entities_file(out)


def test_file_of_another_backend_is_refused_unless_mixing_is_allowed(tmp_path, backend):
    out = tmp_path / "e.jsonl"
    other = {"record_id": "a", "report_sha256": "0", "backend": "openai", "model": "llama-70b", "entities": [], "error": None}
    out.write_text(json.dumps(other) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds results of openai/llama-70b, not of lexicon/"):
        run_extraction([("b", "Sinusrhythmus")], out, backend, progress=False, log=quiet)
    stats = run_extraction([("a", "x"), ("b", "Sinusrhythmus")], out, backend, progress=False, log=quiet, allow_mixed=True)
    assert stats.written == 1 and stats.already_done == 1


def test_errors_are_skipped_on_resume_unless_retried(tmp_path, backend):
    out = tmp_path / "e.jsonl"
    failed = {"record_id": "a", "report_sha256": report_sha256("Sinusrhythmus"), "backend": backend.name,
              "model": backend.model_name, "entities": [], "unmapped": [], "error": "request failed"}
    out.write_text(json.dumps(failed) + "\n", encoding="utf-8")
    records = [("a", "Sinusrhythmus"), ("b", "Sinusrhythmus")]
    stats = run_extraction(records, out, backend, progress=False, log=quiet)
    assert stats.written == 1 and stats.extracted == 1  # the failed line is not a cached result for "b"
    assert read_entities_file(out)["a"]["error"] == "request failed"
    stats = run_extraction(records, out, backend, progress=False, log=quiet, retry_errors=True)
    assert stats.written == 1 and stats.reused == 1
    assert read_entities_file(out)["a"]["error"] is None  # the later line wins
    assert len(list(iter_entities_file(out))) == 3


def test_repeated_record_ids_and_odd_reports(tmp_path, backend):
    out = tmp_path / "e.jsonl"
    records = [("1", "Vorhofflimmern"), ("1", "Sinusrhythmus"), ("2", None), ("3", b"\xfcberdrehter Linkstyp"),
               ("4", "x" * 200_000 + " Vorhofflimmern")]
    stats = run_extraction(records, out, backend, progress=False, log=quiet)
    assert stats.duplicate_ids == 1 and stats.written == 4
    lines = read_entities_file(out)
    assert lines["1"]["entities"][0]["concept"] == "atrial fibrillation"
    assert lines["2"]["entities"] == [] and lines["2"]["error"] is None
    assert lines["3"]["entities"][0]["concept"] == "left axis deviation"
    assert lines["4"]["entities"][0]["concept"] == "atrial fibrillation"


def write_csv(path, records):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows(records)


def run_script(*args, **kwargs):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300, **kwargs)


@pytest.mark.slow
def test_script_survives_sigkill_at_a_random_moment(tmp_path, backend):
    records = corpus(60_000, seed=5)
    source = tmp_path / "reports.csv"
    write_csv(source, records)
    out = tmp_path / "entities.jsonl"
    args = ["--reports_csv", str(source), "--id_column", "id", "--text_column", "text", "--output", str(out),
            "--batch_size", "20", "--no_progress"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, str(SCRIPT), *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target = random.Random(11).randint(1_000, 12_000) * 200  # bytes of output before the kill
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if out.exists() and out.stat().st_size >= target:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed; make the corpus larger"
    partial = list(iter_entities_file(out))
    assert 0 < len(partial) < len(records)
    # Also cut the file inside its last line, as a kill during a write would.
    data = out.read_bytes()
    out.write_bytes(data[: len(data) - 37])
    result = run_script(*args)
    assert result.returncode == 0, result.stderr
    assert "incomplete last line" in result.stderr and "resuming" in result.stderr
    lines = list(iter_entities_file(out))
    ids = [line["record_id"] for line in lines]
    assert len(ids) == len(set(ids)) == len(records)
    sample = dict(random.Random(2).sample(records, 300))
    by_id = {line["record_id"]: line for line in lines}
    for rid, text in sample.items():
        assert by_id[rid]["entities"] == backend.extract_one(text).entities


@pytest.mark.slow
def test_script_on_a_csv_and_on_the_ptbxl_corpus(tmp_path, ptbxl_dir):
    source = tmp_path / "r.csv"
    write_csv(source, [("a", "Vorhofflimmern"), ("b", "Vorhofflimmern"), ("c", "sinus rhythm. no st elevation.")])
    with open(source, "ab") as handle:  # one row in Windows-1252, as old exports have
        handle.write("d,überdrehter Linkstyp\r\n".encode("cp1252"))
    out = tmp_path / "csv.jsonl"
    result = run_script("--reports_csv", str(source), "--id_column", "id", "--text_column", "text", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "dedupe ratio 25.0%" in result.stderr and "reports/s" in result.stderr
    lines = read_entities_file(out)
    assert lines["d"]["entities"] == [{"span": "überdrehter Linkstyp", "concept": "left axis deviation", "status": "present"}]
    assert lines["d"]["report_sha256"] == report_sha256("überdrehter Linkstyp".encode("cp1252"))
    assert lines["c"]["entities"][1] == {"span": "st elevation", "concept": "ST elevation", "status": "absent"}
    bad = run_script("--reports_csv", str(source), "--id_column", "ecg", "--output", str(out))
    assert bad.returncode != 0 and "no column(s) ['ecg', 'report']; columns are ['id', 'text']" in bad.stderr
    assert "resuming" not in bad.stderr  # refused before the output file is touched

    out = tmp_path / "ptbxl.jsonl"
    result = run_script("--dataset", "ptbxl", "--data_dir", str(ptbxl_dir), "--output", str(out), "--no_progress")
    assert result.returncode == 0, result.stderr
    lines = read_entities_file(out)
    assert len(lines) == 300 and "1" in lines and "300" in lines
    assert [e["concept"] for e in lines["1"]["entities"]] == ["sinus rhythm", "low QRS voltage"]
    missing = run_script("--dataset", "ptbxl", "--data_dir", str(tmp_path), "--output", str(out))
    assert missing.returncode != 0 and "ptbxl_database.csv" in missing.stderr
