"""MERL's six downstream sets, read from MERL's published split folder.

MERL (Liu et al., ICML 2024) defined the zero-shot protocol that SuPreME and later papers report on:
PTB-XL super (5 classes), sub (23), form (19) and rhythm (12), CPSC2018 (9) and CSN (38), 106 classes
in all, each set with train/val/test CSV files whose label columns are one-hot in MERL's order. Users
get the files from MERL's repository (``finetune/data_split``); this module reads a folder in that
layout::

    data_split/ptbxl/{super_class,sub_class,form,rhythm}/ptbxl_<set>_{train,val,test}.csv
    data_split/icbeb/icbeb_{train,val,test}.csv          (CPSC2018)
    data_split/chapman/chapman_{train,val,test}.csv      (CSN, Chapman-Shaoxing-Ningbo)

``merl_protocol.json`` (next to this file) holds, per set, the columns before the labels, the
column that names the record, and every label column in MERL's order mapped to a concept of the
vocabulary (so the prompt bank covers all 106). A split file whose label columns differ from it is
an error, so a wrong or edited file cannot pass as the protocol.

How MERL reads the signals, reproduced here (``protocol_signal``):

- PTB-XL: ``records500`` (500 Hz), the first 5,000 samples (10 s).
- CPSC2018: the first 2,500 samples at 500 Hz (5 s), zero-padded to 5,000; ``full_record=True``
  passes the whole record instead (the checkpoint's processor then crops or pads it).
- CSN: the first 5,000 samples (the records are 10 s at 500 Hz).

Durations are applied in seconds at the record's own rate, which is the same at 500 Hz. MERL then
min-max normalises each 12 x 5,000 array and reorders leads to MIMIC's order; those two steps are
its model's input contract, not the protocol's: here the checkpoint's own processor maps leads by
name and normalises as in training.

CSN's label columns were derived in MERL's notebook by substring matching on the ``diagnose``
acronyms, so some columns also mark other codes (``AF`` is set for every ``AFIB`` record, ``AVB``
for ``1AVB``/``2AVB``, ``VB`` for ``IVB``, ...). A faithful reproduction keeps MERL's columns;
:func:`substring_derived_positives` counts, per class, the positives whose ``diagnose`` does not
contain the code itself, and the benchmark table states them.

MERL's PTB-XL sub train file orders three label columns (ISC, AVB, RAO/RAE) differently from its val
and test files; ``merl_protocol.json`` records that order and the file is read by column name, so the
classes keep the test file's order in every split (a loader that reads columns by position would
mislabel those three classes when training on this file).

Records listed in a split file but absent from the corpus folder are counted and reported
(:class:`SplitCoverage`), never silently dropped.
"""

from __future__ import annotations

import csv
import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import EvaluationError

PROTOCOL_PATH = Path(__file__).with_name("merl_protocol.json")
SET_NAMES = ("ptbxl_super", "ptbxl_sub", "ptbxl_form", "ptbxl_rhythm", "cpsc2018", "csn")
CORPORA = ("ptbxl", "cpsc2018", "csn")
# Our split names -> MERL's file suffixes.
SPLIT_SUFFIXES = {"train": "train", "validation": "val", "test": "test"}
PROTOCOL_SECONDS = 10.0  # MERL's 5,000 samples at 500 Hz
CPSC2018_SECONDS = 5.0  # MERL's 2,500 samples at 500 Hz, zero-padded to 10 s


@dataclass(frozen=True)
class MERLClass:
    """One label column: MERL's code, the vocabulary concept it is scored as, and how that was found."""

    code: str
    concept: str
    basis: str


@dataclass(frozen=True)
class MERLSet:
    """One downstream set of the protocol (see ``merl_protocol.json``)."""

    name: str
    corpus: str
    title: str
    split_folder: str
    file_stem: str
    leading_columns: Tuple[str, ...]
    record_column: str
    classes: Tuple[MERLClass, ...]
    # Splits whose file orders the label columns differently from the test file (read by name).
    split_column_orders: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()

    @property
    def codes(self) -> List[str]:
        """The label columns in MERL's order (that of its test file)."""
        return [c.code for c in self.classes]

    def file_columns(self, split: str) -> List[str]:
        """The label columns as the split's file orders them."""
        return list(dict(self.split_column_orders).get(split, self.codes))

    def split_file(self, split_dir, split: str) -> Path:
        if split not in SPLIT_SUFFIXES:
            raise EvaluationError(f"split must be one of {sorted(SPLIT_SUFFIXES)}, got {split!r}")
        return Path(split_dir) / self.split_folder / f"{self.file_stem}_{SPLIT_SUFFIXES[split]}.csv"


