"""The `zero-shot-ecg-classification` pipeline: score ECGs against conditions written as text."""

from __future__ import annotations

import inspect
import string
import warnings
from typing import Any, Sequence

import numpy as np
import torch
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

TASK = "zero-shot-ecg-classification"
QUANTIZATIONS = ("int8",)


def quantize_for_cpu(model):
    """A copy of `model` whose ECG encoder runs int8 Linear layers (dynamic quantisation, CPU only).

    `torch.ao.quantization.quantize_dynamic` with one weight scale per output channel: weights are
    stored as int8, activations are quantised per batch on the fly, and the products run on the CPU's
    int8 kernels (VNNI where present). The fusion network, the projections, the text encoder and the
    logit head stay float32: they cost little (queries are few), and quantising the fusion layers too
    was measured to triple the largest score difference against float32.
    """
    import copy

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    if next(model.parameters()).device.type != "cpu":
        raise ValueError(f"quantization='int8' runs on CPU only; the model is on {model.device}")
    quantized = copy.deepcopy(model).eval()
    quantized.ecg_encoder = quantize_dynamic(
        quantized.ecg_encoder, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
    )
    return quantized
ERROR_MODES = ("raise", "return")
# The pipeline's batch size when neither `pipeline(..., batch_size=)` nor the call sets one (transformers' own
# default is 1). Measured on 256 PTB-XL records with the 100 Hz checkpoint on a 2-core Xeon (2026-12-04, one run):
# 138 ECG/s at batch 1, 305 at 8, 357 at 16 and 32, 353 at 64 (fp32); 133, 451, 567, 587, 594 in bf16.
DEFAULT_BATCH_SIZE = 32


# -- call-argument validation (kept apart from the scoring internals) --------------------------------


def validate_candidate_labels(candidate_labels) -> list[str]:
    """The candidate labels as a list of non-empty strings; anything else is a ValueError naming the argument."""
    if isinstance(candidate_labels, str):
        labels = [label.strip() for label in candidate_labels.split(",")]
        if not any(labels):
            raise ValueError(f"candidate_labels {candidate_labels!r} holds no label; give conditions such as "
                             "candidate_labels=['atrial fibrillation', 'sinus rhythm']")
        empty = [i for i, label in enumerate(labels) if not label]
        if empty:
            raise ValueError(f"candidate_labels {candidate_labels!r} has an empty label at comma-separated position(s) "
                             f"{empty}")
    else:
        try:
            labels = list(candidate_labels)
        except TypeError:
            raise ValueError(f"candidate_labels must be a list of strings, got {type(candidate_labels).__name__}") from None
        if not labels:
            raise ValueError("candidate_labels is empty; give at least one condition, for example "
                             "candidate_labels=['atrial fibrillation', 'sinus rhythm']")
        for i, label in enumerate(labels):
            if not isinstance(label, str):
                raise ValueError(f"candidate_labels[{i}] is {label!r} ({type(label).__name__}); each label must be a "
                                 "non-empty string")
            if not label.strip():
                raise ValueError(f"candidate_labels[{i}] is {label!r}: an empty or whitespace-only label is not a condition")
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        key = " ".join(label.split()).casefold()
        if key in seen:
            raise ValueError(f"candidate_labels has duplicates: [{seen[key]}] {labels[seen[key]]!r} and [{i}] {label!r}")
        seen[key] = i
    return labels


def validate_hypothesis_template(template) -> str:
    """A template with exactly one empty ``{}`` slot (``{{`` and ``}}`` stay literal braces)."""
    if template is None:
        return "{}"
    if not isinstance(template, str):
        raise ValueError(f"hypothesis_template must be a string with one '{{}}' slot, got {type(template).__name__}")
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise ValueError(f"hypothesis_template {template!r} is not a valid format string ({err})") from None
    if len(fields) != 1 or fields[0] != "":
        raise ValueError(f"hypothesis_template must contain exactly one '{{}}' slot for the label, got {template!r} "
                         f"with {len(fields)} slot(s){'' if all(f == '' for f in fields) else ' (named or numbered)'}")
    return template


def validate_flag(name: str, value) -> bool:
    """A real boolean: ``multi_label="false"`` must not mean True."""
    if isinstance(value, bool):
        return value
    try:
        import numpy as np

        if isinstance(value, np.bool_):
            return bool(value)
    except ImportError:  # pragma: no cover
        pass
    raise ValueError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


