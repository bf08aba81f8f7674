"""Reading CSV tables so that every fault names the file and the line.

Python's csv module reports neither: a byte that is not UTF-8 raises a bare ``UnicodeDecodeError``
from deep inside the reader, and a field over ``csv.field_size_limit()`` (128 KiB) raises
``_csv.Error: field larger than field limit``. :class:`CSVRows` turns both into a ``ValueError``
naming the file, the line and what to do, before or while rows are yielded.
"""

from __future__ import annotations

import csv
import os
from typing import Iterator, List, Optional, Tuple


class CSVRows:
    """``(line number, row dict)`` of a UTF-8 CSV file with a header line.

    ``errors="strict"`` (default): a byte that is not UTF-8 is a ``ValueError`` naming the line and
    the byte offset. ``errors="surrogateescape"`` keeps such bytes as escapes for a later per-row
    decoding (entity extraction decodes legacy reports itself). The file is closed when iteration
    ends, fails or :meth:`close` is called.
    """

    def __init__(self, path: str | os.PathLike, errors: str = "strict"):
        self.path = str(path)
        self._errors = errors
        self._handle = open(self.path, newline="", encoding="utf-8-sig", errors=errors)
        self._reader = csv.DictReader(self._handle)
        try:
            self.fieldnames: List[str] = list(self._guard(lambda: self._reader.fieldnames) or [])
        except Exception:
            self.close()
            raise

    def _guard(self, step):
        try:
            return step()
        except UnicodeDecodeError as err:
            line, offset = self._locate_undecodable()
            raise ValueError(
                f"{self.path}: line {line} is not valid UTF-8 (byte 0x{err.object[err.start]:02x} at file offset {offset}, "
                f"{err.reason}); convert the file to UTF-8 (e.g. iconv -f cp1252 -t utf-8)"
            ) from None
        except csv.Error as err:
            line = self._reader.line_num + 1  # the line being parsed is not counted yet
            hint = ""
            if "field limit" in str(err):
                hint = (f"; a field is longer than csv.field_size_limit() = {csv.field_size_limit()} characters "
                        "(a stray quote that swallows the rest of the file, or a report that is not a report)")
            raise ValueError(f"{self.path}: line {line}: unreadable CSV ({err}){hint}") from None

    def _locate_undecodable(self) -> Tuple[int, int]:
        with open(self.path, "rb") as handle:
            data = handle.read()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as err:
            return data.count(b"\n", 0, err.start) + 1, err.start
        return 0, -1

    def __iter__(self) -> Iterator[Tuple[int, dict]]:
        try:
            while True:
                row: Optional[dict] = self._guard(lambda: next(self._reader, None))
                if row is None:
                    return
                yield self._reader.line_num, row
        finally:
            self.close()

    def close(self) -> None:
        self._handle.close()


__all__ = ["CSVRows"]
