"""The cardiac concept vocabulary (``concept_vocabulary.json``) and the text folding that matches it."""

from .._lazy import lazy_exports

_EXPORTS = {
    "CATEGORIES": "vocabulary",
    "Concept": "vocabulary",
    "ConceptVocabulary": "vocabulary",
    "DEFAULT_VOCABULARY_PATH": "vocabulary",
    "load_concept_vocabulary": "vocabulary",
    "vocabulary_from_dict": "vocabulary",
    "fold_token": "text_folding",
    "normalize_phrase": "text_folding",
    "phrase_keys": "text_folding",
    "tokenize": "text_folding",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
