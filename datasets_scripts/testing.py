"""Writers of small corpora in each corpus's exact on-disk layout, for tests and benchmarks.

Everything is written with ``wfdb`` / ``scipy.io`` from signals the caller passes (typically the
synthetic beat model), into a folder the caller owns (a pytest ``tmp_path``). Nothing here reads
or copies real patient data; :func:`make_ptbxl_tree` can *link* a real PTB-XL folder's records to
multiply them for a benchmark.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from processing.ecg.ecg_leads import STANDARD_12_LEADS

MIMIC_LEAD_ORDER = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")


def example_signal(index: int = 0, seed: int = 7, seconds: float = 10.0, fs: int = 500) -> np.ndarray:
    """A realistic 12-lead signal (float64 mV, standard lead order) from the synthetic beat model."""
    from .corpora.synthetic_ecg import render_signal, sample_spec

    return render_signal(sample_spec(seed, index, seconds), fs, seconds).astype(np.float64)


def write_wfdb_dat(
    directory: str | os.PathLike,
    name: str,
    signal_mv: Optional[np.ndarray] = None,
    *,
    digital: Optional[np.ndarray] = None,
    fs: int = 500,
    lead_names: Sequence[str] = STANDARD_12_LEADS,
    gain: float = 1000.0,
    units: str = "mV",
    fmt: str = "16",
    comments: Iterable[str] = (),
) -> Path:
    """Write ``name.hea`` + ``name.dat`` with ``wfdb.wrsamp``; returns the record path (no extension).

    Give ``signal_mv`` (leads, samples) in mV, or ``digital`` (leads, samples) integer counts
    (to place exact values such as the format-16 missing-sample value -32768).
    """
    import wfdb

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    n_sig = len(lead_names)
    if digital is None:
        digital = np.rint(np.asarray(signal_mv, dtype=np.float64) * gain).astype(np.int64)
    d = np.asarray(digital).T.astype(np.int64)
    wfdb.wrsamp(
        name, fs=fs, units=[units] * n_sig, sig_name=list(lead_names), d_signal=d, fmt=[fmt] * n_sig,
        adc_gain=[float(gain)] * n_sig, baseline=[0] * n_sig, comments=list(comments), write_dir=str(directory),
    )
    return directory / name


def write_wfdb_mat(
    directory: str | os.PathLike,
    name: str,
    signal_mv: Optional[np.ndarray] = None,
    *,
    digital: Optional[np.ndarray] = None,
    fs: int = 500,
    lead_names: Sequence[str] = STANDARD_12_LEADS,
    gain: float = 1000.0,
    units: str = "mV",
    comments: Iterable[str] = (),
    header_samples: Optional[int] = None,
    header_leads: Optional[int] = None,
) -> Path:
    """Write a Challenge-style record: ``name.hea`` + MATLAB v4 ``name.mat`` (int16 ``val``, ``16+24``).

    ``header_samples``/``header_leads`` override what the header declares (to write defects).
    """
    from scipy.io import savemat

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if digital is None:
        digital = np.rint(np.asarray(signal_mv, dtype=np.float64) * gain)
    val = np.asarray(digital).astype(np.int16)
    savemat(str(directory / f"{name}.mat"), {"val": val}, format="4")
    n_sig = header_leads if header_leads is not None else val.shape[0]
    n_samp = header_samples if header_samples is not None else val.shape[1]
    lines = [f"{name} {n_sig} {fs} {n_samp}"]
    for i in range(n_sig):
        lead = lead_names[i] if i < len(lead_names) else f"X{i}"
        row = val[i] if i < val.shape[0] else np.zeros(1, np.int16)
        checksum = int(row.astype(np.int64).sum()) % 65536
        checksum = checksum - 65536 if checksum > 32767 else checksum
        lines.append(f"{name}.mat 16+24 {gain:g}/{units} 16 0 {int(row[0])} {checksum} 0 {lead}")
    lines.extend(f"#{c}" for c in comments)
    (directory / f"{name}.hea").write_text("\n".join(lines) + "\n")
    return directory / name


def make_cpsc2018_tree(root: str | os.PathLike, records: Dict[str, Sequence[int]], seed: int = 3) -> Path:
    """Original CPSC2018 layout: ``TrainingSet/A*.mat`` (struct ECG: sex, age, data in mV) + ``REFERENCE.csv``.

    ``records``: ``{record name: [label numbers 1..9]}``; lengths vary between 6 and 14 s.
    """
    from scipy.io import savemat

    root = Path(root)
    folder = root / "TrainingSet"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, name in enumerate(records):
        seconds = float(rng.integers(6, 15))
        data = np.round(example_signal(i, seed=seed, seconds=seconds), 3)  # mV at 1 microvolt resolution
        ecg = {"sex": "Male" if i % 2 else "Female", "age": float(40 + i), "data": data}
        savemat(str(folder / f"{name}.mat"), {"ECG": ecg})
    with open(folder / "REFERENCE.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Recording", "First_label", "Second_label", "Third_label"])
        for name, labels in records.items():
            labels = list(labels) + [""] * (3 - len(labels))
            writer.writerow([name, *labels])
    return root


def make_csn_tree(root: str | os.PathLike, records: Dict[str, Sequence[str]], seed: int = 5,
                  condition_names: Optional[Dict[str, str]] = None) -> Path:
    """CSN layout: ``WFDBRecords/NN/NNN/JSxxxxx.{hea,mat}`` with ``#Dx`` codes + ``ConditionNames_SNOMED-CT.csv``."""
    root = Path(root)
    for i, (name, codes) in enumerate(records.items()):
        number = int("".join(ch for ch in name if ch.isdigit()) or i)
        folder = root / "WFDBRecords" / f"{number // 1000 + 1:02d}" / f"{number // 100 + 10:03d}"
        comments = [f"Age: {50 + i}", "Sex: Female", f"Dx: {','.join(codes)}", "Rx: Unknown", "Hx: Unknown", "Sx: Unknown"]
        write_wfdb_mat(folder, name, example_signal(i, seed=seed), comments=comments)
    names = condition_names or {}
    with open(root / "ConditionNames_SNOMED-CT.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Acronym Name", "Full Name", "Snomed_CT"])
        for code in sorted({c for codes in records.values() for c in codes}):
            writer.writerow([code, names.get(code, f"condition {code}"), code])
    return root


