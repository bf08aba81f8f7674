"""Reading WFDB records (``.hea`` + ``.dat`` or ``.mat``) into millivolts with canonical lead names.

This is the one reader under every corpus builder and under the zero-shot pipeline's path input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import numpy as np

from processing.ecg_leads import canonical_lead_names


class RecordError(ValueError):
    """A record that cannot be read as a valid ECG; the message names the record and the fault."""


@dataclass
class ECGRecord:
    record_id: str
    signal: np.ndarray  # float32, shape (leads, samples), millivolts
    lead_names: List[str]  # canonical names, same order as ``signal``
    sampling_rate: int
    comments: List[str] = field(default_factory=list)
    path: str = ""


def read_wfdb_record(path: str | os.PathLike) -> ECGRecord:
    """Read one WFDB record given its path without extension (``.../00001_hr``) or with ``.hea``."""
    import wfdb

    path = Path(path)
    if path.suffix in (".hea", ".dat", ".mat"):
        path = path.with_suffix("")
    if not path.with_suffix(".hea").is_file():
        raise RecordError(f"{path}: no WFDB header {path.with_suffix('.hea').name} found")
    try:
        rec = wfdb.rdrecord(str(path), physical=True)
    except Exception as err:  # wfdb raises many types for damaged files
        raise RecordError(f"{path}: unreadable WFDB record ({type(err).__name__}: {err})") from err
    signal = np.asarray(rec.p_signal, dtype=np.float32).T
    units = [u.strip().lower() for u in (rec.units or ["mv"] * rec.n_sig)]
    for i, unit in enumerate(units):
        if unit in ("uv", "µv", "microvolt"):
            signal[i] /= 1000.0
        elif unit not in ("mv", "millivolt"):
            raise RecordError(f"{path}: lead {rec.sig_name[i]!r} has unsupported unit {unit!r}")
    try:
        leads = canonical_lead_names(rec.sig_name)
    except ValueError as err:
        raise RecordError(f"{path}: {err}") from err
    return ECGRecord(
        record_id=path.name,
        signal=np.ascontiguousarray(signal),
        lead_names=leads,
        sampling_rate=int(round(rec.fs)),
        comments=list(rec.comments or []),
        path=str(path),
    )
