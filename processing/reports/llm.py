"""LLM entity extraction: prompt, answer schema, one repair attempt, concept mapping, two backends.

* :class:`TransformersBackend` runs any local causal LM through ``transformers`` (batched greedy
  generation, chat template when the tokenizer has one).
* :class:`OpenAIBackend` talks to any OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM,
  llama.cpp server, Ollama, a hosted API) through the official ``openai`` client, with bounded
  concurrency, a per-request timeout and the client's retries with exponential back-off.

Both ask the model for one JSON object::

    {"entities": [{"span": "<words copied from the report>", "concept": "<finding>",
                   "status": "present" | "absent" | "uncertain"}]}

and validate the answer with :func:`parse_llm_answer`. An invalid answer is sent back once with the
reason and a request for corrected JSON; if the second answer is invalid too, the report gets
``error`` set and no entities, and the run goes on. Concepts named by the model are mapped onto the
vocabulary by :class:`processing.reports.concept_mapping.ConceptMapper` (exact synonym, then the lexicon inside the phrase, then text
embedding similarity); concepts that do not map are kept in ``unmapped`` for review.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..concepts.vocabulary import ConceptVocabulary, load_concept_vocabulary
from .concept_mapping import DEFAULT_SIMILARITY_THRESHOLD, ConceptMapper
from .result import ABSENT, PRESENT, STATUSES, UNCERTAIN, ExtractionResult

DEFAULT_MAX_REPORT_CHARS = 6000

_STATUS_ALIASES = {
    "present": PRESENT, "positive": PRESENT, "yes": PRESENT, "affirmed": PRESENT, "confirmed": PRESENT, "true": PRESENT,
    "absent": ABSENT, "negated": ABSENT, "negative": ABSENT, "no": ABSENT, "excluded": ABSENT, "ruled out": ABSENT,
    "not present": ABSENT, "false": ABSENT,
    "uncertain": UNCERTAIN, "possible": UNCERTAIN, "probable": UNCERTAIN, "suspected": UNCERTAIN, "likely": UNCERTAIN,
    "unclear": UNCERTAIN, "unknown": UNCERTAIN, "questionable": UNCERTAIN, "hedged": UNCERTAIN,
}

_SYSTEM_PROMPT = """You read electrocardiogram (ECG) reports and list the clinical findings they state.
Reports may be in English, German or Swedish and may be terse or contain typing errors.
For every finding (rhythm, conduction, axis, waveform, interval, hypertrophy, ischaemia, infarction, pacing, normal ECG)
return one entity with:
- "span": the words of the report that state it, copied exactly;
- "concept": the finding's standard English cardiology name{vocabulary_hint};
- "status": "present" if the report asserts it, "absent" if the report denies it, "uncertain" if it is suspected,
  possible, probable or not excluded.
