"""What every corpus builder shares: the config, indexing -> splits -> reading -> storage, error
handling with a summary file, and the source fingerprint that goes into the cache key (the split
rules live in :mod:`datasets_scripts.splits`, the fingerprints in :mod:`datasets_scripts.fingerprints`).

A corpus module subclasses :class:`ECGBuilder` and implements

- ``_index(self) -> list[RecordEntry]``: the records from metadata only (no signal read), with
  labels already mapped to concept names and, where the corpus has an official split, the split;
- ``_fingerprint_sources(self, data_dir) -> list[str]``: the metadata files whose content decides
  what the dataset holds (hashed into the cache key);
- optionally ``_read_entry(self, entry)`` when records are not WFDB files.

- ``label_classes(self) -> list[str]``: the class list of the configuration (``ClassLabel`` names
  of ``label_ids`` and the order of ``multi_hot``); by default ``class_names()`` where the corpus
  defines one;
- ``fixed_num_samples(self) -> int | None``: samples per lead where every record of the
  configuration has one length (stored as a fixed ``Array2D``), else ``None``;
- the class attributes ``CORPUS_DESCRIPTION``, ``CITATION``, ``HOMEPAGE`` and ``LICENSE`` (a
  :class:`CorpusLicense`), which go into ``info`` and the dataset card.

Common config arguments (every builder, see :class:`ECGBuilderConfig`): ``sampling_rate``,
``split_file``, ``on_error``, ``nan_policy``, ``max_nan_fraction``, ``validation_fraction``,
``test_fraction``, ``reorder_leads``, ``unmapped_codes``, ``signal_storage``,
``source_fingerprint`` (computed). The columns: :mod:`datasets_scripts.encoding`.
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
from typing import Iterable, Iterator, List, Optional, Tuple

import datasets
import numpy as np

from processing.ecg.ecg_leads import STANDARD_12_LEADS

from processing.ecg.wfdb_reader import DigitalRecord, RecordError, read_digital

from .encoding import NUM_LEADS, check_storage, ecg_features, encode_labels, encode_signal
from .fingerprints import file_fingerprint, vocabulary_fingerprint
from .splits import SPLITS, apply_split_file

logger = logging.getLogger("datasets_scripts")

ON_ERROR = ("raise", "skip")
SUMMARY_JSON = "ecg_summary.json"
SKIPPED_CSV = "skipped_records.csv"
_PART_PREFIX = "_ecg_issues-"
# Part of the cache key together with a hash of the builder modules' source code.
CODE_VERSION = "3"  # 3: the missing_leads column


@dataclass(frozen=True)
class CorpusLicense:
    """A corpus's licence: the Hub's licence identifier, its name and where its text is."""

    hub_id: str  # the `license` of a Hub dataset card: "cc-by-4.0", "odbl", "apache-2.0" or "other"
    name: str
    link: str

    def __str__(self) -> str:
        return f"{self.name} ({self.link})"


CC_BY_4 = CorpusLicense("cc-by-4.0", "Creative Commons Attribution 4.0 International", "https://creativecommons.org/licenses/by/4.0/")


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
        signal_storage: ``"float32"`` (default): the ``signal`` column in millivolts. ``"int16"``:
            the compact storage for MIMIC-size corpora, ``signal_int16`` (counts) and ``signal_gain``
            (counts per mV per lead) instead, at half the size; ``signal = signal_int16 /
            signal_gain[:, None]`` (see :mod:`datasets_scripts.encoding`).
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
    signal_storage: str = "float32"
    source_fingerprint: Optional[str] = None


class ECGBuilder(datasets.GeneratorBasedBuilder):
    """Base class of the corpus builders (see the module docstring)."""

    BUILDER_CONFIG_CLASS = ECGBuilderConfig
    DEFAULT_WRITER_BATCH_SIZE = 256
    NEEDS_DATA_DIR = True
    CORPUS_DESCRIPTION = ""
    CITATION = ""
    HOMEPAGE = ""
    LICENSE: CorpusLicense = CC_BY_4

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

    def label_classes(self) -> List[str]:
        """The configuration's classes: the names of ``label_ids`` and the order of ``multi_hot``."""
        class_names = getattr(self, "class_names", None)
        if class_names is None:
            raise NotImplementedError(f"{type(self).__name__} must define label_classes() or class_names()")
        return list(class_names())

    def fixed_num_samples(self) -> Optional[int]:
        """Samples per lead where every record has one length (a fixed ``Array2D``); ``None``: variable."""
        return None

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
        check_storage(c.signal_storage)

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

        names = [f"{__package__}.{n}" for n in ("builder", "splits", "fingerprints", "encoding", "labels")]
        names += ["processing.ecg.wfdb_reader", *cls.CODE_MODULES]
        files = [importlib.import_module(n).__file__ for n in names]
        files.append(sys.modules[cls.__module__].__file__)
        h = hashlib.sha256()
        for path in sorted(set(files)):
            h.update(file_fingerprint(path).encode())
        return h.hexdigest()

    def _info(self) -> datasets.DatasetInfo:
        # Called by datasets' __init__ before _validate_config: check what the features depend on.
        check_storage(self.config.signal_storage)
        self._classes = self.label_classes()
        features = ecg_features(self._classes, self.fixed_num_samples(), self.config.signal_storage)
        return datasets.DatasetInfo(
            description=self.CORPUS_DESCRIPTION, features=features, citation=self.CITATION,
            homepage=self.HOMEPAGE, license=str(self.LICENSE),
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
        fixed = self.fixed_num_samples()
        if fixed and tuple(digital.shape) != (NUM_LEADS, fixed):
            raise RecordError(
                f"record {entry.record_id} ({entry.source}): {digital.shape[0]} leads x {digital.shape[1]} samples at "
                f"{fs} Hz, but {self._corpus_name()} stores exactly {NUM_LEADS} x {fixed} per record (a fixed-shape "
                "signal column); pass on_error='skip' to leave such records out"
            )
        example = {
            "record_id": entry.record_id,
            "patient_id": entry.patient_id,
            "lead_names": leads,
            "missing_leads": [lead for lead in leads if lead in set(rec.missing_leads)],
            "sampling_rate": int(fs),
            "report": entry.report or "",
            "labels": list(entry.labels),
        }
        example.update(encode_signal(digital, gain, self.config.signal_storage))
        example.update(encode_labels(entry.labels, self._classes, where=f"{self._corpus_name()} record {entry.record_id}"))
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


def resample_digital(digital: np.ndarray, gain: np.ndarray, fs: int, target: int, where: str = ""):
    """Resample integer samples to ``target`` Hz (polyphase filter) and re-quantise at the same gain."""
    from scipy.signal import resample_poly

    ratio = Fraction(int(target), int(fs))
    if ratio.numerator > 1000 or ratio.denominator > 1000:
        raise RecordError(f"{where}: cannot resample {fs} Hz to {target} Hz (ratio {ratio} too complex)")
    x = resample_poly(digital.astype(np.float64), ratio.numerator, ratio.denominator, axis=1)
    return np.rint(x).astype(np.int64), int(target)
