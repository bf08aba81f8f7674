"""Canonical ECG lead names and name resolution.

Lead order is always resolved by name, never by position: PTB-XL writes ``AVR``/``AVL``/``AVF``,
the PhysioNet Challenge files write ``aVR``/``aVL``/``aVF`` and MIMIC-IV-ECG stores the augmented
limb leads in the order aVR, aVF, aVL.

This module has no imports from the rest of the project so that it can be copied next to a
checkpoint as remote code.
"""

from __future__ import annotations

from typing import Iterable, List, Sequence

STANDARD_12_LEADS: tuple = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
LIMB_LEADS: tuple = STANDARD_12_LEADS[:6]

# Spellings met in the wild, keyed by their upper-cased, separator-free form.
_ALIASES = {
    "I": "I", "LEADI": "I", "DI": "I",
    "II": "II", "LEADII": "II", "DII": "II", "MLII": "II",
    "III": "III", "LEADIII": "III", "DIII": "III",
    "AVR": "aVR", "LEADAVR": "aVR",
    "AVL": "aVL", "LEADAVL": "aVL",
    "AVF": "aVF", "LEADAVF": "aVF",
}
for _i in range(1, 7):
    _ALIASES[f"V{_i}"] = f"V{_i}"
    _ALIASES[f"LEADV{_i}"] = f"V{_i}"


def canonical_lead_name(name: str) -> str:
    """Return the canonical spelling of one lead name (case-insensitive; ``AVR`` -> ``aVR``).

    Raises ``ValueError`` for a name that is not one of the 12 standard leads.
    """
    if not isinstance(name, str):
        raise ValueError(f"lead name must be a string, got {type(name).__name__}: {name!r}")
    key = name.strip().upper().replace(" ", "").replace("-", "").replace("_", "")
    if key not in _ALIASES:
        raise ValueError(f"unknown lead name {name!r}; expected one of {', '.join(STANDARD_12_LEADS)}")
    return _ALIASES[key]


def canonical_lead_names(names: Iterable[str]) -> List[str]:
    """Canonicalise a list of lead names; raise ``ValueError`` on an unknown or duplicated lead."""
    out = [canonical_lead_name(n) for n in names]
    seen = set()
    for original, lead in zip(names if isinstance(names, Sequence) else out, out):
        if lead in seen:
            raise ValueError(f"duplicated lead {lead!r} (given as {original!r}) in {list(names)!r}")
        seen.add(lead)
    return out
