"""Publishing a built corpus: Parquet shards in the Hub's layout plus a dataset card, pushed in one commit.

>>> from datasets_scripts import export_ecg_dataset, push_ecg_dataset
>>> export_ecg_dataset("ptbxl", "super", data_dir="/data/ptb-xl", output_dir="ptbxl-super")      # local folder
>>> push_ecg_dataset("my-org/ptbxl-super", "ptbxl", "super", data_dir="/data/ptb-xl", private=True)

The export folder (and so the repository) holds::

    README.md                                  dataset card: YAML (licence, configs, dataset_info with the
                                               features and splits, tags) and a description, the columns,
                                               the classes, the splits, provenance and the citation
    <config>/train-00000-of-0000N.parquet      the shards of each split (``data/`` for a corpus whose
    <config>/validation-00000-of-00001.parquet   only configuration is ``default``)
    <config>/test-00000-of-00001.parquet

Every column is a native feature (:mod:`datasets_scripts.encoding`) and each Parquet file carries
the ``datasets`` features in its schema metadata, so ``datasets.load_dataset("<repo>")`` or
``load_dataset("parquet", data_files=...)`` in an interpreter without this package gives the same
columns, with the class names in ``features["label_ids"]``; pandas and pyarrow read the signal as
nested lists of float32.

A repository holds one configuration: pushing another configuration to a repository that has one
is refused (its card would stop describing the first), and a re-push of the same configuration
replaces all of that configuration's shards, so no stale shard of an earlier build stays behind.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Union

from .encoding import class_names_of
from .loading import make_builder, prepare_splits

DEFAULT_MAX_SHARD_SIZE = 500 * 2**20
CARD_TAGS = ("ecg", "electrocardiogram", "medical", "time-series", "supreme")

COLUMN_MEANINGS = {
    "record_id": "corpus-unique record id",
    "patient_id": "patient id where the corpus has one (null otherwise), for patient-level splits",
    "signal": "the ECG in millivolts, float32, leads x samples",
    "signal_int16": "the ECG as int16 counts, leads x samples (compact storage)",
    "signal_gain": "counts per millivolt, one per lead: signal = signal_int16 / signal_gain[:, None]",
    "lead_names": "canonical lead names (I, II, III, aVR, aVL, aVF, V1..V6), in the order of the signal's leads",
    "missing_leads": "leads the source file names but without one valid sample, stored as 0 mV; absent, not flat",
    "sampling_rate": "samples per second (Hz)",
    "report": "the corpus's free-text report ('' where none)",
    "labels": "concept names (SuPreME concept vocabulary) of the configuration's label set",
    "label_ids": "the same labels as class indices; the class names are in the features",
    "multi_hot": "1.0 at the index of each class in labels, else 0.0 (float32, one value per class)",
}


def _shard_size(value: Union[int, str, None]) -> int:
    if value is None:
        return DEFAULT_MAX_SHARD_SIZE
    if isinstance(value, int):
        size = value
    else:
        text = str(value).strip().upper()
        units = {"KB": 2**10, "MB": 2**20, "GB": 2**30, "B": 1}
        unit = next((u for u in units if text.endswith(u)), None)
        try:
            size = int(float(text[: -len(unit)] if unit else text) * (units[unit] if unit else 1))
        except ValueError:
            raise ValueError(f"max_shard_size must be bytes or a size like '500MB', got {value!r}") from None
    if size <= 0:
        raise ValueError(f"max_shard_size must be positive, got {value!r}")
    return size


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                        (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "10M<n<100M"


def data_folder(config_name: str) -> str:
    """Where a configuration's shards live in the repository (the layout ``push_to_hub`` uses)."""
    return "data" if config_name == "default" else config_name


