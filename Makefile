# kretrain: the two commands are `make demo` and `make test`; both set up .venv from scratch.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test lint typecheck pytest crd clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[operator,trainer,dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/kretrain demo

lint: $(STAMP)
	$(BIN)/ruff check kretrain tests bench
	$(BIN)/ruff format --check kretrain tests bench

typecheck: $(STAMP)
	$(BIN)/mypy -p kretrain

pytest: $(STAMP)
	$(BIN)/pytest -q --durations=15

test: lint typecheck pytest

crd: $(STAMP)
	$(BIN)/kretrain crd -o crds/retrainjob.yaml
	$(BIN)/kretrain crd -o charts/kretrain/crds/retrainjob.yaml
	$(BIN)/kretrain crd --schedule -o crds/retrainschedule.yaml
	$(BIN)/kretrain crd --schedule -o charts/kretrain/crds/retrainschedule.yaml
	$(BIN)/kretrain crd --reference -o docs/api.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
