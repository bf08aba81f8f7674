"""Helpers of ``examples/pretrain.py``, importable after ``pip install``: targets from an entities file
(``targets``), the pre-training dataset and sampler (``data``), resumable checkpoints (``checkpoints``),
zero-shot model selection (``selection``) and the model card (``cards``). The training loop itself
is the script. Names are imported lazily.
"""

from processing._lazy import lazy_exports

_EXPORTS = {
    "PretrainingError": "errors",
    "IGNORE_INDEX": "targets",
    "QUERY_VARIANTS": "targets",
    "UNCERTAIN_POLICIES": "targets",
    "TrainingTargets": "targets",
    "build_targets": "targets",
    "concept_query_texts": "targets",
    "load_entities": "targets",
    "record_ids": "targets",
    "EpochSampler": "data",
    "PretrainingDataset": "data",
    "SignalAugmentation": "data",
    "NO_AUGMENTATION": "data",
    "random_lead_subset": "data",
    "STATE_FILE": "checkpoints",
    "check_output_dir": "checkpoints",
    "complete_checkpoints": "checkpoints",
    "push_checkpoint_to_hub": "checkpoints",
    "remove_unfinished_checkpoints": "checkpoints",
    "resolve_resume": "checkpoints",
    "save_checkpoint": "checkpoints",
    "save_pretrained_atomically": "checkpoints",
    "ZeroShotEvaluator": "selection",
    "ConceptValidation": "selection",
    "EarlyStopping": "selection",
    "Recipe": "recipe",
    "default_recipe": "recipe",
    "ENCODER_TYPES": "recipe",
    "bf16_is_native": "recipe",
    "NOT_MENTIONED_POLICIES": "targets",
    "expand_ancestors": "targets",
    "model_card": "cards",
    "build_model_card": "cards",
    "zero_shot_study_section": "study_card",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