def _summary(builder) -> dict:
    try:
        with open(builder.summary_path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def _config_arguments(builder) -> Dict[str, object]:
    """The builder's config arguments that differ from the configuration's defaults (what was asked for)."""
    import dataclasses

    config = builder.config
    base = next((c for c in builder.BUILDER_CONFIGS if c.name == config.name), None)
    out = {}
    for f in dataclasses.fields(config):
        if f.name in ("name", "version", "data_dir", "data_files", "description", "source_fingerprint"):
            continue
        value = getattr(config, f.name)
        default = getattr(base, f.name) if base is not None else f.default
        if value != default:
            out[f.name] = os.path.basename(value) if f.name == "split_file" and value else value
    return out


def _feature_text(name: str, feature) -> str:
    if name == "label_ids":  # the class names are listed below, not in the table
        return f"List(ClassLabel(num_classes={feature.feature.num_classes}))"
    return repr(feature)


def dataset_card(builder, splits, repo_id: Optional[str] = None, download_size: Optional[int] = None):
    """The ``huggingface_hub.DatasetCard`` of a built configuration (``splits``: its DatasetDict;
    ``download_size``: bytes of the Parquet files)."""
    import datasets
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, DatasetCardData

    from processing.concepts.vocabulary import load_concept_vocabulary

    corpus, config_name = builder._corpus_name(), builder.config.name
    folder = data_folder(config_name)
    present = {name: split for name, split in splits.items() if len(split)}
    total = sum(len(split) for split in present.values())
    licence = builder.LICENSE
    card_data = DatasetCardData(
        license=licence.hub_id,
        pretty_name=f"{corpus} ({config_name}), SuPreME ECG format",
        size_categories=_size_category(total),
        tags=list(CARD_TAGS),
        **({"license_name": licence.name, "license_link": licence.link} if licence.hub_id == "other" else {}),
    )
    MetadataConfigs({config_name: {"data_files": [{"split": name, "path": f"{folder}/{name}-*"} for name in present],
                                   "default": True}}).to_dataset_card_data(card_data)
    info = builder.info.copy()
    info.config_name = config_name
    info.splits = datasets.SplitDict({name: datasets.SplitInfo(name=name, num_bytes=split.data.nbytes,
                                                               num_examples=len(split))
                                      for name, split in present.items()})
    info.dataset_size = sum(split.data.nbytes for split in present.values())
    info.download_size = download_size
    DatasetInfosDict({config_name: info}).to_dataset_card_data(card_data)

    features = builder.info.features
    classes = class_names_of(features)
    summary = _summary(builder)
    vocabulary = load_concept_vocabulary()
    load_id = repo_id or "<repo_id>"
    signal_line = ("signal = (np.asarray(row['signal_int16']) / np.asarray(row['signal_gain'])[:, None]).astype(np.float32)"
                   if "signal_int16" in features else "signal = row['signal']            # float32 mV, leads x samples")
    columns = "\n".join(f"| `{name}` | `{_feature_text(name, feature)}` | {COLUMN_MEANINGS.get(name, '')} |" for name, feature in features.items())
    split_rows = "\n".join(f"| {name} | {len(split):,} |" for name, split in present.items())
    shown = ", ".join(classes[:30]) + (f", ... ({len(classes)} in all)" if len(classes) > 30 else "")
    arguments = _config_arguments(builder)
    body = f"""
# {corpus} ({config_name}) in the SuPreME ECG format

{builder.CORPUS_DESCRIPTION}

Source: {builder.HOMEPAGE or 'see the citation'}. Licence: {licence}.
Built with the `{corpus}` builder of the SuPreME package (`datasets_scripts`); labels are concept names
of the SuPreME concept vocabulary (version {vocabulary.version}).

**Research data, not for clinical use.**

## Loading

```python
import numpy as np
from datasets import load_dataset

ds = load_dataset("{load_id}")                 # no package needed beyond datasets
row = ds["train"].with_format("numpy")[0]
{signal_line}
names = ds["train"].features["label_ids"].feature.names   # the order of multi_hot
```

## Columns

| column | feature | meaning |
| --- | --- | --- |
{columns}

## Classes

{len(classes)} classes{': ' + shown if classes else ' (this corpus has no diagnosis labels)'}.

## Splits

| split | records |
| --- | ---: |
{split_rows}

## Provenance

- corpus `{corpus}`, configuration `{config_name}`, builder arguments `{json.dumps(arguments, default=str)}`
- source fingerprint `{builder.config.source_fingerprint}` (hash of the corpus metadata, split file, concept
  vocabulary and builder code that produced these rows)
- records skipped as unreadable: {summary.get('num_skipped', 0)}; records with warnings: {summary.get('num_warnings', 0)}

## Citation

{builder.CITATION or 'See the source.'}

SuPreME: Cai et al., arXiv 2502.19668 (Findings of EMNLP 2025).
"""
    return DatasetCard(f"---\n{card_data.to_yaml()}\n---\n{body}")


def export_ecg_dataset(
    name: str,
    config: Optional[str] = None,
    data_dir: Optional[str] = None,
    output_dir: Union[str, os.PathLike] = "ecg_dataset_export",
    *,
    sampling_rate: Optional[int] = None,
    cache_dir: Optional[str] = None,
    num_proc: Optional[int] = None,
    split_file: Optional[str] = None,
    on_error: Optional[str] = None,
    max_shard_size: Union[int, str, None] = None,
    repo_id: Optional[str] = None,
    **builder_kwargs,
) -> Path:
    """Build (or reuse the cache of) a corpus configuration and write it as Parquet shards + dataset card.

    Args:
        name, config, data_dir, sampling_rate, cache_dir, num_proc, split_file, on_error,
            **builder_kwargs: as for :func:`datasets_scripts.load_ecg_dataset`.
        output_dir: the folder to create (it must not exist or be empty); written under a temporary
            name and renamed when complete, so a killed export leaves no half-written folder.
        max_shard_size: largest Parquet shard, as bytes or ``"500MB"`` (default), measured on the
            Arrow table.
        repo_id: the repository id to name in the card's loading example.

    Returns:
        the output folder.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise ValueError(f"output_dir {output_dir} exists and is not an empty folder; choose a new folder")
    limit = _shard_size(max_shard_size)
    builder = make_builder(name, config, data_dir, cache_dir, sampling_rate=sampling_rate, split_file=split_file,
                           on_error=on_error, **builder_kwargs)
    splits = prepare_splits(builder, num_proc=num_proc)
    if not any(len(split) for split in splits.values()):
        raise ValueError(f"{name} ({builder.config.name}): no records to export")
    folder = data_folder(builder.config.name)
    staging = output_dir.parent / f".{output_dir.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        (staging / folder).mkdir(parents=True)
        for split_name, split in splits.items():
            if not len(split):
                continue
            shards = max(1, math.ceil(split.data.nbytes / limit))
            for index in range(shards):
                part = split.shard(num_shards=shards, index=index, contiguous=True)
                part.to_parquet(str(staging / folder / f"{split_name}-{index:05d}-of-{shards:05d}.parquet"))
        parquet_bytes = sum(p.stat().st_size for p in (staging / folder).glob("*.parquet"))
        dataset_card(builder, splits, repo_id=repo_id, download_size=parquet_bytes).save(str(staging / "README.md"))
        if output_dir.exists():
            output_dir.rmdir()
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def _configs_in_repo(files: List[str]) -> List[str]:
    return sorted({path.split("/", 1)[0] for path in files if path.endswith(".parquet") and "/" in path})


def push_ecg_dataset(
    repo_id: str,
    name: str,
    config: Optional[str] = None,
    data_dir: Optional[str] = None,
    *,
    private: bool = False,
    token: Optional[str] = None,
    commit_message: Optional[str] = None,
    export_dir: Optional[Union[str, os.PathLike]] = None,
    **export_kwargs,
):
    """Export a corpus configuration (:func:`export_ecg_dataset`) and push it to a Hub dataset repository.

    One commit adds the card and the shards and deletes the configuration's earlier shards. The
    repository is created when missing (``private`` applies then). ``export_dir`` keeps the export
    (default: a temporary folder, removed afterwards). The Hub endpoint and token come from
    ``huggingface_hub`` (``HF_ENDPOINT``, ``HF_TOKEN`` or ``token=``).

    Returns:
        the ``huggingface_hub.CommitInfo`` of the commit.
    """
    import tempfile

    from huggingface_hub import HfApi

    if not repo_id or repo_id.count("/") != 1:
        raise ValueError(f"repo_id must be 'namespace/name', got {repo_id!r}")
    api = HfApi(token=token)
    temporary = None
    if export_dir is None:
        temporary = tempfile.mkdtemp(prefix="ecg_dataset_push_")
        export_dir = Path(temporary) / "export"
    try:
        folder = export_ecg_dataset(name, config, data_dir, export_dir, repo_id=repo_id, **export_kwargs)
        config_folder = next(p.name for p in folder.iterdir() if p.is_dir())
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        others = [c for c in _configs_in_repo(api.list_repo_files(repo_id, repo_type="dataset")) if c != config_folder]
        if others:
            raise ValueError(
                f"{repo_id} already holds the configuration folder(s) {others}; push each configuration to its own "
                f"repository (for example {repo_id}-{config_folder})"
            )
        return api.upload_folder(
            repo_id=repo_id, repo_type="dataset", folder_path=str(folder),
            commit_message=commit_message or f"Upload {name} ({config_folder}) in the SuPreME ECG format",
            delete_patterns=[f"{config_folder}/*.parquet"],
        )
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)


__all__ = ["dataset_card", "export_ecg_dataset", "push_ecg_dataset"]
