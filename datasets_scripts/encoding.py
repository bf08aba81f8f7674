"""The columns of every ECG dataset: native ``datasets`` features that pyarrow, pandas, Parquet and a
plain ``datasets`` install read without this package.

Columns
-------
=================  =================================================  ===========================================
column             feature                                            meaning
=================  =================================================  ===========================================
``record_id``      ``Value("string")``                                corpus-unique id
``patient_id``     ``Value("string")`` (null where unknown)           for patient-level splits
``signal``         ``Array2D((12, samples), "float32")`` where the    millivolts, leads x samples (the data
                   corpus has a fixed length, else                    contract); equal to ``wfdb.rdsamp`` within
                   ``List(List(Value("float32")))``                   float32
``lead_names``     ``List(Value("string"))``                          canonical names, in the order of the leads
``sampling_rate``  ``Value("int32")``                                 Hz
``report``         ``Value("string")``                                free text ("" where none)
``labels``         ``List(Value("string"))``                          concept names of the label set
``label_ids``      ``List(ClassLabel(names=class names))``            the same labels as class indices: the
                                                                      class list lives in the features
``multi_hot``      ``List(Value("float32"), length=classes)``         1.0 where the class is in ``labels``
=================  =================================================  ===========================================

``features["label_ids"].feature.names`` is the class list; ``multi_hot[k] == 1`` exactly when that
list's class ``k`` is in ``labels``. Corpora without labels (MIMIC-IV-ECG) have an empty class list
and an empty ``multi_hot``.

Why two signal types (measured with ``benchmarks/bench_datasets.py``): ``datasets`` 5.2 allows a
dynamic size only on the FIRST dimension of an ``Array2D``, and the contract puts leads first. For a
corpus whose records all have one length (PTB-XL 10 s, MIMIC-IV-ECG 10 s, CSN 10 s, the synthetic
corpus), a fixed ``Array2D`` is read as one reshape (batches of 64 several times faster than the
nested-list type, and faster than the old binary column with its decoding transform). CPSC2018
(6-60 s) and the mixed Challenge tranches need ``List(List(float32))``: the same Arrow storage
(``list<list<float>>``, so ``cast_column`` between the two is free), read more slowly because
``datasets`` converts nested lists row by row. A record of another length or lead count in a
fixed-length corpus is an unreadable record (``RecordError``, raised or skipped by ``on_error``).

Compact storage (``signal_storage="int16"``, a builder option for MIMIC-size corpora): ``signal`` is
replaced by ``signal_int16`` (the same shapes as int16 counts) and ``signal_gain``
(``List(Value("float64"))``, counts per mV, one per lead), 2 bytes a sample like the WFDB files
instead of 4. One line gives millivolts, exactly the values of the float32 storage::

    signal = (np.asarray(row["signal_int16"]) / np.asarray(row["signal_gain"])[:, None]).astype(np.float32)

or :func:`processing.ecg.data_collator.row_signal` (which the data collator uses), or
``ds.map(add_millivolts, batched=True)`` to add the ``signal`` column.

Values: WFDB sources keep their own ADC counts (baseline subtracted) and ``signal = counts / gain``
is computed in float64 and rounded once to float32, as the reader does. Float sources (CPSC2018
``.mat``, the synthetic corpus) and resampled records are quantised at 1000 counts/mV (1 microvolt)
first, lowering a lead's gain only where its amplitude would not fit into int16. Both storages then
hold the same values, except for a lead whose source counts exceed int16 (rare: 24-bit sources),
which only the compact storage re-quantises.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from processing.ecg.data_collator import counts_to_millivolts

SIGNAL_STORAGES = ("float32", "int16")
COMPACT_SIGNAL_COLUMNS = ("signal_int16", "signal_gain")
CONTRACT_COLUMNS = ("record_id", "patient_id", "signal", "lead_names", "sampling_rate", "report", "labels")
LABEL_COLUMNS = ("labels", "label_ids", "multi_hot")
NUM_LEADS = 12
FLOAT_SOURCE_GAIN = 1000.0  # counts per mV for float sources (1 microvolt resolution)
_INT16_MAX = 32767


def signal_feature(num_samples: Optional[int], dtype: str = "float32", num_leads: int = NUM_LEADS):
    """``Array2D((num_leads, num_samples), dtype)`` for a fixed length, else ``List(List(Value(dtype)))``."""
    import datasets

    if num_samples:
        return datasets.Array2D(shape=(int(num_leads), int(num_samples)), dtype=dtype)
    return datasets.List(datasets.List(datasets.Value(dtype)))


def ecg_features(class_names: Sequence[str], num_samples: Optional[int] = None, signal_storage: str = "float32"):
    """The ``datasets.Features`` of a corpus configuration (see the module docstring).

    Args:
        class_names: the label set's classes (the ``ClassLabel`` names and the ``multi_hot`` order).
        num_samples: samples per lead where every record has this length (a fixed ``Array2D``),
            ``None`` for variable-length corpora.
        signal_storage: ``"float32"`` (``signal`` in mV) or ``"int16"`` (``signal_int16`` + ``signal_gain``).
    """
    import datasets

    check_storage(signal_storage)
    names = list(class_names)
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be distinct, got duplicates {sorted({n for n in names if names.count(n) > 1})}")
    if signal_storage == "float32":
        signal = {"signal": signal_feature(num_samples, "float32")}
    else:
        signal = {"signal_int16": signal_feature(num_samples, "int16"),
                  "signal_gain": datasets.List(datasets.Value("float64"))}
    # A fixed-size list cannot have length 0 in Arrow: corpora without classes get a variable one.
    multi_hot = datasets.List(datasets.Value("float32"), length=len(names)) if names else datasets.List(datasets.Value("float32"))
    return datasets.Features(
        {
            "record_id": datasets.Value("string"),
            "patient_id": datasets.Value("string"),
            **signal,
            "lead_names": datasets.List(datasets.Value("string")),
            # leads the file names but without one valid sample: stored as 0 mV (the signal is one array), so
            # the collator needs this list to mark them absent (lead_mask 0) instead of recorded and flat
            "missing_leads": datasets.List(datasets.Value("string")),
            "sampling_rate": datasets.Value("int32"),
            "report": datasets.Value("string"),
            "labels": datasets.List(datasets.Value("string")),
            "label_ids": datasets.List(datasets.ClassLabel(names=names)),
            "multi_hot": multi_hot,
        }
    )


def check_storage(signal_storage: str) -> None:
    if signal_storage not in SIGNAL_STORAGES:
        raise ValueError(f"signal_storage must be one of {SIGNAL_STORAGES}, got {signal_storage!r}")


def array_columns(features) -> List[str]:
    """The numeric array columns of a dataset's features (formatted by ``with_format``)."""
    return [c for c in ("signal", "signal_int16", "signal_gain", "multi_hot") if c in features]


