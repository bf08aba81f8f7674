"""Signal and text processing for SuPreME: the ECG feature extractor, the processor that joins it to
the text encoder's tokenizer, the cardiac concept vocabulary and report entity extraction.

Names are imported lazily so that ``import processing`` stays cheap and so that the dataset
builders can use the lead utilities without importing torch or transformers.
"""

import importlib

_LAZY = {
    "STANDARD_12_LEADS": "ecg_leads",
    "canonical_lead_name": "ecg_leads",
    "canonical_lead_names": "ecg_leads",
    "ECGFeatureExtractor": "feature_extraction_supreme",
    "ECGProcessor": "processing_supreme",
    "Concept": "concepts",
    "ConceptVocabulary": "concepts",
    "load_concept_vocabulary": "concepts",
    "extract_entities": "entity_extraction",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
