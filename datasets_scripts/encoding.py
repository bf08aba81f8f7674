"""Compact Arrow storage of ECG signals and the transform that decodes them to float32 millivolts.

Storage (what the Arrow cache holds per record)
-----------------------------------------------
=================  =======================  ====================================================
column             Arrow type               meaning
=================  =======================  ====================================================
``record_id``      string                   corpus-unique id
``patient_id``     string (nullable)        patient id where the corpus has one
``signal_int16``   binary                   int16 little-endian samples, lead-major (all samples
                                            of the first lead, then the next lead, ...)
``signal_gain``    list<float64>            counts per millivolt, one per lead
``num_samples``    int32                    samples per lead
``lead_names``     list<string>             canonical lead names, same order as the samples
``sampling_rate``  int32                    Hz
``report``         string                   free text ("" where none)
``labels``         list<string>             concept names of the configuration's label set
=================  =======================  ====================================================

``signal (mV) = signal_int16 / signal_gain``. WFDB sources keep their own ADC counts (baseline
subtracted), so the cache holds exactly the source's information in the source's 2 bytes per
sample; float sources (CPSC2018 ``.mat``, the synthetic corpus, resampled records) are quantised
at 1000 counts/mV (1 microvolt), lowering the gain of a lead only if its amplitude would not fit
into int16. A record whose baseline-subtracted counts do not fit into int16 is re-quantised the
same way.

Reading: :class:`ECGDecoder` is a batch transform (``Dataset.set_transform``) that turns the
stored columns into the data contract's ``signal`` (float32, shape (leads, samples), mV) and drops
``signal_int16``/``signal_gain``/``num_samples``. It works on whole batches with numpy, so reading
batches of 64 through it costs about as much as reading the raw bytes. Use
:func:`set_ecg_format` (or ``load_ecg_dataset``, which applies it) rather than
``with_format("torch")``, which would return the raw stored columns.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

STORED_SIGNAL_COLUMNS = ("signal_int16", "signal_gain", "num_samples")
CONTRACT_COLUMNS = ("record_id", "patient_id", "signal", "lead_names", "sampling_rate", "report", "labels")
FLOAT_SOURCE_GAIN = 1000.0  # counts per mV for float sources (1 microvolt resolution)
_INT16_MAX = 32767


def stored_features():
    """The ``datasets.Features`` of the Arrow cache (see the module docstring)."""
    import datasets

    return datasets.Features(
        {
            "record_id": datasets.Value("string"),
            "patient_id": datasets.Value("string"),
            "signal_int16": datasets.Value("binary"),
            "signal_gain": datasets.List(datasets.Value("float64")),
            "num_samples": datasets.Value("int32"),
            "lead_names": datasets.List(datasets.Value("string")),
            "sampling_rate": datasets.Value("int32"),
            "report": datasets.Value("string"),
            "labels": datasets.List(datasets.Value("string")),
        }
    )


def encode_digital(digital: np.ndarray, gain: np.ndarray) -> Dict[str, object]:
    """Stored columns for integer samples (leads, samples) with counts-per-mV ``gain`` per lead."""
    digital = np.asarray(digital)
    gain = np.asarray(gain, dtype=np.float64)
    if digital.ndim != 2 or gain.shape != (digital.shape[0],):
        raise ValueError(f"expected samples (leads, samples) and one gain per lead, got {digital.shape} and {gain.shape}")
    if digital.dtype == np.int16 and (digital.size == 0 or digital.min() > -32768):
        stored = digital
    else:
        peak = np.abs(digital.astype(np.int64)).max(axis=1) if digital.size else np.zeros(len(gain), np.int64)
        if np.all(peak <= _INT16_MAX):
            stored = digital.astype(np.int16)
        else:  # re-quantise the leads that do not fit
            scale = np.where(peak > _INT16_MAX, _INT16_MAX / np.maximum(peak, 1), 1.0)
            stored = np.rint(digital * scale[:, None]).astype(np.int16)
            gain = gain * scale
    return {
        "signal_int16": np.ascontiguousarray(stored, dtype="<i2").tobytes(),
        "signal_gain": gain.tolist(),
        "num_samples": int(stored.shape[1]),
    }


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


def encode_physical(signal_mv: np.ndarray, gain: float = FLOAT_SOURCE_GAIN) -> Dict[str, object]:
    digital, gains = quantize_physical(signal_mv, gain)
    return encode_digital(digital, gains)


def decode_signal(raw: bytes, gain: Sequence[float], num_samples: int) -> np.ndarray:
    """float32 mV, shape (leads, samples), from one record's stored columns."""
    gain = np.asarray(gain, dtype=np.float32)
    counts = np.frombuffer(raw, dtype="<i2").reshape(len(gain), int(num_samples))
    return np.divide(counts, gain[:, None], dtype=np.float32)


