# kretrain: the two commands are `make demo` and `make test`; both set up .venv from scratch.
# `python -P` keeps the repo root off sys.path: the `operator/` folder would shadow the stdlib module.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test lint typecheck pytest crd clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -P -m venv $(VENV)
	$(BIN)/python -P -m pip install -q -U pip
	$(BIN)/python -P -m pip install -q -c constraints.txt -e '.[operator,trainer,dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/kretrain demo

lint: $(STAMP)
	$(BIN)/ruff check kretrain operator trainer tests bench
	$(BIN)/ruff format --check kretrain operator trainer tests bench

# mypy maps modules from folders, so give it the installed layout as a tree of symlinks.
typecheck: $(STAMP)
	rm -rf build/typecheck && mkdir -p build/typecheck/kretrain
	cp -as $(CURDIR)/kretrain/. build/typecheck/kretrain/
	ln -s $(CURDIR)/operator build/typecheck/kretrain/operator
	ln -s $(CURDIR)/trainer build/typecheck/kretrain/trainer
	cd build/typecheck && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p kretrain

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
