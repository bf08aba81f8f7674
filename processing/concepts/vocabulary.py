"""The cardiac concept vocabulary: one versioned JSON file, loaded into an immutable lookup object.

Each concept carries a canonical English name, English/German/Swedish synonyms, the SCP-ECG statement
code used by PTB-XL, the SNOMED-CT code(s) used by the PhysioNet/CinC Challenges (and so by CPSC 2018,
Georgia, Chapman-Shaoxing and Ningbo), the PTB-XL diagnostic class it names, a category
(rhythm / form / diagnostic) and a one-sentence description that serves as the model's text query.

Dataset loaders turn their codes into concept names with :meth:`ConceptVocabulary.by_scp_code`,
:meth:`~ConceptVocabulary.by_snomed_code` and :meth:`~ConceptVocabulary.by_ptbxl_class`; the extractor
and :meth:`~ConceptVocabulary.lookup` match free text against names and synonyms after the folding in
:mod:`processing.concepts.text_folding`.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from .text_folding import phrase_keys

DEFAULT_VOCABULARY_PATH = Path(__file__).with_name("concept_vocabulary.json")
CATEGORIES = ("rhythm", "form", "diagnostic")

_REQUIRED_FIELDS = ("name", "synonyms", "category", "description")


@dataclass(frozen=True)
class Concept:
    """One cardiac concept.

    Attributes:
        name: canonical English name, lower case except abbreviations and proper names.
        synonyms: other ways reports write it (English, German, Swedish, abbreviations).
        scp_code: SCP-ECG statement code as in PTB-XL's ``scp_statements.csv`` (``"AFIB"``), or None.
        snomed_code: primary SNOMED-CT code as a string, or None.
        snomed_equivalents: further SNOMED-CT codes that denote the same concept.
        ptbxl_class: the PTB-XL diagnostic superclass/subclass code this concept names, or None.
        category: ``"rhythm"``, ``"form"`` or ``"diagnostic"``.
        description: one sentence describing the finding, used as text query.
    """

    name: str
    synonyms: Tuple[str, ...]
    scp_code: Optional[str]
    snomed_code: Optional[str]
    snomed_equivalents: Tuple[str, ...]
    ptbxl_class: Optional[str]
    category: str
    description: str

    @property
    def snomed_codes(self) -> Tuple[str, ...]:
        """Primary SNOMED code followed by its equivalents (empty if the concept has none)."""
        return ((self.snomed_code,) if self.snomed_code else ()) + self.snomed_equivalents

    @property
    def texts(self) -> Tuple[str, ...]:
        """The name followed by all synonyms."""
        return (self.name,) + self.synonyms

    def to_dict(self) -> dict:
        """A JSON-ready dict with the same keys as the vocabulary file."""
        data = asdict(self)
        data["synonyms"] = list(self.synonyms)
        data["snomed_equivalents"] = list(self.snomed_equivalents)
        return data


class ConceptVocabulary:
    """An immutable set of :class:`Concept` objects with lookups by name, code and free text.

    Construction validates the concepts: names, SCP codes, SNOMED codes and PTB-XL class codes must be
    unique, and no name or synonym may normalise to the same key as a text of another concept.
    """

    def __init__(self, concepts: Sequence[Concept], version: str, source: Optional[str] = None):
        where = f" in {source}" if source else ""
        self._version = str(version)
        self._source = source
        self._concepts: Tuple[Concept, ...] = tuple(concepts)
        self._by_name: Dict[str, Concept] = {}
        self._by_scp: Dict[str, Concept] = {}
        self._by_snomed: Dict[str, Concept] = {}
        self._by_ptbxl: Dict[str, Concept] = {}
        self._by_key: Dict[str, Concept] = {}
        self._key_text: Dict[str, str] = {}
        for concept in self._concepts:
            if concept.category not in CATEGORIES:
                raise ValueError(f"concept {concept.name!r}{where}: category {concept.category!r} is not one of {CATEGORIES}")
            if not concept.description.strip():
                raise ValueError(f"concept {concept.name!r}{where}: empty description")
            _put_unique(self._by_name, concept.name, concept, "name", where)
            if concept.scp_code:
                _put_unique(self._by_scp, concept.scp_code.upper(), concept, "SCP code", where)
            for code in concept.snomed_codes:
                _put_unique(self._by_snomed, code, concept, "SNOMED code", where)
            if concept.ptbxl_class:
                _put_unique(self._by_ptbxl, concept.ptbxl_class.upper(), concept, "PTB-XL class", where)
            for text in concept.texts:
                keys = phrase_keys(text)
                if not keys[0]:
                    raise ValueError(f"concept {concept.name!r}{where}: synonym {text!r} has no letters or digits")
                for key in set(keys):
                    other = self._by_key.get(key)
                    if other is not None and other.name != concept.name:
                        raise ValueError(
                            f"synonym clash{where}: {text!r} of {concept.name!r} normalises like "
                            f"{self._key_text[key]!r} of {other.name!r}"
                        )
                    self._by_key[key] = concept
                    self._key_text.setdefault(key, text)

    # ------------------------------------------------------------------ container protocol
    @property
    def version(self) -> str:
        """Version string of the vocabulary file."""
        return self._version

    @property
    def source(self) -> Optional[str]:
        """Path the vocabulary was loaded from, if any."""
        return self._source

    @property
    def names(self) -> List[str]:
        """Concept names in file order."""
        return [c.name for c in self._concepts]

    @property
    def concepts(self) -> Tuple[Concept, ...]:
        """All concepts in file order."""
        return self._concepts

    def __iter__(self) -> Iterator[Concept]:
        return iter(self._concepts)

    def __len__(self) -> int:
        return len(self._concepts)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._by_name

    def __repr__(self) -> str:
        return f"ConceptVocabulary(version={self._version!r}, concepts={len(self)})"

    # ------------------------------------------------------------------ lookups
    def get(self, name: str) -> Concept:
        """The concept with this exact canonical name; ``KeyError`` naming it if absent."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no concept named {name!r} in the concept vocabulary (version {self._version})") from None

    def by_scp_code(self, code: str) -> Optional[Concept]:
        """The concept of an SCP-ECG statement code such as ``"AFIB"`` or ``"1AVB"`` (case-insensitive)."""
        if code is None:
            return None
        return self._by_scp.get(str(code).strip().upper())

    def by_snomed_code(self, code: Union[str, int]) -> Optional[Concept]:
        """The concept whose primary or equivalent SNOMED-CT code is ``code`` (str or int)."""
        if code is None:
            return None
        return self._by_snomed.get(str(code).strip())

    def by_ptbxl_class(self, code: str) -> Optional[Concept]:
        """The concept named by a PTB-XL diagnostic superclass or subclass code (``"MI"``, ``"LAO/LAE"``)."""
        if code is None:
            return None
        return self._by_ptbxl.get(str(code).strip().upper())

    def lookup(self, text: str) -> Optional[Concept]:
        """The concept whose name or synonym equals ``text`` after normalisation, else None.

        Normalisation folds case, umlauts, accents, hyphens and spacing, so ``"AV-Block I"``,
        ``"av block i"`` and ``"AV Block I"`` all find "first degree AV block".
        """
        if not text or not text.strip():
            return None
        if text in self._by_name:
            return self._by_name[text]
        stem_key, join_key = phrase_keys(text)
        return self._by_key.get(stem_key) or self._by_key.get(join_key)

    def text_keys(self) -> Mapping[str, Concept]:
        """Every normalised name/synonym key and its concept (used by the lexicon extractor)."""
        return dict(self._by_key)

    def to_dict(self) -> dict:
        """The vocabulary as a JSON-ready dict (the file format)."""
        return {"version": self._version, "concepts": [c.to_dict() for c in self._concepts]}


