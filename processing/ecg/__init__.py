"""ECG records and signals: lead names, the WFDB reader, the feature extractor, the processor and the
data collator (dataset rows -> model inputs), and
the drawing on ECG paper (``ecg_paper``).

``ecg_leads``, ``wfdb_reader``, ``feature_extraction_supreme`` and ``processing_supreme`` are copied
next to every saved checkpoint as remote code, so they import only each other.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "STANDARD_12_LEADS": "ecg_leads",
    "LIMB_LEADS": "ecg_leads",
    "canonical_lead_name": "ecg_leads",
    "canonical_lead_names": "ecg_leads",
    "ECGRecord": "wfdb_reader",
    "DigitalRecord": "wfdb_reader",
    "ECGDataWarning": "wfdb_reader",
    "RecordError": "wfdb_reader",
    "read_digital": "wfdb_reader",
    "read_wfdb_record": "wfdb_reader",
    "ECGFeatureExtractor": "feature_extraction_supreme",
    "ECGProcessor": "processing_supreme",
    "ECGDataCollator": "data_collator",
    "row_signal": "data_collator",
    "counts_to_millivolts": "data_collator",
    "draw_ecg": "ecg_paper",
    "save_ecg": "ecg_paper",
    "ecg_image_bytes": "ecg_paper",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
