"""CPSC2018, the China Physiological Signal Challenge 2018 training set (Liu et al., JMIHI 2018).

Expected layout of ``data_dir`` (the original download, unpacked)::

    REFERENCE.csv                  Recording,First_label,Second_label,Third_label  (anywhere below data_dir)
    TrainingSet1/A0001.mat ...     (any folder depth; every A*.mat below data_dir is found)

Each ``.mat`` file (MATLAB v5) holds a struct ``ECG`` with fields ``sex``, ``age`` and ``data``:
a 12 x N double matrix, leads in the order I, II, III, aVR, aVL, aVF, V1..V6, 500 Hz, 6-60 s.
``data`` is in millivolts. Evidence: the 2020 PhysioNet Challenge redistributed these recordings
in WFDB form with the header line ``A0001.mat 16+24 1000/mV 16 0 28 -1716 0 I`` (int16 at 1000
counts/mV, i.e. the original values at 1 microvolt resolution), and torch_ecg's CPSC2018 reader
treats ``ECG.data`` as mV (it only guesses microvolts when the peak exceeds 20). No original
``.mat`` file was available here to check directly, so the builder stores the values as int16 at
1000 counts/mV and its amplitude check warns, naming the record, if a record looks like microvolts.
The Challenge's WFDB copy of CPSC2018 (``A*.hea``/``.mat`` with ``#Dx``) loads with the
``physionet2021`` builder instead.

Labels 1..9 of ``REFERENCE.csv`` (up to three per record) map to concepts through their SCP-ECG
codes: 1 Normal -> NORM, 2 AF -> AFIB, 3 I-AVB -> 1AVB, 4 LBBB -> CLBBB, 5 RBBB -> CRBBB,
6 PAC -> PAC, 7 PVC -> PVC, 8 STD -> STD_, 9 STE -> STE_.

Split: no official one (the challenge's test set is not public); by default a deterministic
stratified 80/10/10 split (:func:`datasets_scripts.splits.stratified_split`, salt ``"cpsc2018"``), or
the user's ``split_file`` to reproduce a published protocol.

Known data defects: ages of A0608, A1549, A1876, A2299 and A5990 are NaN (not used here); the
second and third label columns are empty for most records.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Dict, List

import datasets
import numpy as np

from processing.ecg.ecg_leads import STANDARD_12_LEADS

from ..builder import ECGBuilder, ECGBuilderConfig, CorpusLicense, RecordEntry
from ..fingerprints import file_fingerprint, tree_fingerprint
from ..splits import stratified_split
from ..encoding import quantize_physical
from ..labels import CodeMapper
from processing.ecg.wfdb_reader import DigitalRecord, RecordError, _amplitude_issues

REFERENCE_FILE = "REFERENCE.csv"
SAMPLING_RATE = 500
CPSC_CLASSES = {
    1: ("Normal", "NORM"),
    2: ("AF", "AFIB"),
    3: ("I-AVB", "1AVB"),
    4: ("LBBB", "CLBBB"),
    5: ("RBBB", "CRBBB"),
    6: ("PAC", "PAC"),
    7: ("PVC", "PVC"),
    8: ("STD", "STD_"),
    9: ("STE", "STE_"),
}


def find_reference(data_dir: str) -> str:
    found = []
    for dirpath, dirnames, filenames in os.walk(data_dir):
        dirnames.sort()
        if REFERENCE_FILE in filenames:
            found.append(os.path.join(dirpath, REFERENCE_FILE))
    if not found:
        raise ValueError(f"{data_dir} is not a CPSC2018 folder: no {REFERENCE_FILE} found below it")
    if len(found) > 1:
        raise ValueError(f"{data_dir}: several {REFERENCE_FILE} files found ({found}); point data_dir at one training set")
    return found[0]


def read_reference(path: str) -> Dict[str, List[int]]:
    """``{record: [label numbers]}`` from ``REFERENCE.csv`` (empty label cells ignored)."""
    out: Dict[str, List[int]] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        head = [h.strip() for h in next(reader, [])]
        if not head or head[0] != "Recording":
            raise ValueError(f"{path}: expected the header Recording,First_label,Second_label,Third_label, got {head}")
        for line_no, row in enumerate(reader, start=2):
            if not row or not row[0].strip():
                continue
            labels = []
            for cell in row[1:]:
                cell = cell.strip()
                if not cell:
                    continue
                try:
                    value = int(float(cell))
                except ValueError:
                    raise ValueError(f"{path} line {line_no}: label {cell!r} is not a number 1..9") from None
                if value not in CPSC_CLASSES:
                    raise ValueError(f"{path} line {line_no}: label {value} is not one of 1..9")
                if value not in labels:
                    labels.append(value)
            if not labels:
                raise ValueError(f"{path} line {line_no}: record {row[0].strip()} has no label")
            out[row[0].strip()] = labels
    return out


def find_mat_files(data_dir: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(data_dir):
        dirnames.sort()
        for name in filenames:
            if name.endswith(".mat"):
                out.setdefault(name[:-4], os.path.join(dirpath, name))
    return out


def read_cpsc_mat(path: str, record_id: str) -> np.ndarray:
    """``ECG.data`` of one CPSC2018 file: float64 (12, samples) in mV. Raises ``RecordError``."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except FileNotFoundError:
        raise RecordError(f"record {record_id}: signal file {path} not found") from None
    except Exception as err:  # scipy raises several types for damaged files
        raise RecordError(f"record {record_id}: unreadable .mat file {path} ({type(err).__name__}: {err})") from err
    if "ECG" not in mat:
        raise RecordError(f"record {record_id}: {path} has no struct ECG (found {sorted(k for k in mat if not k.startswith('__'))})")
    ecg = mat["ECG"]
    try:
        data = np.asarray(ecg["data"][0, 0], dtype=np.float64)
    except (ValueError, IndexError, KeyError) as err:
        raise RecordError(f"record {record_id}: {path}: struct ECG has no usable field data ({err})") from None
    if data.ndim != 2 or data.shape[0] != 12:
        raise RecordError(f"record {record_id}: {path}: ECG.data has shape {data.shape}, expected 12 leads x samples")
    if data.shape[1] == 0:
        raise RecordError(f"record {record_id}: {path}: ECG.data holds no samples")
    return data


