"""Is-a ancestors of the cardiac concepts: a finding implies the broader findings that contain it.

The table lives in ``concept_ancestors.json`` next to the vocabulary. It is derived from two sources:

1. PTB-XL's ``scp_statements.csv`` (Wagner et al. 2020, CC-BY-4.0): each diagnostic SCP statement
   names a diagnostic subclass and class; the vocabulary links statements (``scp_code``) and
   subclasses/classes (``ptbxl_class``) to concepts. So "anteroseptal myocardial infarction" (ASMI)
   -> "anterior myocardial infarction" (subclass AMI) -> "myocardial infarction" (class MI).
2. A few edges written by hand (``MANUAL_EDGES``) where a finding is by definition a case of a broader
   one but PTB-XL files it as a form statement without a class (an ST depression is an ST/T change; a
   prolonged PR interval is first degree AV block, a conduction disturbance). Only definitional edges
   go here; an edge is never added because it improves a benchmark.

:func:`derive_ptbxl_ancestors` rebuilds the table from the csv (tests check that the committed file
equals the derivation); :func:`load_concept_ancestors` reads it.
"""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

from .vocabulary import ConceptVocabulary, load_concept_vocabulary

DEFAULT_ANCESTORS_PATH = Path(__file__).with_name("concept_ancestors.json")

# (concept, broader concept): definitional is-a edges that scp_statements.csv does not state.
MANUAL_EDGES: Tuple[Tuple[str, str], ...] = (
    ("ST depression", "ST/T change"),
    ("ST elevation", "ST/T change"),
    ("T wave inversion", "ST/T change"),
    ("T wave abnormality", "ST/T change"),
    ("non-specific T wave changes", "ST/T change"),
    ("low amplitude T waves", "ST/T change"),
    ("prolonged PR interval", "first degree AV block"),
    ("first degree AV block", "atrioventricular block"),
    ("second degree AV block", "atrioventricular block"),
    ("third degree AV block", "atrioventricular block"),
    ("left anterior fascicular block", "left fascicular block"),
    ("left posterior fascicular block", "left fascicular block"),
    # The LV strain pattern is, by definition, ST depression with T inversion in the lateral leads.
    ("left ventricular strain", "ST/T change"),
    # PTB-XL files voltage criteria as a form statement, but ECG hypertrophy is diagnosed by such criteria,
    # and the cardiologists coded LVH on the records whose reports give only the criteria.
    ("voltage criteria for left ventricular hypertrophy", "hypertrophy"),
)


def _closure(parents: Mapping[str, Iterable[str]]) -> Dict[str, List[str]]:
    """Every concept's ancestors (transitive, without itself), nearest first, as a sorted-by-depth list."""
    closed = {}
    for start in parents:
        seen, frontier, order = {start}, [start], []
        while frontier:
            following = []
            for node in frontier:
                for parent in sorted(parents.get(node, ())):
                    if parent not in seen:
                        seen.add(parent)
                        order.append(parent)
                        following.append(parent)
            frontier = following
        if order:
            closed[start] = order
    return dict(sorted(closed.items()))


def derive_ptbxl_ancestors(scp_statements_csv, vocabulary: Optional[ConceptVocabulary] = None) -> Dict[str, List[str]]:
    """concept name -> ancestor concept names, from ``scp_statements.csv`` and :data:`MANUAL_EDGES`."""
    vocab = vocabulary or load_concept_vocabulary()
    parents: Dict[str, set] = {}

    def add(child, parent):
        if child is not None and parent is not None and child.name != parent.name:
            parents.setdefault(child.name, set()).add(parent.name)

    with open(scp_statements_csv, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "diagnostic_class" not in rows[0] or "diagnostic_subclass" not in rows[0]:
        raise ValueError(f"{scp_statements_csv} is not PTB-XL's scp_statements.csv (no diagnostic_class/diagnostic_subclass columns)")
    for row in rows:
        code = row.get("") or row.get("Unnamed: 0")
        subclass, klass = (row.get("diagnostic_subclass") or "").strip(), (row.get("diagnostic_class") or "").strip()
        if not code or not klass:
            continue
        statement = vocab.by_scp_code(code)
        sub_concept = vocab.by_ptbxl_class(subclass) if subclass else None
        class_concept = vocab.by_ptbxl_class(klass)
        add(statement, sub_concept if sub_concept is not None else class_concept)
        add(sub_concept, class_concept)
        if sub_concept is None:
            add(statement, class_concept)
    for child, parent in MANUAL_EDGES:
        if child not in vocab or parent not in vocab:
            raise ValueError(f"MANUAL_EDGES names a concept the vocabulary lacks: {child!r} -> {parent!r}")
        parents.setdefault(child, set()).add(parent)
    return _closure(parents)


@functools.lru_cache(maxsize=4)
def _load(path: str) -> Dict[str, Tuple[str, ...]]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    table = data.get("ancestors")
    if not isinstance(table, dict):
        raise ValueError(f"{path}: expected an object with an 'ancestors' mapping")
    return {name: tuple(values) for name, values in table.items()}


def load_concept_ancestors(path=None) -> Dict[str, Tuple[str, ...]]:
    """concept name -> its ancestors (transitive), from ``concept_ancestors.json``."""
    return dict(_load(str(path or DEFAULT_ANCESTORS_PATH)))


def write_concept_ancestors(table: Mapping[str, List[str]], path=None) -> None:
    from ..atomic_files import atomic_write_text

    payload = {"description": "Concept -> is-a ancestors (transitive). Derived from PTB-XL scp_statements.csv "
                              "(CC-BY-4.0) and processing/concepts/ontology.py MANUAL_EDGES.",
               "ancestors": {k: list(v) for k, v in sorted(table.items())}}
    atomic_write_text(Path(path or DEFAULT_ANCESTORS_PATH), json.dumps(payload, indent=1, ensure_ascii=False) + "\n")


__all__ = ["DEFAULT_ANCESTORS_PATH", "MANUAL_EDGES", "derive_ptbxl_ancestors", "load_concept_ancestors", "write_concept_ancestors"]
