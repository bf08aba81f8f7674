"""A lean asyncio client for OpenAI-compatible chat-completions servers, optionally several reports per request.

:class:`HTTPChatBackend` speaks the same ``POST <base_url>/chat/completions`` protocol as
:class:`processing.reports.llm.OpenAIBackend`, with the same prompt, answer validation, one repair
attempt and concept mapping, but through one ``aiohttp.ClientSession`` (a keep-alive connection
pool of ``concurrency`` connections, C-accelerated HTTP parsing) on an event loop of its own instead
of the ``openai`` client on a thread pool. Why: against a server that answers at once the ``openai``
client costs about 2-6 ms of CPU per request here (request models, pydantic parsing of the reply, one
thread per request in flight). ``httpx.AsyncClient`` was tried first and cost as much: its connection
pool rescans every connection for every queued request (1.8 million ``is_idle`` calls for 2,000
requests at concurrency 32, cProfile). Measured in ``benchmarks/bench_scale.py --only extraction``.

Behaviour, request by request:

* at most ``concurrency`` requests in flight; each has a total ``timeout`` in seconds;
* timeouts, connection errors and HTTP 408/409/429/5xx are retried up to ``max_retries`` times with
  exponential back-off (``retry_backoff`` x 2^k seconds, jittered, capped at 30 s; a ``Retry-After``
  header in seconds is honoured up to that cap); other HTTP errors and malformed replies are not
  retried (retrying cannot mend them);
* a failure never raises out of :meth:`extract_batch`: the report's result carries ``error``.

With ``reports_per_request=k > 1`` the reports go ``k`` to a request, each under a short id
(``r1`` .. ``rk``), and the model answers ``{"reports": [{"id": "r1", "entities": [...]}, ...]}``.
The answer is checked strictly: an id answered twice, an id not answered, or an entity list that is
invalid is an error for that report; an id that was not asked, or an item without an id, makes the
whole answer untrusted (the ids no longer say which report an entity list belongs to), so every
report of the request gets the error. No report ever takes the answer of another by position. With
``batch_fallback`` (default) each report the batched answer did not answer validly is asked again
alone (with the usual repair); its error then names both attempts.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..concepts.vocabulary import ConceptVocabulary
from .concept_mapping import DEFAULT_SIMILARITY_THRESHOLD, ConceptMapper
from .llm import (DEFAULT_MAX_REPORT_CHARS, _EXAMPLE_ANSWER, _EXAMPLE_REPORT, AnswerError, _find_json, _LLMBackend,
                  build_messages, parse_llm_answer, repair_messages, system_prompt, validate_entities)

RETRY_STATUSES = frozenset({408, 409, 429})
MAX_BACKOFF_SECONDS = 30.0

_BATCH_ANSWER_FORM = """You receive several reports, each after its id in square brackets, e.g. [r1].
Answer with one JSON object and nothing else, exactly of the form
{"reports": [{"id": "r1", "entities": [{"span": "...", "concept": "...", "status": "present"}]}, {"id": "r2", "entities": []}]}
with exactly one item per report id given, each id copied exactly, and "entities": [] for a report that states no finding."""

_EXAMPLE_BATCH_REPORTS = [("r1", _EXAMPLE_REPORT), ("r2", "Normal ECG.")]
_EXAMPLE_BATCH_ANSWER = json.dumps({"reports": [
    {"id": "r1", "entities": json.loads(_EXAMPLE_ANSWER)["entities"]},
    {"id": "r2", "entities": [{"span": "Normal ECG", "concept": "normal ECG", "status": "present"}]},
]}, ensure_ascii=False)


class RequestFailed(Exception):
    """A request that got no usable reply; the message says why (and after how many tries)."""


def _batch_user_message(items: Sequence[Tuple[str, str]]) -> str:
    return "ECG reports:\n" + "\n".join(f"[{report_id}] {text}" for report_id, text in items)


def build_batch_messages(items: Sequence[Tuple[str, str]], vocabulary: Optional[ConceptVocabulary] = None,
                         include_vocabulary: bool = True,
                         max_report_chars: int = DEFAULT_MAX_REPORT_CHARS) -> List[Dict[str, str]]:
    """Chat messages asking for the entities of several ``(id, report)`` pairs in one answer."""
    cut = [(report_id, " ".join(text[:max_report_chars].split())) for report_id, text in items]
    return [
        {"role": "system", "content": system_prompt(vocabulary, include_vocabulary, _BATCH_ANSWER_FORM)},
        {"role": "user", "content": _batch_user_message(_EXAMPLE_BATCH_REPORTS)},
        {"role": "assistant", "content": _EXAMPLE_BATCH_ANSWER},
        {"role": "user", "content": _batch_user_message(cut)},
    ]


def parse_batch_answer(text: Optional[str], ids: Sequence[str]) -> Tuple[Dict[str, List[Dict[str, str]]], Dict[str, str]]:
    """Split a batched answer by report id: ``(entities by id, reason by id)``; every id is in exactly one.

    See the module docstring for what counts as an error and for which reports.
    """
    asked = list(ids)
    try:
        if text is None or not str(text).strip():
            raise AnswerError("the answer is empty")
        value = _find_json(str(text))
        if isinstance(value, dict):
            if "reports" not in value:
                raise AnswerError(f"the JSON object has no 'reports' field (fields: {sorted(value)[:8]})")
            value = value["reports"]
        if not isinstance(value, list):
            raise AnswerError(f"'reports' must be a list, got {type(value).__name__}")
        items: Dict[str, List[Any]] = {}
        for position, item in enumerate(value):
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise AnswerError(f"item #{position} of 'reports' has no 'id' string, so no item can be trusted")
            items.setdefault(item["id"].strip(), []).append(item)
        extra = sorted(set(items) - set(asked))
        if extra:
            raise AnswerError(f"the answer names id(s) {extra[:5]} that were not asked (asked {asked[0]}..{asked[-1]}), "
                              "so no item can be trusted")
    except AnswerError as error:
        return {}, {report_id: f"invalid batched answer: {error}" for report_id in asked}
    entities: Dict[str, List[Dict[str, str]]] = {}
    problems: Dict[str, str] = {}
    for report_id in asked:
        found = items.get(report_id, [])
        if not found:
            problems[report_id] = f"the batched answer has no item for id {report_id}"
        elif len(found) > 1:
            problems[report_id] = f"the batched answer has {len(found)} items for id {report_id}"
        else:
            try:
                entities[report_id] = validate_entities(found[0].get("entities"))
            except AnswerError as error:
                problems[report_id] = f"the batched answer's item {report_id} is invalid: {error}"
    return entities, problems


class HTTPChatBackend(_LLMBackend):
    """An OpenAI-compatible chat-completions endpoint through one pooled ``aiohttp.ClientSession``.

    Args:
        model: model name as the server knows it.
        base_url: e.g. ``http://localhost:8000/v1``; None reads ``OPENAI_BASE_URL``, then OpenAI's URL.
        api_key: the key; None reads ``OPENAI_API_KEY`` and falls back to a dummy for local servers.
        concurrency: requests in flight at once (also the size of the connection pool).
        timeout: seconds per request (connection, sending, waiting and reading together).
        max_retries: retries per request on timeouts, connection errors, 408/409/429 and 5xx.
        retry_backoff: seconds before the first retry; doubled for each further one (jittered).
        reports_per_request: reports sent in one request (1: one request per report).
        batch_fallback: ask again alone each report that a batched answer did not answer validly.
        json_mode: send ``response_format={"type": "json_object"}``.

    The backend's ``name`` is ``"openai"``, as for :class:`~processing.reports.llm.OpenAIBackend`:
    both speak the same protocol with the same prompt, so an entities file written by one resumes
    with the other.
    """

    name = "openai"

    def __init__(self, model: str, *, base_url: Optional[str] = None, api_key: Optional[str] = None, concurrency: int = 8,
                 timeout: float = 60.0, max_retries: int = 2, retry_backoff: float = 0.5, max_tokens: int = 1024,
                 temperature: float = 0.0, json_mode: bool = False, reports_per_request: int = 1,
                 batch_fallback: bool = True, vocabulary: Optional[ConceptVocabulary] = None,
                 mapper: Optional[ConceptMapper] = None, include_vocabulary: bool = True,
                 similarity_threshold: float = DEFAULT_SIMILARITY_THRESHOLD, use_encoder: bool = True,
                 max_report_chars: int = DEFAULT_MAX_REPORT_CHARS, extra_body: Optional[dict] = None):
        try:
            import aiohttp
        except ImportError as error:  # the 'llm' extra
            raise ImportError("the aiohttp client needs the aiohttp package: pip install 'supreme-ecg[llm]'") from error
        if not model:
            raise ValueError("the openai backend needs a model name (--model)")
        for label, number, least in (("concurrency", concurrency, 1), ("reports_per_request", reports_per_request, 1),
                                     ("max_retries", max_retries, 0)):
            if int(number) != number or number < least:
                raise ValueError(f"{label} must be an integer >= {least}, got {number!r}")
        if not timeout > 0 or retry_backoff < 0:
            raise ValueError(f"timeout must be > 0 and retry_backoff >= 0, got timeout={timeout!r}, "
                             f"retry_backoff={retry_backoff!r}")
        super().__init__(vocabulary, mapper, include_vocabulary, similarity_threshold, use_encoder, max_report_chars)
        self.model_name = model
        base = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self.url = base.rstrip("/") + "/chat/completions"
        key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.concurrency = int(concurrency)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.retry_backoff = float(retry_backoff)
        self.reports_per_request = int(reports_per_request)
        self.batch_fallback = bool(batch_fallback)
        self._static_body: Dict[str, Any] = {"model": model, "temperature": float(temperature), "max_tokens": int(max_tokens)}
        if json_mode:
            self._static_body["response_format"] = {"type": "json_object"}
        if extra_body:
            self._static_body.update(extra_body)
        self._aiohttp = aiohttp
        # The event loop runs in a thread of its own so that extract_batch stays a plain call for the
        # corpus runner (and works inside callers that already run a loop, such as notebooks).
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="supreme-llm-http", daemon=True)
        self._thread.start()
        self._closed = False
        self._prefix: Optional[List[Dict[str, str]]] = None
        self._client, self._semaphore = self._call(self._open())

    async def _open(self):
        aiohttp = self._aiohttp
        connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=self.concurrency)
        client = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout))
        return client, asyncio.Semaphore(self.concurrency)

    def _messages(self, report: str) -> List[Dict[str, str]]:
        # The system prompt and the worked example are the same for every report: built once (the same
        # messages as build_messages, which the tests check), not formatted again for each request.
        if self._prefix is None:
            self._prefix = build_messages("", self.vocabulary, self.include_vocabulary, self.max_report_chars)[:-1]
        return self._prefix + [{"role": "user", "content": f"ECG report:\n{report[:self.max_report_chars]}"}]

    def _call(self, coroutine):
        if self._closed:
            coroutine.close()
            raise RuntimeError("the backend is closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    # ------------------------------------------------------------------------------------ one request
    def _backoff(self, retry: int, retry_after: Optional[float]) -> float:
        delay = self.retry_backoff * (2 ** (retry - 1)) * (0.75 + 0.5 * random.random())
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, MAX_BACKOFF_SECONDS)

    async def _post(self, messages: List[Dict[str, str]]) -> str:
        """The answer text of one chat completion, after retries; raises :class:`RequestFailed`."""
        aiohttp = self._aiohttp
        payload = json.dumps({**self._static_body, "messages": messages}, ensure_ascii=False).encode("utf-8")
        tries = self.max_retries + 1
        reason, retry_after = "", None
        for attempt in range(tries):
            if attempt:
                await asyncio.sleep(self._backoff(attempt, retry_after))
            retry_after = None
            try:
                async with self._semaphore:  # held for the request only, not during back-off
                    async with self._client.post(self.url, data=payload, headers=self._headers) as response:
                        status, headers, body = response.status, response.headers, await response.read()
            except asyncio.TimeoutError:  # the session's total timeout (aiohttp's timeout errors derive from it)
                reason = f"timeout after {self.timeout:g} s"
                continue
            except aiohttp.ClientError as error:
                reason = f"connection error: {type(error).__name__}: {error}"
                continue
            if status == 200:
                return self._answer_text(body)
            reason = f"HTTP {status}: {self._server_message(body)}"
            if status in RETRY_STATUSES or status >= 500:
                try:
                    retry_after = float(headers.get("Retry-After", ""))
                except ValueError:
                    retry_after = None
                continue
            raise RequestFailed(f"{reason} (not retried)")
        raise RequestFailed(f"{reason} ({tries} {'try' if tries == 1 else 'tries'})")

    @staticmethod
    def _server_message(body: bytes) -> str:
        try:
            data = json.loads(body)
            message = data.get("error", {}).get("message") if isinstance(data, dict) else None
        except (ValueError, AttributeError):
            message = None
        return str(message or body.decode("utf-8", "replace") or "no message")[:300]

    @staticmethod
    def _answer_text(body: bytes) -> str:
        try:
            data = json.loads(body)
        except ValueError as error:
            raise RequestFailed(f"malformed reply: not JSON ({error})") from None
        if not isinstance(data, dict) or not isinstance(data.get("choices", []), list):
            raise RequestFailed(f"malformed reply: no 'choices' list in {str(data)[:200]}")
        if not data.get("choices"):
            return ""  # as the openai client: an empty answer, which the schema check then refuses
        choice = data["choices"][0]
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise RequestFailed(f"malformed reply: choice 0 has no 'message' object ({str(choice)[:200]})")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise RequestFailed(f"malformed reply: message content is {type(content).__name__}, not a string")
        return content or ""

    # ------------------------------------------------------------------------------------ per report
    async def _extract_one(self, report: str):
        messages = self._messages(report)
        try:
            answer = await self._post(messages)
        except RequestFailed as error:
            return self._failed(f"request failed after retries: {error}")
        try:
            return self._finish(parse_llm_answer(answer))
        except AnswerError as error:
            first_reason = str(error)
        try:
            answer = await self._post(repair_messages(messages, answer, first_reason))
        except RequestFailed as error:
            return self._failed(f"invalid answer ({first_reason}); repair request failed: {error}")
        try:
            return self._finish(parse_llm_answer(answer))
        except AnswerError as error:
            return self._failed(f"invalid answer after one repair attempt: {error}")

    async def _extract_group(self, reports: List[str]) -> list:
        ids = [f"r{i + 1}" for i in range(len(reports))]
        messages = build_batch_messages(list(zip(ids, reports)), self.vocabulary, self.include_vocabulary,
                                        self.max_report_chars)
        try:
            answer = await self._post(messages)
        except RequestFailed as error:
            entities, problems = {}, {i: f"batched request failed after retries: {error}" for i in ids}
        else:
            entities, problems = parse_batch_answer(answer, ids)
        results: List[Any] = [None] * len(reports)
        for position, report_id in enumerate(ids):
            if report_id in entities:
                results[position] = self._finish(entities[report_id])
        failed = [position for position, report_id in enumerate(ids) if report_id in problems]
        if self.batch_fallback and failed:
            alone = await asyncio.gather(*(self._safe(self._extract_one(reports[p])) for p in failed))
            for position, result in zip(failed, alone):
                if result.error is not None:
                    result = self._failed(f"{problems[ids[position]]}; asked alone: {result.error}")
                results[position] = result
        else:
            for position in failed:
                results[position] = self._failed(problems[ids[position]])
        return results

    async def _safe(self, coroutine):
        try:
            return await coroutine
        except Exception as error:  # a bug on one odd reply must not end a corpus run
            return self._failed(f"unexpected failure: {type(error).__name__}: {error}")

    async def _safe_group(self, reports: List[str]) -> list:
        try:
            return await self._extract_group(reports)
        except Exception as error:
            return [self._failed(f"unexpected failure: {type(error).__name__}: {error}") for _ in reports]

    async def _extract_all(self, reports: List[str]) -> list:
        k = self.reports_per_request
        if k == 1:
            return list(await asyncio.gather(*(self._safe(self._extract_one(r)) for r in reports)))
        groups = await asyncio.gather(*(self._safe_group(reports[i:i + k]) for i in range(0, len(reports), k)))
        return [result for group in groups for result in group]

    def extract_one(self, report: str):
        """Extraction result of one report; failures are recorded in ``error``, never raised."""
        return self._call(self._safe(self._extract_one(report)))

    def extract_batch(self, reports: Sequence[str]) -> list:
        """Extraction results for ``reports`` (same order), at most ``concurrency`` requests in flight."""
        return self._call(self._extract_all(list(reports)))

    def close(self) -> None:
        if self._closed:
            return
        self._call(self._client.close())
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
