# fastdet: `make demo` runs the main job on the embedded default model; `make test` runs the tests.
# Both create .venv/ (make install) first when needed. Everything installs from the package registries.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fastdet-installed
export FASTDET_CACHE ?= $(CURDIR)/build/cache

.PHONY: install demo test test-all model lint docs clean

install: $(STAMP)

# requirements.lock is what truly co-installs (Python 3.11, Paddle 2.6.2 stack). paddledet's own pins clash
# with paddleslim's, so it goes in with --no-deps; the packages it imports are in the lock.
$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || { echo "make install: \
	fastdet needs Python 3.11 (requirements.lock pins wheels that exist for 3.11 only: Paddle 2.6.2, numpy 1.23.5, \
	onnxruntime 1.32.0); '$(PYTHON)' is $$($(PYTHON) --version 2>&1 || echo missing). Install 3.11 and run: \
	make PYTHON=python3.11 ..." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps paddledet==2.6.0
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

demo: install
	$(PY) tools/demo.py

test: install
	$(PY) -m pytest -m "not slow" -q -p no:cacheprovider

test-all: install
	$(PY) -m pytest -q -p no:cacheprovider

# Train the embedded default model (about 1.5 h on 2 cores; resumable) and export it into the package.
model: install
	OMP_NUM_THREADS=2 $(PY) tools/train_default.py --work-dir build/train

# ruff (pinned in requirements.lock and the dev extra), rules in pyproject.toml; CI runs it before the tests
lint: install
	$(VENV)/bin/ruff check fastdet_cli tests benchmarks tools

# docs/cli.md from the command-line app, and every table of figures in README.md and docs/ from the
# docs/results/*.json file its marker names (tools/render_docs.py); tests/test_docs.py fails when either is out of date
docs: install
	$(PY) -m fastdet_cli.cli_reference > docs/cli.md.tmp && mv docs/cli.md.tmp docs/cli.md
	$(PY) tools/render_docs.py

clean:
	rm -rf build .pytest_cache
