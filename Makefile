# The virtual env is rebuilt only when the pinned requirements or the package metadata change;
# .venv/.installed is the stamp that records the last successful install.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make app PORT=8600 PROJECTS=~/labeling`: the app's port and its projects folder (default:
# $RALIF_PROJECTS, else ./ralif-projects).
PORT ?= 8501
PROJECTS ?=

.PHONY: venv test app bench lint

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements.txt && $(BIN)/pip install -e . --no-deps
	touch $(STAMP)

# Two workers: the suite's browser and subprocess tests spend much of their time waiting, and CI has
# two cores. Tests pick free ports and temporary folders, so they do not share anything.
test: venv
	$(BIN)/python -m pytest -q -n 2 --dist worksteal

# From an installed package, `ralif app [PROJECTS] --port N` (ralif/commands/app.py) does the same.
app: venv
	$(if $(PROJECTS),RALIF_PROJECTS="$(abspath $(PROJECTS))") $(BIN)/streamlit run app.py \
		--server.address 127.0.0.1 --server.port $(PORT) --server.headless true

bench: venv
	$(BIN)/python benchmarks/run_all.py

lint: venv
	$(BIN)/ruff check ralif benchmarks tests
	$(BIN)/mypy