def validate_query_lengths(tokenizer, query_texts: Sequence[str], labels: Sequence[str], max_length: int) -> None:
    """Warn about labels cut at the text limit; refuse labels that become the same text once cut."""
    ids = tokenizer(list(query_texts), add_special_tokens=True, truncation=False)["input_ids"]
    cut = [i for i, sequence in enumerate(ids) if len(sequence) > max_length]
    if not cut:
        return
    kept: dict[tuple, int] = {}
    for i, sequence in enumerate(ids):
        key = tuple(sequence[: max_length - 1])
        if key in kept:
            raise ValueError(
                f"candidate_labels[{kept[key]}] {labels[kept[key]]!r} and candidate_labels[{i}] {labels[i]!r} are "
                f"identical within the text limit of {max_length} tokens and would get identical scores; shorten them"
            )
        kept[key] = i
    for i in cut:
        warnings.warn(
            f"candidate_labels[{i}] {labels[i]!r} is {len(ids[i])} tokens long with the template; only the first "
            f"{max_length} are read (the model's text_max_length)", UserWarning, stacklevel=4,
        )


class _Indexed:
    """One element of a list input with its position, so that errors name the record that caused them."""

    __slots__ = ("index", "item")

    def __init__(self, index: int, item):
        self.index, self.item = index, item


def _record_id(item):
    if isinstance(item, dict):
        return item.get("record_id")
    if hasattr(item, "record_id"):
        return getattr(item, "record_id")
    if isinstance(item, (str, bytes)) or hasattr(item, "__fspath__"):
        return str(item)
    return None


def _as_autocast_dtype(value) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if str(value).lower() in ("fp32", "float32", "none", "no"):
        return None
    if str(value).lower() not in names:
        raise ValueError(f"autocast_dtype must be 'bfloat16', 'float16' or None, got {value!r}")
    return names[str(value).lower()]


# The columns of the data contract that one ECG needs (see docs/datasets.md).
_ECG_COLUMNS = ("signal", "sampling_rate", "lead_names")


def _is_hf_dataset(inputs) -> bool:
    # Duck-typed: `datasets` is not a dependency of this remote-code file.
    return type(inputs).__module__.split(".")[0] == "datasets" and hasattr(inputs, "column_names")


# The compact int16 layout of docs/datasets.md: counts and counts per mV, one gain per lead.
_INT16_COLUMNS = ("signal_int16", "signal_gain")


class _DatasetRows(torch.utils.data.Dataset):
    """The ECG columns of a `datasets.Dataset`, one dict per row (what the pipeline takes for one ECG)."""

    def __init__(self, dataset):
        int16 = "signal" not in dataset.column_names
        columns = list(_INT16_COLUMNS if int16 else _ECG_COLUMNS[:1]) + list(_ECG_COLUMNS[1:])
        # record_id is named in error messages; missing_leads marks leads stored as 0 mV but never recorded
        columns += [name for name in ("record_id", "missing_leads") if name in dataset.column_names]
        self.dataset = dataset.select_columns(columns).with_format("numpy")

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return _Indexed(int(index), _row_input(self.dataset[int(index)]))


def _row_input(row) -> dict:
    if "signal" in row:
        signal = np.asarray(row["signal"], dtype=np.float32)
    else:  # the int16 option's one-line conversion (the same millivolts, bit for bit)
        signal = (np.asarray(row["signal_int16"]) / np.asarray(row["signal_gain"])[:, None]).astype(np.float32)
    out = {"signal": signal, "sampling_rate": int(row["sampling_rate"]), "lead_names": [str(n) for n in row["lead_names"]]}
    if row.get("record_id") is not None:
        out["record_id"] = str(row["record_id"])
    if row.get("missing_leads") is not None and len(row["missing_leads"]):
        out["missing_leads"] = [str(n) for n in row["missing_leads"]]
    return out


def _dataset_rows(dataset):
    """Rows of a `datasets.Dataset` / `IterableDataset` as pipeline inputs, or an error saying what to pass."""
    columns = dataset.column_names
    if isinstance(columns, dict):  # a DatasetDict: several splits
        raise ValueError(
            f"the zero-shot ECG pipeline got a DatasetDict with splits {sorted(columns)}; pass one split, e.g. "
            f"pipe(dataset[{sorted(columns)[0]!r}], candidate_labels=...)"
        )
    needed = list(_ECG_COLUMNS)
    if columns is not None and "signal" not in columns and all(name in columns for name in _INT16_COLUMNS):
        needed = list(_INT16_COLUMNS) + needed[1:]
    missing = [name for name in needed if columns is not None and name not in columns]
    if missing:
        hint = ""
        if any(name in (columns or ()) for name in ("path", "record_path", "filename")):
            hint = " To score WFDB records by path, pass the path column: pipe(dataset['path'], candidate_labels=...)."
        raise ValueError(
            f"the zero-shot ECG pipeline needs a datasets.Dataset with the columns {list(_ECG_COLUMNS)} "
            f"(signal: leads x samples in mV); this one lacks {missing} (it has {columns}).{hint}"
        )
    if hasattr(dataset, "__len__"):  # a map-style Dataset
        return _DatasetRows(dataset)

    def stream():  # IterableDataset: rows as they come
        for row in dataset:
            yield _row_input(row)

    return stream()


