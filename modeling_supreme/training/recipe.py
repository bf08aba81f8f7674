"""The default pre-training recipe, chosen by corpus size.

The zero-shot study (``benchmarks/zero_shot_study.py``) found that MERL's 12-layer ViT-tiny with a
linear patch embedding does not learn from a few hundred records (zero-shot macro AUROC about chance
at lr 5e-4): it gets too few optimisation steps for its depth and has no local inductive bias. On
small corpora the recipe therefore uses a 4-layer ViT with the convolutional stem, a longer warm-up,
many epochs, signal augmentation and early stopping on the validation split; the depth
grows back to the preset's 12 layers as the corpus grows, where the longer schedule is affordable.
The thresholds between the sizes are our choice (not measured beyond the few hundred records this
project can run on a CPU); every value can be overridden by the corresponding pretrain.py flag.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..configuration_supreme import ECG_ENCODER_PRESETS

SMALL_CORPUS = 5_000  # records: below, the small-corpus recipe
LARGE_CORPUS = 100_000  # records: from here, the preset's full depth
# Every corpus size's precision: pretrain.py must choose it before the corpus (and its size) is read.
DEFAULT_MIXED_PRECISION = "bf16"


@dataclass(frozen=True)
class Recipe:
    ecg_num_layers: int  # ViT depth (the ResNet keeps its preset)
    learning_rate: float
    warmup_ratio: float
    weight_decay: float
    num_train_epochs: float
    per_device_train_batch_size: int
    early_stopping_patience: int  # evaluations without improvement before stopping
    # bf16: measured within 0.01 of fp32 scores, about 1.5-2x faster on a CPU with AVX-512 BF16. Only where
    # the device runs it natively (see `bf16_is_native`): emulated bf16 (AVX2-only CPUs) is slower than fp32.
    mixed_precision: str
    # The model's sampling rate when the user sets none (None: the corpus's rate). 100 Hz keeps the ViT's
    # token grid (one token per 0.1 s) and cuts the convolutional stem's work 5x against 500 Hz; the study's
    # small-corpus numbers are measured at 100 Hz.
    sampling_rate: int | None = None
    # Dropout of the ECG encoder and the fusion network (None: SuPreMEConfig's 0.1).
    dropout: float | None = None
    # Signal augmentation (modeling_supreme.training.SignalAugmentation); off unless the recipe sets it.
    crop_seconds: float | None = None
    amplitude_scale: float = 1.0
    noise_std: float = 0.0
    baseline_wander: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


ENCODER_TYPES = tuple(ECG_ENCODER_PRESETS)  # the encoders the model config knows


def default_recipe(num_records: int, encoder_type: str = "vit") -> Recipe:
    """The recipe for a training corpus of ``num_records`` records and an encoder of ``encoder_type``."""
    if num_records < 1:
        raise ValueError(f"the corpus must have at least one record, got {num_records}")
    if encoder_type not in ENCODER_TYPES:
        raise ValueError(f"encoder_type must be one of {', '.join(ENCODER_TYPES)}, got {encoder_type!r}")
    if num_records < SMALL_CORPUS:
        batch = 32 if num_records >= 128 else 16
        # Augmentation measured by the zero-shot study (validation folds 7-8, 3 seeds, 2026-12-02): random 5-s
        # windows + amplitude/noise/wander 0.765 vs 0.762 without (a tie) at about 0.7x the training time;
        # amplitude/noise/wander WITHOUT the crop 0.677 (worse), so they are not offered alone.
        # Peak learning rate by encoder, chosen on the study's validation macro AUROC over seeds 0-5 (bf16 on a
        # Xeon with AMX, 2026-12-04; mean ± sd): ViT 1e-3 0.706 ± 0.086 (two seeds stopped after 10 epochs),
        # 5e-4 0.776 ± 0.042, 3e-4 0.797 ± 0.018, 2e-4 0.797 ± 0.008 (chosen: the same mean, the smallest
        # spread over seeds); ResNet-1d 5e-4 0.797 ± 0.021, 3e-4 0.771 ± 0.013.
        learning_rate = 2e-4 if encoder_type == "vit" else 5e-4
        # Dropout by encoder, chosen on the same validation folds (seeds 0-5, the EPYC with AVX-512 BF16, 2026-12-08):
        # ViT 0 0.808 ± 0.014 against 0.1 0.797 ± 0.009, and 1.8x faster per epoch (on a CPU, drawing the dropout
        # masks cost about 40% of a training step); ResNet-1d (dropout only in the fusion network) 0 0.795 ± 0.025
        # against 0.1 0.804 ± 0.017, so it keeps the config's 0.1. The signal augmentation and early stopping regularise.
        dropout = 0.0 if encoder_type == "vit" else None
        return Recipe(ecg_num_layers=4, learning_rate=learning_rate, warmup_ratio=0.1, weight_decay=0.05, num_train_epochs=60,
                      per_device_train_batch_size=batch, early_stopping_patience=8, mixed_precision=DEFAULT_MIXED_PRECISION, sampling_rate=100,
                      dropout=dropout, crop_seconds=5.0, amplitude_scale=1.25, noise_std=0.02, baseline_wander=0.1)
    # Larger corpora: our choice, not measured here (no corpus of that size on this CPU).
    if num_records < LARGE_CORPUS:
        return Recipe(ecg_num_layers=8, learning_rate=5e-4, warmup_ratio=0.05, weight_decay=0.05, num_train_epochs=30,
                      per_device_train_batch_size=64, early_stopping_patience=5, mixed_precision=DEFAULT_MIXED_PRECISION)
    return Recipe(ecg_num_layers=12, learning_rate=5e-4, warmup_ratio=0.02, weight_decay=0.05, num_train_epochs=10,
                  per_device_train_batch_size=128, early_stopping_patience=3, mixed_precision=DEFAULT_MIXED_PRECISION)


def bf16_is_native(device_type: str) -> bool:
    """Whether ``device_type`` ("cpu" or "cuda") computes bfloat16 matmuls natively.

    On a CPU that is oneDNN's own check (AVX-512 BF16 or AMX); without it torch emulates bf16, which on
    an AVX2-only AMD EPYC ran the encoder slower than fp32.
    """
    import torch

    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


__all__ = ["DEFAULT_MIXED_PRECISION", "ENCODER_TYPES", "LARGE_CORPUS", "Recipe", "SMALL_CORPUS", "bf16_is_native", "default_recipe"]
