"""Report entity extraction: one interface over three backends.

>>> from processing import extract_entities
>>> extract_entities("Sinusrhythmus. Kein Vorhofflimmern. V.a. LSB.").entities
[{'span': 'Sinusrhythmus', 'concept': 'sinus rhythm', 'status': 'present'},
 {'span': 'Vorhofflimmern', 'concept': 'atrial fibrillation', 'status': 'absent'},
 {'span': 'LSB', 'concept': 'left bundle branch block', 'status': 'uncertain'}]

Backends:

* ``"lexicon"`` (default): deterministic, no model (:mod:`processing.reports.lexicon`).
* ``"transformers"``: a local causal LM (:class:`processing.reports.llm.TransformersBackend`).
* ``"openai"``: an OpenAI-compatible server, through a lean asyncio ``aiohttp`` client
  (:class:`processing.reports.llm_http.HTTPChatBackend`, ``client="aiohttp"``, the default; optionally
  several reports per request) or the official ``openai`` client
  (:class:`processing.reports.llm.OpenAIBackend`, ``client="openai"``).

For corpus-scale runs that write the resumable entities file, see
:func:`processing.reports.entities_file.run_extraction` and ``examples/extract_entities.py``.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Union

from ..concepts.vocabulary import ConceptVocabulary, load_concept_vocabulary
from .lexicon import LexiconExtractor
from .llm import OpenAIBackend, TransformersBackend
from .llm_http import HTTPChatBackend
from .result import ABSENT, PRESENT, STATUSES, UNCERTAIN, ExtractionResult, ReportInput, decode_report, report_sha256

BACKENDS = ("lexicon", "transformers", "openai")
OPENAI_CLIENTS = ("aiohttp", "openai")


class LexiconBackend:
    """Batch interface of the lexicon extractor (the same interface as the LLM backends)."""

    name = "lexicon"

    def __init__(self, vocabulary: Optional[ConceptVocabulary] = None):
        self.extractor = LexiconExtractor(vocabulary)
        self.vocabulary = self.extractor.vocabulary
        self.model_name = self.extractor.model_name

    def extract_one(self, text: str) -> ExtractionResult:
        """Entities of one decoded report; an internal failure is recorded, not raised."""
        try:
            entities = self.extractor.extract(text)
        except Exception as error:  # a bug on one odd report must not end a corpus run
            return ExtractionResult([], [], f"lexicon failed: {type(error).__name__}: {error}", self.name, self.model_name)
        return ExtractionResult(entities, [], None, self.name, self.model_name)

    def extract_batch(self, reports: Sequence[str]) -> List[ExtractionResult]:
        """Extraction results for ``reports``, in order."""
        return [self.extract_one(text) for text in reports]

    def close(self) -> None:
        """Nothing to release."""


def create_backend(backend: str = "lexicon", **kwargs):
    """Build an extraction backend by name.

    ``"lexicon"`` takes ``vocabulary``; ``"transformers"`` takes ``model`` (path or loaded model),
    ``tokenizer``, ``batch_size``, ``max_new_tokens``, ``device``, ``dtype``...; ``"openai"`` takes
    ``model``, ``base_url``, ``api_key``, ``concurrency``, ``timeout``, ``max_retries``... and ``client``
    (``"aiohttp"``, the default: :class:`~processing.reports.llm_http.HTTPChatBackend`, which also takes
    ``reports_per_request``, ``batch_fallback`` and ``retry_backoff``; or ``"openai"``:
    :class:`~processing.reports.llm.OpenAIBackend`). The LLM backends also take ``similarity_threshold``,
    ``use_encoder``, ``include_vocabulary``, ``mapper`` and ``vocabulary``.
    """
    key = str(backend).strip().lower()
    if key == "lexicon":
        unknown = set(kwargs) - {"vocabulary"}
        if unknown:
            raise TypeError(f"the lexicon backend takes no argument(s) {sorted(unknown)}")
        return LexiconBackend(kwargs.get("vocabulary"))
    if key == "transformers":
        if "model" not in kwargs:
            raise TypeError("the transformers backend needs model= (a local model folder or a loaded causal LM)")
        return TransformersBackend(kwargs.pop("model"), kwargs.pop("tokenizer", None), **kwargs)
    if key == "openai":
        if not kwargs.get("model"):
            raise TypeError("the openai backend needs model= (the model name the server serves)")
        client = str(kwargs.pop("client", "aiohttp")).strip().lower()
        if client == "aiohttp":
            return HTTPChatBackend(kwargs.pop("model"), **kwargs)
        if client == "openai":
            only_aiohttp = {"reports_per_request", "batch_fallback", "retry_backoff"} & set(kwargs)
            if only_aiohttp:
                raise TypeError(f"client='openai' takes no argument(s) {sorted(only_aiohttp)}; use client='aiohttp'")
            return OpenAIBackend(kwargs.pop("model"), **kwargs)
        raise ValueError(f"unknown client {client!r} for the openai backend; choose one of {OPENAI_CLIENTS}")
    raise ValueError(f"unknown extraction backend {backend!r}; choose one of {BACKENDS}")


def extract_entities(reports: Union[ReportInput, Iterable[ReportInput]], backend="lexicon", *, progress: bool = False,
                     **backend_kwargs) -> Union[ExtractionResult, List[ExtractionResult]]:
    """Extract ``{span, concept, status}`` entities from one report or many.

    Args:
        reports: one report (str or bytes) or an iterable of them. Identical reports are extracted once.
        backend: ``"lexicon"`` (default), ``"transformers"``, ``"openai"``, or a backend object with
            ``extract_batch(list_of_str)`` (as made by :func:`create_backend`).
        progress: show a tqdm progress bar.
        **backend_kwargs: passed to :func:`create_backend` (e.g. ``model=``, ``base_url=``).

    Returns:
        An :class:`ExtractionResult` for a single report, else a list of them in input order.
    """
    single = reports is None or isinstance(reports, (str, bytes, bytearray))
    items = [reports] if single else list(reports)
    owned = isinstance(backend, str)
    engine = create_backend(backend, **backend_kwargs) if owned else backend
    try:
        texts = [decode_report(r)[0] for r in items]
        unique = list(dict.fromkeys(texts))
        # Large chunks keep an asynchronous client's pipe full: each chunk waits for its slowest request.
        chunk = 256 if getattr(engine, "name", "") == "lexicon" else max(32, 8 * getattr(engine, "concurrency", 4))
        results = {}
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(unique), unit="report", desc=f"extract ({getattr(engine, 'name', 'backend')})")
        for start in range(0, len(unique), chunk):
            part = unique[start:start + chunk]
            for text, result in zip(part, engine.extract_batch(part)):
                results[text] = result
            if bar is not None:
                bar.update(len(part))
        if bar is not None:
            bar.close()
    finally:
        if owned:
            engine.close()
    out = [_copy(results[t]) for t in texts]
    return out[0] if single else out


def _copy(result: ExtractionResult) -> ExtractionResult:
    return ExtractionResult([dict(e) for e in result.entities], [dict(e) for e in result.unmapped], result.error,
                            result.backend, result.model)


__all__ = ["ExtractionResult", "LexiconBackend", "create_backend", "extract_entities", "decode_report", "report_sha256",
           "BACKENDS", "OPENAI_CLIENTS", "STATUSES", "PRESENT", "ABSENT", "UNCERTAIN", "load_concept_vocabulary"]
