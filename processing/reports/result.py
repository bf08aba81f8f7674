"""What extraction produces for one report, and how a report's text and hash are decoded.

Shared by the lexicon, the LLM backends and the entities file, so that none of them imports another.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

PRESENT, ABSENT, UNCERTAIN = "present", "absent", "uncertain"
STATUSES = (PRESENT, ABSENT, UNCERTAIN)
ReportInput = Union[str, bytes, bytearray, None]


@dataclass
class ExtractionResult:
    """Entities of one report.

    Attributes:
        entities: ``[{"span", "concept", "status"}]``; ``concept`` is a vocabulary name and ``status``
            one of present/absent/uncertain.
        unmapped: entities whose concept the backend named but the vocabulary lacks (LLM backends),
            same keys, ``concept`` as the model wrote it.
        error: None, or why this report has no entities (invalid LLM answer, failed request...).
        backend: backend name; model: model (or lexicon/vocabulary version) that produced it.
    """

    entities: List[dict] = field(default_factory=list)
    unmapped: List[dict] = field(default_factory=list)
    error: Optional[str] = None
    backend: str = "lexicon"
    model: str = ""

    def concepts(self, statuses: Sequence[str] = (PRESENT, UNCERTAIN)) -> List[str]:
        """Distinct concept names with one of ``statuses``, in order of first mention."""
        seen: List[str] = []
        for entity in self.entities:
            if entity["status"] in statuses and entity["concept"] not in seen:
                seen.append(entity["concept"])
        return seen

    def to_record(self, record_id: str, report_sha256: str) -> dict:
        """The entities-file line of this result (see DESIGN.md)."""
        return {
            "record_id": str(record_id),
            "report_sha256": report_sha256,
            "backend": self.backend,
            "model": self.model,
            "entities": self.entities,
            "unmapped": self.unmapped,
            "error": self.error,
        }


def decode_report(report: ReportInput) -> Tuple[str, bytes]:
    """``(text, raw_bytes)`` of a report given as str, bytes or None.

    Bytes are decoded as UTF-8, else as Windows-1252, else as Latin-1 (which never fails), so reports
    written in a legacy encoding still read correctly. ``raw_bytes`` is what the report's sha256 is
    computed over: the bytes as given, or the UTF-8 encoding of a str (lone surrogates from
    ``surrogateescape`` decoding are turned back into the original bytes). The returned text never
    contains lone surrogates.
    """
    if report is None:
        return "", b""
    if isinstance(report, str):
        try:
            return report, report.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: bytes that were escaped when the text was read
            try:
                report = report.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                raw = report.encode("utf-8", "surrogatepass")
                return raw.decode("utf-8", "replace"), raw
    if not isinstance(report, (bytes, bytearray)):
        raise TypeError(f"a report must be str, bytes or None, got {type(report).__name__}")
    raw = bytes(report)
    for encoding in ("utf-8", "cp1252"):
        try:
            return raw.decode(encoding), raw
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1"), raw


def report_sha256(report: ReportInput) -> str:
    """Hex sha256 of a report (see :func:`decode_report` for which bytes)."""
    return hashlib.sha256(decode_report(report)[1]).hexdigest()


__all__ = ["ExtractionResult", "ReportInput", "decode_report", "report_sha256", "PRESENT", "ABSENT", "UNCERTAIN", "STATUSES"]