def physical_to_digital(
    signal: np.ndarray, record_id: str, path: str, fs: int, leads, nan_policy: str, max_nan_fraction: float
) -> DigitalRecord:
    """Validate a float mV signal (NaN handling, amplitude) and quantise it for storage."""
    x = np.array(signal, dtype=np.float64)
    missing = ~np.isfinite(x)
    n_nan = int(missing.sum())
    issues: List[str] = []
    missing_leads = [leads[i] for i in np.flatnonzero(missing.all(axis=1))]
    if n_nan:
        bad = [leads[i] for i in np.flatnonzero(missing.any(axis=1))]
        if nan_policy == "raise":
            raise RecordError(f"record {record_id} ({path}): {n_nan} missing (NaN) samples in lead(s) {', '.join(bad)}")
        if n_nan / x.size > max_nan_fraction:
            raise RecordError(
                f"record {record_id} ({path}): {n_nan} of {x.size} samples are missing (NaN), more than "
                f"max_nan_fraction={max_nan_fraction}"
            )
        for i in np.flatnonzero(missing.any(axis=1)):
            good = ~missing[i]
            if nan_policy == "interpolate" and good.any():
                idx = np.arange(x.shape[1])
                x[i, missing[i]] = np.interp(idx[missing[i]], idx[good], x[i, good])
            else:
                x[i, missing[i]] = 0.0
        issues.append(f"{n_nan} missing (NaN) samples in lead(s) {', '.join(bad)}, "
                      + ("interpolated" if nan_policy == "interpolate" else "set to 0 mV"))
    digital, gain = quantize_physical(x)
    issues.extend(_amplitude_issues(digital, gain, list(leads), None))
    return DigitalRecord(
        record_id=record_id, digital=digital, gain=gain, lead_names=list(leads), sampling_rate=int(fs),
        path=path, n_nan=n_nan, issues=issues, fast_path=False, missing_leads=missing_leads,
    )


@dataclass
class CPSC2018Config(ECGBuilderConfig):
    """CPSC2018 configuration (one config, ``default``). Arguments: :class:`datasets_scripts.builder.ECGBuilderConfig`.

    Labels are the concept names of the nine CPSC classes; the default split is a deterministic
    stratified split with ``validation_fraction``/``test_fraction`` (0.1 each).
    """


class Cpsc2018(ECGBuilder):
    """CPSC2018 training set from its original ``.mat`` files and ``REFERENCE.csv`` (``data_dir``)."""

    BUILDER_CONFIG_CLASS = CPSC2018Config
    BUILDER_CONFIGS = [CPSC2018Config(name="default", version=datasets.Version("1.0.0"), description="CPSC2018, 9 classes")]
    DEFAULT_CONFIG_NAME = "default"
    CORPUS_DESCRIPTION = (
        "CPSC2018: 6,877 12-lead ECGs (500 Hz, 6-60 s) with up to three of nine rhythm/morphology labels, "
        "mapped to concept names of the SuPreME concept vocabulary."
    )
    CITATION = (
        "Liu F. et al., An open access database for evaluating the algorithms of electrocardiogram rhythm and "
        "morphology abnormality detection. J Med Imaging Health Inform 8(7):1368-1373 (2018)."
    )
    HOMEPAGE = "http://2018.icbeb.org/Challenge.html"
    # The original download states no licence; the PhysioNet/CinC Challenge 2020 redistributes the
    # same recordings under CC-BY-4.0 (load them with the physionet2021 builder).
    LICENSE = CorpusLicense("other", "terms of the CPSC2018 organisers (no licence stated with the download)",
                            "http://2018.icbeb.org/Challenge.html")

    def _fingerprint_sources(self, data_dir, kwargs):
        return ["ref=" + file_fingerprint(find_reference(data_dir)), "mat=" + tree_fingerprint(data_dir, ".mat")]

    def class_names(self) -> List[str]:
        mapper = CodeMapper("cpsc2018", self.config.unmapped_codes)
        names = mapper.names("scp", [scp for _, scp in CPSC_CLASSES.values()])
        mapper.finish()
        return names

    def _index(self) -> List[RecordEntry]:
        data_dir = self.config.data_dir
        reference = read_reference(find_reference(data_dir))
        files = find_mat_files(data_dir)
        mapper = CodeMapper("cpsc2018", self.config.unmapped_codes)
        entries = []
        for record, numbers in reference.items():
            labels = mapper.names("scp", [CPSC_CLASSES[n][1] for n in numbers])
            source = files.get(record, os.path.join(data_dir, f"{record}.mat"))
            entries.append(RecordEntry(record_id=record, source=source, labels=labels))
        dropped = mapper.finish()
        if dropped:
            self._label_notes = {"unmapped_codes_dropped": dropped}
        stratified_split(entries, self.config.validation_fraction, self.config.test_fraction, salt="cpsc2018")
        return entries

    def _read_entry(self, entry: RecordEntry) -> DigitalRecord:
        data = read_cpsc_mat(entry.source, entry.record_id)
        return physical_to_digital(
            data, entry.record_id, entry.source, SAMPLING_RATE, STANDARD_12_LEADS, self.config.nan_policy,
            self.config.max_nan_fraction,
        )
