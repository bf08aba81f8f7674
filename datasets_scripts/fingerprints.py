"""Fingerprints of source files: what goes into a dataset's cache key besides its config.

``datasets`` keys its cache on the config name and arguments, not on file contents; a builder puts
the hash of its metadata files (and of the concept vocabulary and its own code) into the config so
that an edited source is never served from a stale cache.
"""

from __future__ import annotations

import hashlib
import os

_BIG_FILE = 64 * 2**20


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
    from processing.concepts.vocabulary import DEFAULT_VOCABULARY_PATH

    path = DEFAULT_VOCABULARY_PATH
    return file_fingerprint(str(path)) if path.is_file() else "none"