Skip patient history, medication, lab values and technical remarks that are not ECG findings.
{answer_form}"""

_SINGLE_ANSWER_FORM = """Answer with one JSON object and nothing else, exactly of the form
{"entities": [{"span": "...", "concept": "...", "status": "present"}]}
and with {"entities": []} when the report states no finding."""

_EXAMPLE_REPORT = "Sinusrhythmus, Linkstyp. Kein Hinweis auf Vorhofflimmern. V.a. alten Hinterwandinfarkt."
_EXAMPLE_ANSWER = json.dumps({"entities": [
    {"span": "Sinusrhythmus", "concept": "sinus rhythm", "status": "present"},
    {"span": "Linkstyp", "concept": "leftward axis", "status": "present"},
    {"span": "Vorhofflimmern", "concept": "atrial fibrillation", "status": "absent"},
    {"span": "alten Hinterwandinfarkt", "concept": "inferior myocardial infarction", "status": "uncertain"},
]}, ensure_ascii=False)


class AnswerError(ValueError):
    """An LLM answer that does not satisfy the entity schema; the message says why."""


# ---------------------------------------------------------------------------------------- prompting
def system_prompt(vocabulary: Optional[ConceptVocabulary], include_vocabulary: bool, answer_form: str) -> str:
    """The system prompt: what to extract, the vocabulary hint, then ``answer_form`` (the JSON to return)."""
    hint = ""
    if include_vocabulary and vocabulary is not None:
        hint = ("; prefer one of these names when it fits: " + "; ".join(vocabulary.names)
                + " (use another precise name when none fits)")
    return _SYSTEM_PROMPT.format(vocabulary_hint=hint, answer_form=answer_form)


def build_messages(report: str, vocabulary: Optional[ConceptVocabulary] = None, include_vocabulary: bool = True,
                   max_report_chars: int = DEFAULT_MAX_REPORT_CHARS) -> List[Dict[str, str]]:
    """Chat messages asking for the entities of one report.

    With ``include_vocabulary`` the system prompt lists the vocabulary's concept names so that the model
    prefers them (the list is the same for every report, so servers with prefix caching reuse it).
    Reports longer than ``max_report_chars`` are cut there.
    """
    system = system_prompt(vocabulary, include_vocabulary, _SINGLE_ANSWER_FORM)
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": f"ECG report:\n{_EXAMPLE_REPORT}"},
        {"role": "assistant", "content": _EXAMPLE_ANSWER},
        {"role": "user", "content": f"ECG report:\n{report[:max_report_chars]}"},
    ]


def repair_messages(messages: List[Dict[str, str]], bad_answer: str, reason: str) -> List[Dict[str, str]]:
    """The conversation extended by the invalid answer and a request to correct it."""
    return messages + [
        {"role": "assistant", "content": bad_answer[:4000]},
        {"role": "user", "content": (
            f"That answer is not valid: {reason}. Reply again with only one JSON object of the form "
            '{"entities": [{"span": "...", "concept": "...", "status": "present|absent|uncertain"}]}.'
        )},
    ]


# ---------------------------------------------------------------------------------------- validation
_FENCE_RE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def _find_json(text: str) -> Any:
    """The answer's JSON value: an object with "entities" or a list, else the first other object found."""
    candidates = [m.group(1) for m in _FENCE_RE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    first_error = None
    fallback = None
    for candidate in candidates:
        start = 0
        while start < len(candidate):
            if candidate[start] not in "{[":
                start += 1
                continue
            try:
                value, end = decoder.raw_decode(candidate, start)
            except json.JSONDecodeError as error:
                first_error = first_error or error
                start += 1
                continue
            if isinstance(value, list) or (isinstance(value, dict) and "entities" in value):
                return value
            if fallback is None:
                fallback = value
            start = end  # never read a value nested inside one already decoded
    if first_error is not None:
        # e.g. an answer cut off by the token limit: a fragment inside it must not pass for the answer
        raise AnswerError(f"the answer holds no complete JSON value ({first_error.msg} at character {first_error.pos})")
    if fallback is not None:
        return fallback
    raise AnswerError("the answer contains no JSON object")


def parse_llm_answer(text: Optional[str]) -> List[Dict[str, str]]:
    """Validate an LLM answer and return its entities as ``{"span", "concept", "status"}`` dicts.

    Accepted: a JSON object with an ``"entities"`` list (also inside a Markdown code fence or after
    some prose), or a bare list of entity objects. Each entity needs a non-empty string ``"concept"``
    and a ``"status"`` of present/absent/uncertain (common synonyms such as "negated" or "possible"
    are normalised); ``"span"`` is an optional string. Unknown fields are ignored.

    Raises:
        AnswerError: with the reason, when the answer does not satisfy this schema.
    """
    if text is None or not str(text).strip():
        raise AnswerError("the answer is empty")
    value = _find_json(str(text))
    if isinstance(value, dict):
        if "entities" not in value:
            raise AnswerError(f"the JSON object has no 'entities' field (fields: {sorted(value)[:8]})")
        value = value["entities"]
    return validate_entities(value)


def validate_entities(value: Any) -> List[Dict[str, str]]:
    """The entity list of an answer, checked and normalised (see :func:`parse_llm_answer`)."""
    if not isinstance(value, list):
        raise AnswerError(f"'entities' must be a list, got {type(value).__name__}")
    entities = []
    for position, item in enumerate(value):
        if not isinstance(item, dict):
            raise AnswerError(f"entity #{position} is {type(item).__name__}, not an object")
        concept = item.get("concept")
        if not isinstance(concept, str) or not concept.strip():
            raise AnswerError(f"entity #{position} has no 'concept' string")
        raw_status = item.get("status")
        if not isinstance(raw_status, str):
            raise AnswerError(f"entity #{position} ({concept!r}) has no 'status' string")
        status = _STATUS_ALIASES.get(raw_status.strip().lower())
        if status is None:
            raise AnswerError(f"entity #{position} ({concept!r}) has status {raw_status!r}, expected one of {STATUSES}")
        span = item.get("span", "")
        if span is None:
            span = ""
        if not isinstance(span, str):
            raise AnswerError(f"entity #{position} ({concept!r}) has a 'span' that is not a string")
        entities.append({"span": span.strip(), "concept": concept.strip(), "status": status})
    return entities


# ---------------------------------------------------------------------------------------- shared LLM logic
class _LLMBackend:
    """Common part of the LLM backends: prompt, validation with one repair, mapping."""

    name = "llm"

    def __init__(self, vocabulary: Optional[ConceptVocabulary], mapper: Optional[ConceptMapper], include_vocabulary: bool,
                 similarity_threshold: float, use_encoder: bool, max_report_chars: int):
        self.vocabulary = vocabulary if vocabulary is not None else load_concept_vocabulary()
        self.mapper = mapper if mapper is not None else ConceptMapper(
            self.vocabulary, threshold=similarity_threshold, use_encoder=use_encoder)
        self.include_vocabulary = include_vocabulary
        self.max_report_chars = max_report_chars

    def _messages(self, report: str) -> List[Dict[str, str]]:
        return build_messages(report, self.vocabulary, self.include_vocabulary, self.max_report_chars)

    def _finish(self, entities: List[Dict[str, str]]):
        mapped, unmapped = self.mapper.map_entities(entities)
        return ExtractionResult(entities=mapped, unmapped=unmapped, error=None, backend=self.name, model=self.model_name)

    def _failed(self, message: str):
        return ExtractionResult(entities=[], unmapped=[], error=message, backend=self.name, model=self.model_name)

    def close(self) -> None:
        """Release resources (threads, clients); the backend is unusable afterwards."""


# ---------------------------------------------------------------------------------------- transformers
class TransformersBackend(_LLMBackend):
    """A local causal LM through ``transformers``: batched greedy generation of JSON answers.

    Args:
        model: a local model folder / Hub id, or a loaded ``PreTrainedModel``.
        tokenizer: its tokenizer (loaded from ``model`` when that is a path).
        batch_size: reports generated together.
        max_new_tokens: generation budget per answer.
        device, dtype: where and in which dtype to load a model given by path.
    """

    name = "transformers"

    def __init__(self, model, tokenizer=None, *, vocabulary: Optional[ConceptVocabulary] = None,
                 mapper: Optional[ConceptMapper] = None, batch_size: int = 8, max_new_tokens: int = 512,
                 include_vocabulary: bool = True, similarity_threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
                 use_encoder: bool = True, max_report_chars: int = DEFAULT_MAX_REPORT_CHARS, device: Optional[str] = None,
                 dtype=None):
        super().__init__(vocabulary, mapper, include_vocabulary, similarity_threshold, use_encoder, max_report_chars)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if isinstance(model, (str, os.PathLike)):
            path = str(model)
            self.model_name = path
            kwargs = {"dtype": dtype} if dtype is not None else {}
            self.model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
            self.tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(path)
        else:
            if tokenizer is None:
                raise ValueError("TransformersBackend: pass the tokenizer together with a loaded model")
            self.model = model
            self.tokenizer = tokenizer
            self.model_name = getattr(model.config, "_name_or_path", "") or type(model).__name__
        if device is not None:
            self.model.to(device)
        self.model.eval()
        self.batch_size = max(1, int(batch_size))
        self.max_new_tokens = int(max_new_tokens)
        if self.tokenizer.pad_token_id is None:
            if self.tokenizer.eos_token is None:
                raise ValueError(f"tokenizer of {self.model_name} has neither a pad nor an eos token")
            self.tokenizer.pad_token = self.tokenizer.eos_token  # batching needs a pad token; eos is the usual stand-in
        self._pad_id = self.tokenizer.pad_token_id
        self._torch = torch

    def _prompt(self, messages: List[Dict[str, str]]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # Models without a chat template get a plain transcript ending where the answer starts.
        lines = [f"{m['role'].upper()}: {m['content']}" for m in messages]
        return "\n\n".join(lines) + "\n\nASSISTANT:"

    def _generate(self, conversations: List[List[Dict[str, str]]]) -> List[str]:
        prompts = [self._prompt(m) for m in conversations]
        tokenizer = self.tokenizer
        previous_side = tokenizer.padding_side
        tokenizer.padding_side = "left"  # decoder-only models continue from the right end
        try:
            batch = tokenizer(prompts, return_tensors="pt", padding=True)
        finally:
            tokenizer.padding_side = previous_side
        batch.pop("token_type_ids", None)
        batch = batch.to(self.model.device)
        with self._torch.no_grad():
            output = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False,
                                         pad_token_id=self._pad_id)
        new_tokens = output[:, batch["input_ids"].shape[1]:]
        return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    def extract_batch(self, reports: Sequence[str]) -> list:
        """Extraction results for ``reports`` (same order); failures are recorded, never raised."""
        results = []
        for start in range(0, len(reports), self.batch_size):
            results += self._extract_chunk(list(reports[start:start + self.batch_size]))
        return results

    def _extract_chunk(self, reports: List[str]) -> list:
        conversations = [self._messages(r) for r in reports]
        try:
            answers = self._generate(conversations)
        except Exception as error:  # one failing batch must not end a corpus run
            return [self._failed(f"generation failed: {type(error).__name__}: {error}") for _ in reports]
        results: List[Any] = [None] * len(reports)
        retry: List[Tuple[int, List[Dict[str, str]], str]] = []
        for i, answer in enumerate(answers):
            try:
                results[i] = self._finish(parse_llm_answer(answer))
            except AnswerError as error:
                retry.append((i, repair_messages(conversations[i], answer, str(error)), str(error)))
        if retry:
            try:
                repaired = self._generate([conv for _, conv, _ in retry])
            except Exception as error:
                repaired = [None] * len(retry)
                generation_error = f"{type(error).__name__}: {error}"
            else:
                generation_error = None
            for (i, _, first_reason), answer in zip(retry, repaired):
                if answer is None:
                    results[i] = self._failed(f"invalid answer ({first_reason}); repair generation failed: {generation_error}")
                    continue
                try:
                    results[i] = self._finish(parse_llm_answer(answer))
                except AnswerError as error:
                    results[i] = self._failed(f"invalid answer after one repair attempt: {error}")
        return results


# ---------------------------------------------------------------------------------------- OpenAI-compatible
class OpenAIBackend(_LLMBackend):
    """Any OpenAI-compatible chat-completions endpoint through the ``openai`` client.

    Args:
        model: model name as the server knows it.
        base_url: e.g. ``http://localhost:8000/v1`` for vLLM; None for the client's default (or
            ``OPENAI_BASE_URL``).
        api_key: the key; None reads ``OPENAI_API_KEY`` and falls back to a dummy for local servers.
        concurrency: requests in flight at once (a thread pool of this size).
        timeout: seconds per request before it counts as failed.
        max_retries: retries per request by the client (exponential back-off) on timeouts, connection
            errors, 408/409/429 and 5xx.
        json_mode: send ``response_format={"type": "json_object"}`` (servers that support it).
    """

    name = "openai"

    def __init__(self, model: str, *, base_url: Optional[str] = None, api_key: Optional[str] = None, concurrency: int = 8,
                 timeout: float = 60.0, max_retries: int = 2, max_tokens: int = 1024, temperature: float = 0.0,
                 json_mode: bool = False, vocabulary: Optional[ConceptVocabulary] = None, mapper: Optional[ConceptMapper] = None,
                 include_vocabulary: bool = True, similarity_threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
                 use_encoder: bool = True, max_report_chars: int = DEFAULT_MAX_REPORT_CHARS, extra_body: Optional[dict] = None):
        super().__init__(vocabulary, mapper, include_vocabulary, similarity_threshold, use_encoder, max_report_chars)
        try:
            import openai
        except ImportError as error:  # the 'llm' extra
            raise ImportError("the openai backend needs the openai package: pip install 'supreme-ecg[llm]'") from error
        if not model:
            raise ValueError("the openai backend needs a model name (--model)")
        self.model_name = model
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
                                    timeout=timeout, max_retries=max_retries)
        self.concurrency = max(1, int(concurrency))
        self.max_tokens = int(max_tokens)
        self.temperature = float(temperature)
        self.json_mode = json_mode
        self.extra_body = extra_body
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="supreme-llm")
        self._openai = openai

    def _complete(self, messages: List[Dict[str, str]]) -> str:
        kwargs: Dict[str, Any] = {}
        if self.json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        if self.extra_body:
            kwargs["extra_body"] = self.extra_body
        response = self.client.chat.completions.create(model=self.model_name, messages=messages, temperature=self.temperature,
                                                       max_tokens=self.max_tokens, **kwargs)
        if not response.choices:
            return ""
        return response.choices[0].message.content or ""

    def extract_one(self, report: str):
        """Extraction result of one report; failures are recorded in ``error``, never raised."""
        messages = self._messages(report)
        try:
            answer = self._complete(messages)
        except self._openai.OpenAIError as error:
            return self._failed(f"request failed after retries: {type(error).__name__}: {error}")
        try:
            return self._finish(parse_llm_answer(answer))
        except AnswerError as error:
            first_reason = str(error)
        try:
            answer = self._complete(repair_messages(messages, answer, first_reason))
        except self._openai.OpenAIError as error:
            return self._failed(f"invalid answer ({first_reason}); repair request failed: {type(error).__name__}: {error}")
        try:
            return self._finish(parse_llm_answer(answer))
        except AnswerError as error:
            return self._failed(f"invalid answer after one repair attempt: {error}")

    def extract_batch(self, reports: Sequence[str]) -> list:
        """Extraction results for ``reports`` (same order), at most ``concurrency`` requests in flight."""
        return list(self._pool.map(self._safe_extract_one, reports))

    def _safe_extract_one(self, report: str):
        try:
            return self.extract_one(report)
        except Exception as error:  # e.g. a malformed response object: record it, keep the run alive
            return self._failed(f"unexpected failure: {type(error).__name__}: {error}")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.client.close()
