# Two entry points (README): `make run` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ./local_data
EPOCHS ?= 15

.PHONY: run test venv bench clean-venv

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(BIN)/.installed

# AutoDO (SEP augmentation + BOTH loss model + HES) on the embedded DIGITS data,
# imbalance ratio 10 and 10 % label noise: about a minute on 2 CPU cores. --resume:
# an interrupted `make run` continues, a finished one just shows its result again.
run: venv
	$(BIN)/python implicit-augment.py --dataset DIGITS -ir 10 -nr 0.1 --epochs $(EPOCHS) \
		--aug-model SEP --los-model BOTH --hyper-opt HES --data $(DATA) --resume
	$(BIN)/python get-results.py --dataset DIGITS -ir 10 -nr 0.1 \
		--aug-model SEP --los-model BOTH --hyper-opt HES --data $(DATA)

test: venv
	$(BIN)/python -m pytest tests -q

bench: venv
	$(BIN)/python bench/throughput.py --dataset SVHN --model wresnet16_4 --aug-model SEP \
		--los-model BOTH --hyper-opt HES --steps 5 --no-cuda

clean-venv:
	rm -rf $(VENV)