class ZeroShotECGClassificationPipeline(Pipeline):
    """Zero-shot ECG classification with a SuPreME model.

    Each candidate label is written into `hypothesis_template`, embedded once by the model's text
    encoder (and cached for repeated label sets), and scored against every ECG by the Cardiac
    Fusion Network. By default scores are independent sigmoids, because an ECG can show several
    conditions at once; `multi_label=False` turns them into a softmax over the candidates.

    ```python
    >>> import modeling_supreme  # registers the task
    >>> from transformers import pipeline
    >>> classifier = pipeline("zero-shot-ecg-classification", model="path/to/checkpoint")
    >>> classifier("records500/00000/00001_hr", candidate_labels=["atrial fibrillation", "sinus rhythm"])
    >>> classifier({"signal": array, "sampling_rate": 250, "lead_names": ["I", "II"]}, candidate_labels=[...])
    ```

    Inputs: a WFDB record path (with or without `.hea`), a dict with `signal` (leads x samples, mV),
    `sampling_rate` and `lead_names`, an `ECGRecord`, a 2-D array together with `sampling_rate=` and
    `lead_names=` arguments, or a list of any of these, batched by `batch_size` (default `DEFAULT_BATCH_SIZE`,
    32, where transformers' pipelines default to 1: a list of records scored one by one ran 2.6-4.4x slower).

    Call arguments: `candidate_labels` (required), `hypothesis_template` (default `"{}"`),
    `multi_label` (default True), `top_k` (default: all), `autocast_dtype` (`"bfloat16"` runs the
    model under CPU/GPU autocast; query embeddings stay float32), `quantization` (`"int8"`: on CPU, the
    ECG encoder runs dynamically quantised int8 Linear layers, see `quantize_for_cpu`; `num_workers`,
    a standard pipeline argument, prepares the next batches in DataLoader workers while the model
    runs), `sampling_rate`, `lead_names` and `layout` for bare arrays, and `errors` (`"raise"`, default, or `"return"`: a bad input in a list
    gives an error entry naming its position and record, and the rest are scored). Arguments are
    validated before anything is scored: empty, whitespace-only, non-string or duplicated labels,
    a template without exactly one `{}` slot and a non-boolean `multi_label` are errors naming the
    argument; a label cut at the model's text limit is a warning, and two labels that become the
    same text once cut are an error.
    """

    # The processor is the single entry for both modalities; the tokenizer and feature extractor are
    # taken from it (and also accepted separately).
    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, processor=None, **kwargs):
        if processor is not None:
            kwargs.setdefault("feature_extractor", processor.feature_extractor)
            kwargs.setdefault("tokenizer", processor.tokenizer)
        super().__init__(*args, **kwargs)
        if self._batch_size is None:
            self._batch_size = DEFAULT_BATCH_SIZE
        if self.feature_extractor is None or self.tokenizer is None:
            raise ValueError(
                "the zero-shot ECG pipeline needs a feature extractor and a tokenizer: pass processor=ECGProcessor(...) "
                "or load the pipeline from a checkpoint folder that holds the processor"
            )
        self._tokenized_queries: dict[tuple, Any] = {}
        self._checked_queries: set[tuple] = set()

    def __call__(self, inputs, **kwargs) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Score one ECG (returns a list of `{"label", "score"}` sorted by score) or a list of ECGs.

        With `errors="return"`, an input that cannot be read or prepared gives
        `{"error": message, "input": position, "record_id": ...}` in its place and the others are
        scored; with `errors="raise"` (default) the first such input stops the call, and the message
        names its position and record.

        A `datasets.Dataset` in the data contract's columns (`signal` in mV, leads x samples, or the
        int16 option's columns, `sampling_rate`, `lead_names`) is scored row by row, batched by
        `batch_size`, and gives one result list per row, in row order; a streaming `IterableDataset`
        gives an iterator of them.
        """
        if _is_hf_dataset(inputs):
            inputs = _dataset_rows(inputs)
            if isinstance(inputs, _DatasetRows):  # a torch Dataset of `_Indexed` rows: transformers batches it
                return list(super().__call__(inputs, **kwargs))
        if isinstance(inputs, list):
            inputs = [_Indexed(i, item) for i, item in enumerate(inputs)]
        elif isinstance(inputs, tuple):
            inputs = [_Indexed(i, item) for i, item in enumerate(inputs)]
        elif inspect.isgenerator(inputs):
            inputs = (_Indexed(i, item) for i, item in enumerate(inputs))
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(
        self,
        candidate_labels: Sequence[str] | None = None,
        hypothesis_template: str | None = None,
        multi_label: bool | None = None,
        top_k: int | None = None,
        autocast_dtype=None,
        quantization: str | None = None,
        sampling_rate=None,
        lead_names=None,
        layout: str | None = None,
        errors: str | None = None,
        **kwargs,
    ):
        if kwargs:
            raise TypeError(f"unexpected arguments for {TASK}: {sorted(kwargs)}")
        preprocess_params, forward_params, postprocess_params = {}, {}, {}
        if errors is not None:
            if errors not in ERROR_MODES:
                raise ValueError(f"errors must be one of {ERROR_MODES}, got {errors!r}")
            preprocess_params["errors"] = errors
        if sampling_rate is not None:
            preprocess_params["sampling_rate"] = sampling_rate
        if lead_names is not None:
            preprocess_params["lead_names"] = lead_names
        if layout is not None:
            preprocess_params["layout"] = layout
        if candidate_labels is not None:
            candidate_labels = validate_candidate_labels(candidate_labels)
            template = validate_hypothesis_template(hypothesis_template)
            query_texts = tuple(template.format(label) for label in candidate_labels)
            if query_texts not in self._checked_queries:  # tokenized once per label set
                validate_query_lengths(self.tokenizer, query_texts, candidate_labels,
                                       getattr(self.model.config, "text_max_length", 64))
                if len(self._checked_queries) > 64:
                    self._checked_queries.clear()
                self._checked_queries.add(query_texts)
            forward_params["query_texts"] = query_texts
            postprocess_params["candidate_labels"] = candidate_labels
        elif hypothesis_template is not None:
            validate_hypothesis_template(hypothesis_template)
        if autocast_dtype is not None:
            forward_params["autocast_dtype"] = _as_autocast_dtype(autocast_dtype)
        if quantization is not None:
            if quantization not in QUANTIZATIONS:
                raise ValueError(f"quantization must be one of {QUANTIZATIONS} or None, got {quantization!r}")
            if self.device.type != "cpu":
                raise ValueError(f"quantization={quantization!r} runs on CPU only; this pipeline is on {self.device}")
            forward_params["quantization"] = quantization
        if multi_label is not None:
            postprocess_params["multi_label"] = validate_flag("multi_label", multi_label)
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k must be a whole number of at least 1, got {top_k!r}")
            postprocess_params["top_k"] = int(top_k)
        return preprocess_params, forward_params, postprocess_params

    def preprocess(self, inputs, sampling_rate=None, lead_names=None, layout="leads_first", errors="raise"):
        index = None
        if isinstance(inputs, _Indexed):
            index, inputs = inputs.index, inputs.item
        record_id = _record_id(inputs)
        try:
            # WFDB paths are read by the feature extractor, which ships the record reader as remote code.
            features = self.feature_extractor(
                inputs, sampling_rate=sampling_rate, lead_names=lead_names, layout=layout, return_tensors="pt"
            )
        except (ValueError, OSError) as err:
            message = str(err)
            if index is not None:  # the extractor saw one record and calls it "record 0"
                message = f"input {index}: {message[len('record 0: '):] if message.startswith('record 0: ') else message}"
            if errors == "raise":
                raise type(err)(message) if isinstance(err, ValueError) else ValueError(message) from None
            num_leads, num_samples = len(self.feature_extractor.lead_names), self.feature_extractor.num_samples
            features = {"input_values": torch.zeros(1, num_leads, num_samples),
                        "lead_mask": torch.ones(1, num_leads, dtype=torch.bool),
                        "attention_mask": torch.ones(1, num_samples, dtype=torch.bool)}
            features["_error"] = message
        else:
            features["_error"] = None
        # One record's signal as (leads, samples): HF's batch collator then joins a batch with one torch.cat
        # (a 2-D tensor of equal length), where a (1, leads, samples) tensor takes its padding path (torch.full
        # of the whole batch, then one copy per record). `_forward` views it back as (batch, leads, samples).
        # Measured on 320 PTB-XL records at 500 Hz, batch 64, a 2-core Xeon with AMX, two interleaved runs each:
        # pipeline / raw forward 79.5% and 75.8% before, 80.2% and 80.5% after in bf16; 91.7% and 91.4% before,
        # 93.9% and 92.1% after in fp32.
        features["input_values"] = features["input_values"][0]
        features["_input"] = {"input": index, "record_id": None if record_id is None else str(record_id)}
        return features

    def _query_embeds(self, query_texts: tuple) -> torch.Tensor:
        tokens = self._tokenized_queries.get(query_texts)
        if tokens is None:
            tokens = self.tokenizer(
                list(query_texts),
                padding=True,
                truncation=True,
                max_length=getattr(self.model.config, "text_max_length", 64),
                return_tensors="pt",
            )
            if len(self._tokenized_queries) > 64:
                self._tokenized_queries.clear()
            self._tokenized_queries[query_texts] = tokens
        return self.model.get_query_embeddings(
            tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
        )

    def _scoring_model(self, quantization):
        if quantization is None:
            return self.model
        # One quantised copy per pipeline, made on first use from the weights as they are then.
        if getattr(self, "_quantized", None) is None or self._quantized[0] != quantization:
            self._quantized = (quantization, quantize_for_cpu(self.model))
        return self._quantized[1]

    def _forward(self, model_inputs, query_texts=None, autocast_dtype=None, quantization=None):
        if query_texts is None:
            raise ValueError("candidate_labels is required, for example candidate_labels=['atrial fibrillation', 'sinus rhythm']")
        errors = model_inputs.get("_error")
        failed = [e is not None for e in errors] if isinstance(errors, list) else [errors is not None]
        signals = model_inputs["input_values"]  # (batch * leads, samples), see preprocess
        model_inputs = {**model_inputs, "input_values": signals.view(len(failed), -1, signals.shape[-1])}
        rows = torch.tensor([not f for f in failed])
        query_embeds = self._query_embeds(query_texts)
        logits = torch.full((len(failed), len(query_texts)), float("nan"))
        if rows.any():
            select = (lambda t: t[rows.to(t.device)]) if not rows.all() else (lambda t: t)
            with torch.autocast(device_type=self.device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
                scored = self._scoring_model(quantization).zero_shot_logits(
                    input_values=select(model_inputs["input_values"]),
                    lead_mask=select(model_inputs["lead_mask"]),
                    attention_mask=select(model_inputs["attention_mask"]),
                    query_embeds=query_embeds,
                )
            if rows.all():
                logits = scored
            else:
                logits = logits.to(scored.device, scored.dtype)
                logits[rows.to(scored.device)] = scored
        return {"logits": logits, "_error": errors, "_input": model_inputs.get("_input")}

    def postprocess(self, model_outputs, candidate_labels=None, multi_label=True, top_k=None):
        error = model_outputs.get("_error")
        if error is not None:
            return {"error": error, **(model_outputs.get("_input") or {})}
        logits = model_outputs["logits"][0]
        scores = logits.float().sigmoid() if multi_label else logits.float().softmax(dim=-1)
        ranked = sorted(zip(scores.tolist(), candidate_labels), key=lambda pair: -pair[0])
        if top_k is not None:
            ranked = ranked[:top_k]
        return [{"label": label, "score": score} for score, label in ranked]


def custom_pipelines_entry() -> dict:
    """The `custom_pipelines` value of a checkpoint's config.json.

    The same shape `Pipeline.save_pretrained` writes for a registered pipeline: the class as
    "<file>.<class>" among the checkpoint's remote-code files, the Auto class that loads the model, and
    the input type. `transformers.pipeline` resolves "impl" with `get_class_from_dynamic_module` and
    the "pt" names as attributes of `transformers`.
    """
    cls = ZeroShotECGClassificationPipeline
    return {TASK: {"impl": f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}", "pt": ["AutoModel"], "type": "multimodal"}}


def register_pipeline() -> None:
    """Register the task with transformers (idempotent)."""
    if TASK not in PIPELINE_REGISTRY.supported_tasks:
        PIPELINE_REGISTRY.register_pipeline(
            TASK, pipeline_class=ZeroShotECGClassificationPipeline, pt_model=AutoModel, type="multimodal"
        )


__all__ = ["ZeroShotECGClassificationPipeline", "custom_pipelines_entry", "register_pipeline", "TASK"]
