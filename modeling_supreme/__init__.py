"""SuPreME for HuggingFace transformers.

Importing this package registers the Auto classes (`AutoConfig`, `AutoModel`, `AutoFeatureExtractor`,
`AutoProcessor`) for model type "supreme" and the `zero-shot-ecg-classification` pipeline task, and
marks the classes for remote code so that every `save_pretrained` writes the defining files and
`auto_map` next to the weights.
"""

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoProcessor

from processing.feature_extraction_supreme import ECGFeatureExtractor
from processing.processing_supreme import ECGProcessor

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

__all__ = [
    "ECGFeatureExtractor",
    "ECGProcessor",
    "SuPreMEConfig",
    "SuPreMEModel",
    "SuPreMEOutput",
    "SuPreMEPreTrainedModel",
    "ZeroShotECGClassificationPipeline",
    "resolve_text_encoder_path",
]