class ECGDecoder:
    """Batch transform for ``Dataset.set_transform``: stored columns -> the data contract.

    Args:
        output: ``"numpy"`` (signal as float32 arrays; other fields as Python values) or
            ``"torch"`` (signal as float32 tensors; ``sampling_rate`` as an int64 tensor).
            Signals of equal shape in a batch are stacked to one (batch, leads, samples) array.
        columns: the contract columns to return (default: all that the dataset has).
    """

    def __init__(self, output: str = "numpy", columns: Optional[Sequence[str]] = None):
        if output not in ("numpy", "torch"):
            raise ValueError(f"ECGDecoder output must be 'numpy' or 'torch', got {output!r}")
        self.output = output
        self.columns = tuple(columns) if columns is not None else None

    def __repr__(self) -> str:
        return f"ECGDecoder(output={self.output!r})"

    def __call__(self, batch: Dict[str, List]) -> Dict[str, object]:
        out: Dict[str, object] = {}
        wanted = self.columns
        for key, value in batch.items():
            if key in STORED_SIGNAL_COLUMNS:
                continue
            if wanted is None or key in wanted:
                out[key] = value
        if "signal_int16" in batch and (wanted is None or "signal" in wanted):
            out["signal"] = self._signals(batch["signal_int16"], batch["signal_gain"], batch["num_samples"])
        if self.output == "torch" and "sampling_rate" in out:
            import torch

            out["sampling_rate"] = torch.as_tensor(np.asarray(out["sampling_rate"], dtype=np.int64))
        return out

    def _signals(self, raws, gains, lengths):
        n = len(raws)
        shapes = {(len(g), int(s)) for g, s in zip(gains, lengths)}
        if n and len(shapes) == 1:
            leads, samples = shapes.pop()
            counts = np.frombuffer(b"".join(raws), dtype="<i2").reshape(n, leads, samples)
            g = np.asarray(gains, dtype=np.float32)
            signals = np.divide(counts, g[:, :, None], dtype=np.float32)
            if self.output == "torch":
                import torch

                return torch.from_numpy(signals)
            return signals
        decoded = [decode_signal(r, g, s) for r, g, s in zip(raws, gains, lengths)]
        if self.output == "torch":
            import torch

            return [torch.from_numpy(x) for x in decoded]
        return decoded


def set_ecg_format(dataset, output: str = "numpy", columns: Optional[Sequence[str]] = None):
    """Decode ``dataset`` (a Dataset or DatasetDict from these builders) on access; returns it.

    In place, like ``set_transform``. For an ``IterableDataset`` use :func:`decode_example` with
    ``.map``.
    """
    decoder = ECGDecoder(output=output, columns=columns)
    if hasattr(dataset, "set_transform"):
        dataset.set_transform(decoder)
        return dataset
    if hasattr(dataset, "values"):
        for split in dataset.values():
            split.set_transform(decoder)
        return dataset
    raise TypeError(f"set_ecg_format needs a datasets.Dataset or DatasetDict, got {type(dataset).__name__}")


def decode_example(example: Dict[str, object]) -> Dict[str, object]:
    """One stored example -> the data contract (``signal`` as float32 numpy); for streaming ``.map``."""
    out = {k: v for k, v in example.items() if k not in STORED_SIGNAL_COLUMNS}
    out["signal"] = decode_signal(example["signal_int16"], example["signal_gain"], example["num_samples"])
    return out
