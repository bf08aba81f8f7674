"""SuPreME for HuggingFace transformers.

Importing this package registers the Auto classes (`AutoConfig`, `AutoModel`, `AutoFeatureExtractor`,
`AutoProcessor`) for model type "supreme" and the `zero-shot-ecg-classification` pipeline task, and
marks the classes for remote code so that every `save_pretrained` writes the defining files and
`auto_map` next to the weights.

The model files (`configuration_supreme`, `modeling_supreme`, `pipeline_supreme`) are that remote
code and import only each other. `modeling_supreme.evaluation` (prompt bank, scoring, metrics, the
linear probe) and `modeling_supreme.training` (pre-training helpers) are imported on first use, so
`import modeling_supreme` stays light.
"""

import importlib

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoProcessor

from processing.ecg.data_collator import ECGDataCollator
from processing.ecg.feature_extraction_supreme import ECGFeatureExtractor
from processing.ecg.processing_supreme import ECGProcessor

from .configuration_supreme import SuPreMEConfig, resolve_text_encoder_path
from .modeling_supreme import SuPreMEModel, SuPreMEOutput, SuPreMEPreTrainedModel
from .pipeline_supreme import ZeroShotECGClassificationPipeline, register_pipeline

AutoConfig.register(SuPreMEConfig.model_type, SuPreMEConfig, exist_ok=True)
AutoModel.register(SuPreMEConfig, SuPreMEModel, exist_ok=True)
AutoFeatureExtractor.register(SuPreMEConfig, ECGFeatureExtractor, exist_ok=True)
AutoProcessor.register(SuPreMEConfig, ECGProcessor, exist_ok=True)

SuPreMEConfig.register_for_auto_class()
SuPreMEModel.register_for_auto_class("AutoModel")
ECGFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
ECGProcessor.register_for_auto_class("AutoProcessor")

register_pipeline()

__version__ = "0.1.0"

_SUBPACKAGES = ("evaluation", "training")


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ECGDataCollator",
    "ECGFeatureExtractor",
    "ECGProcessor",
    "SuPreMEConfig",
    "SuPreMEModel",
    "SuPreMEOutput",
    "SuPreMEPreTrainedModel",
    "ZeroShotECGClassificationPipeline",
    "resolve_text_encoder_path",
]
