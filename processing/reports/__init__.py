"""Entity extraction from free-text ECG reports and the resumable entities file.

Modules: ``result`` (what one report yields), ``lexicon`` (deterministic EN/DE/SV extractor),
``concept_mapping`` (LLM concept names -> vocabulary), ``llm`` (transformers and OpenAI-compatible
backends), ``extraction`` (one interface over the backends), ``entities_file`` (JSON Lines, resumable).
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "PRESENT": "result",
    "ABSENT": "result",
    "UNCERTAIN": "result",
    "STATUSES": "result",
    "ExtractionResult": "result",
    "decode_report": "result",
    "report_sha256": "result",
    "LexiconExtractor": "lexicon",
    "ConceptMapper": "concept_mapping",
    "OpenAIBackend": "llm",
    "TransformersBackend": "llm",
    "BACKENDS": "extraction",
    "LexiconBackend": "extraction",
    "create_backend": "extraction",
    "extract_entities": "extraction",
    "ExtractionStats": "entities_file",
    "iter_entities_file": "entities_file",
    "read_entities_file": "entities_file",
    "run_extraction": "entities_file",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
