"""CSN: the Chapman University, Shaoxing People's Hospital and Ningbo First Hospital 12-lead ECG
database (Zheng et al., Sci Data 2020 and PhysioNet 2022, "A large scale 12-lead electrocardiogram
database for arrhythmia study"), 45,152 records of 10 s at 500 Hz.

Expected layout of ``data_dir``::

    WFDBRecords/NN/NNN/JSxxxxx.hea + JSxxxxx.mat   WFDB, format 16 in MATLAB v4 files, 12 leads
    ConditionNames_SNOMED-CT.csv                   Acronym Name, Full Name, Snomed_CT (optional here)

Each header carries ``#Age``, ``#Sex`` and ``#Dx: <SNOMED-CT codes>``. Labels are the concept names
of the ``#Dx`` codes (project concept vocabulary); an unmapped code is an error that lists each
such code with its name from ``ConditionNames_SNOMED-CT.csv``. The record id is the record name
(``JS00001``). Split: deterministic stratified 80/10/10 (salt ``"csn"``) or ``split_file``.

Known data defects: some records hold flat (constant) leads (a warning in the summary); records
without a ``#Dx`` code are left out and counted in the summary.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Dict, List

import datasets

from ..builder import ECGBuilder, ECGBuilderConfig, RecordEntry
from ..fingerprints import file_fingerprint, tree_fingerprint
from ..labels import snomed_concept_names
from .physionet2021 import index_dx_tree

RECORDS_DIR = "WFDBRecords"
CONDITIONS_FILE = "ConditionNames_SNOMED-CT.csv"


def read_condition_names(data_dir: str) -> Dict[str, str]:
    """``{SNOMED code: full name}`` from ``ConditionNames_SNOMED-CT.csv`` (empty if absent)."""
    path = os.path.join(data_dir, CONDITIONS_FILE)
    if not os.path.isfile(path):
        return {}
    out: Dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = {f.strip().lower(): f for f in (reader.fieldnames or [])}
        code_col = fields.get("snomed_ct") or fields.get("snomed ct") or fields.get("snomedctcode")
        name_col = fields.get("full name") or fields.get("acronym name")
        if not code_col or not name_col:
            raise ValueError(f"{path}: expected the columns Snomed_CT and Full Name, found {reader.fieldnames}")
        for row in reader:
            code = (row.get(code_col) or "").strip()
            if code:
                out[code] = (row.get(name_col) or "").strip()
    return out


def _records_root(data_dir: str) -> str:
    root = os.path.join(data_dir, RECORDS_DIR)
    if not os.path.isdir(root):
        raise ValueError(
            f"{data_dir} is not a CSN folder: {RECORDS_DIR}/ not found there (expected WFDBRecords/NN/NNN/JS*.hea, "
            f"{CONDITIONS_FILE})"
        )
    return root


@dataclass
class CSNConfig(ECGBuilderConfig):
    """CSN configuration (one config, ``default``). Arguments: :class:`datasets_scripts.builder.ECGBuilderConfig`."""


class Csn(ECGBuilder):
    """Chapman-Shaoxing/Ningbo 12-lead database from its PhysioNet folder (``data_dir``)."""

    BUILDER_CONFIG_CLASS = CSNConfig
    BUILDER_CONFIGS = [CSNConfig(name="default", version=datasets.Version("1.0.0"), description="CSN")]
    DEFAULT_CONFIG_NAME = "default"
    CORPUS_DESCRIPTION = (
        "Chapman-Shaoxing and Ningbo 12-lead ECG database (45,152 records, 10 s, 500 Hz), SNOMED-CT diagnoses "
        "mapped to concept names of the SuPreME concept vocabulary."
    )
    CITATION = (
        "Zheng J. et al., A 12-lead electrocardiogram database for arrhythmia research covering more than 10,000 "
        "patients. Sci Data 7:48 (2020); Zheng J. et al., Optimal multi-stage arrhythmia classification approach. "
        "Sci Rep 10:2898 (2020)."
    )
    HOMEPAGE = "https://physionet.org/content/ecg-arrhythmia/"
    CODE_MODULES = ("datasets_scripts.corpora.physionet2021",)

    def label_classes(self) -> List[str]:
        return snomed_concept_names()

    def fixed_num_samples(self) -> int:
        return 10 * int(self.config.sampling_rate or 500)  # every CSN record is 10 s at 500 Hz

    def _fingerprint_sources(self, data_dir, kwargs):
        root = _records_root(data_dir)
        parts = ["hea=" + tree_fingerprint(root, ".hea"), "mat=" + tree_fingerprint(root, ".mat")]
        table = os.path.join(data_dir, CONDITIONS_FILE)
        if os.path.isfile(table):
            parts.append("conditions=" + file_fingerprint(table))
        return parts

    def _index(self) -> List[RecordEntry]:
        c = self.config
        entries, notes = index_dx_tree(
            _records_root(c.data_dir), "csn", c.unmapped_codes, "csn", c.validation_fraction, c.test_fraction,
            code_names=read_condition_names(c.data_dir),
        )
        self._label_notes = notes
        return entries
