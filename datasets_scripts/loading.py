"""One call to load any supported ECG corpus as a ``datasets.DatasetDict`` (train/validation/test).

>>> from datasets_scripts import load_ecg_dataset
>>> ds = load_ecg_dataset("ptbxl", "super", data_dir="/data/ptb-xl", output="torch")
>>> ds["train"][0]["signal"].shape            # float32 millivolts, (leads, samples)
torch.Size([12, 5000])

Every example follows the data contract (``record_id``, ``patient_id``, ``signal``, ``lead_names``,
``sampling_rate``, ``report``, ``labels``); see :mod:`datasets_scripts.encoding` for how the
signal is stored and decoded.
"""

from __future__ import annotations

import importlib
import json
from typing import Dict, Iterable, Optional, Tuple

# corpus name -> (module under datasets_scripts.corpora, builder class)
BUILDERS: Dict[str, Tuple[str, str]] = {
    "ptbxl": ("ptbxl", "Ptbxl"),
    "cpsc2018": ("cpsc2018", "Cpsc2018"),
    "csn": ("csn", "Csn"),
    "physionet2021": ("physionet2021", "Physionet2021"),
    "mimic_iv_ecg": ("mimic_iv_ecg", "MimicIvEcg"),
    "synthetic": ("synthetic", "Synthetic"),
}
# Other spellings of the corpus names, for every function that takes a corpus name.
CORPUS_ALIASES = {
    "ptb-xl": "ptbxl", "ptb_xl": "ptbxl", "cpsc": "cpsc2018", "icbeb": "cpsc2018", "chapman": "csn",
    "chapman_shaoxing": "csn", "ningbo": "csn", "physionet2020": "physionet2021", "cinc2020": "physionet2021",
    "cinc2021": "physionet2021", "mimic": "mimic_iv_ecg", "mimic-iv-ecg": "mimic_iv_ecg",
}


def canonical_corpus_name(name: str) -> str:
    """The name of :data:`BUILDERS` that ``name`` (any case, or an alias such as ``"PTB-XL"``) stands for."""
    if not isinstance(name, str):
        raise ValueError(f"a corpus name must be a string, got {type(name).__name__}: {name!r}")
    key = name.strip().lower()
    key = CORPUS_ALIASES.get(key, key)
    if key not in BUILDERS:
        raise ValueError(f"unknown ECG corpus {name!r}; known: {', '.join(BUILDERS)}")
    return key


def parse_corpus_args(pairs: Optional[Iterable[str]], option: str = "--dataset_arg") -> Dict[str, object]:
    """``KEY=VALUE`` strings (the scripts' corpus options) to builder keyword arguments.

    A value is read as JSON where it parses (``num_records=100`` -> 100, ``strict=true`` -> True,
    ``codes=["a","b"]`` -> a list), else kept as the string (``split_file=/data/split.csv``).
    """
    out: Dict[str, object] = {}
    for pair in pairs or []:
        key, sep, value = str(pair).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{option} expects KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def get_builder_class(name: str):
    """The ``GeneratorBasedBuilder`` subclass of a corpus (names as in :data:`BUILDERS`, or an alias)."""
    module, cls = BUILDERS[canonical_corpus_name(name)]
    return getattr(importlib.import_module(f"{__package__}.corpora.{module}"), cls)


def load_ecg_dataset(
    name: str,
    config: Optional[str] = None,
    data_dir: Optional[str] = None,
    sampling_rate: Optional[int] = None,
    cache_dir: Optional[str] = None,
    num_proc: Optional[int] = None,
    streaming: bool = False,
    split_file: Optional[str] = None,
    on_error: str = "raise",
    output: str = "numpy",
    **builder_kwargs,
):
    """Build (or reuse from cache) a corpus and return its ``train``/``validation``/``test`` splits.

    Args:
        name: ``ptbxl``, ``cpsc2018``, ``csn``, ``physionet2021``, ``mimic_iv_ecg`` or ``synthetic``.
        config: configuration name (PTB-XL: ``super``, ``sub``, ``form``, ``rhythm``, ``all``,
            ``reports``; the other corpora have one, ``default``).
        data_dir: the corpus folder as downloaded (not used by ``synthetic``).
        sampling_rate: output rate in Hz (``None``: native; PTB-XL 100 or 500 picks the folder).
        cache_dir: where the Arrow cache lives (default: the ``datasets`` cache).
        num_proc: processes used to build the cache (records are sharded between them).
        streaming: return ``IterableDataset`` splits that read the source on the fly (no cache;
            skipped records are only logged).
        split_file: CSV ``record_id,split`` replacing the corpus's default split.
        on_error: ``"raise"`` or ``"skip"`` for unreadable records (see ``ECGBuilderConfig``).
        output: ``"numpy"`` or ``"torch"``: type of the decoded ``signal`` (see ``ECGDecoder``).
        **builder_kwargs: further config arguments of the corpus (e.g. ``num_records``, ``seed``
            for ``synthetic``; ``nan_policy``, ``validation_fraction``, ``unmapped_codes``).

    Returns:
        ``datasets.DatasetDict`` (or ``IterableDatasetDict`` when streaming) with the three splits,
        decoded to the data contract.

    Raises:
        RecordError: ``on_error="raise"`` and a record is unreadable (the message names it).
        ValueError: unknown corpus, wrong ``data_dir`` or arguments, codes without a concept.
    """
    import datasets

    from .encoding import decode_example, set_ecg_format, stored_features
    from processing.ecg.wfdb_reader import RecordError

    cls = get_builder_class(name)
    kwargs = dict(builder_kwargs)
    for key, value in (("sampling_rate", sampling_rate), ("split_file", split_file), ("on_error", on_error)):
        if value is not None:
            kwargs[key] = value
    builder = cls(config_name=config, data_dir=data_dir, cache_dir=cache_dir, **kwargs)

    if streaming:
        splits = builder.as_streaming_dataset()
        return datasets.IterableDatasetDict({k: v.map(decode_example) for k, v in splits.items()})

    try:
        builder.download_and_prepare(num_proc=num_proc)
    except datasets.exceptions.DatasetGenerationError as err:
        cause = err.__cause__ or err.__context__
        while cause is not None and not isinstance(cause, RecordError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise RecordError(f"{cls._corpus_name()}: {cause}") from err
        raise
    out = datasets.DatasetDict()
    infos = builder.info.splits or {}
    for split in ("train", "validation", "test"):
        if split in infos and infos[split].num_examples:
            out[split] = builder.as_dataset(split=split)
        else:  # an empty split (tiny corpus or split file): an empty table with the same columns
            out[split] = datasets.Dataset.from_dict({k: [] for k in stored_features()}, features=stored_features())
    set_ecg_format(out, output=output)
    return out