def make_mimic_tree(
    root: str | os.PathLike,
    studies: List[dict],
    seed: int = 11,
    gain: float = 200.0,
) -> Path:
    """MIMIC-IV-ECG layout with ``record_list.csv``, ``machine_measurements.csv`` and ``files/pNNNN/...``.

    ``studies``: dicts with ``subject_id``, ``study_id``, ``reports`` (list of up to 18 statements)
    and optionally ``nan`` (list of (lead name, start, stop) sample ranges to write as missing).
    Leads are written in MIMIC's order I, II, III, aVR, aVF, aVL, V1..V6.
    """
    root = Path(root)
    reorder = [STANDARD_12_LEADS.index(lead) for lead in MIMIC_LEAD_ORDER]
    rows = []
    for i, st in enumerate(studies):
        subject, study = int(st["subject_id"]), int(st["study_id"])
        rel = Path("files") / f"p{str(subject)[:4]}" / f"p{subject}" / f"s{study}"
        digital = np.rint(example_signal(i, seed=seed) * gain).astype(np.int64)[reorder]
        for lead, a, b in st.get("nan", []):
            digital[MIMIC_LEAD_ORDER.index(lead), a:b] = -32768
        write_wfdb_dat(root / rel, str(study), digital=digital, lead_names=MIMIC_LEAD_ORDER, gain=gain)
        rows.append((subject, study, rel / str(study)))
    with open(root / "record_list.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["subject_id", "study_id", "file_name", "ecg_time", "path"])
        for subject, study, rel in rows:
            writer.writerow([subject, study, study, "2180-01-01 00:00:00", rel.as_posix()])
    with open(root / "machine_measurements.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["subject_id", "study_id", "cart_id", "ecg_time", *[f"report_{k}" for k in range(18)],
                         "bandwidth", "filtering", "rr_interval"])
        for st in studies:
            reports = list(st.get("reports", [])) + [""] * (18 - len(st.get("reports", [])))
            writer.writerow([st["subject_id"], st["study_id"], 6848296, "2180-01-01 00:00:00", *reports,
                             "0.005-150 Hz", "60 Hz notch Baseline filter", 800])
    return root


def make_ptbxl_tree(source: str | os.PathLike, root: str | os.PathLike, copies: int = 1) -> Path:
    """A PTB-XL folder with ``copies`` x the source's records: metadata rewritten, records symlinked.

    Copy ``k`` of ``ecg_id`` e gets ``ecg_id = e + k * 100000`` (its own record files, linking the
    same data). For benchmarks on more records than the shared sample holds.
    """
    source, root = Path(source), Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "scp_statements.csv").write_bytes((source / "scp_statements.csv").read_bytes())
    with open(source / "ptbxl_database.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames
        rows = list(reader)
    out_rows = []
    for k in range(copies):
        for row in rows:
            new = dict(row)
            eid = int(float(row["ecg_id"])) + k * 100000
            new["ecg_id"] = str(eid)
            for col, suffix, folder in (("filename_lr", "lr", "records100"), ("filename_hr", "hr", "records500")):
                src = source / row[col]
                rel = Path(folder) / f"{eid // 1000 * 1000:05d}" / f"{eid:05d}_{suffix}"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                for ext in (".hea", ".dat"):
                    target = root / rel.with_suffix(ext)
                    if ext == ".hea":  # the header names its record and data file: rewrite it
                        text = src.with_suffix(".hea").read_text().replace(src.name, rel.name)
                        target.write_text(text)
                    elif not target.exists():
                        os.symlink(src.with_suffix(ext).resolve(), target)
                new[col] = rel.as_posix()
            out_rows.append(new)
    with open(root / "ptbxl_database.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(out_rows)
    return root
