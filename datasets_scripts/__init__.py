"""HF ``datasets`` builders for ECG corpora (one module per corpus in ``corpora/``), on the record
reader of :mod:`processing.ecg`.

Modules: ``builder`` (the shared ``GeneratorBasedBuilder``), ``splits``, ``fingerprints`` (cache
keys), ``encoding`` (the native columns), ``labels`` (corpus codes -> concept names), ``loading``
(``load_ecg_dataset``, corpus names), ``reports`` (report text without reading signals),
``publishing`` (Parquet export and Hub push with a dataset card), ``testing`` (small corpora in
each corpus's exact layout, for tests and benchmarks).
Names are imported lazily so that reading one record does not import every builder.
"""

from processing._lazy import lazy_exports

# The reader's names are re-exported: load_ecg_dataset raises its RecordError.
_READER = {name: "processing.ecg.wfdb_reader" for name in ("ECGRecord", "ECGDataWarning", "RecordError", "read_wfdb_record")}
_EXPORTS = {
    "load_ecg_dataset": "loading",
    "get_builder_class": "loading",
    "canonical_corpus_name": "loading",
    "parse_corpus_args": "loading",
    "ecg_features": "encoding",
    "class_names_of": "encoding",
    "add_millivolts": "encoding",
    "export_ecg_dataset": "publishing",
    "push_ecg_dataset": "publishing",
    "dataset_card": "publishing",
    "iter_reports": "reports",
    **_READER,
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
