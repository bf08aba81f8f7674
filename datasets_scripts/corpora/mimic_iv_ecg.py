"""MIMIC-IV-ECG (Gow et al., PhysioNet 2023): about 800,000 10-second 12-lead ECGs with machine reports.

Expected layout of ``data_dir``::

    record_list.csv            subject_id, study_id, file_name, ecg_time, path
    machine_measurements.csv   subject_id, study_id, cart_id, ecg_time, report_0 .. report_17, intervals, axes
    files/pNNNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN.{hea,dat}   WFDB format 16, 500 Hz, 5000 samples

Report text: the machine statements ``report_0`` .. ``report_17`` are joined in column order by
:func:`join_machine_statements`: empty cells are dropped, each statement is stripped, and statements
are separated by ``". "`` so that each becomes a sentence; a statement that starts with a lower-case
letter continues the previous one and is joined with a single space instead. The record id is
``study_id`` as a string.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import datasets

from ..builder import ECGBuilder, ECGBuilderConfig, CorpusLicense, RecordEntry
from ..fingerprints import file_fingerprint
from ..splits import hash_split
from processing.csv_files import CSVRows

RECORD_LIST_FILE = "record_list.csv"
MEASUREMENTS_FILE = "machine_measurements.csv"
N_REPORT_COLUMNS = 18
REPORT_COLUMNS = tuple(f"report_{i}" for i in range(N_REPORT_COLUMNS))


def join_machine_statements(statements: Iterable[Optional[str]]) -> str:
    """Join MIMIC-IV-ECG machine statements into one report (rules in the module docstring)."""
    out = ""
    for statement in statements:
        if statement is None:
            continue
        text = " ".join(str(statement).split())
        if not text or text.lower() == "nan":
            continue
        if not out:
            out = text
        elif text[0].islower():
            out = f"{out} {text}"
        else:
            out = f"{out.rstrip('.;, ')}. {text}"
    return out


def _check_file(data_dir: str, name: str) -> str:
    path = os.path.join(str(data_dir), name)
    if not os.path.isfile(path):
        raise ValueError(
            f"{data_dir} is not a MIMIC-IV-ECG folder: {name} not found there "
            "(expected record_list.csv, machine_measurements.csv and files/pNNNN/...)"
        )
    return path


def _study_id(value: str, path: str, line_no: int) -> str:
    value = (value or "").strip()
    try:
        number = float(value)
    except ValueError as err:
        raise ValueError(f"{path} line {line_no}: bad study_id {value!r}") from err
    if not number.is_integer():
        raise ValueError(f"{path} line {line_no}: bad study_id {value!r}")
    return str(int(number))


def iter_mimic_reports(data_dir: str) -> Iterator[Tuple[str, str]]:
    """``(study_id, joined report)`` for every row of ``machine_measurements.csv``, in file order."""
    path = _check_file(data_dir, MEASUREMENTS_FILE)
    reader = CSVRows(path)  # non-UTF-8 bytes and over-long fields: errors naming the file and line
    fields = reader.fieldnames
    if "study_id" not in fields:
        reader.close()
        raise ValueError(f"{path}: no study_id column")
    columns = [c for c in REPORT_COLUMNS if c in fields]
    if not columns:
        reader.close()
        raise ValueError(f"{path}: none of the columns report_0 .. report_17 found")
    for line_no, row in reader:
        yield _study_id(row["study_id"], path, line_no), join_machine_statements(row[c] for c in columns)


def read_mimic_reports(data_dir: str) -> Dict[str, str]:
    """``{study_id: report}`` for the whole corpus (a few hundred MB of text at full size)."""
    return dict(iter_mimic_reports(data_dir))


# ------------------------------------------------------------------------------------------------
# Builder



def read_record_list(data_dir: str) -> List[Tuple[str, str, str]]:
    """``(study_id, subject_id, relative path)`` for every row of ``record_list.csv``."""
    path = _check_file(data_dir, RECORD_LIST_FILE)
    out: List[Tuple[str, str, str]] = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"subject_id", "study_id", "path"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
        for line_no, row in enumerate(reader, start=2):
            rel = (row["path"] or "").strip()
            if not rel:
                raise ValueError(f"{path} line {line_no}: empty path")
            out.append((_study_id(row["study_id"], path, line_no), _study_id(row["subject_id"], path, line_no), rel))
    return out


@dataclass
class MimicIvEcgConfig(ECGBuilderConfig):
    """MIMIC-IV-ECG configuration (one config, ``default``).

    ``labels`` are empty: the corpus has no diagnosis labels; pre-training targets come from the
    entity extraction of the reports, joined by ``record_id`` (the ``study_id``). ``patient_id`` is
    the ``subject_id``. Split: by a hash of ``subject_id`` (patient-level), 98% train, 1% validation,
    1% test by default (``validation_fraction``/``test_fraction``), or ``split_file``. Missing
    (NaN) samples are interpolated by default (``nan_policy``). Other arguments:
    :class:`datasets_scripts.builder.ECGBuilderConfig`.
    """

    validation_fraction: float = 0.01
    test_fraction: float = 0.01


class MimicIvEcg(ECGBuilder):
    """MIMIC-IV-ECG 1.0 from its PhysioNet folder (``data_dir``); stream it or build the compact cache."""

    BUILDER_CONFIG_CLASS = MimicIvEcgConfig
    BUILDER_CONFIGS = [MimicIvEcgConfig(name="default", version=datasets.Version("1.0.0"), description="MIMIC-IV-ECG")]
    DEFAULT_CONFIG_NAME = "default"
    CORPUS_DESCRIPTION = (
        "MIMIC-IV-ECG: about 800,000 diagnostic 12-lead ECGs (10 s, 500 Hz) of about 160,000 patients with the "
        "ECG machine's statements as report text; no diagnosis labels."
    )
    CITATION = (
        "Gow B. et al., MIMIC-IV-ECG: Diagnostic Electrocardiogram Matched Subset (version 1.0). PhysioNet (2023). "
        "https://doi.org/10.13026/4nqg-sb35"
    )
    HOMEPAGE = "https://physionet.org/content/mimic-iv-ecg/"
    # Open access on PhysioNet under the Open Data Commons Open Database License (check the page).
    LICENSE = CorpusLicense("odbl", "Open Data Commons Open Database License v1.0", "https://physionet.org/content/mimic-iv-ecg/1.0/")

    def label_classes(self) -> List[str]:
        return []  # no diagnosis labels: targets come from the reports' entities

    def fixed_num_samples(self) -> int:
        return 10 * int(self.config.sampling_rate or 500)  # every record is 10 s at 500 Hz

    def _fingerprint_sources(self, data_dir, kwargs):
        return [
            "records=" + file_fingerprint(_check_file(data_dir, RECORD_LIST_FILE)),
            "measurements=" + file_fingerprint(_check_file(data_dir, MEASUREMENTS_FILE)),
        ]

    def _index(self) -> List[RecordEntry]:
        c = self.config
        reports = read_mimic_reports(c.data_dir)
        entries = []
        for study, subject, rel in read_record_list(c.data_dir):
            entries.append(
                RecordEntry(
                    record_id=study, source=os.path.join(c.data_dir, rel), labels=[], report=reports.get(study, ""),
                    patient_id=subject,
                    split=hash_split(subject, c.validation_fraction, c.test_fraction, salt="mimic_iv_ecg"),
                )
            )
        return entries
