"""The zero-shot study's measured table, as a section of the model card that pre-training writes.

The table (``zero_shot_study.md`` next to this file) is the output of ``benchmarks/zero_shot_study.py``
on the shared PTB-XL records, committed with the command and machine that produced it; it tells a
user of a checkpoint trained with the default recipe what that recipe reached on a small real corpus.
Kept apart from ``cards.py`` so that the card's layout and this measured content change independently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

STUDY_TABLE = Path(__file__).with_name("zero_shot_study.md")


def zero_shot_study_section(path: Optional[Path] = None) -> str:
    """A markdown section with the study's table, or "" when the table file is absent."""
    path = Path(path or STUDY_TABLE)
    if not path.is_file():
        return ""
    body = path.read_text(encoding="utf-8").strip()
    return ("## What the default recipe reaches on a small real corpus\n\n"
            "Measured by `benchmarks/zero_shot_study.py` (not on this checkpoint's data):\n\n" + body + "\n")


__all__ = ["STUDY_TABLE", "zero_shot_study_section"]
