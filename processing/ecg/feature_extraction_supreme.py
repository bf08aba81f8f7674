"""ECGFeatureExtractor: turns raw multi-lead ECGs into the fixed input contract of a SuPreME model.

What it does to each record, in order (and records in its saved config):
1. takes the signal in the stated layout (leads first or time first), in millivolts;
2. matches leads to the model's leads by canonical name (case-insensitive, ``AVR`` is ``aVR``);
3. repairs NaN gaps by linear interpolation; a lead that is all NaN counts as missing;
4. crops to the model's duration (from the start or the centre) in the source rate, then resamples
   with ``scipy.signal.resample_poly`` to the model's rate (an integer decimation runs resample_poly's
   filter as one matrix product, the same result within float32 rounding, see `_decimate`);
5. normalises each lead (``baseline``: subtract the lead's median, keep millivolts; ``zscore``:
   zero mean and unit variance per lead; ``none``) and clips to ``clip_value``;
6. pads short records with zeros (``attention_mask`` marks real samples) and zero-fills missing leads
   (``lead_mask`` marks recorded leads).

A WFDB record path (``.hea``/``.dat``/``.mat``, with or without extension) is read with the
project's reader (:mod:`.wfdb_reader`), so every input form works wherever the extractor does.

This module is copied next to checkpoints as remote code: it imports only ``.ecg_leads`` and ``.wfdb_reader``.
"""

from __future__ import annotations

import os
import warnings
from fractions import Fraction
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
from transformers.feature_extraction_utils import BatchFeature, FeatureExtractionMixin
from transformers.utils import logging

from .ecg_leads import STANDARD_12_LEADS, canonical_lead_names
from .wfdb_reader import ECGDataWarning, amplitude_issues, read_wfdb_record

logger = logging.get_logger(__name__)

NORMALIZATIONS = ("baseline", "zscore", "none")
CROP_MODES = ("start", "center")
LAYOUTS = ("leads_first", "time_first")
# What one unit of an array input is, in millivolts. Integer arrays need it stated: they are usually
# ADC counts (an int16 array of counts taken as mV is 1000x too large and clipped flat).
UNIT_SCALES = {"mV": 1.0, "uV": 1e-3, "µV": 1e-3, "V": 1e3}



@lru_cache(maxsize=16)
def _resampling_taps(up: int, down: int) -> np.ndarray:
    """The low-pass filter `scipy.signal.resample_poly` designs for (up, down) with its default window.

    resample_poly designs it again on every call (firwin); passing it in gives the same output
    (tested). Measured on 64 PTB-XL records at 500 -> 100 Hz, interleaved in one run: 220 ms against
    234 ms for the whole feature extractor (6%).
    """
    from scipy.signal import firwin

    max_rate = max(up, down)
    taps = firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    taps.setflags(write=False)
    return taps


# Output samples per row of `_decimate`'s matrix product; 32 was the fastest of 16, 32 and 64 (0.063 ms per
# 12 x 5,000 record at 500 -> 100 Hz, against 0.069-0.071 and 0.074-0.084; two runs, medians of 300).
_DECIMATION_BLOCK = 32


@lru_cache(maxsize=16)
def _decimation_matrix(down: int):
    """`_decimate`'s filter for a factor: (a banded float32 torch matrix whose column j holds the reversed taps,
    front-padded as resample_poly pads them to centre its output, starting at row j * down; the padded filter's
    length; the output samples resample_poly drops from the front). Not to be written to once cached."""
    import torch

    taps = _resampling_taps(1, down)
    half = (taps.size - 1) // 2
    pre = down - half % down  # resample_poly's front zero padding of the filter
    removed = (half + pre) // down
    # Cross-correlation with the reversed, front-padded filter = convolution.
    kernel = np.concatenate([taps[::-1], np.zeros(pre)]).astype(np.float32)
    length = kernel.size
    matrix = np.zeros(((_DECIMATION_BLOCK - 1) * down + length, _DECIMATION_BLOCK), dtype=np.float32)
    for column in range(_DECIMATION_BLOCK):
        matrix[column * down : column * down + length, column] = kernel
    return torch.from_numpy(matrix), length, removed


