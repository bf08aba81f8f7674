"""PhysioNet/Computing in Cardiology Challenge 2020/2021 training data (Perez Alday et al. 2020;
Reyna et al. 2021): any tranche (CPSC, CPSC-Extra, INCART, PTB, PTB-XL, Georgia, Chapman-Shaoxing,
Ningbo) or several, in the Challenge's WFDB form.

Expected layout of ``data_dir``: ``.hea`` + ``.mat`` pairs at any depth (for example
``training/georgia/g1/E00001.hea``). The header comments carry ``#Age``, ``#Sex`` and
``#Dx: <SNOMED-CT codes, comma separated>``. The record id is the record name (``E00001``,
``HR00001``, ``JS00001`` ...; unique across tranches by their prefixes).

Labels: each ``#Dx`` code is mapped to a concept name by the project's concept vocabulary
(``processing/concept_vocabulary.json``, SNOMED-CT codes and the Challenge's equivalent codes).
A code without a concept is an error listing every such code (``unmapped_codes="raise"``) or is
left out and counted in the summary (``"drop"``). Records without any ``#Dx`` code are left out and
counted. Split: deterministic stratified 80/10/10 (salt ``"physionet2021"``) or ``split_file``.

Known data defects handled by the reader:

- the 2020 release had wrong ADC gains in some headers (Georgia about 5x too small, PTB-XL copies
  5x too large, PTB diagnostic copies about 1000x too small): the amplitude check warns, naming
  the record; the 2021 release is correct;
- ``E00666.hea`` of the 2020 test data names its record ``E00666.mat`` on the first line (wfdb
  rejects it; the fast path strips the extension);
- PTB-XL copies (``HR*``) write the units as ``mv``: units are compared case-insensitively;
- some Ningbo records (``JS2*``) hold flat (constant) leads, e.g. JS20004 and JS20008 (V2, V4, V6):
  a warning in the summary;
- INCART records are 30 min at 257 Hz and PTB records 1000 Hz: stored at their own rate and
  length unless ``sampling_rate`` is given.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import datasets

from ..builder import ECGBuilder, ECGBuilderConfig, RecordEntry
from ..fingerprints import tree_fingerprint
from ..splits import stratified_split
from ..labels import CodeMapper, snomed_concept_names

_DX = re.compile(r"^#\s*Dx\s*:\s*(.*)$", re.IGNORECASE)


def header_dx_codes(header_path: str) -> List[str]:
    """SNOMED-CT codes of the ``#Dx:`` comment of one header (``[]`` if there is none)."""
    with open(header_path, encoding="latin-1") as fh:
        for line in fh:
            m = _DX.match(line.strip())
            if m:
                return [c.strip() for c in m.group(1).split(",") if c.strip() and c.strip().lower() != "unknown"]
    return []


def scan_wfdb_tree(root: str) -> List[Tuple[str, str]]:
    """``(record name, header path)`` of every ``.hea`` below ``root``, sorted by name."""
    found: Dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            if name.endswith(".hea"):
                record = name[:-4]
                path = os.path.join(dirpath, name)
                if record in found:
                    raise ValueError(f"record name {record} occurs twice: {found[record]} and {path}")
                found[record] = path
    return sorted(found.items())


def index_dx_tree(
    root: str, corpus: str, unmapped: str, salt: str, validation_fraction: float, test_fraction: float,
    code_names: Optional[Dict[str, str]] = None,
):
    """Entries of a WFDB tree labelled by ``#Dx`` SNOMED codes, split by :func:`stratified_split`."""
    mapper = CodeMapper(corpus, unmapped)
    entries: List[RecordEntry] = []
    no_dx: List[str] = []
    for record, hea in scan_wfdb_tree(root):
        codes = header_dx_codes(hea)
        if not codes:
            no_dx.append(record)
            continue
        labels = mapper.names("snomed", codes)
        entries.append(RecordEntry(record_id=record, source=hea[:-4], labels=labels))
    try:
        dropped = mapper.finish()
    except ValueError as err:
        if code_names:
            named = ", ".join(
                f"{k.split(':', 1)[1]}={code_names[k.split(':', 1)[1]]}"
                for k in sorted(mapper.missing) if k.split(":", 1)[1] in code_names
            )
            if named:
                raise ValueError(f"{err} Names from the corpus's condition table: {named}") from None
        raise
    if not entries and not no_dx:
        raise ValueError(f"{root}: no WFDB header (.hea) found below it")
    stratified_split(entries, validation_fraction, test_fraction, salt=salt)
    notes = {}
    if dropped:
        notes["unmapped_codes_dropped"] = dropped
    if no_dx:
        notes["records_without_dx_left_out"] = no_dx
    return entries, notes


@dataclass
class Physionet2021Config(ECGBuilderConfig):
    """PhysioNet/CinC 2020-2021 configuration (one config, ``default``).

    Arguments: :class:`datasets_scripts.builder.ECGBuilderConfig` (``sampling_rate`` resamples the
    tranches to one rate, e.g. 500).
    """


class Physionet2021(ECGBuilder):
    """Any tranche(s) of the 2020/2021 Challenge training data in WFDB ``.hea``/``.mat`` form (``data_dir``)."""

    BUILDER_CONFIG_CLASS = Physionet2021Config
    BUILDER_CONFIGS = [Physionet2021Config(name="default", version=datasets.Version("1.0.0"), description="CinC 2020/2021")]
    DEFAULT_CONFIG_NAME = "default"
    CORPUS_DESCRIPTION = (
        "PhysioNet/CinC Challenge 2020-2021 12-lead ECG training data (WFDB), SNOMED-CT diagnoses mapped to "
        "concept names of the SuPreME concept vocabulary."
    )
    CITATION = (
        "Reyna M.A. et al., Will Two Do? Varying Dimensions in Electrocardiography: The PhysioNet/Computing in "
        "Cardiology Challenge 2021. CinC 2021. Perez Alday E.A. et al., Physiol Meas 41 (2020)."
    )
    HOMEPAGE = "https://physionet.org/content/challenge-2021/"

    def _fingerprint_sources(self, data_dir, kwargs):
        return ["hea=" + tree_fingerprint(data_dir, ".hea"), "mat=" + tree_fingerprint(data_dir, ".mat")]

    def label_classes(self) -> List[str]:
        return snomed_concept_names()  # tranches differ in length and rate: the signal column is variable

    def _index(self) -> List[RecordEntry]:
        c = self.config
        entries, notes = index_dx_tree(
            c.data_dir, "physionet2021", c.unmapped_codes, "physionet2021", c.validation_fraction, c.test_fraction
        )
        self._label_notes = notes
        return entries
