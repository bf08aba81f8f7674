"""The asyncio aiohttp client of the openai backend against a real loopback server: retries, malformed
replies, concurrency, and several reports per request with strict id checks."""

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from processing.reports.entities_file import read_entities_file, run_extraction
from processing.reports.extraction import create_backend
from processing.reports.llm import build_messages
from processing.reports.llm_http import HTTPChatBackend, build_batch_messages, parse_batch_answer

ENTITY = {"span": "Vorhofflimmern", "concept": "atrial fibrillation", "status": "present"}
ID_LINE = re.compile(r"^\[(r\d+)\] (.*)$", re.MULTILINE)


class Server:
    """POST /v1/chat/completions; the report text chooses the behaviour; every request is recorded."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []  # (kind, user message)
        self.failures_left = {}  # marker -> failures still to give before answering
        self.in_flight = self.max_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    status, payload, headers = server.respond(body)
                    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def fail_first(self, marker, times):
        self.failures_left[marker] = times

    def count(self, marker):
        return sum(1 for _, text in self.requests if marker in text)

    @staticmethod
    def completion(text):
        return {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}

    def respond(self, body):
        user = body["messages"][-1]["content"]
        batched = "[r1]" in user and "ECG reports:" in user
        with self.lock:
            self.requests.append(("batch" if batched else "single", user))
            for marker, left in self.failures_left.items():
                if marker in user and left > 0:
                    self.failures_left[marker] = left - 1
                    if marker == "RATE":
                        return 429, {"error": {"message": "slow down"}}, {"Retry-After": "0.05"}
                    return 500, {"error": {"message": "overloaded"}}, {}
        if "DELAY" in user:
            time.sleep(0.2)
        if "GARBAGE" in user:
            return 200, b"<html>proxy error</html>", {}
        if "NOCHOICE" in user:
            return 200, {"id": "x", "choices": [{"index": 0}]}, {}
        if not batched:
            return 200, self.completion(json.dumps({"entities": [ENTITY]})), {}
        items = [{"id": rid, "entities": [dict(ENTITY, span=text)]} for rid, text in ID_LINE.findall(user)]
        if "MISSING" in user:  # drops the item of the report that says MISSING
            items = [item for item in items if "MISSING" not in item["entities"][0]["span"]]
        if "DUPLICATE" in user:
            items.append(dict(items[0]))
        if "SHIFTED" in user:  # ids off by one: r2..r(k+1)
            items = [dict(item, id=f"r{int(item['id'][1:]) + 1}") for item in items]
        if "BADITEM" in user:
            items[-1]["entities"] = [{"concept": "x", "status": "sometimes"}]
        return 200, self.completion(json.dumps({"reports": items})), {}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    s = Server()
    yield s
    s.close()


def backend(server, **kwargs):
    options = dict(base_url=server.base_url, api_key="k", concurrency=4, timeout=2.0, max_retries=2, retry_backoff=0.01,
                   include_vocabulary=False, use_encoder=False)
    options.update(kwargs)
    return create_backend("openai", model="m", **options)


def test_retries_on_429_and_500_then_answers(server):
    server.fail_first("RATE", 2)
    server.fail_first("FLAKY", 1)
    server.fail_first("DOWN", 10)
    engine = backend(server, max_retries=2)
    try:
        rate, flaky, down = engine.extract_batch(["RATE one", "FLAKY two", "DOWN three"])
    finally:
        engine.close()
    assert isinstance(engine, HTTPChatBackend)
    assert rate.error is None and rate.entities == [ENTITY] and server.count("RATE") == 3
    assert flaky.error is None and server.count("FLAKY") == 2
    assert down.error == "request failed after retries: HTTP 500: overloaded (3 tries)" and server.count("DOWN") == 3


def test_malformed_replies_are_errors_not_retried(server):
    engine = backend(server)
    try:
        garbage, nochoice = engine.extract_batch(["GARBAGE", "NOCHOICE"])
    finally:
        engine.close()
    assert garbage.error.startswith("request failed after retries: malformed reply: not JSON")
    assert "choice 0 has no 'message'" in nochoice.error
    assert server.count("GARBAGE") == 1 and server.count("NOCHOICE") == 1


def test_unreachable_server_is_a_connection_error():
    engine = HTTPChatBackend("m", base_url="http://127.0.0.1:9/v1", max_retries=1, retry_backoff=0.01, timeout=2.0,
                             include_vocabulary=False, use_encoder=False)
    try:
        (result,) = engine.extract_batch(["x"])
    finally:
        engine.close()
    assert result.error.startswith("request failed after retries: connection error: ClientConnectorError")
    assert result.error.endswith("(2 tries)")


def test_concurrency_is_bounded_and_order_kept(server):
    engine = backend(server, concurrency=3)
    try:
        results = engine.extract_batch([f"DELAY {i}" for i in range(9)])
    finally:
        engine.close()
    assert all(r.error is None for r in results)
    assert 2 <= server.max_in_flight <= 3


def test_cached_prompt_is_build_messages():
    from processing import load_concept_vocabulary

    vocabulary = load_concept_vocabulary()
    engine = HTTPChatBackend("m", base_url="http://127.0.0.1:9/v1", use_encoder=False, vocabulary=vocabulary,
                             max_report_chars=50)
    try:
        for report in ("Sinusrhythmus", "AF " * 40):
            assert engine._messages(report) == build_messages(report, vocabulary, True, 50)
    finally:
        engine.close()


def test_bad_arguments_are_refused_by_name():
    for kwargs, name in [({"concurrency": 0}, "concurrency"), ({"reports_per_request": 0}, "reports_per_request"),
                         ({"max_retries": -1}, "max_retries"), ({"timeout": 0}, "timeout")]:
        with pytest.raises(ValueError, match=name):
            HTTPChatBackend("m", base_url="http://127.0.0.1:9/v1", use_encoder=False, **kwargs)


# ----------------------------------------------------------------------------- several reports per request


def test_batched_answers_are_keyed_by_id(server):
    engine = backend(server, reports_per_request=4)
    reports = [f"report {i}" for i in range(10)]
    try:
        results = engine.extract_batch(reports)
    finally:
        engine.close()
    # Each report got the entity list whose span the server copied from that very report.
    assert [r.entities[0]["span"] for r in results] == reports
    assert [kind for kind, _ in server.requests] == ["batch"] * 3  # 4 + 4 + 2


def test_batched_id_mismatches_are_errors_for_those_reports(server):
    engine = backend(server, reports_per_request=3, batch_fallback=False)
    try:
        missing = engine.extract_batch(["a", "MISSING b", "c"])
        duplicate = engine.extract_batch(["DUPLICATE a", "b", "c"])
        shifted = engine.extract_batch(["SHIFTED a", "b", "c"])
        baditem = engine.extract_batch(["a", "b", "BADITEM c"])
    finally:
        engine.close()
    assert [r.error for r in missing] == [None, "the batched answer has no item for id r2", None]
    assert missing[0].entities[0]["span"] == "a" and missing[2].entities[0]["span"] == "c"
    assert duplicate[0].error == "the batched answer has 2 items for id r1"
    assert duplicate[1].error is None and duplicate[1].entities[0]["span"] == "b"
    # Off-by-one ids: r4 was never asked, so nothing of the answer is trusted (never a silent shift).
    assert all(r.error.startswith("invalid batched answer: the answer names id(s) ['r4'] that were not asked")
               for r in shifted)
    assert baditem[2].error.startswith("the batched answer's item r3 is invalid: entity #0") and baditem[1].error is None
    assert all(kind == "batch" for kind, _ in server.requests)  # no fallback requests


def test_batched_fallback_asks_the_failed_reports_alone(server):
    engine = backend(server, reports_per_request=3)
    try:
        results = engine.extract_batch(["a", "MISSING b", "c", "SHIFTED d", "e"])
    finally:
        engine.close()
    assert all(r.error is None for r in results)
    assert results[1].entities == [ENTITY]  # the single-report answer, not a neighbour's
    singles = [text for kind, text in server.requests if kind == "single"]
    assert len(singles) == 3 and any("MISSING b" in t for t in singles)  # b, then d and e of the shifted request
    # A fallback that fails too names both attempts.
    server.fail_first("MISSING", 10)
    engine = backend(server, reports_per_request=2, max_retries=0)
    try:
        _, failed = engine.extract_batch(["x", "y MISSING"])
    finally:
        engine.close()
    assert failed.error.startswith("batched request failed after retries: HTTP 500")
    assert "; asked alone: request failed after retries: HTTP 500" in failed.error


def test_batched_run_through_the_corpus_runner_resumes(server, tmp_path):
    records = [(f"id{i}", f"report {i % 7}" + (" MISSING" if i == 3 else "")) for i in range(20)]
    out = tmp_path / "entities.jsonl"
    engine = backend(server, reports_per_request=4, batch_fallback=False)
    try:
        first = run_extraction(records[:12], out, engine, batch_size=8, progress=False, log=lambda m: None)
        again = run_extraction(records, out, engine, batch_size=8, progress=False, log=lambda m: None)
    finally:
        engine.close()
    lines = read_entities_file(out)
    assert sorted(lines) == sorted(r for r, _ in records)
    assert lines["id3"]["error"] == "the batched answer has no item for id r4"
    assert first.errors == 1 and again.already_done == 12 and again.written == 8
    for record_id, text in records:
        if record_id != "id3":
            assert lines[record_id]["entities"][0]["span"] == text


def test_batch_prompt_and_parser_directly():
    messages = build_batch_messages([("r1", "Sinus\nrhythm"), ("r2", "AF")], include_vocabulary=False)
    assert messages[-1]["content"] == "ECG reports:\n[r1] Sinus rhythm\n[r2] AF"  # a newline cannot fake an id line
    assert '"reports"' in messages[0]["content"]
    ok, problems = parse_batch_answer('```json\n{"reports": [{"id": "r2", "entities": []}, {"id": "r1", "entities": '
                                      '[{"concept": "AF", "status": "possible"}]}]}\n```', ["r1", "r2"])
    assert ok == {"r1": [{"span": "", "concept": "AF", "status": "uncertain"}], "r2": []} and problems == {}
    ok, problems = parse_batch_answer('{"reports": [{"entities": []}]}', ["r1"])
    assert ok == {} and "no 'id' string" in problems["r1"]
    ok, problems = parse_batch_answer("no json", ["r1", "r2"])
    assert ok == {} and set(problems) == {"r1", "r2"}
