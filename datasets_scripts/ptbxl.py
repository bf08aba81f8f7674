"""PTB-XL (Wagner et al., Scientific Data 2020) from its original PhysioNet layout.

Expected layout of ``data_dir``::

    ptbxl_database.csv      one row per ECG: ecg_id, patient_id, report, scp_codes, strat_fold, filename_lr/hr, ...
    scp_statements.csv      the 71 SCP-ECG statements with their diagnostic/form/rhythm flags and classes
    records100/NNNNN/NNNNN_lr.{hea,dat}   100 Hz, WFDB format 16
    records500/NNNNN/NNNNN_hr.{hea,dat}   500 Hz, WFDB format 16
"""

from __future__ import annotations

import ast
import csv
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import datasets

from .base import ECGBuilder, ECGBuilderConfig, RecordEntry, file_fingerprint, logger
from .labels import ConceptMapper

DATABASE_FILE = "ptbxl_database.csv"
STATEMENTS_FILE = "scp_statements.csv"


@dataclass
class PTBXLRow:
    ecg_id: str
    patient_id: Optional[str]
    report: str
    scp_codes: Dict[str, float]
    strat_fold: int
    filename_lr: str
    filename_hr: str


def _check_dir(data_dir: str) -> str:
    path = os.path.join(str(data_dir), DATABASE_FILE)
    if not os.path.isfile(path):
        raise ValueError(
            f"{data_dir} is not a PTB-XL folder: {DATABASE_FILE} not found there "
            "(expected the PhysioNet layout with ptbxl_database.csv, scp_statements.csv, records100/, records500/)"
        )
    return path


def _clean_id(value: str) -> Optional[str]:
    value = (value or "").strip()
    if not value or value.lower() == "nan":
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() else value


def read_ptbxl_database(data_dir: str) -> List[PTBXLRow]:
    """Parse ``ptbxl_database.csv``; ``scp_codes`` (a Python dict literal) becomes ``{code: likelihood}``."""
    path = _check_dir(data_dir)
    rows: List[PTBXLRow] = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"ecg_id", "report", "scp_codes", "strat_fold", "filename_lr", "filename_hr"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
        for line_no, row in enumerate(reader, start=2):
            ecg_id = _clean_id(row["ecg_id"])
            if ecg_id is None:
                raise ValueError(f"{path} line {line_no}: empty ecg_id")
            try:
                codes = ast.literal_eval(row["scp_codes"]) if row["scp_codes"].strip() else {}
                if not isinstance(codes, dict):
                    raise ValueError("not a dict")
                codes = {str(k): float(v) for k, v in codes.items()}
            except (ValueError, SyntaxError) as err:
                raise ValueError(f"{path} line {line_no} (ecg_id {ecg_id}): unreadable scp_codes {row['scp_codes']!r}: {err}") from err
            try:
                fold = int(float(row["strat_fold"]))
            except ValueError as err:
                raise ValueError(f"{path} line {line_no} (ecg_id {ecg_id}): bad strat_fold {row['strat_fold']!r}") from err
            rows.append(
                PTBXLRow(
                    ecg_id=ecg_id,
                    patient_id=_clean_id(row.get("patient_id", "")),
                    report=(row["report"] or "").strip(),
                    scp_codes=codes,
                    strat_fold=fold,
                    filename_lr=row["filename_lr"].strip(),
                    filename_hr=row["filename_hr"].strip(),
                )
            )
    return rows


def iter_ptbxl_reports(data_dir: str) -> Iterator[Tuple[str, str]]:
    """``(ecg_id, report)`` for every row of ``ptbxl_database.csv``, in file order."""
    for row in read_ptbxl_database(data_dir):
        yield row.ecg_id, row.report


# ------------------------------------------------------------------------------------------------
# Label sets (derived from scp_statements.csv, as the PTB-XL benchmark of Strodthoff et al. does)

LABEL_SETS = ("super", "sub", "form", "rhythm", "all", "reports")


@dataclass
class SCPStatement:
    code: str
    description: str
    diagnostic: bool
    form: bool
    rhythm: bool
    diagnostic_class: Optional[str]
    diagnostic_subclass: Optional[str]


