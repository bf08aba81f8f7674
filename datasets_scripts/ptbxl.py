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
