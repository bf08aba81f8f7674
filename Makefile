# One command for the demo, one for the tests. Both create .venv when it is missing and install
# torch==2.13.0 first (the CPU wheel), then this package with the tested versions in constraints.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.supreme-installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install test test-fast demo app bench real-data-check zero-shot-study clean

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,llm,app]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# Everything but the tests marked slow (subprocess pre-training runs, SIGKILL/resume, remote code in a
# clean interpreter, the scripts end to end).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

demo: $(STAMP)
	$(PY) examples/demo.py $(DEMO_ARGS)

# The Gradio demo app in a browser (http://127.0.0.1:7860; APP_ARGS="--port 7861" for another port), on
# the checkpoint `make demo` trains, which is trained first when demo_output/model has no final weights.
app: $(STAMP)
	test -f demo_output/model/model.safetensors || $(PY) examples/demo.py $(DEMO_ARGS)
	$(PY) examples/app.py --model demo_output/model $(APP_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench_model.py
	$(PY) benchmarks/bench_datasets.py
	$(PY) benchmarks/bench_lexicon.py
	$(PY) benchmarks/bench_app.py

# Pre-train on PTB-XL folds 1-8 of ../shared/data (real reports, 100 Hz) and print the zero-shot
# macro AUROC on folds 9-10 (super classes). Skips with a message when the folder is absent.
real-data-check: $(STAMP)
	$(PY) examples/ptbxl_real_data_check.py --train_minutes $(or $(TRAIN_MINUTES),3)

# The zero-shot study on ../shared/data/ptbxl (learning curve, seeds, encoders, supervised reference,
# calibration, unseen concepts); QUICK=1 for the short version.
zero-shot-study: $(STAMP)
	$(PY) benchmarks/zero_shot_study.py $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) *.egg-info
