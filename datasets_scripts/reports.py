"""Report text of a corpus, read cheaply from its metadata (no signal is read).

``iter_reports(name, data_dir, **kwargs)`` yields ``(record_id, report)`` pairs. The record ids are
exactly the ``record_id`` values that the corpus's dataset builder emits for the same records, so an
entities file written from these reports joins to the dataset by ``record_id``.

===============  ==========================================================================  ==========
corpus           report                                                                      record_id
===============  ==========================================================================  ==========
``ptbxl``        the ``report`` column of ``ptbxl_database.csv`` (mostly German)             ``ecg_id``, e.g. ``"1"``
``mimic_iv_ecg`` ``report_0`` .. ``report_17`` of ``machine_measurements.csv`` joined into   ``study_id``
                 one text (see :func:`datasets_scripts.corpora.mimic_iv_ecg.join_machine_statements`)
``synthetic``    the generated English report of each synthetic record (``num_records``,     ``synthetic-s<seed>-<index>``
                 ``seed`` as for the builder; no ``data_dir``)
===============  ==========================================================================  ==========

Records whose report is empty are skipped unless ``include_empty=True``.
"""

from __future__ import annotations

from typing import Iterator, Optional, Tuple

from .loading import canonical_corpus_name

REPORT_CORPORA = ("ptbxl", "mimic_iv_ecg", "synthetic")


def iter_reports(
    name: str, data_dir: Optional[str] = None, *, include_empty: bool = False, **kwargs
) -> Iterator[Tuple[str, str]]:
    """Yield ``(record_id, report)`` for every record of corpus ``name`` that has a report.

    Args:
        name: ``"ptbxl"``, ``"mimic_iv_ecg"`` or ``"synthetic"``.
        data_dir: the corpus folder as downloaded (PTB-XL: the folder holding ``ptbxl_database.csv``;
            MIMIC-IV-ECG: the folder holding ``machine_measurements.csv``). Not used by ``synthetic``.
        include_empty: also yield records whose report is empty (as ``""``).
        **kwargs: ``synthetic`` takes ``num_records`` and ``seed`` (the builder's defaults apply).

    Raises:
        ValueError: unknown corpus name, or a ``data_dir`` that is not that corpus (the message says
            which file is missing), or an unexpected keyword argument.
    """
    try:
        key = canonical_corpus_name(name)
    except ValueError:
        key = None
    if key == "ptbxl":
        from .corpora.ptbxl import iter_ptbxl_reports

        _no_kwargs(key, kwargs)
        source = iter_ptbxl_reports(_need_dir(key, data_dir))
    elif key == "mimic_iv_ecg":
        from .corpora.mimic_iv_ecg import iter_mimic_reports

        _no_kwargs(key, kwargs)
        source = iter_mimic_reports(_need_dir(key, data_dir))
    elif key == "synthetic":
        from .corpora.synthetic_ecg import iter_synthetic_reports

        unknown = set(kwargs) - {"num_records", "seed"}
        if unknown:
            raise ValueError(f"iter_reports('synthetic'): unexpected arguments {sorted(unknown)}; takes num_records, seed")
        source = iter_synthetic_reports(**kwargs)
    else:
        raise ValueError(f"iter_reports: no report text for corpus {name!r}; corpora with reports: {', '.join(REPORT_CORPORA)}")
    for record_id, report in source:
        if report or include_empty:
            yield record_id, report


def _need_dir(name: str, data_dir: Optional[str]) -> str:
    if not data_dir:
        raise ValueError(f"iter_reports({name!r}) needs data_dir: the folder of your {name} download")
    return str(data_dir)


def _no_kwargs(name: str, kwargs: dict) -> None:
    if kwargs:
        raise ValueError(f"iter_reports({name!r}): unexpected arguments {sorted(kwargs)}")
