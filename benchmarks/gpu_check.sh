#!/usr/bin/env bash
# One GPU check, under 8 minutes on a CUDA machine: installs what it needs, runs the tests that touch
# devices, measures pre-training samples/s (bf16; ViT tiny and small; batch 256) and the pipeline's
# ECG/s, and prints one table.
#
#     bash benchmarks/gpu_check.sh            # from the repository root
#
# Needs: python3 with venv, and either a CUDA torch already importable or pip access to torch 2.13.0.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
START=$(date +%s)
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    test -x .venv-gpu/bin/python || "$PY" -m venv .venv-gpu
    PY=.venv-gpu/bin/python
    "$PY" -m pip install -q torch==2.13.0   # the default Linux wheel is the CUDA build
fi
"$PY" -m pip install -q -c constraints.txt -e ".[dev]"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; print(torch.__version__, torch.cuda.get_device_name(0))"

echo "== tests that touch devices"
"$PY" -m pytest -q -m "not slow" tests/test_inference_paths.py tests/test_model.py -p no:cacheprovider 2>&1 | tail -3

echo "== pre-training throughput"
"$PY" benchmarks/bench_training.py --device cuda --batch_size 256 --steps 10 --records 600 --loader_batches 2 \
    --num_workers 4 --encoders vit:tiny vit:small | tee /tmp/gpu_check_training.txt

echo "== pipeline"
"$PY" - <<'PYEOF' | tee /tmp/gpu_check_pipeline.txt
import statistics, time
import torch
from transformers import pipeline
import modeling_supreme  # noqa: F401
from modeling_supreme import ECGProcessor, SuPreMEConfig, SuPreMEModel
from datasets_scripts.testing import example_signal
from processing.ecg.ecg_leads import STANDARD_12_LEADS

config = SuPreMEConfig()
model, processor = SuPreMEModel(config).eval(), ECGProcessor.from_config(config)
records = [{"signal": example_signal(i), "sampling_rate": 500, "lead_names": list(STANDARD_12_LEADS)} for i in range(64)] * 16
labels = ["atrial fibrillation", "sinus rhythm", "left bundle branch block", "ST elevation", "low QRS voltage"]
classifier = pipeline("zero-shot-ecg-classification", model=model, processor=processor, device="cuda")
for dtype in (None, "bfloat16"):
    classifier(records[:256], candidate_labels=labels, batch_size=256, autocast_dtype=dtype)
    times = []
    for _ in range(3):
        torch.cuda.synchronize(); start = time.perf_counter()
        classifier(records, candidate_labels=labels, batch_size=256, num_workers=4, autocast_dtype=dtype)
        torch.cuda.synchronize(); times.append(time.perf_counter() - start)
    print(f"| pipeline, {len(records)} in-memory records, batch 256, {dtype or 'fp32'} | {len(records) / statistics.median(times):.0f} ECG/s | - | - |")
PYEOF

echo
echo "== GPU check on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), $(( $(date +%s) - START )) s in all"
echo "| what | samples/s or ECG/s | FLOPs per sample (fwd+bwd) | of bf16 peak |"
echo "|---|---|---|---|"
grep '^| pre-training\|^| data loader' /tmp/gpu_check_training.txt
grep '^| pipeline' /tmp/gpu_check_pipeline.txt
