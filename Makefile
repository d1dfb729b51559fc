# Two commands do everything on a fresh machine with Python 3.11:
#   make demo   - create .venv, install edgekit, run `edgekit deploy --target cpu`
#   make test   - create .venv, install edgekit with test tools, run the test suite
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgekit-installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,ios]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/edgekit deploy --target cpu

# Two workers, a test file each: most of a test's time is single-threaded Keras and
# converter work, so two processes on two cores take about 0.55 of one (9:27 against 16:41).
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check edgekit targets converters profiles tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/cpu_deploy.py

clean:
	rm -rf $(VENV) edgekit_out .pytest_cache
