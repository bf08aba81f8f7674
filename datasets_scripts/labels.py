"""Corpus codes -> concept names of the project's concept vocabulary (``processing.concepts``).

Every label a builder emits is a concept name. A code that has no concept is never dropped
silently: :class:`CodeMapper` collects such codes and :meth:`CodeMapper.finish` raises one
error listing all of them with their counts (``unmapped_codes="raise"``, the default), or records
them in the builder's summary file (``unmapped_codes="drop"``).
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, Iterable, List, Optional


def load_vocabulary():
    try:
        from processing.concepts.vocabulary import load_concept_vocabulary
    except ImportError as err:
        raise ImportError(
            "dataset labels are concept names from the project's concept vocabulary (processing.concepts), "
            f"which could not be imported: {err}"
        ) from err
    return load_concept_vocabulary()


def snomed_concept_names(vocabulary=None) -> List[str]:
    """Every concept of the vocabulary that has a SNOMED-CT code, in vocabulary order.

    The class list of the corpora labelled by SNOMED-CT codes without a fixed label set (CSN and
    the PhysioNet/CinC Challenge tranches): every label they can emit is in it (a code without a
    concept is an error or dropped), and it is the same list for every such corpus and subset, so
    their ``multi_hot`` columns line up.
    """
    vocab = vocabulary if vocabulary is not None else load_vocabulary()
    return [concept.name for concept in vocab if concept.snomed_codes]


class CodeMapper:
    """Looks codes up in the vocabulary, remembering the ones without a concept.

    Args:
        corpus: corpus name used in messages.
        unmapped: ``"raise"`` or ``"drop"`` (see the module docstring).
        vocabulary: a vocabulary object (default: ``load_concept_vocabulary()``).
    """

    def __init__(self, corpus: str, unmapped: str = "raise", vocabulary=None):
        self.corpus = corpus
        self.unmapped = unmapped
        self.vocab = vocabulary if vocabulary is not None else load_vocabulary()
        self.missing: Counter = Counter()
        self._cache: Dict[tuple, Optional[str]] = {}

    def _lookup(self, kind: str, code: str) -> Optional[str]:
        key = (kind, code)
        if key not in self._cache:
            method = {"scp": "by_scp_code", "snomed": "by_snomed_code", "ptbxl_class": "by_ptbxl_class"}[kind]
            concept = getattr(self.vocab, method)(code)
            self._cache[key] = concept.name if concept is not None else None
        name = self._cache[key]
        if name is None:
            self.missing[f"{kind}:{code}"] += 1
        return name

    def scp(self, code: str) -> Optional[str]:
        return self._lookup("scp", str(code).strip())

    def snomed(self, code: str) -> Optional[str]:
        return self._lookup("snomed", str(code).strip())

    def ptbxl_class(self, name: str) -> Optional[str]:
        return self._lookup("ptbxl_class", str(name).strip())

    def names(self, kind: str, codes: Iterable[str]) -> List[str]:
        """Concept names of ``codes`` (deduplicated, in first-seen order), skipping unmapped ones."""
        out: List[str] = []
        for code in codes:
            name = self._lookup(kind, str(code).strip())
            if name is not None and name not in out:
                out.append(name)
        return out

    def finish(self) -> Dict[str, int]:
        """Raise if codes were unmapped and ``unmapped="raise"``; return ``{code: count}`` otherwise."""
        if self.missing and self.unmapped == "raise":
            listing = ", ".join(f"{code} ({n} record(s))" for code, n in sorted(self.missing.items()))
            raise ValueError(
                f"{self.corpus}: {len(self.missing)} code(s) have no concept in the concept vocabulary: {listing}. "
                "Add them to processing/concepts/concept_vocabulary.json, or pass unmapped_codes='drop' to leave them out "
                "of the labels (they are then counted in the dataset's ecg_summary.json)."
            )
        return dict(self.missing)
