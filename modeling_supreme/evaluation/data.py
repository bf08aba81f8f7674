"""Checkpoints and datasets for evaluation: loading with clear errors, class lists, labels, subsets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Mapping, Optional, Tuple

import numpy as np

from .errors import EvaluationError


def split_labels(dataset_split) -> List[List[str]]:
    """The `labels` column of a split (concept names), read alone: no signal is read."""
    return [list(labels or ()) for labels in dataset_split.with_format(None)["labels"]]


def _looks_like_hub_id(name: str) -> bool:
    # "owner/name" or "name": no path separators beyond the one slash, nothing a path would start with.
    parts = str(name).split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not str(name).startswith((".", "~")) and "\\" not in str(name)


def download_checkpoint(repo_id: str, revision: Optional[str] = None) -> Path:
    """The files of a Hub checkpoint in the local HF cache (downloaded when missing), as a folder."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision))
    except RepositoryNotFoundError:
        raise EvaluationError(f"model {repo_id}: no such local folder, and no such model repository on the Hub "
                              "(or it is private: log in with `hf auth login`)") from None
    except LocalEntryNotFoundError:
        raise EvaluationError(f"model {repo_id}: no such local folder, and the Hub id is not in the local cache while "
                              "the Hub is unreachable or HF_HUB_OFFLINE=1 is set") from None
    except HfHubHTTPError as error:
        raise EvaluationError(f"model {repo_id}: downloading from the Hub failed ({error})") from None


def load_checkpoint(model_path, device: Optional[str] = None):
    """`(SuPreMEModel, ECGProcessor)` from a folder written by `save_pretrained`, or a Hub model id, in eval mode.

    Checks, before loading weights, that the folder is a SuPreME checkpoint with its processor, so that
    a wrong folder fails with a message instead of a stack of loader errors. A Hub id is downloaded to
    the HF cache first (`huggingface_hub.snapshot_download`) and checked the same way.
    """
    import modeling_supreme  # noqa: F401  (registers the Auto classes)
    from modeling_supreme import ECGProcessor, SuPreMEModel

    path = Path(model_path)
    if not path.is_dir() and _looks_like_hub_id(model_path) and not path.exists():
        path = download_checkpoint(str(model_path))
    if not path.is_dir():
        raise EvaluationError(
            f"model {model_path}: not a folder. Pass the output folder of pretrain.py (or of "
            f"SuPreMEModel.save_pretrained + ECGProcessor.save_pretrained), or a Hub model id"
        )
    config_file = path / "config.json"
    if not config_file.is_file():
        raise EvaluationError(f"model {path}: no config.json, so it is not a from_pretrained checkpoint folder")
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise EvaluationError(f"model {path}: config.json is not a valid JSON object ({error})") from None
    if model_type != "supreme":
        raise EvaluationError(
            f"model {path}: config.json has model_type {model_type!r}, not 'supreme'; this folder holds another "
            f"kind of model"
        )
    if not any((path / name).is_file() for name in ("processor_config.json", "preprocessor_config.json")):
        raise EvaluationError(
            f"model {path}: no processor_config.json; save the ECGProcessor next to the model "
            f"(processor.save_pretrained(folder)) so that inputs are prepared as in training"
        )
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise EvaluationError(f"model {path}: no weight file (*.safetensors)")
    model = SuPreMEModel.from_pretrained(str(path))
    processor = ECGProcessor.from_pretrained(str(path))
    if device is not None:
        model.to(device)
    model.eval()
    return model, processor


def dataset_class_names(name: str, config: Optional[str], data_dir, cache_dir, builder_kwargs: Mapping, splits) -> Tuple[List[str], str]:
    """The classes to score for a corpus, and where they came from.

    A builder with `class_names()` (PTB-XL, CPSC2018, synthetic) defines the label set itself, which
    keeps the class list identical across splits and subsets. Otherwise (CSN, PhysioNet 2021, MIMIC)
    the classes are the labels seen in any split, sorted by name.
    """
    from datasets_scripts.loading import get_builder_class

    builder_class = get_builder_class(name)
    if hasattr(builder_class, "class_names"):
        builder = builder_class(config_name=config, data_dir=data_dir, cache_dir=cache_dir, **dict(builder_kwargs))
        return list(builder.class_names()), f"{builder_class.__name__}.class_names()"
    seen = set()
    for split in splits.values():
        for labels in split_labels(split):
            seen.update(labels or ())
    return sorted(seen), "labels seen in the dataset's splits"


def load_evaluation_dataset(name: str, config=None, data_dir=None, sampling_rate=None, cache_dir=None, **builder_kwargs):
    """`(DatasetDict, class_names, class_source)`: the corpus through `load_ecg_dataset` and its classes."""
    from datasets_scripts.loading import get_builder_class, load_ecg_dataset

    try:
        get_builder_class(name)
    except ValueError as error:
        raise EvaluationError(str(error)) from None
    kwargs = {k: v for k, v in builder_kwargs.items() if v is not None}
    splits = load_ecg_dataset(name, config, data_dir=data_dir, sampling_rate=sampling_rate, cache_dir=cache_dir, **kwargs)
    if sampling_rate is not None:
        kwargs["sampling_rate"] = sampling_rate
    class_names, source = dataset_class_names(name, config, data_dir, cache_dir, kwargs, splits)
    if not class_names:
        raise EvaluationError(f"dataset {name!r} (config {config!r}) has no labels to evaluate")
    return splits, class_names, source


def subsample(dataset_split, max_records: Optional[int], seed: int = 0):
    """At most `max_records` records of a split: a seeded random sample kept in the split's order."""
    if max_records is None or len(dataset_split) <= max_records:
        return dataset_split
    if max_records < 1:
        raise EvaluationError(f"max_records must be at least 1, got {max_records}")
    chosen = np.sort(np.random.default_rng(seed).choice(len(dataset_split), size=max_records, replace=False))
    return dataset_split.select(chosen.tolist())


__all__ = ["dataset_class_names", "load_checkpoint", "load_evaluation_dataset", "split_labels", "subsample"]
