"""Rows of an ECG dataset -> model inputs: the data collator for ``DataLoader``/``Trainer`` and the
one conversion from the compact int16 storage to millivolts.

A row is a dict of the data contract (``signal`` float32 mV, leads x samples; ``sampling_rate``;
``lead_names``; ``labels`` concept names; optionally ``multi_hot``) as this project's datasets give
it, in any format (Python lists, numpy, torch). Rows of the compact storage carry ``signal_int16``
and ``signal_gain`` (counts per mV, one per lead) instead of ``signal``; :func:`row_signal` reads
either.

Nothing here imports torch or transformers at import time.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

SIGNAL_COLUMN = "signal"
COMPACT_COLUMNS = ("signal_int16", "signal_gain")


def counts_to_millivolts(counts, gain) -> np.ndarray:
    """float32 millivolts from int16 counts ``(..., leads, samples)`` and ``gain`` ``(..., leads)``.

    Computed in float64 and rounded once to float32, the formula of the WFDB reader, so the compact
    storage gives exactly the values of the default float32 storage.
    """
    counts = _numpy(counts)
    gain = _numpy(gain).astype(np.float64)
    return (counts.astype(np.float64) / gain[..., None]).astype(np.float32)


def row_signal(row: Mapping[str, Any], where: str = "") -> np.ndarray:
    """The float32 mV signal (leads x samples) of one row of either storage."""
    if SIGNAL_COLUMN in row and row[SIGNAL_COLUMN] is not None:
        return np.asarray(_numpy(row[SIGNAL_COLUMN]), dtype=np.float32)
    if all(c in row for c in COMPACT_COLUMNS):
        return counts_to_millivolts(row["signal_int16"], row["signal_gain"])
    name = where or (f"record {row['record_id']!r}" if "record_id" in row else "a row")
    raise ValueError(
        f"{name} has no ECG: expected a 'signal' column (float32 mV, leads x samples) or the compact "
        f"'signal_int16' + 'signal_gain' columns; got columns {sorted(row)}"
    )


def _numpy(value) -> np.ndarray:
    if type(value).__module__.startswith("torch"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def rows_from_batch(batch: Mapping[str, Sequence]) -> List[Dict[str, Any]]:
    """A dict of columns (what ``dataset[i:j]`` returns) as a list of row dicts."""
    columns = list(batch)
    if not columns:
        return []
    return [dict(zip(columns, values)) for values in zip(*(batch[c] for c in columns))]


class ECGDataCollator:
    """Collate dataset rows into ``input_values``, ``lead_mask``, ``attention_mask`` and ``labels``.

    Each row goes through the feature extractor (lead matching by name, resampling, crop/pad,
    normalisation), so rows of different lengths, rates and lead sets make one batch. Use it as the
    ``collate_fn`` of a ``torch.utils.data.DataLoader`` or the ``data_collator`` of a ``Trainer``
    (with ``remove_unused_columns=False``: the model's forward does not take ``signal``).

    Args:
        processor: an ``ECGProcessor`` or an ``ECGFeatureExtractor``.
        label_column: where ``labels`` come from: a row column holding one vector per row
            (default ``"multi_hot"``, the dataset's multi-hot over the class names of
            ``features["label_ids"].feature.names``); ``None`` for no labels. A named column that a
            row lacks is an error.
        class_names: instead of ``label_column``, build the multi-hot from the rows' ``labels``
            (concept names) over these classes, in this order (for a class list other than the
            dataset's own, e.g. a model's concepts).
        return_record_ids: also return ``record_id`` (a list of strings) with the batch.
        return_tensors: ``"pt"`` (default) or ``"np"``.
    """

    def __init__(
        self,
        processor,
        label_column: Optional[str] = "multi_hot",
        class_names: Optional[Sequence[str]] = None,
        return_record_ids: bool = False,
        return_tensors: str = "pt",
    ):
        self.feature_extractor = getattr(processor, "feature_extractor", processor)
        if not callable(self.feature_extractor):
            raise TypeError(f"ECGDataCollator needs an ECGProcessor or ECGFeatureExtractor, got {type(processor).__name__}")
        if return_tensors not in ("pt", "np"):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")
        self.class_names = list(class_names) if class_names is not None else None
        if self.class_names is not None and len(set(self.class_names)) != len(self.class_names):
            raise ValueError("class_names holds duplicates")
        self.label_column = None if self.class_names is not None else label_column
        self.return_record_ids = bool(return_record_ids)
        self.return_tensors = return_tensors

    def __repr__(self) -> str:
        source = f"class_names[{len(self.class_names)}]" if self.class_names is not None else repr(self.label_column)
        return f"ECGDataCollator(labels from {source}, return_tensors={self.return_tensors!r})"

    def __call__(self, rows) -> Dict[str, Any]:
        if isinstance(rows, Mapping):  # a slice of a dataset: columns -> rows
            rows = rows_from_batch(rows)
        rows = list(rows)
        if not rows:
            raise ValueError("ECGDataCollator got an empty batch")
        records = []
        for index, row in enumerate(rows):
            where = f"record {row['record_id']!r}" if row.get("record_id") is not None else f"row {index} of the batch"
            for key in ("sampling_rate", "lead_names"):
                if row.get(key) is None:
                    raise ValueError(f"{where} has no {key!r}; rows must follow the data contract of datasets_scripts")
            records.append({"signal": row_signal(row, where), "sampling_rate": _scalar(row["sampling_rate"]),
                            "lead_names": [str(name) for name in row["lead_names"]],
                            "missing_leads": _names(row.get("missing_leads")),
                            "record_id": row.get("record_id")})
        # dataset rows were read and checked by the WFDB reader when their builder ran: no repeated warnings
        batch = dict(self.feature_extractor(records, return_tensors="np", check_amplitude=False))
        labels = self._labels(rows)
        if labels is not None:
            batch["labels"] = labels
        if self.return_tensors == "pt":
            import torch

            batch = {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in batch.items()}
        if self.return_record_ids:
            batch["record_id"] = [str(row.get("record_id")) for row in rows]
        return batch

    def _labels(self, rows) -> Optional[np.ndarray]:
        if self.class_names is not None:
            index = {name: k for k, name in enumerate(self.class_names)}
            out = np.zeros((len(rows), len(self.class_names)), dtype=np.float32)
            for i, row in enumerate(rows):
                if row.get("labels") is None:
                    raise ValueError(f"row {i} of the batch has no 'labels' (concept names) to build targets from")
                for name in row["labels"]:
                    k = index.get(str(name))
                    if k is not None:
                        out[i, k] = 1.0
            return out
        if self.label_column is None:
            return None
        missing = [i for i, row in enumerate(rows) if row.get(self.label_column) is None]
        if missing:
            raise ValueError(
                f"rows {missing[:5]} of the batch have no {self.label_column!r} column; pass label_column=None for "
                f"inputs without labels, or class_names=[...] to build them from the 'labels' concept names"
            )
        vectors = [np.asarray(_numpy(row[self.label_column]), dtype=np.float32) for row in rows]
        if len({v.shape for v in vectors}) != 1:
            raise ValueError(f"{self.label_column!r} vectors of the batch differ in length: {sorted({v.shape for v in vectors})}")
        return np.stack(vectors)


def _names(value) -> List[str]:
    """A list of names from a column value in any format (None, a list, a numpy array of strings)."""
    return [] if value is None else [str(name) for name in value]


def _scalar(value):
    if type(value).__module__.startswith("torch") or isinstance(value, np.ndarray):
        return value.item()
    return value


__all__ = ["ECGDataCollator", "counts_to_millivolts", "row_signal", "rows_from_batch"]