def read_scp_statements(data_dir: str) -> Dict[str, SCPStatement]:
    """``scp_statements.csv`` as ``{code: SCPStatement}`` in file order."""
    path = os.path.join(str(data_dir), STATEMENTS_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"{data_dir} is not a PTB-XL folder: {STATEMENTS_FILE} not found there")
    out: Dict[str, SCPStatement] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        head = next(reader)
        col = {name: i for i, name in enumerate(head)}
        for needed in ("description", "diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass"):
            if needed not in col:
                raise ValueError(f"{path}: missing column {needed!r}")

        def flag(row, name):
            value = row[col[name]].strip()
            return bool(value) and float(value) == 1.0

        for row in reader:
            if not row or not row[0].strip():
                continue
            code = row[0].strip()
            out[code] = SCPStatement(
                code=code,
                description=row[col["description"]].strip(),
                diagnostic=flag(row, "diagnostic"),
                form=flag(row, "form"),
                rhythm=flag(row, "rhythm"),
                diagnostic_class=row[col["diagnostic_class"]].strip() or None,
                diagnostic_subclass=row[col["diagnostic_subclass"]].strip() or None,
            )
    return out


def label_codes(scp_codes: Dict[str, float], statements: Dict[str, SCPStatement], label_set: str) -> List[Tuple[str, str]]:
    """The ``(kind, code)`` pairs of one record for a label set (kind: ``ptbxl_class`` or ``scp``).

    Every statement listed in ``scp_codes`` counts, whatever its likelihood (0 means "likelihood
    not given" in PTB-XL): this is what the benchmark's ``compute_label_aggregations`` does.
    ``super``/``sub`` map diagnostic statements to their ``diagnostic_class``/``diagnostic_subclass``;
    ``form``/``rhythm`` keep the statements flagged as such; ``all``/``reports`` keep every statement.
    Codes missing from ``scp_statements.csv`` are ignored, as in the benchmark.
    """
    out: List[Tuple[str, str]] = []
    for code in scp_codes:
        st = statements.get(code)
        if st is None:
            continue
        if label_set == "super":
            item = ("ptbxl_class", st.diagnostic_class) if st.diagnostic and st.diagnostic_class else None
        elif label_set == "sub":
            item = ("ptbxl_class", st.diagnostic_subclass) if st.diagnostic and st.diagnostic_subclass else None
        elif label_set == "form":
            item = ("scp", code) if st.form else None
        elif label_set == "rhythm":
            item = ("scp", code) if st.rhythm else None
        elif label_set in ("all", "reports"):
            item = ("scp", code)
        else:
            raise ValueError(f"unknown PTB-XL label set {label_set!r}; one of {LABEL_SETS}")
        if item is not None and item not in out:
            out.append(item)
    return out


def class_codes(statements: Dict[str, SCPStatement], label_set: str) -> List[Tuple[str, str]]:
    """Every ``(kind, code)`` of a label set: 5 superclasses, 23 subclasses, 19 form, 12 rhythm, 71 all."""
    out: List[Tuple[str, str]] = []
    for code, st in statements.items():
        out.extend(c for c in label_codes({code: 0.0}, statements, label_set) if c not in out)
    if label_set in ("super", "sub"):
        out.sort(key=lambda kc: kc[1])
    return out


# ------------------------------------------------------------------------------------------------
# Builder



@dataclass
class PTBXLConfig(ECGBuilderConfig):
    """PTB-XL configuration; the config name is the label set.

    Label sets: ``super`` (5 diagnostic superclasses), ``sub`` (23 diagnostic subclasses), ``form``
    (19 form statements), ``rhythm`` (12 rhythm statements), ``all`` (all 71 SCP statements),
    ``reports`` (every record with its report, labels as in ``all``, for pre-training). Records
    without any label of the set are left out (except in ``reports``).

    ``sampling_rate``: 100 reads ``records100``, 500 or ``None`` reads ``records500``; another
    rate resamples the 500 Hz records. The split is ``strat_fold`` 1-8 train, 9 validation,
    10 test (the dataset's recommended split, used by the MERL/SuPreME zero-shot protocol), unless
    ``split_file`` is given. Other arguments: :class:`datasets_scripts.base.ECGBuilderConfig`.
    """

    label_set: str = "super"