def _put_unique(index: dict, key: str, concept: Concept, what: str, where: str) -> None:
    other = index.get(key)
    if other is not None and other is not concept:
        raise ValueError(f"{what} {key!r}{where} is used by both {other.name!r} and {concept.name!r}")
    index[key] = concept


def _optional_str(value, field: str, position: str) -> Optional[str]:
    if value is None or value == "":
        return None
    if isinstance(value, (int, str)):
        return str(value).strip()
    raise ValueError(f"{position}: field {field!r} must be a string or null, got {type(value).__name__}")


def _str_tuple(value, field: str, position: str) -> Tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise ValueError(f"{position}: field {field!r} must be a list of strings")
    return tuple(str(v).strip() for v in value)


def _concept_from_dict(entry: dict, position: str) -> Concept:
    if not isinstance(entry, dict):
        raise ValueError(f"{position}: expected an object, got {type(entry).__name__}")
    missing = [f for f in _REQUIRED_FIELDS if f not in entry]
    if missing:
        raise ValueError(f"{position}: missing field(s) {missing}")
    name = entry["name"]
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{position}: 'name' must be a non-empty string")
    if not isinstance(entry["description"], str):
        raise ValueError(f"{position} ({name!r}): 'description' must be a string")
    return Concept(
        name=name.strip(),
        synonyms=_str_tuple(entry.get("synonyms"), "synonyms", position),
        scp_code=_optional_str(entry.get("scp_code"), "scp_code", position),
        snomed_code=_optional_str(entry.get("snomed_code"), "snomed_code", position),
        snomed_equivalents=_str_tuple(entry.get("snomed_equivalents"), "snomed_equivalents", position),
        ptbxl_class=_optional_str(entry.get("ptbxl_class"), "ptbxl_class", position),
        category=str(entry["category"]).strip(),
        description=entry["description"].strip(),
    )


def vocabulary_from_dict(data: dict, source: Optional[str] = None) -> ConceptVocabulary:
    """Build a :class:`ConceptVocabulary` from the parsed JSON document (``{"version", "concepts"}``)."""
    where = source or "<dict>"
    if not isinstance(data, dict) or "concepts" not in data or "version" not in data:
        raise ValueError(f"{where}: a concept vocabulary needs top-level 'version' and 'concepts'")
    if not isinstance(data["concepts"], list):
        raise ValueError(f"{where}: 'concepts' must be a list")
    concepts = [
        _concept_from_dict(entry, f"{where}: concept #{i}") for i, entry in enumerate(data["concepts"])
    ]
    return ConceptVocabulary(concepts, version=data["version"], source=source)


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int) -> ConceptVocabulary:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    return vocabulary_from_dict(data, source=path)


def load_concept_vocabulary(path: Optional[Union[str, os.PathLike]] = None) -> ConceptVocabulary:
    """Load the concept vocabulary (cached per file and modification time).

    Args:
        path: a vocabulary JSON file; None loads the one shipped in this package.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a valid vocabulary (the message names the file and concept).
    """
    resolved = Path(path) if path is not None else DEFAULT_VOCABULARY_PATH
    resolved = resolved.expanduser().resolve()
    if not resolved.is_file():
        raise FileNotFoundError(f"concept vocabulary file not found: {resolved}")
    return _load_cached(str(resolved), resolved.stat().st_mtime_ns)
