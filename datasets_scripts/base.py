"""What every corpus builder shares: the config, indexing -> splits -> reading -> compact storage,
error handling with a summary file, and the source fingerprint that goes into the cache key.

A corpus module subclasses :class:`ECGBuilder` and implements

- ``_index(self) -> list[RecordEntry]``: the records from metadata only (no signal read), with
  labels already mapped to concept names and, where the corpus has an official split, the split;
- ``_fingerprint_sources(self, data_dir) -> list[str]``: the metadata files whose content decides
  what the dataset holds (hashed into the cache key);
- optionally ``_read_entry(self, entry)`` when records are not WFDB files.

Common config arguments (every builder, see :class:`ECGBuilderConfig`): ``sampling_rate``,
``split_file``, ``on_error``, ``nan_policy``, ``max_nan_fraction``, ``validation_fraction``,
``test_fraction``, ``reorder_leads``, ``unmapped_codes``, ``source_fingerprint`` (computed).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import datasets
import numpy as np

from processing.ecg_leads import STANDARD_12_LEADS

from .encoding import encode_digital, stored_features
from .wfdb_reader import DigitalRecord, RecordError, read_digital

logger = logging.getLogger("datasets_scripts")

SPLITS = ("train", "validation", "test")
ON_ERROR = ("raise", "skip")
SUMMARY_JSON = "ecg_summary.json"
SKIPPED_CSV = "skipped_records.csv"
_PART_PREFIX = "_ecg_issues-"
# Part of the cache key together with a hash of the builder modules' source code.
CODE_VERSION = "1"
_BIG_FILE = 64 * 2**20


@dataclass
class RecordEntry:
    """One record as the index knows it before its signal is read."""

    record_id: str
    source: str  # WFDB record path (no extension) or the corpus's own file
    labels: List[str] = field(default_factory=list)
    report: str = ""
    patient_id: Optional[str] = None
    split: Optional[str] = None
    extra: Optional[dict] = None


@dataclass
class ECGBuilderConfig(datasets.BuilderConfig):
    """Arguments shared by every ECG builder.

    Args:
        sampling_rate: output rate in Hz. PTB-XL picks ``records100`` or ``records500``; other
            corpora resample with ``scipy.signal.resample_poly`` when it differs from the record's
            rate. ``None``: the corpus's native rate (PTB-XL: 500).
        split_file: CSV with columns ``record_id`` and ``split`` (``train``/``validation``/``test``,
            also ``val``/``valid``/``dev``) that replaces the corpus's default split. Records not
            in the file are left out; its content is part of the cache key.
        on_error: ``"raise"`` stops at the first unreadable record with a message naming it and
            the fault; ``"skip"`` leaves such records out and lists them (with the reason) in
            ``ecg_summary.json`` and ``skipped_records.csv`` in the cache directory.
        nan_policy: missing samples: ``"interpolate"`` (default), ``"zero"`` or ``"raise"`` (see
            :mod:`datasets_scripts.wfdb_reader`).
        max_nan_fraction: a record with a larger fraction of missing samples is unreadable.
        validation_fraction, test_fraction: sizes of the deterministic split for corpora without
            an official one (ignored by PTB-XL, which uses ``strat_fold``).
        reorder_leads: store leads in the standard order I, II, III, aVR, aVL, aVF, V1..V6
            (resolved by name; default ``True``); ``False`` keeps the file's order. Either way
            ``lead_names`` states the order.
        unmapped_codes: a diagnosis code that has no concept in the vocabulary: ``"raise"``
            (default; the error lists every such code) or ``"drop"`` (the code is left out of the
            labels and counted in the summary file).
        source_fingerprint: hash of the source metadata, the split file, the concept vocabulary
            and the builder code version. Computed when the builder is created; it is part of the
            cache key, so an edited metadata file is never served from a stale cache.
    """

    sampling_rate: Optional[int] = None
    split_file: Optional[str] = None
    on_error: str = "raise"
    nan_policy: str = "interpolate"
    max_nan_fraction: float = 0.5
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    reorder_leads: bool = True
    unmapped_codes: str = "raise"
    source_fingerprint: Optional[str] = None


class ECGBuilder(datasets.GeneratorBasedBuilder):
    """Base class of the corpus builders (see the module docstring)."""

    BUILDER_CONFIG_CLASS = ECGBuilderConfig
    DEFAULT_WRITER_BATCH_SIZE = 256
    NEEDS_DATA_DIR = True
    CORPUS_DESCRIPTION = ""
    CITATION = ""
    HOMEPAGE = ""

    def __init__(self, *args, **kwargs):
        data_dir = kwargs.get("data_dir")
        if self.NEEDS_DATA_DIR:
            if not data_dir:
                raise ValueError(f"{type(self).__name__} needs data_dir: the folder of your {self._corpus_name()} download")
            if not os.path.isdir(data_dir):
                raise ValueError(f"{type(self).__name__}: data_dir {data_dir} is not a folder")
            kwargs["data_dir"] = os.path.abspath(data_dir)
        if kwargs.get("split_file"):
            kwargs["split_file"] = os.path.abspath(kwargs["split_file"])
        self._drop_default_kwargs(kwargs)
        if not kwargs.get("source_fingerprint"):
            kwargs["source_fingerprint"] = self._compute_fingerprint(kwargs)
        super().__init__(*args, **kwargs)
        self._validate_config()
        self._streaming = False

    # -- to implement ---------------------------------------------------------------------------

    def _index(self) -> List[RecordEntry]:
        raise NotImplementedError

    def _fingerprint_sources(self, data_dir: Optional[str], kwargs: dict) -> List[str]:
        """Strings (file hashes, parameters) that decide the dataset's content besides the config."""
        raise NotImplementedError

    # -- shared machinery -----------------------------------------------------------------------

    def _drop_default_kwargs(self, kwargs: dict) -> None:
        """Drop config arguments equal to the config's defaults, so that ``on_error="raise"`` given
        explicitly and left out share one cache (the cache key hashes the arguments as given)."""
        import dataclasses

        name = kwargs.get("config_name") or self.DEFAULT_CONFIG_NAME
        base = next((c for c in self.BUILDER_CONFIGS if c.name == name), None)
        for f in dataclasses.fields(self.BUILDER_CONFIG_CLASS):
            if f.name in ("name", "version", "data_dir", "data_files", "description", "source_fingerprint"):
                continue
            if f.name in kwargs:
                default = getattr(base, f.name) if base is not None else f.default
                if kwargs[f.name] is None or kwargs[f.name] == default:
                    del kwargs[f.name]

    @classmethod
    def _corpus_name(cls) -> str:
        return cls.__module__.rsplit(".", 1)[-1]

    def _validate_config(self) -> None:
        c = self.config
        if c.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {c.on_error!r}")
        if c.nan_policy not in ("interpolate", "zero", "raise"):
            raise ValueError(f"nan_policy must be 'interpolate', 'zero' or 'raise' for datasets, got {c.nan_policy!r}")
        if c.unmapped_codes not in ("raise", "drop"):
            raise ValueError(f"unmapped_codes must be 'raise' or 'drop', got {c.unmapped_codes!r}")
        if not (0 <= c.validation_fraction < 1 and 0 <= c.test_fraction < 1 and c.validation_fraction + c.test_fraction < 1):
            raise ValueError(
                f"validation_fraction and test_fraction must be in [0, 1) with a sum below 1, got "
                f"{c.validation_fraction} and {c.test_fraction}"
            )
        if c.sampling_rate is not None and (int(c.sampling_rate) != c.sampling_rate or c.sampling_rate <= 0):
            raise ValueError(f"sampling_rate must be a positive integer, got {c.sampling_rate!r}")

    def _compute_fingerprint(self, kwargs: dict) -> str:
        h = hashlib.sha256()
        h.update(f"{self._corpus_name()}|code={CODE_VERSION}".encode())
        for part in self._fingerprint_sources(kwargs.get("data_dir"), kwargs):
            h.update(b"|" + part.encode())
        if kwargs.get("split_file"):
            h.update(b"|split_file=" + file_fingerprint(kwargs["split_file"]).encode())
        h.update(b"|vocab=" + vocabulary_fingerprint().encode())
        h.update(b"|code=" + self._code_fingerprint().encode())
        return h.hexdigest()[:16]

    CODE_MODULES: Tuple[str, ...] = ()  # further modules whose code decides the stored content

    @classmethod
    def _code_fingerprint(cls) -> str:
        """Hash of the source of the modules that decide what is stored (reader, encoding, labels, corpus)."""
        import importlib
        import sys

        names = ["base", "encoding", "wfdb_reader", "labels", *cls.CODE_MODULES]
        files = [importlib.import_module(f"{__package__}.{n}").__file__ for n in names]
        files.append(sys.modules[cls.__module__].__file__)
        h = hashlib.sha256()
        for path in sorted(set(files)):
            h.update(file_fingerprint(path).encode())
        return h.hexdigest()

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=self.CORPUS_DESCRIPTION, features=stored_features(), citation=self.CITATION,
            homepage=self.HOMEPAGE,
        )

    def _split_generators(self, dl_manager) -> List[datasets.SplitGenerator]:
        entries = self._index()
        if self.config.split_file:
            entries = apply_split_file(entries, self.config.split_file)
        missing = [e.record_id for e in entries if e.split not in SPLITS]
        if missing:
            raise ValueError(f"{self._corpus_name()}: records without a split, e.g. {missing[:5]}")
        seen = set()
        for e in entries:
            if e.record_id in seen:
                raise ValueError(f"{self._corpus_name()}: duplicate record id {e.record_id!r} in the index")
            seen.add(e.record_id)
        by_split = {s: [e for e in entries if e.split == s] for s in SPLITS}
        self._split_counts = {s: len(v) for s, v in by_split.items()}
        return [
            datasets.SplitGenerator(name=getattr(datasets.Split, s.upper()), gen_kwargs={"entries": by_split[s]})
            for s in SPLITS
        ]

    def _generate_examples(self, entries: List[RecordEntry]) -> Iterator[Tuple[str, dict]]:
        part = None
        if not self._streaming and getattr(self, "_output_dir", None):
            part = os.path.join(self._output_dir, f"{_PART_PREFIX}{uuid.uuid4().hex}.jsonl")
        log: List[dict] = []
        try:
            for entry in entries:
                try:
                    rec = self._read_entry(entry)
                    example = self._to_example(entry, rec)
                except RecordError as err:
                    if self.config.on_error == "raise":
                        raise
                    logger.warning("skipping %s: %s", entry.record_id, err)
                    log.append({"record_id": entry.record_id, "action": "skipped", "reason": str(err), "source": entry.source})
                    continue
                for issue in rec.issues:
                    logger.warning("%s: %s", entry.record_id, issue)
                    log.append({"record_id": entry.record_id, "action": "warning", "reason": issue, "source": entry.source})
                yield entry.record_id, example
        finally:
            if part and log:
                _write_jsonl_atomic(part, log)

    def _read_entry(self, entry: RecordEntry) -> DigitalRecord:
        return read_digital(
            entry.source, nan_policy=self.config.nan_policy, max_nan_fraction=self.config.max_nan_fraction,
            warn=False, record_id=entry.record_id,
        )

    def _to_example(self, entry: RecordEntry, rec: DigitalRecord) -> dict:
        digital, gain, leads, fs = rec.digital, rec.gain, list(rec.lead_names), rec.sampling_rate
        target = self._target_rate(rec)
        if target and target != fs:
            digital, fs = resample_digital(digital, gain, fs, target, where=entry.record_id)
        if self.config.reorder_leads:
            order = sorted(range(len(leads)), key=lambda i: STANDARD_12_LEADS.index(leads[i]))
            if order != list(range(len(leads))):
                digital = digital[order]
                gain = gain[order]
                leads = [leads[i] for i in order]
        example = {
            "record_id": entry.record_id,
            "patient_id": entry.patient_id,
            "lead_names": leads,
            "sampling_rate": int(fs),
            "report": entry.report or "",
            "labels": list(entry.labels),
        }
        example.update(encode_digital(digital, gain))
        return example

    def _target_rate(self, rec: DigitalRecord) -> Optional[int]:
        return int(self.config.sampling_rate) if self.config.sampling_rate else None

    # -- after preparation: merge the per-process issue logs into one summary --------------------

    def download_and_prepare(self, *args, **kwargs):
        super().download_and_prepare(*args, **kwargs)
        self._merge_issue_logs()

    def _merge_issue_logs(self) -> None:
        out_dir = self._output_dir
        if not out_dir or not os.path.isdir(out_dir):
            return
        parts = sorted(p for p in os.listdir(out_dir) if p.startswith(_PART_PREFIX))
        if not parts and os.path.exists(os.path.join(out_dir, SUMMARY_JSON)):
            return
        rows: List[dict] = []
        for name in parts:
            with open(os.path.join(out_dir, name), encoding="utf-8") as fh:
                rows.extend(json.loads(line) for line in fh if line.strip())
        rows.sort(key=lambda r: (r["action"], r["record_id"]))
        skipped = [r for r in rows if r["action"] == "skipped"]
        summary = {
            "corpus": self._corpus_name(),
            "config": self.config.name,
            "source_fingerprint": self.config.source_fingerprint,
            "data_dir": self.config.data_dir,
            "on_error": self.config.on_error,
            "num_skipped": len(skipped),
            "num_warnings": len(rows) - len(skipped),
            "skipped": skipped,
            "warnings": [r for r in rows if r["action"] != "skipped"],
            "label_notes": getattr(self, "_label_notes", {}),
        }
        _write_text_atomic(os.path.join(out_dir, SUMMARY_JSON), json.dumps(summary, indent=1, ensure_ascii=False))
        tmp = os.path.join(out_dir, f".{SKIPPED_CSV}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["record_id", "reason", "source"])
            for r in skipped:
                writer.writerow([r["record_id"], r["reason"], r["source"]])
        os.replace(tmp, os.path.join(out_dir, SKIPPED_CSV))
        for name in parts:
            os.remove(os.path.join(out_dir, name))
        if skipped:
            logger.warning("%s: %d record(s) skipped; see %s", self._corpus_name(), len(skipped), os.path.join(out_dir, SUMMARY_JSON))

    @property
    def summary_path(self) -> str:
        return os.path.join(self._output_dir, SUMMARY_JSON)

    def as_streaming_dataset(self, *args, **kwargs):
        self._streaming = True
        return super().as_streaming_dataset(*args, **kwargs)


# ------------------------------------------------------------------------------------------------
# Helpers


def _write_text_atomic(path: str, text: str) -> None:
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _write_jsonl_atomic(path: str, rows: Iterable[dict]) -> None:
    _write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def file_fingerprint(path: str) -> str:
    """sha256 of a file's content; for files above 64 MB of its size, mtime and first/last MB."""
    st = os.stat(path)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if st.st_size <= _BIG_FILE:
            for block in iter(lambda: fh.read(2**20), b""):
                h.update(block)
        else:
            h.update(f"{st.st_size}|{st.st_mtime_ns}".encode())
            h.update(fh.read(2**20))
            fh.seek(-(2**20), os.SEEK_END)
            h.update(fh.read())
    return h.hexdigest()


def tree_fingerprint(root: str, suffix: str = ".hea") -> str:
    """Hash of (relative path, size, mtime) of every file ending in ``suffix`` under ``root``."""
    h = hashlib.sha256()
    items = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            if name.endswith(suffix):
                st = os.stat(os.path.join(dirpath, name))
                items.append(f"{os.path.relpath(os.path.join(dirpath, name), root)}|{st.st_size}|{st.st_mtime_ns}")
    for item in sorted(items):
        h.update(item.encode() + b"\n")
    return f"{len(items)}:{h.hexdigest()}"


def vocabulary_fingerprint() -> str:
    """Hash of the concept vocabulary file (labels are concept names from it)."""
    try:
        import processing

        path = Path(processing.__file__).parent / "concept_vocabulary.json"
    except Exception:  # pragma: no cover
        return "none"
    return file_fingerprint(str(path)) if path.is_file() else "none"


def normalise_split(value: str, where: str = "") -> str:
    v = (value or "").strip().lower()
    mapped = {"train": "train", "training": "train", "validation": "validation", "val": "validation",
              "valid": "validation", "dev": "validation", "test": "test", "testing": "test"}.get(v)
    if mapped is None:
        raise ValueError(f"{where}: unknown split {value!r} (expected train, validation or test)")
    return mapped


def read_split_file(path: str) -> Dict[str, str]:
    """``{record_id: split}`` from a CSV with columns ``record_id`` and ``split``."""
    if not os.path.isfile(path):
        raise ValueError(f"split_file {path} not found")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        if "record_id" not in fields or "split" not in fields:
            raise ValueError(f"split_file {path}: needs the columns record_id and split, found {fields}")
        out: Dict[str, str] = {}
        for line_no, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            rid = row["record_id"]
            if not rid:
                continue
            split = normalise_split(row["split"], f"split_file {path} line {line_no}")
            if rid in out and out[rid] != split:
                raise ValueError(f"split_file {path} line {line_no}: record {rid} is in both {out[rid]} and {split}")
            out[rid] = split
    return out


def apply_split_file(entries: List[RecordEntry], path: str) -> List[RecordEntry]:
    mapping = read_split_file(path)
    kept = []
    for e in entries:
        split = mapping.get(e.record_id)
        if split is not None:
            e.split = split
            kept.append(e)
    unknown = len(set(mapping) - {e.record_id for e in entries})
    if unknown:
        logger.warning("split_file %s: %d record id(s) are not in the corpus index (left aside)", path, unknown)
    if len(kept) < len(entries):
        logger.info("split_file %s: %d record(s) of the corpus are not in the file and are left out", path, len(entries) - len(kept))
    if not kept:
        raise ValueError(f"split_file {path}: none of its record ids is in the corpus")
    return kept


def _stable_key(text: str, salt: str) -> str:
    return hashlib.sha1(f"{salt}|{text}".encode()).hexdigest()


def stratified_split(
    entries: List[RecordEntry], validation_fraction: float, test_fraction: float, salt: str
) -> None:
    """Assign ``entry.split`` by deterministic iterative stratification over the multi-labels.

    The procedure of Sechidis et al. (ECML PKDD 2011), without randomness: records are grouped by
    patient where ``patient_id`` is known (a patient's records share a split). Repeatedly the
    label with the fewest unassigned groups is taken; its groups, in the order of a hash of
    ``salt`` and the group key, each go to the split that still wants the most of that label
    (ties: the split that wants the most records overall, then train, validation, test). Wanted
    counts start at fraction x count and drop as groups are assigned. Groups without labels go
    to the split that wants the most records. The result depends only on the records, their
    labels and ``salt``, not on file order.
    """
    fractions = {"train": 1.0 - validation_fraction - test_fraction, "validation": validation_fraction, "test": test_fraction}
    groups: Dict[str, List[RecordEntry]] = {}
    for e in entries:
        key = f"p:{e.patient_id}" if e.patient_id else f"r:{e.record_id}"
        groups.setdefault(key, []).append(e)
    order = sorted(groups, key=lambda k: _stable_key(k, salt))
    group_labels = {k: sorted({lab for m in groups[k] for lab in m.labels}) for k in order}
    label_groups: Dict[str, List[str]] = {}
    for k in order:
        for lab in group_labels[k]:
            label_groups.setdefault(lab, []).append(k)
    total = sum(len(g) for g in groups.values())
    want_size = {s: fractions[s] * total for s in SPLITS}
    want_label = {
        s: {lab: fractions[s] * sum(len(groups[k]) for k in ks) for lab, ks in label_groups.items()} for s in SPLITS
    }
    assigned: Dict[str, str] = {}
    remaining = {lab: len(ks) for lab, ks in label_groups.items()}

    def give(key: str, split: str) -> None:
        assigned[key] = split
        n = len(groups[key])
        want_size[split] -= n
        for lab in group_labels[key]:
            want_label[split][lab] -= n
            remaining[lab] -= 1

    while True:
        open_labels = [lab for lab, n in remaining.items() if n > 0]
        if not open_labels:
            break
        label = min(open_labels, key=lambda lab: (remaining[lab], lab))
        for key in label_groups[label]:
            if key in assigned:
                continue
            split = max(SPLITS, key=lambda s: (want_label[s][label], want_size[s], -SPLITS.index(s)))
            give(key, split)
    for key in order:
        if key not in assigned:
            give(key, max(SPLITS, key=lambda s: (want_size[s], -SPLITS.index(s))))
    for key, members in groups.items():
        for m in members:
            m.split = assigned[key]


def hash_split(key: str, validation_fraction: float, test_fraction: float, salt: str) -> str:
    """Deterministic split of one key (e.g. a patient id) by hash: no corpus-wide pass needed."""
    u = int(_stable_key(key, salt)[:12], 16) / float(16**12)
    if u < test_fraction:
        return "test"
    if u < test_fraction + validation_fraction:
        return "validation"
    return "train"


def resample_digital(digital: np.ndarray, gain: np.ndarray, fs: int, target: int, where: str = ""):
    """Resample integer samples to ``target`` Hz (polyphase filter) and re-quantise at the same gain."""
    from scipy.signal import resample_poly

    ratio = Fraction(int(target), int(fs))
    if ratio.numerator > 1000 or ratio.denominator > 1000:
        raise RecordError(f"{where}: cannot resample {fs} Hz to {target} Hz (ratio {ratio} too complex)")
    x = resample_poly(digital.astype(np.float64), ratio.numerator, ratio.denominator, axis=1)
    return np.rint(x).astype(np.int64), int(target)
