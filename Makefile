# kretrain: the two commands are `make demo` and `make test`; both set up .venv from scratch.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test lint typecheck pytest browser crd clean

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

# Debian's chromium renders the line report page in tests/test_line_report.py: installed with apt-get where
# this runs as root (CI), else the test says how to install it and skips (it fails when CI is set).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the line report test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else echo "chromium not found (not root, or no apt-get): the browser test of the line report will skip"; fi

pytest: $(STAMP) browser
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