@functools.lru_cache(maxsize=4)
def _load_protocol(path: str) -> Dict[str, MERLSet]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    sets = {}
    for name, entry in data["sets"].items():
        sets[name] = MERLSet(
            name=name, corpus=entry["corpus"], title=entry["title"], split_folder=entry["split_folder"],
            file_stem=entry["file_stem"], leading_columns=tuple(entry["leading_columns"]),
            record_column=entry["record_column"],
            classes=tuple(MERLClass(c["code"], c["concept"], c["basis"]) for c in entry["classes"]),
            split_column_orders=tuple((split, tuple(order)) for split, order in entry.get("split_column_orders", {}).items()),
        )
    return sets


def load_protocol(path=None) -> Dict[str, MERLSet]:
    """The six sets of ``merl_protocol.json`` (or of another file in its format), in protocol order."""
    return dict(_load_protocol(str(Path(path or PROTOCOL_PATH).resolve())))


# ---------------------------------------------------------------------------------------------- split files


@dataclass
class SplitRows:
    """One split file: per row the record reference (as the file writes it), the record id, the 0/1
    targets in MERL's column order, and (CSN) the ``diagnose`` acronyms."""

    set_name: str
    split: str
    path: Path
    references: List[str]
    record_ids: List[str]
    targets: np.ndarray
    diagnoses: Optional[List[str]] = None


def _record_id(corpus: str, row: Dict[str, str]) -> str:
    if corpus == "ptbxl":
        return row["ecg_id"].strip()
    if corpus == "cpsc2018":
        return row["filename"].strip()
    return Path(row["ecg_path"].strip()).stem


def read_split_file(merl_set: MERLSet, split_dir, split: str) -> SplitRows:
    """Read and check one of MERL's split CSV files.

    Raises:
        EvaluationError: the file is missing, its columns are not MERL's for this set (the message
            lists what differs), a label cell is not 0/1, or a row names no record.
    """
    path = merl_set.split_file(split_dir, split)
    if not path.is_file():
        raise EvaluationError(
            f"{merl_set.name}: split file {path} not found; --merl_split_dir must be MERL's data_split folder "
            f"(with ptbxl/, icbeb/ and chapman/ inside)"
        )
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise EvaluationError(f"{path}: empty file, expected MERL's {merl_set.name} split") from None
        lead = len(merl_set.leading_columns)
        if tuple(header[:lead]) != merl_set.leading_columns:
            raise EvaluationError(
                f"{path}: the first columns are {header[:lead]}, expected MERL's {list(merl_set.leading_columns)}"
            )
        codes = header[lead:]
        expected = merl_set.file_columns(split)
        if codes != expected:
            missing = [c for c in expected if c not in codes]
            extra = [c for c in codes if c not in expected]
            raise EvaluationError(
                f"{path}: label columns differ from MERL's {merl_set.name} protocol ({len(codes)} columns, expected "
                f"{len(expected)}; missing {missing}, unexpected {extra}"
                + ("; same names in another order" if not missing and not extra else "") + ")"
            )
        references, record_ids, rows_targets, diagnoses = [], [], [], []
        for line_no, cells in enumerate(reader, start=2):
            if not cells:
                continue
            if len(cells) != len(header):
                raise EvaluationError(f"{path} line {line_no}: {len(cells)} cells, the header has {len(header)}")
            row = dict(zip(header, cells))
            reference = row[merl_set.record_column].strip()
            if not reference:
                raise EvaluationError(f"{path} line {line_no}: empty {merl_set.record_column!r}")
            values = cells[lead:]
            bad = [(code, value) for code, value in zip(codes, values) if value.strip() not in ("0", "1")]
            if bad:
                raise EvaluationError(f"{path} line {line_no}: label cells must be 0 or 1, got {bad[:5]}")
            references.append(reference)
            record_ids.append(_record_id(merl_set.corpus, row))
            rows_targets.append([int(v) for v in values])
            if merl_set.corpus == "csn":
                diagnoses.append(row.get("diagnose", ""))
    targets = np.asarray(rows_targets, dtype=np.int8).reshape(len(rows_targets), len(codes))
    # Into the protocol's (test file's) column order, by name.
    targets = targets[:, [codes.index(code) for code in merl_set.codes]]
    return SplitRows(merl_set.name, split, path, references, record_ids, targets,
                     diagnoses if merl_set.corpus == "csn" else None)


