"""The pre-training model card is a huggingface_hub ModelCard whose metadata the Hub can read: task,
library, licence, base model, datasets, tags and a model-index with the run's evaluation results."""

import numpy as np
import yaml
from huggingface_hub import EvalResult, ModelCard

from modeling_supreme.training import TrainingTargets, build_model_card, model_card


def run_record(text_encoder="sentence-transformers/all-MiniLM-L6-v2", eval_dataset="ptbxl"):
    data = {"dataset": "ptbxl", "dataset_config": "reports", "eval_dataset": eval_dataset, "eval_dataset_config": "super",
            "entities": "/data/ptbxl_entities.jsonl", "uncertain": "ignore", "sampling_rate": 100, "min_concept_count": 10}
    model = {"model_preset": "tiny", "ecg_encoder_type": "vit", "text_encoder": text_encoder, "duration": 10.0,
             "lead_subset_prob": 0.3}
    train = {"mixed_precision": None, "learning_rate": 5e-4, "weight_decay": 0.05, "warmup_ratio": 0.05,
             "lr_scheduler_type": "cosine", "per_device_train_batch_size": 64, "gradient_accumulation_steps": 1, "seed": 42}
    return {"data": data, "model": model, "train": train}


TARGETS = TrainingTargets(concepts=["sinus rhythm", "atrial fibrillation"], counts=[120, 14], rows=np.arange(3),
                          targets=np.zeros((3, 2), np.float32),
                          report={"used_records": 134, "records_without_entities": 2, "records_with_extraction_error": 1})
RESULTS = {"steps": 40, "mixed_precision": "bf16",
           "history": [{"step": 20, "val_macro_auroc": 0.61234}, {"step": 40, "val_macro_auroc": 0.70456}],
           "best": {"step": 40, "macro_auroc": 0.70456, "split": "validation"}}


def front_matter(text):
    return yaml.safe_load(text.split("---")[1])


def test_card_metadata_the_hub_reads():
    text = model_card(run_record(), TARGETS, RESULTS, "ecg-lab/supreme-tiny")
    meta = front_matter(text)
    assert meta["pipeline_tag"] == "other" and meta["library_name"] == "transformers"
    assert meta["license"] == "apache-2.0" and meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["datasets"] == ["ptbxl"] and {"ecg", "zero-shot-ecg-classification", "time-series"} <= set(meta["tags"])
    [entry] = meta["model-index"]
    assert entry["name"] == "ecg-lab/supreme-tiny"
    [result] = entry["results"]
    assert result["task"]["type"] == "zero-shot-ecg-classification"
    assert result["dataset"] == {"name": "ptbxl/super", "type": "ptbxl", "config": "super", "split": "validation"}
    assert result["metrics"][0]["type"] == "roc_auc" and result["metrics"][0]["value"] == 0.7046
    # huggingface_hub parses the model-index back into the same evaluation result
    card = ModelCard(text)
    [parsed] = card.data.eval_results
    assert (parsed.metric_value, parsed.dataset_split, parsed.dataset_config) == (0.7046, "validation", "super")
    # the card explains the task tag and shows what the run did
    assert "pipeline_tag: other" in card.text and "text-only NLI" in card.text
    assert "| 20 | 0.6123 |" in card.text and "bf16 mixed precision" in card.text and "Not for clinical use" in card.text
    assert 'model="ecg-lab/supreme-tiny", trust_remote_code=True' in card.text


def test_no_evaluation_no_model_index_and_a_local_encoder_is_not_a_base_model(tmp_path):
    args = run_record(text_encoder=str(tmp_path), eval_dataset=None)
    meta = front_matter(model_card(args, TARGETS, {"steps": 5, "history": []}, None))
    assert "model-index" not in meta and "base_model" not in meta
    assert meta["datasets"] == ["ptbxl"]


def test_extra_sections_and_results_hook():
    extra = EvalResult(task_type="zero-shot-ecg-classification", dataset_type="cpsc2018", dataset_name="cpsc2018",
                       metric_type="roc_auc", metric_value=0.66, dataset_split="test")
    card = build_model_card(run_record(), TARGETS, RESULTS, None,
                            extra_sections={"Zero-shot study": "| set | AUROC |\n| --- | --- |\n| cpsc2018 | 0.66 |"},
                            extra_eval_results=[extra])
    assert [r.dataset_type for r in card.data.eval_results] == ["ptbxl", "cpsc2018"]
    text = str(card)
    assert text.index("## Evaluation") < text.index("## Zero-shot study") < text.index("## Limitations")
    assert "| cpsc2018 | 0.66 |" in text