def _decimate(signal: np.ndarray, down: int) -> np.ndarray:
    """`scipy.signal.resample_poly(signal, 1, down, axis=1, window=taps)` for an integer decimation, as one
    matrix product; float32 out, equal to resample_poly's float32 result within float32 rounding (about 5e-7 on
    signals of unit scale, tested).

    Same zero padding, filter centring and output length as resample_poly: its output sample m is the full
    convolution of the signal with the taps (zero-padded in front to centre the output) at (m + removed) * down.
    Each row of the product is one window of the padded signal that covers `_DECIMATION_BLOCK` outputs, times the
    banded matrix of `_decimation_matrix`: a few MFLOP per record that a matrix product runs at speed, where a
    1-channel strided convolution does not. Measured on a 12 x 5,000 float32 record at 500 -> 100 Hz on a 2-core
    Xeon with AMX (2026-12-04, medians of 300 in one run): 0.06 ms, against 0.19 ms for the same filter as a
    strided torch conv1d (two threads; 0.32 with one) and 0.59 ms for resample_poly, whose share of the feature
    extractor's time was the largest at 100 Hz.
    """
    matrix, length, removed = _decimation_matrix(down)
    rows, n_in = signal.shape
    n_out = n_in // down + bool(n_in % down)
    blocks = -(-n_out // _DECIMATION_BLOCK)
    left = length - 1 - removed * down
    span = matrix.shape[0]
    total = max((blocks - 1) * _DECIMATION_BLOCK * down + span, left + n_in)
    padded = np.zeros((rows, total), dtype=np.float32)
    padded[:, left : left + n_in] = signal
    step = padded.itemsize
    windows = np.lib.stride_tricks.as_strided(
        padded, (rows, blocks, span), (total * step, _DECIMATION_BLOCK * down * step, step), writeable=False
    )
    windows = np.array(windows).reshape(rows * blocks, span)  # a writable copy: torch refuses read-only arrays
    # The product runs in torch, not NumPy: after a NumPy matmul, OpenBLAS's threads keep spinning and took the
    # cores from the model's next forward in the pipeline (measured 2026-12-04, 2-core Xeon, 100 Hz checkpoint,
    # bf16: 160 ms per batch of 64 inside the pipeline against 57 ms outside it; torch's own thread pool does
    # not compete with itself). It is also faster: 0.06 against 0.07 ms per record.
    import torch

    out = torch.mm(torch.from_numpy(windows), matrix).numpy()
    return out.reshape(rows, blocks * _DECIMATION_BLOCK)[:, :n_out]


def _row_medians(signal: np.ndarray) -> np.ndarray:
    """`np.median(signal, axis=1, keepdims=True)`, bit for bit (tested), with one selection instead of two.

    For an even length numpy partitions around both middle ranks; one partition at the upper middle rank
    leaves the lower one as the largest element below it. Measured on a 12 x 5,000 float32 record
    (2026-12-03, median of 50): 0.084 ms against 0.646 ms for `np.median`, which was half of the feature
    extractor's time per record at 500 Hz. NaN would be ordered differently, so non-finite input (which
    `_process_one` never passes: gaps are repaired first) goes to `np.median`.
    """
    length = signal.shape[1]
    if length < 2 or not np.isfinite(signal).all():
        return np.median(signal, axis=1, keepdims=True)
    middle = length // 2
    part = np.partition(signal, middle, axis=1)
    upper = part[:, middle]
    if length % 2:
        return upper[:, None]
    lower = part[:, :middle].max(axis=1)
    return ((lower + upper) / 2)[:, None]


class ECGFeatureExtractor(FeatureExtractionMixin):
    r"""
    Prepares ECG signals for [`SuPreMEModel`].

    Args:
        sampling_rate (`int`, *optional*, defaults to 500):
            Rate in Hz the model expects; inputs at other rates are resampled.
        num_samples (`int`, *optional*, defaults to 5000):
            Samples per lead the model sees; longer records are cropped, shorter ones padded.
        lead_names (`list[str]`, *optional*, defaults to the 12 standard leads):
            The model's leads, in channel order.
        normalization (`str`, *optional*, defaults to `"baseline"`):
            Per-lead normalisation: `"baseline"` subtracts each lead's median and keeps millivolts,
            so that absolute amplitude (low voltage, hypertrophy criteria) stays visible to the model;
            `"zscore"` gives each lead zero mean and unit variance; `"none"` leaves the signal as is.
        clip_value (`float`, *optional*, defaults to 10.0):
            After normalisation, values are clipped to `[-clip_value, clip_value]` (None: no clipping).
        crop (`str`, *optional*, defaults to `"start"`):
            Which part of a longer record to keep: `"start"` or `"center"`.
        min_duration (`float`, *optional*, defaults to 1.0):
            Records shorter than this many seconds are rejected.
        max_nan_fraction (`float`, *optional*, defaults to 0.5):
            A lead with more than this fraction of NaN samples is treated as missing rather than interpolated.
        padding_value (`float`, *optional*, defaults to 0.0):
            Value of padded samples and of missing leads.
    """

    model_input_names = ["input_values", "lead_mask", "attention_mask"]

    def __init__(
        self,
        sampling_rate: int = 500,
        num_samples: int = 5000,
        lead_names: Sequence[str] = STANDARD_12_LEADS,
        normalization: str = "baseline",
        clip_value: float | None = 10.0,
        crop: str = "start",
        min_duration: float = 1.0,
        max_nan_fraction: float = 0.5,
        padding_value: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        if crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
        self.sampling_rate = int(sampling_rate)
        self.num_samples = int(num_samples)
        self.lead_names = canonical_lead_names(list(lead_names))
        self.normalization = normalization
        self.clip_value = clip_value
        self.crop = crop
        self.min_duration = float(min_duration)
        self.max_nan_fraction = float(max_nan_fraction)
        self.padding_value = float(padding_value)
        # Informational (saved with the config): how the rate is changed.
        self.resampler = "scipy.signal.resample_poly (integer decimations: the same filter as one matrix product)"
        self._lead_index = {name: i for i, name in enumerate(self.lead_names)}

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output.pop("_lead_index", None)
        return output

    @classmethod
    def from_config(cls, config, **kwargs) -> "ECGFeatureExtractor":
        """The feature extractor of a model config's input contract (any object with
        `sampling_rate`, `num_samples` and `lead_names`)."""
        return cls(
            sampling_rate=config.sampling_rate, num_samples=config.num_samples, lead_names=config.lead_names, **kwargs
        )

    # -- input parsing ------------------------------------------------------------------------------

    def _split_records(self, ecg, sampling_rate, lead_names, layout, units=None) -> list[dict]:
        """Normalise every accepted input form into a list of {signal, sampling_rate, lead_names, name, ...}."""
        if _is_path(ecg):
            ecg = read_wfdb_record(ecg)
        elif isinstance(ecg, (list, tuple)) and ecg and any(_is_path(item) for item in ecg):
            ecg = [read_wfdb_record(item) if _is_path(item) else item for item in ecg]
        if isinstance(ecg, dict) or _is_record_object(ecg):
            items = [ecg]
        elif isinstance(ecg, (list, tuple)) and ecg and (
            isinstance(ecg[0], dict) or _is_record_object(ecg[0]) or _is_array(ecg[0]) and np.ndim(ecg[0]) == 2
        ):
            items = list(ecg)
        elif isinstance(ecg, (list, tuple)) and ecg and isinstance(ecg[0], (list, tuple)) and ecg[0] and isinstance(
            ecg[0][0], (list, tuple)
        ):
            items = list(ecg)  # nested Python lists, one 2-D list per record
        else:
            array = _as_array(ecg)  # dtype kept: integer arrays are checked per record
            if array.ndim == 3:
                items = list(array)
            elif array.ndim == 2:
                items = [array]
            else:
                raise ValueError(
                    f"an ECG must be a 2-D array (leads x samples with layout='leads_first'), got shape {array.shape}"
                )
        records = []
        per_record_rates = isinstance(sampling_rate, (list, tuple))
        per_record_names = isinstance(lead_names, (list, tuple)) and lead_names and isinstance(lead_names[0], (list, tuple))
        if per_record_rates and len(sampling_rate) != len(items):
            raise ValueError(f"got {len(sampling_rate)} sampling rates for {len(items)} records")
        if per_record_names and len(lead_names) != len(items):
            raise ValueError(f"got {len(lead_names)} lead-name lists for {len(items)} records")
        for index, item in enumerate(items):
            rate = sampling_rate[index] if per_record_rates else sampling_rate
            names = lead_names[index] if per_record_names else lead_names
            name = f"record {index}"
            record_units, missing_leads, checked = units, (), False
            if isinstance(item, dict) or _is_record_object(item):
                get = item.get if isinstance(item, dict) else (lambda key, default=None: getattr(item, key, default))
                if get("record_id") is not None:
                    name = f"record {get('record_id')!r}"
                signal = get("signal")
                if signal is None:
                    raise ValueError(f"{name}: no 'signal' field")
                rate = get("sampling_rate", None) or rate
                names = get("lead_names", None) or names
                record_units = get("units", None) or units
                missing_leads = get("missing_leads", None)
                missing_leads = () if missing_leads is None else list(missing_leads)  # any format: list, numpy
                checked = _is_record_object(item) and not isinstance(item, dict)  # read (and checked) by the reader
            else:
                signal = item
            records.append({"signal": signal, "sampling_rate": rate, "lead_names": names, "name": name, "layout": layout,
                            "units": record_units, "missing_leads": missing_leads, "checked": checked})
        return records

    # -- one record ---------------------------------------------------------------------------------

    def _process_one(self, record: dict, check_amplitude: bool = True):
        name = record["name"]
        rate = record["sampling_rate"]
        if rate is None:
            raise ValueError(f"{name}: no sampling rate given; pass sampling_rate=<Hz> (the model expects {self.sampling_rate} Hz)")
        if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name}: sampling rate must be a number of Hz, got {rate!r} ({type(rate).__name__})")
        if not np.isfinite(float(rate)):
            raise ValueError(f"{name}: sampling rate must be a positive finite number of Hz, got {rate}")
        if isinstance(rate, (float, np.floating)) and not float(rate).is_integer():
            fraction = Fraction(float(rate)).limit_denominator(1000)
        else:
            fraction = Fraction(int(rate))
        if fraction <= 0:
            raise ValueError(f"{name}: sampling rate must be positive, got {rate}")
        signal = _signal_in_millivolts(record["signal"], record.get("units"), name)
        if signal.ndim != 2:
            raise ValueError(f"{name}: signal must be 2-D, got shape {signal.shape}")
        if record["layout"] == "time_first":
            signal = signal.T
        elif record["layout"] != "leads_first":
            raise ValueError(f"layout must be one of {LAYOUTS}, got {record['layout']!r}")
        names = record["lead_names"]
        if isinstance(names, str):
            raise ValueError(f"{name}: lead_names must be a list of lead names, got the string {names!r}")
        if names is None:
            raise ValueError(
                f"{name}: lead_names is required: leads are matched to the model by name, never by position "
                f"(for example lead_names={list(self.lead_names)})"
            )
        try:
            names = canonical_lead_names(list(names))
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
        if signal.shape[0] != len(names):
            hint = " (is the layout time_first?)" if signal.shape[1] == len(names) else ""
            raise ValueError(
                f"{name}: signal has {signal.shape[0]} leads along axis 0 but {len(names)} lead names were given{hint}; "
                f"shape {signal.shape}, layout {record['layout']!r}"
            )
        if signal.shape[1] == 0:
            raise ValueError(f"{name}: signal is empty (0 samples)")
        duration = signal.shape[1] / float(fraction)
        if duration < self.min_duration:
            raise ValueError(
                f"{name}: record is {duration:.3f} s long ({signal.shape[1]} samples at {float(fraction):g} Hz); "
                f"at least {self.min_duration:g} s is required"
            )
        declared = set()  # filled by the reader or the dataset builder, never recorded: absent, no new warning
        try:
            declared_leads = canonical_lead_names([str(lead) for lead in record.get("missing_leads", ())])
        except ValueError as err:
            raise ValueError(f"{name}: missing_leads: {err}") from None
        # Each lead's extremes, which the amplitude check needs anyway, are also the finiteness check: NaN
        # propagates into both and +-inf shows in one. Two passes over the signal instead of four with a separate
        # np.isfinite here and in the amplitude check: the whole extractor 0.37 -> 0.32 ms per record at 500 -> 100 Hz
        # and 0.27 -> 0.24 ms at 500 Hz (64 PTB-XL records, two interleaved runs each, 2026-12-04).
        extremes = (signal.max(axis=1), signal.min(axis=1))
        present = np.ones(signal.shape[0], dtype=bool)
        if declared_leads or not (np.isfinite(extremes[0]).all() and np.isfinite(extremes[1]).all()):
            extremes = None
            # Gaps are written into the signal: a copy, never the caller's array.
            signal = signal.astype(np.float32, copy=True)
            for lead in declared_leads:
                if lead not in names:
                    raise ValueError(f"{name}: missing_leads names {lead!r}, which is not one of its leads {list(names)}")
                signal[names.index(lead)] = np.nan
                declared.add(lead)
            missing_before = ~np.isfinite(signal)
            present = self._repair_nans(signal, names, name, ~missing_before)
        # Gaps of records the reader returned ("checked") were reported by the reader.
        if extremes is None and not record.get("checked") and missing_before.any():
            gaps = [names[i] for i in np.flatnonzero(missing_before.any(axis=1) & present)]
            absent = [names[i] for i in np.flatnonzero(~present) if names[i] not in declared]
            parts = []
            if gaps:
                parts.append(f"{int(missing_before[present].sum())} missing (NaN/inf) samples in lead(s) "
                             f"{', '.join(gaps)} interpolated")
            if absent:
                parts.append(f"lead(s) {', '.join(absent)} with more than {self.max_nan_fraction:.0%} missing samples "
                             "treated as absent (lead_mask 0)")
            if parts:
                warnings.warn(f"{name}: {'; '.join(parts)}", ECGDataWarning, stacklevel=3)
        if check_amplitude and not record.get("checked"):
            rows = np.flatnonzero(present)
            checked_signal = signal if rows.size == signal.shape[0] else signal[rows]
            for issue in amplitude_issues(checked_signal, [names[i] for i in rows], extremes=extremes):
                warnings.warn(f"{name}: {issue}", ECGDataWarning, stacklevel=3)

        keep = [i for i, lead in enumerate(names) if lead in self._lead_index and present[i]]
        if not keep:
            raise ValueError(
                f"{name}: none of the model's leads {list(self.lead_names)} is present with usable samples "
                f"(got {names})"
            )
        if len(keep) < signal.shape[0] or fraction == self.sampling_rate:
            # A copy (normalised in place below); resampling makes its own, so a full selection skips this one.
            signal = signal[keep]
        signal = self._crop_and_resample(signal, fraction)
        valid = signal.shape[1]
        signal = self._normalize(signal)

        output = np.full((len(self.lead_names), self.num_samples), self.padding_value, dtype=np.float32)
        rows = [self._lead_index[names[i]] for i in keep]
        output[rows, :valid] = signal
        lead_mask = np.zeros(len(self.lead_names), dtype=bool)
        lead_mask[rows] = True
        attention_mask = np.zeros(self.num_samples, dtype=bool)
        attention_mask[:valid] = True
        return output, lead_mask, attention_mask

    def _repair_nans(self, signal: np.ndarray, names: list, name: str, finite: np.ndarray) -> np.ndarray:
        """Interpolate NaN gaps in place (`finite`: `np.isfinite(signal)`); returns which leads are usable."""
        present = np.ones(signal.shape[0], dtype=bool)
        if finite.all():
            return present
        if not finite.any():
            raise ValueError(f"{name}: signal is entirely NaN/inf")
        positions = np.arange(signal.shape[1])
        for lead in np.flatnonzero(~finite.all(axis=1)):
            good = finite[lead]
            if not good.any() or good.mean() < 1.0 - self.max_nan_fraction:
                present[lead] = False
                signal[lead] = 0.0
                continue
            signal[lead, ~good] = np.interp(positions[~good], positions[good], signal[lead, good])
        if not present.any():
            raise ValueError(f"{name}: every lead has more than {self.max_nan_fraction:.0%} NaN samples")
        return present

    def _crop_and_resample(self, signal: np.ndarray, rate: Fraction) -> np.ndarray:
        target = Fraction(self.sampling_rate)
        # Crop in the source rate first so that long records are not resampled in full.
        source_len = int(np.ceil(self.num_samples * rate / target))
        if signal.shape[1] > source_len:
            start = 0 if self.crop == "start" else (signal.shape[1] - source_len) // 2
            signal = signal[:, start : start + source_len]
        if rate != target:
            ratio = target / rate
            if ratio.numerator == 1:  # an integer decimation (500 -> 100 Hz, 1000 -> 500 Hz): the faster path
                return _decimate(signal, ratio.denominator)[:, : self.num_samples]
            from scipy.signal import resample_poly

            taps = _resampling_taps(ratio.numerator, ratio.denominator).astype(signal.dtype, copy=False)
            signal = resample_poly(signal, ratio.numerator, ratio.denominator, axis=1, window=taps).astype(np.float32)
        return signal[:, : self.num_samples]

    def _normalize(self, signal: np.ndarray) -> np.ndarray:
        if self.normalization == "baseline":
            signal -= _row_medians(signal)
        elif self.normalization == "zscore":
            signal -= signal.mean(axis=1, keepdims=True)
            # A flat lead keeps zeros instead of amplified noise.
            signal /= np.maximum(signal.std(axis=1, keepdims=True), 1e-3)
        if self.clip_value is not None:
            np.clip(signal, -self.clip_value, self.clip_value, out=signal)
        return signal

    # -- public -------------------------------------------------------------------------------------

    def __call__(
        self,
        ecg,
        sampling_rate: int | float | Sequence[int] | None = None,
        lead_names: Sequence[str] | Sequence[Sequence[str]] | None = None,
        layout: str = "leads_first",
        return_tensors: str | None = None,
        units: str | None = None,
        check_amplitude: bool = True,
        **kwargs,
    ) -> BatchFeature:
        """Prepare one ECG or a batch.

        Args:
            ecg: one record or a list of records. A record is a 2-D array (NumPy, torch or nested
                lists) in millivolts, a dict with `signal`, `sampling_rate`, `lead_names` (and optionally
                `record_id`), as produced by this project's datasets, an `ECGRecord` from the WFDB
                reader, or the path of a WFDB record. A 3-D array is a batch of records sharing rate and leads.
            sampling_rate: rate in Hz (one for all records or one per record); required unless each
                record carries its own.
            lead_names: names of the input leads in the order of the signal's lead axis (one list
                for all records or one list per record); required unless each record carries its own.
            layout: `"leads_first"` (leads x samples) or `"time_first"` (samples x leads, as WFDB's `p_signal`).
            return_tensors: `"pt"` or `"np"` (default: NumPy arrays).
            units: what one unit of an array input is: `"mV"`, `"uV"` or `"V"` (a dict record may
                carry its own `units`). Float arrays default to millivolts; integer arrays (usually ADC
                counts) are refused unless `units` is given: divide counts by the ADC gain first.
            check_amplitude: warn ([`ECGDataWarning`], naming the record) about flat leads and an
                implausible amplitude of array inputs, as the WFDB reader does for files (records the
                reader returned were checked there). The data collator turns it off for dataset rows,
                which their builder read with the reader.

        Returns:
            `BatchFeature` with `input_values` `(batch, leads, num_samples)` float32, `lead_mask`
            `(batch, leads)` bool and `attention_mask` `(batch, num_samples)` bool.
        """
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if units is not None and units not in UNIT_SCALES:
            raise ValueError(f"units must be one of {list(UNIT_SCALES)}, got {units!r}")
        records = self._split_records(ecg, sampling_rate, lead_names, layout, units)
        if not records:
            raise ValueError("no ECG given")
        outputs = [self._process_one(record, check_amplitude) for record in records]
        data = {
            "input_values": np.stack([o[0] for o in outputs]),
            "lead_mask": np.stack([o[1] for o in outputs]),
            "attention_mask": np.stack([o[2] for o in outputs]),
        }
        return BatchFeature(data=data, tensor_type=return_tensors)


def _is_path(value) -> bool:
    return isinstance(value, (str, os.PathLike))


def _is_array(value) -> bool:
    return isinstance(value, np.ndarray) or type(value).__module__.startswith("torch")


def _is_record_object(value) -> bool:
    return all(hasattr(value, attr) for attr in ("signal", "sampling_rate", "lead_names"))


def _signal_in_millivolts(value, units, name: str) -> np.ndarray:
    """The signal as float32 millivolts; integer or boolean arrays only with stated units."""
    if type(value).__module__.startswith("torch"):
        kind = "f" if value.is_floating_point() else ("b" if str(value.dtype) == "torch.bool" else "i")
        dtype_name = str(value.dtype).replace("torch.", "")
    else:
        value = np.asarray(value)
        kind, dtype_name = value.dtype.kind, str(value.dtype)
    if kind not in "fiub":
        raise ValueError(f"{name}: signal must hold numbers, got dtype {dtype_name}")
    if kind == "b":
        raise ValueError(f"{name}: signal is a boolean array, not an ECG in millivolts")
    if kind in "iu" and units is None:
        raise ValueError(
            f"{name}: signal is an integer array ({dtype_name}); integers are usually ADC counts, not millivolts. "
            "Divide by the ADC gain (counts per mV) to pass millivolts, or pass units='mV' (or 'uV', 'V') "
            "to say what the integers are"
        )
    if units is not None and units not in UNIT_SCALES:
        raise ValueError(f"{name}: units must be one of {list(UNIT_SCALES)}, got {units!r}")
    signal = _to_numpy(value)
    scale = UNIT_SCALES[units] if units is not None else 1.0
    return signal * np.float32(scale) if scale != 1.0 else signal


def _as_array(value) -> np.ndarray:
    if type(value).__module__.startswith("torch"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _to_numpy(value) -> np.ndarray:
    if type(value).__module__.startswith("torch"):
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


__all__ = ["ECGFeatureExtractor"]
