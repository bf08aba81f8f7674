"""HF ``datasets`` builders for ECG corpora, one module per corpus, on one shared WFDB reader.

Names are imported lazily so that reading one record does not import every builder.
"""

import importlib

_LAZY = {
    "ECGRecord": "wfdb_reader",
    "RecordError": "wfdb_reader",
    "read_wfdb_record": "wfdb_reader",
    "ECGDataWarning": "wfdb_reader",
    "load_ecg_dataset": "loading",
    "get_builder_class": "loading",
    "ECGDecoder": "encoding",
    "set_ecg_format": "encoding",
    "iter_reports": "reports",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
