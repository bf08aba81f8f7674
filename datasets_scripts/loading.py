"""One call to load any supported ECG corpus as a ``datasets.DatasetDict`` (train/validation/test).

>>> from datasets_scripts import load_ecg_dataset
>>> ds = load_ecg_dataset("ptbxl", "super", data_dir="/data/ptb-xl", output="torch")
>>> ds["train"][0]["signal"].shape            # float32 millivolts, (leads, samples)
torch.Size([12, 5000])

Every column is a native ``datasets`` feature (see :mod:`datasets_scripts.encoding`): the data
contract (``record_id``, ``patient_id``, ``signal``, ``lead_names``, ``sampling_rate``, ``report``,
``labels``) plus ``label_ids`` and ``multi_hot``, whose class names live in the features.
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
    output: Optional[str] = "numpy",
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
        output: ``"numpy"`` (default) or ``"torch"``: the array columns (``signal`` or
            ``signal_int16``/``signal_gain``, and ``multi_hot``) come as arrays or tensors, the other
            columns as Python values (``Dataset.with_format(output, columns=..., output_all_columns=True)``;
            streaming splits convert the same columns with a ``map`` that keeps ``features``).
            ``None``: no format (Python lists, as plain ``datasets`` returns them).
        **builder_kwargs: further config arguments of the corpus (e.g. ``num_records``, ``seed``
            for ``synthetic``; ``nan_policy``, ``validation_fraction``, ``unmapped_codes``).

    Returns:
        ``datasets.DatasetDict`` (or ``IterableDatasetDict`` when streaming, with ``features``) with
        the three splits.

    Raises:
        RecordError: ``on_error="raise"`` and a record is unreadable (the message names it).
        ValueError: unknown corpus, wrong ``data_dir`` or arguments, codes without a concept.
    """
    import datasets

    from .encoding import array_columns

    if output not in (None, "numpy", "torch"):
        raise ValueError(f"output must be 'numpy', 'torch' or None, got {output!r}")
    builder = make_builder(name, config, data_dir, cache_dir, sampling_rate=sampling_rate, split_file=split_file,
                           on_error=on_error, **builder_kwargs)
    if streaming:
        splits = builder.as_streaming_dataset()
        features = builder.info.features
        if output:
            convert = ArrayColumns(output, array_columns(features))
            splits = {k: v.map(convert, features=features) for k, v in splits.items()}
        return datasets.IterableDatasetDict(splits)
    out = prepare_splits(builder, num_proc=num_proc)
    if output:
        out = out.with_format(output, columns=array_columns(builder.info.features), output_all_columns=True)
    return out


def make_builder(name: str, config: Optional[str] = None, data_dir: Optional[str] = None, cache_dir: Optional[str] = None,
                 **kwargs):
    """The builder of a corpus configuration; arguments given as ``None`` take the config's defaults."""
    cls = get_builder_class(name)
    kwargs = {key: value for key, value in kwargs.items() if value is not None}
    return cls(config_name=config, data_dir=data_dir, cache_dir=cache_dir, **kwargs)


def prepare_splits(builder, num_proc: Optional[int] = None):
    """Build (or reuse) the builder's Arrow cache and return its three splits, unformatted.

    A split without records is an empty table with the same features and info, so that every
    corpus answers with ``train``, ``validation`` and ``test``.
    """
    import datasets

    from processing.ecg.wfdb_reader import RecordError

    try:
        builder.download_and_prepare(num_proc=num_proc)
    except datasets.exceptions.DatasetGenerationError as err:
        cause = err.__cause__ or err.__context__
        while cause is not None and not isinstance(cause, RecordError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise RecordError(f"{builder._corpus_name()}: {cause}") from err
        raise
    out = datasets.DatasetDict()
    infos = builder.info.splits or {}
    features = builder.info.features
    for split in ("train", "validation", "test"):
        if split in infos and infos[split].num_examples:
            out[split] = builder.as_dataset(split=split)
        else:
            out[split] = datasets.Dataset.from_dict({k: [] for k in features}, features=features, info=builder.info.copy())
    return out


class ArrayColumns:
    """``IterableDataset.map`` function: the array columns of an example as numpy arrays or torch tensors.

    ``IterableDataset.with_format`` formats every column (lead names would become arrays); this
    converts only the numeric ones, as the map-style splits' format does.
    """

    def __init__(self, output: str, columns):
        self.output, self.columns = output, tuple(columns)

    def __call__(self, example):
        import numpy as np

        dtypes = {"signal": np.float32, "signal_int16": np.int16, "signal_gain": np.float64, "multi_hot": np.float32}
        out = {}
        for column in self.columns:
            value = np.asarray(example[column], dtype=dtypes[column])
            if self.output == "torch":
                import torch

                value = torch.from_numpy(np.ascontiguousarray(value))
            out[column] = value
        return out
