# Two entry points (README): `make run` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ./local_data
EPOCHS ?= 100

.PHONY: run test venv bench gpu-check clean-venv

# the requirements, then the packages themselves (pyproject.toml), editable: the venv imports
# this checkout's code, so an edit needs no reinstall
$(BIN)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

venv: $(BIN)/.installed

# The Baseline and AutoDO (A_W_S: SEP augmentation + BOTH loss model + HES) side by side on
# the embedded DIGITS data, imbalance ratio 10 and 10 % label noise, 100 epochs (at 15 the
# per-sample tables are updated too few times to help), through the table runner: two
# one-thread runs at a time (how long it takes: docs/results.md). Every run resumes: an
# interrupted `make run` continues, a finished one trains nothing and prints the table again.
run: venv
	$(BIN)/python run-table.py --dataset DIGITS --configs Baseline A_W_S --settings 10-0.1 \
		--runs 1 --jobs 2 --no-cuda --epochs $(EPOCHS) --data $(DATA)

test: venv
	$(BIN)/python -m pytest tests -q --durations=20

bench: venv
	$(BIN)/python bench/throughput.py --dataset SVHN --model wresnet16_4 --aug-model SEP \
		--los-model BOTH --hyper-opt HES --steps 5 --no-cuda

# Everything a GPU must check and measure, as one command (bench/gpu_check.py: CUDA tests,
# SVHN-shaped throughput fp32 / bf16 / bf16 + compile, one process against torchrun, 2 ranks,
# runs per GPU), then one summary table; under 8 minutes on one H100/H200. It runs with
# .venv's Python where there is one, else with $(PYTHON): a GPU image's own torch (no venv
# to build there, and no network; the packages are not installed there, so this checkout goes
# on PYTHONPATH). GPU_CHECK_ARGS: e.g. --dry-run, --out DIR, --skip STEP.
gpu-check:
	$(if $(wildcard $(BIN)/python),$(BIN)/python,PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} \
		$(PYTHON)) bench/gpu_check.py $(GPU_CHECK_ARGS)

clean-venv:
	rm -rf $(VENV)