def substring_derived_positives(rows: SplitRows, codes: Sequence[str], keep: Optional[Sequence[int]] = None) -> Dict[str, int]:
    """CSN: per class, positives whose ``diagnose`` acronyms do not include the class code itself
    (set by MERL's substring matching on another code). ``keep``: row indices to count (default all)."""
    if rows.diagnoses is None:
        return {}
    indices = range(len(rows.references)) if keep is None else keep
    counts = {code: 0 for code in codes}
    for index in indices:
        acronyms = {part.strip() for part in rows.diagnoses[index].split(",")}
        for column, code in enumerate(codes):
            if rows.targets[index, column] and code not in acronyms:
                counts[code] += 1
    return counts


# ---------------------------------------------------------------------------------------------- records on disk


class RecordLocator:
    """Finds the records a split file names inside a corpus folder.

    - PTB-XL: ``filename_hr`` relative to the folder (``records500/00000/00063_hr``).
    - CPSC2018 (``icbeb``): the ``filename`` (``A0001``) anywhere below the folder, as a WFDB record
      (``A0001.hea``, the PhysioNet/CinC Challenge copies) or as the original CPSC2018 ``A0001.mat``.
    - CSN (``chapman``): ``ecg_path`` (``/chapman/WFDBRecords/01/010/JS00001.mat``) below the folder,
      else the record name anywhere below it (the Challenge copies keep the JS names).
    """

    def __init__(self, corpus: str, data_dir):
        if corpus not in CORPORA:
            raise EvaluationError(f"corpus must be one of {CORPORA}, got {corpus!r}")
        self.corpus = corpus
        self.data_dir = Path(data_dir)
        if not self.data_dir.is_dir():
            raise EvaluationError(f"{corpus} folder {self.data_dir} does not exist")
        self._index: Optional[Dict[str, Tuple[str, Path]]] = None

    def _build_index(self) -> Dict[str, Tuple[str, Path]]:
        index: Dict[str, Tuple[str, Path]] = {}
        original_mat: Dict[str, Path] = {}
        for dirpath, dirnames, filenames in os.walk(self.data_dir):
            dirnames.sort()
            for name in sorted(filenames):
                stem, suffix = os.path.splitext(name)
                if suffix == ".hea":
                    index.setdefault(stem, ("wfdb", Path(dirpath) / stem))
                elif suffix == ".mat":
                    original_mat.setdefault(stem, Path(dirpath) / name)
        if self.corpus == "cpsc2018":
            for stem, path in original_mat.items():
                index.setdefault(stem, ("cpsc_mat", path))
        return index

    def locate(self, reference: str) -> Optional[Tuple[str, Path]]:
        """``(kind, path)`` of a record (kind ``"wfdb"`` or ``"cpsc_mat"``), or None when absent."""
        if self.corpus == "ptbxl":
            base = self.data_dir / reference
            return ("wfdb", base) if base.with_name(base.name + ".hea").is_file() else None
        if self.corpus == "csn":
            relative = Path(reference.lstrip("/"))
            if relative.parts and relative.parts[0] == "chapman":
                relative = Path(*relative.parts[1:])
            base = (self.data_dir / relative).with_suffix("")
            if base.with_name(base.name + ".hea").is_file():
                return "wfdb", base
        if self._index is None:
            self._index = self._build_index()
        return self._index.get(Path(reference).stem)


def protocol_crop(signal: np.ndarray, sampling_rate: int, keep_seconds: float, total_seconds: float) -> np.ndarray:
    """The first ``keep_seconds`` of a (leads, samples) signal, zero-padded to ``total_seconds``."""
    keep = int(round(keep_seconds * sampling_rate))
    total = int(round(total_seconds * sampling_rate))
    out = np.zeros((signal.shape[0], total), dtype=np.float32)
    part = signal[:, : min(keep, signal.shape[1])]
    out[:, : part.shape[1]] = part
    return out


