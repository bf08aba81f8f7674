"""Train/validation/test splits: user split files, deterministic stratified and hash splits.

The functions take the builders' index entries (objects with ``record_id``, ``labels``,
``patient_id`` and ``split``) and set ``split`` in place where they assign one.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from typing import Dict, List

logger = logging.getLogger("datasets_scripts")

SPLITS = ("train", "validation", "test")


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


def apply_split_file(entries: List, path: str) -> List:
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
    entries: List, validation_fraction: float, test_fraction: float, salt: str
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
    groups: Dict[str, List] = {}
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