class Ptbxl(ECGBuilder):
    """PTB-XL 1.0.x from its PhysioNet folder (``data_dir``); see :class:`PTBXLConfig`."""

    BUILDER_CONFIG_CLASS = PTBXLConfig
    BUILDER_CONFIGS = [
        PTBXLConfig(name=s, label_set=s, version=datasets.Version("1.0.0"), description=f"PTB-XL, label set {s!r}")
        for s in LABEL_SETS
    ]
    DEFAULT_CONFIG_NAME = "super"
    CORPUS_DESCRIPTION = (
        "PTB-XL: 21,799 clinical 12-lead 10 s ECGs of 18,869 patients (PhysioNet), SCP-ECG statements mapped "
        "to concept names of the SuPreME concept vocabulary; reports mostly German."
    )
    CITATION = "Wagner P. et al., PTB-XL, a large publicly available electrocardiography dataset. Sci Data 7, 154 (2020)."
    HOMEPAGE = "https://physionet.org/content/ptb-xl/"

    def _fingerprint_sources(self, data_dir, kwargs):
        _check_dir(data_dir)
        return [
            "db=" + file_fingerprint(os.path.join(data_dir, DATABASE_FILE)),
            "scp=" + file_fingerprint(os.path.join(data_dir, STATEMENTS_FILE)),
        ]

    def _validate_config(self) -> None:
        super()._validate_config()
        if self.config.label_set not in LABEL_SETS:
            raise ValueError(f"PTB-XL label_set must be one of {LABEL_SETS}, got {self.config.label_set!r}")

    def _mapper(self) -> ConceptMapper:
        return ConceptMapper("ptbxl", self.config.unmapped_codes)

    def class_names(self) -> List[str]:
        """Concept names of the label set's classes (5 / 23 / 19 / 12 / 71), for zero-shot candidates."""
        statements = read_scp_statements(self.config.data_dir)
        mapper = self._mapper()
        names: List[str] = []
        for kind, code in class_codes(statements, self.config.label_set):
            name = mapper._lookup(kind, code)
            if name is not None and name not in names:
                names.append(name)
        mapper.finish()
        return names

    def _index(self) -> List[RecordEntry]:
        data_dir = self.config.data_dir
        statements = read_scp_statements(data_dir)
        rows = read_ptbxl_database(data_dir)
        label_set = self.config.label_set
        mapper = self._mapper()
        # Check that the label set's classes stay distinct as concept names.
        classes = class_codes(statements, label_set)
        class_names = [mapper._lookup(k, c) for k, c in classes]
        mapper.missing.clear()
        named = [n for n in class_names if n is not None]
        if len(set(named)) < len(named):
            dupes = sorted({n for n in named if named.count(n) > 1})
            self._label_notes = {"merged_classes": dupes}
            logger.warning(
                "ptbxl/%s: several classes map to the same concept(s) %s", label_set, dupes
            )
        rate = self.config.sampling_rate
        use_lr = rate == 100
        entries: List[RecordEntry] = []
        for row in rows:
            codes = label_codes(row.scp_codes, statements, label_set)
            labels: List[str] = []
            for kind, code in codes:
                name = mapper._lookup(kind, code)
                if name is not None and name not in labels:
                    labels.append(name)
            if not labels and label_set != "reports":
                continue
            rel = row.filename_lr if use_lr else row.filename_hr
            split = "train" if row.strat_fold <= 8 else "validation" if row.strat_fold == 9 else "test"
            entries.append(
                RecordEntry(
                    record_id=row.ecg_id, source=os.path.join(data_dir, rel), labels=labels, report=row.report,
                    patient_id=row.patient_id, split=split,
                )
            )
        dropped = mapper.finish()
        if dropped:
            self._label_notes = {**getattr(self, "_label_notes", {}), "unmapped_codes_dropped": dropped}
        return entries

    def _target_rate(self, rec):
        rate = self.config.sampling_rate
        return None if rate in (None, 100, 500) else int(rate)