def read_record(kind: str, path: Path, record_id: str):
    """``(signal float32 mV (leads, samples), lead names, sampling rate)`` of a located record."""
    from processing.ecg.ecg_leads import STANDARD_12_LEADS
    from processing.ecg.wfdb_reader import read_wfdb_record

    if kind == "wfdb":
        record = read_wfdb_record(path, warn=False)
        return record.signal, list(record.lead_names), int(record.sampling_rate)
    # Original CPSC2018 .mat files: ECG.data in mV, 12 standard leads, 500 Hz (the corpus's description).
    from datasets_scripts.corpora.cpsc2018 import read_cpsc_mat

    return read_cpsc_mat(str(path), record_id).astype(np.float32), list(STANDARD_12_LEADS), 500


def protocol_signal(corpus: str, signal: np.ndarray, sampling_rate: int, full_record: bool = False) -> np.ndarray:
    """The part of a record MERL's loader gives the model (see the module docstring)."""
    if corpus == "cpsc2018":
        if full_record:
            return np.asarray(signal, dtype=np.float32)
        return protocol_crop(signal, sampling_rate, CPSC2018_SECONDS, PROTOCOL_SECONDS)
    return protocol_crop(signal, sampling_rate, PROTOCOL_SECONDS, PROTOCOL_SECONDS)


@dataclass
class SplitCoverage:
    """How many records of a split file were found on disk."""

    in_split_file: int
    present: int
    missing: int
    missing_examples: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"in_split_file": self.in_split_file, "present": self.present, "missing": self.missing,
                "missing_examples": list(self.missing_examples)}


def present_rows(rows: SplitRows, locator: RecordLocator, max_records: Optional[int] = None, examples: int = 10):
    """``([(row index, kind, path)], SplitCoverage)``: the split's records found on disk, in file order
    (the first ``max_records`` of them when given), and the count of those that are not."""
    found, missing = [], []
    for index, reference in enumerate(rows.references):
        location = locator.locate(reference)
        if location is None:
            missing.append(rows.record_ids[index])
        else:
            found.append((index, location[0], location[1]))
    coverage = SplitCoverage(len(rows.references), len(found), len(missing), missing[:examples])
    if max_records is not None:
        found = found[:max_records]
    return found, coverage


def _generate_rows(items, corpus, full_record):
    for record_id, kind, path, labels in items:
        signal, lead_names, rate = read_record(kind, Path(path), record_id)
        yield {
            "record_id": record_id,
            "signal": protocol_signal(corpus, signal, rate, full_record),
            "lead_names": lead_names,
            "sampling_rate": rate,
            "labels": labels,
        }


def split_dataset(merl_set: MERLSet, rows: SplitRows, found, cache_dir, full_record: bool = False, progress: bool = True):
    """A `datasets.Dataset` of the data contract (``record_id``, ``signal`` mV, ``lead_names``,
    ``sampling_rate``, ``labels`` = MERL codes) for the found rows, signals cut as MERL reads them."""
    import datasets

    codes = merl_set.codes
    items = [
        (rows.record_ids[i], kind, str(path), [codes[c] for c in np.flatnonzero(rows.targets[i])])
        for i, kind, path in found
    ]
    features = datasets.Features({
        "record_id": datasets.Value("string"),
        "signal": datasets.List(datasets.List(datasets.Value("float32"))),
        "lead_names": datasets.List(datasets.Value("string")),
        "sampling_rate": datasets.Value("int32"),
        "labels": datasets.List(datasets.Value("string")),
    })
    quiet = not progress and not datasets.are_progress_bars_disabled()
    if quiet:
        datasets.disable_progress_bars()
    try:
        dataset = datasets.Dataset.from_generator(
            _generate_rows, features=features, cache_dir=str(cache_dir),
            gen_kwargs={"items": items, "corpus": merl_set.corpus, "full_record": bool(full_record)},
        )
    except datasets.exceptions.DatasetGenerationError as error:
        # datasets wraps the reader's error; the caller wants the one that names the record.
        cause = error.__cause__
        if isinstance(cause, ValueError):
            raise EvaluationError(f"{merl_set.name} {rows.split}: {cause}") from cause
        raise
    finally:
        if quiet:
            datasets.enable_progress_bars()
    return dataset.with_format("numpy", columns=["signal"], output_all_columns=True)


__all__ = [
    "CORPORA", "MERLClass", "MERLSet", "PROTOCOL_PATH", "RecordLocator", "SET_NAMES", "SPLIT_SUFFIXES", "SplitCoverage",
    "SplitRows", "load_protocol", "present_rows", "protocol_crop", "protocol_signal", "read_record", "read_split_file",
    "split_dataset", "substring_derived_positives",
]