def class_names_of(features) -> List[str]:
    """The class list of a dataset built here (``features["label_ids"].feature.names``)."""
    if "label_ids" not in features:
        raise ValueError(f"these features have no 'label_ids' column (columns: {sorted(features)}); not an ECG dataset of datasets_scripts")
    return list(features["label_ids"].feature.names)


def int16_counts(digital: np.ndarray, gain: np.ndarray):
    """``(counts int16, gain float64)`` for integer samples (leads, samples) with counts-per-mV ``gain``.

    Leads whose counts do not fit into int16 are re-quantised with a proportionally lower gain.
    """
    digital = np.asarray(digital)
    gain = np.asarray(gain, dtype=np.float64)
    if digital.ndim != 2 or gain.shape != (digital.shape[0],):
        raise ValueError(f"expected samples (leads, samples) and one gain per lead, got {digital.shape} and {gain.shape}")
    if digital.dtype == np.int16 and (digital.size == 0 or digital.min() > -32768):
        return digital, gain
    peak = np.abs(digital.astype(np.int64)).max(axis=1) if digital.size else np.zeros(len(gain), np.int64)
    if np.all(peak <= _INT16_MAX):
        return digital.astype(np.int16), gain
    scale = np.where(peak > _INT16_MAX, _INT16_MAX / np.maximum(peak, 1), 1.0)
    return np.rint(digital * scale[:, None]).astype(np.int16), gain * scale


def encode_signal(digital: np.ndarray, gain: np.ndarray, signal_storage: str = "float32") -> Dict[str, object]:
    """The stored signal column(s) of one record from its integer samples and per-lead gains."""
    check_storage(signal_storage)
    if signal_storage == "int16":
        counts, gain = int16_counts(digital, gain)
        return {"signal_int16": counts, "signal_gain": gain}
    digital = np.asarray(digital)
    gain = np.asarray(gain, dtype=np.float64)
    if digital.ndim != 2 or gain.shape != (digital.shape[0],):
        raise ValueError(f"expected samples (leads, samples) and one gain per lead, got {digital.shape} and {gain.shape}")
    return {"signal": counts_to_millivolts(digital, gain)}


def encode_labels(labels: Sequence[str], class_names: Sequence[str], where: str = "") -> Dict[str, object]:
    """``label_ids`` and ``multi_hot`` of one record's concept names; a name outside the class list is an error."""
    index = {name: k for k, name in enumerate(class_names)}
    ids = []
    for name in labels:
        if name not in index:
            raise ValueError(
                f"{where}: label {name!r} is not one of the configuration's {len(index)} classes; the class list "
                "(class_names / label_classes of the builder) must cover every label the index emits"
            )
        ids.append(index[name])
    multi_hot = np.zeros(len(index), dtype=np.float32)
    multi_hot[ids] = 1.0
    return {"label_ids": ids, "multi_hot": multi_hot}


def quantize_physical(signal_mv: np.ndarray, gain: float = FLOAT_SOURCE_GAIN):
    """Integer samples and per-lead gains for a float signal in mV (NaN must be resolved first)."""
    x = np.asarray(signal_mv, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("signal holds NaN or infinite samples; resolve them before quantising")
    peak = np.abs(x).max(axis=1) if x.size else np.zeros(x.shape[0])
    gains = np.full(x.shape[0], float(gain))
    too_big = peak * gains > _INT16_MAX
    gains[too_big] = np.floor(_INT16_MAX / peak[too_big])
    return np.rint(x * gains[:, None]).astype(np.int16), gains


def add_millivolts(batch: Dict[str, list]) -> Dict[str, list]:
    """``Dataset.map(add_millivolts, batched=True)``: the ``signal`` column (float32 mV) of the compact storage."""
    return {"signal": [counts_to_millivolts(c, g) for c, g in zip(batch["signal_int16"], batch["signal_gain"])]}


__all__ = [
    "CONTRACT_COLUMNS", "SIGNAL_STORAGES", "add_millivolts", "array_columns", "class_names_of", "ecg_features",
    "encode_labels", "encode_signal", "int16_counts", "quantize_physical", "signal_feature",
]
