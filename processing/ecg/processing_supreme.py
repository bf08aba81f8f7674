"""ECGProcessor: the single entry for both modalities of SuPreME, ECG signals and cardiac query texts.

This module is copied next to checkpoints as remote code: it imports only `.feature_extraction_supreme`.
"""

from __future__ import annotations

from typing import Sequence

from transformers import AutoTokenizer
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .feature_extraction_supreme import ECGFeatureExtractor


class ECGProcessor(ProcessorMixin):
    r"""
    Wraps an [`ECGFeatureExtractor`] (signals) and the text encoder's tokenizer (queries).

    `processor(ecg=..., sampling_rate=..., lead_names=...)` gives `input_values`, `lead_mask` and
    `attention_mask`; `processor(text=[...])` gives `query_input_ids` and `query_attention_mask`;
    both can be given in one call.

    Args:
        feature_extractor ([`ECGFeatureExtractor`]): prepares the signals.
        tokenizer ([`PreTrainedTokenizerBase`]): the tokenizer of the model's text encoder.
        query_max_length (`int`, *optional*, defaults to 64): longest query in tokens.
    """

    def __init__(self, feature_extractor, tokenizer, query_max_length: int = 64, **kwargs):
        self.query_max_length = int(query_max_length)
        super().__init__(feature_extractor, tokenizer, **kwargs)

    @classmethod
    def from_config(cls, config, **feature_extractor_kwargs) -> "ECGProcessor":
        """The processor of a [`SuPreMEConfig`]: its ECG input contract and its text encoder's tokenizer."""
        feature_extractor = ECGFeatureExtractor.from_config(config, **feature_extractor_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(config.resolved_text_encoder_path)
        # The tokenizer remembers where it was loaded from; a local cache path means nothing elsewhere.
        tokenizer.name_or_path = config.text_encoder_name_or_path
        return cls(feature_extractor, tokenizer, query_max_length=config.text_max_length)

    def tokenize_queries(self, text: str | Sequence[str], return_tensors: str | None = "pt") -> BatchFeature:
        """Tokenize query texts (one per condition) into `query_input_ids` and `query_attention_mask`."""
        if isinstance(text, str):
            text = [text]
        text = list(text)
        if not text:
            raise ValueError("no query text given")
        bad = [t for t in text if not isinstance(t, str) or not t.strip()]
        if bad:
            raise ValueError(f"query texts must be non-empty strings, got {bad[:3]}")
        encoded = self.tokenizer(
            text, padding=True, truncation=True, max_length=self.query_max_length, return_tensors=return_tensors
        )
        return BatchFeature(
            {"query_input_ids": encoded["input_ids"], "query_attention_mask": encoded["attention_mask"]},
            tensor_type=return_tensors,
        )

    def __call__(
        self,
        ecg=None,
        text: str | Sequence[str] | None = None,
        sampling_rate=None,
        lead_names=None,
        layout: str = "leads_first",
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Prepare ECGs (see [`ECGFeatureExtractor.__call__`]) and/or query texts."""
        if ecg is None and text is None:
            raise ValueError("give at least one of `ecg` and `text`")
        data = {}
        if ecg is not None:
            data.update(
                self.feature_extractor(
                    ecg, sampling_rate=sampling_rate, lead_names=lead_names, layout=layout, return_tensors=return_tensors,
                    **{key: kwargs[key] for key in ("units", "check_amplitude") if key in kwargs},
                )
            )
        if text is not None:
            data.update(self.tokenize_queries(text, return_tensors=return_tensors))
        return BatchFeature(data=data, tensor_type=return_tensors)

    @property
    def model_input_names(self):
        return self.feature_extractor.model_input_names + ["query_input_ids", "query_attention_mask"]


__all__ = ["ECGProcessor"]
