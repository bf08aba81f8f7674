"""The `zero-shot-ecg-classification` pipeline: score ECGs against conditions written as text."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

TASK = "zero-shot-ecg-classification"


def _as_autocast_dtype(value) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if str(value).lower() in ("fp32", "float32", "none", "no"):
        return None
    if str(value).lower() not in names:
        raise ValueError(f"autocast_dtype must be 'bfloat16', 'float16' or None, got {value!r}")
    return names[str(value).lower()]


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
    `lead_names=` arguments, or a list of any of these (then `batch_size` batches them).

    Call arguments: `candidate_labels` (required), `hypothesis_template` (default `"{}"`),
    `multi_label` (default True), `top_k` (default: all), `autocast_dtype` (`"bfloat16"` runs the
    model under CPU/GPU autocast; query embeddings stay float32), `sampling_rate`, `lead_names` and
    `layout` for bare arrays.
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
        if self.feature_extractor is None or self.tokenizer is None:
            raise ValueError(
                "the zero-shot ECG pipeline needs a feature extractor and a tokenizer: pass processor=ECGProcessor(...) "
                "or load the pipeline from a checkpoint folder that holds the processor"
            )
        self._tokenized_queries: dict[tuple, Any] = {}

    def __call__(self, inputs, **kwargs) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Score one ECG (returns a list of `{"label", "score"}` sorted by score) or a list of ECGs."""
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(
        self,
        candidate_labels: Sequence[str] | None = None,
        hypothesis_template: str | None = None,
        multi_label: bool | None = None,
        top_k: int | None = None,
        autocast_dtype=None,
        sampling_rate=None,
        lead_names=None,
        layout: str | None = None,
        **kwargs,
    ):
        if kwargs:
            raise TypeError(f"unexpected arguments for {TASK}: {sorted(kwargs)}")
        preprocess_params, forward_params, postprocess_params = {}, {}, {}
        if sampling_rate is not None:
            preprocess_params["sampling_rate"] = sampling_rate
        if lead_names is not None:
            preprocess_params["lead_names"] = lead_names
        if layout is not None:
            preprocess_params["layout"] = layout
        if candidate_labels is not None:
            if isinstance(candidate_labels, str):
                candidate_labels = [label.strip() for label in candidate_labels.split(",") if label.strip()]
            candidate_labels = list(candidate_labels)
            if not candidate_labels:
                raise ValueError("candidate_labels is empty")
            if len(set(candidate_labels)) != len(candidate_labels):
                raise ValueError(f"candidate_labels has duplicates: {candidate_labels}")
            template = hypothesis_template if hypothesis_template is not None else "{}"
            if "{}" not in template:
                raise ValueError(f"hypothesis_template must contain '{{}}', got {template!r}")
            forward_params["query_texts"] = tuple(template.format(label) for label in candidate_labels)
            postprocess_params["candidate_labels"] = candidate_labels
        if autocast_dtype is not None:
            forward_params["autocast_dtype"] = _as_autocast_dtype(autocast_dtype)
        if multi_label is not None:
            postprocess_params["multi_label"] = bool(multi_label)
        if top_k is not None:
            if int(top_k) < 1:
                raise ValueError(f"top_k must be at least 1, got {top_k}")
            postprocess_params["top_k"] = int(top_k)
        return preprocess_params, forward_params, postprocess_params

    def preprocess(self, inputs, sampling_rate=None, lead_names=None, layout="leads_first"):
        # WFDB paths are read by the feature extractor, which ships the record reader as remote code.
        return self.feature_extractor(
            inputs, sampling_rate=sampling_rate, lead_names=lead_names, layout=layout, return_tensors="pt"
        )

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

    def _forward(self, model_inputs, query_texts=None, autocast_dtype=None):
        if query_texts is None:
            raise ValueError("candidate_labels is required, for example candidate_labels=['atrial fibrillation', 'sinus rhythm']")
        query_embeds = self._query_embeds(query_texts)
        with torch.autocast(device_type=self.device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            logits = self.model.zero_shot_logits(
                input_values=model_inputs["input_values"],
                lead_mask=model_inputs["lead_mask"],
                attention_mask=model_inputs["attention_mask"],
                query_embeds=query_embeds,
            )
        return {"logits": logits}

    def postprocess(self, model_outputs, candidate_labels=None, multi_label=True, top_k=None):
        logits = model_outputs["logits"][0]
        scores = logits.sigmoid() if multi_label else logits.softmax(dim=-1)
        ranked = sorted(zip(scores.tolist(), candidate_labels), key=lambda pair: -pair[0])
        if top_k is not None:
            ranked = ranked[:top_k]
        return [{"label": label, "score": score} for score, label in ranked]


def register_pipeline() -> None:
    """Register the task with transformers (idempotent)."""
    if TASK not in PIPELINE_REGISTRY.supported_tasks:
        PIPELINE_REGISTRY.register_pipeline(
            TASK, pipeline_class=ZeroShotECGClassificationPipeline, pt_model=AutoModel, type="multimodal"
        )


__all__ = ["ZeroShotECGClassificationPipeline", "register_pipeline", "TASK"]
