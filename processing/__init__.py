"""The bottom layer of SuPreME: everything that needs neither a dataset builder nor the model.

Subpackages, one concern each:

- :mod:`processing.ecg`: ECG records and signals. Lead names, the WFDB record reader, the
  :class:`ECGFeatureExtractor` and the :class:`ECGProcessor` that joins it to the text encoder's tokenizer.
- :mod:`processing.concepts`: the cardiac concept vocabulary (a versioned JSON file) and text folding.
- :mod:`processing.reports`: entity extraction from free-text reports (lexicon, LLM backends,
  concept mapping) and the resumable entities file.

:mod:`processing.text_encoder` finds the default text encoder offline (sha256-verified).
Names are imported lazily, so ``import processing`` stays cheap.
"""

from ._lazy import lazy_exports

_EXPORTS = {
    "STANDARD_12_LEADS": "ecg.ecg_leads",
    "canonical_lead_name": "ecg.ecg_leads",
    "canonical_lead_names": "ecg.ecg_leads",
    "ECGRecord": "ecg.wfdb_reader",
    "ECGDataWarning": "ecg.wfdb_reader",
    "RecordError": "ecg.wfdb_reader",
    "read_wfdb_record": "ecg.wfdb_reader",
    "ECGFeatureExtractor": "ecg.feature_extraction_supreme",
    "ECGProcessor": "ecg.processing_supreme",
    "Concept": "concepts.vocabulary",
    "ConceptVocabulary": "concepts.vocabulary",
    "load_concept_vocabulary": "concepts.vocabulary",
    "extract_entities": "reports.extraction",
    "create_backend": "reports.extraction",
    "run_extraction": "reports.entities_file",
    "read_entities_file": "reports.entities_file",
    "resolve_text_encoder_path": "text_encoder",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
