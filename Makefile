# DeepSeek-V3 from the inside — two commands a learner needs:
#   make lab    set up .venv, prepare the corpus, open JupyterLab on notebooks/
#   make test   set up .venv with test extras, run pytest and strict nbval on every notebook
#   make test-browser   drive every chapter in JupyterLab in Chromium (needs Debian's chromium package)
# Only Python >= 3.10 and make are required on the machine.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PORT   ?= 8888
CHROMIUM ?= $(shell test -x /usr/bin/chromium && echo /usr/bin/chromium || command -v chromium || command -v chromium-browser)
# Lab as the course ships it: notebooks/.jupyter/jupyter_lab_config.py (settings in notebooks/.jupyter/settings, widget views checked on save)
LAB_FLAGS := --no-browser --ServerApp.ip=127.0.0.1 --config=notebooks/.jupyter/jupyter_lab_config.py \
	$(if $(filter 0,$(shell id -u)),--allow-root,)
NBVAL_FLAGS := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout 600

.PHONY: lab test test-unit test-notebooks test-portable test-browser check-chromium notebooks corpus bench \
	install install-test install-browser clean help

help:
	@echo "make lab          set up and open JupyterLab on notebooks/ (prints the URL; works headless)"
	@echo "make test         set up and run every test: pytest tests/ + strict nbval on notebooks/"
	@echo "make test-portable  strict nbval again on PyTorch's portable CPU kernels (ATEN_CPU_CAPABILITY=default)"
	@echo "make test-browser every chapter and widget driven in JupyterLab in Chromium (apt-get install chromium)"
	@echo "make notebooks    re-execute every notebook in place (after changing a chapter)"
	@echo "make bench        run the benchmarks in bench/"

$(VENV)/bin/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 is required, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Stamp files make the install idempotent and re-run it when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet "torch==2.13.0"
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PIP) install --quiet -e ".[test]"
	touch $@

$(VENV)/.installed-browser: pyproject.toml $(VENV)/.installed-test
	$(PIP) install --quiet -e ".[test,browser]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
install-browser: $(VENV)/.installed-browser

corpus: install
	$(PY) data/prepare.py

# The corpus is prepared first; if that fails (offline, say) Lab still opens, with the reason printed.
# The notebooks are trusted first (their outputs were made by the course's code), so the server logs no
# "Notebook ... is not trusted"; `jupyter trust` keeps the signatures in Jupyter's data directory.
lab: install
	@$(PY) data/prepare.py || echo "WARNING: corpus not prepared (see above); chapters that train need it or DSV3_CORPUS=/path/to/text.txt"
	@$(VENV)/bin/jupyter trust notebooks/*.ipynb notebooks/solutions/*.ipynb > /dev/null
	$(VENV)/bin/jupyter lab $(LAB_FLAGS) --port=$(PORT) --ServerApp.root_dir=notebooks \
		--LabApp.default_url=/lab/tree/00_tour.ipynb

test: install-test corpus
	OMP_NUM_THREADS=2 $(PY) -m pytest -q tests
	OMP_NUM_THREADS=2 $(PY) -m pytest -q $(NBVAL_FLAGS) notebooks

# The stored outputs must not depend on the CPU's vector path (AVX2, AVX-512, NEON...). PyTorch's portable
# kernels (no SIMD) differ from the native ones in the last bits, as a learner's CPU may: every notebook must
# pass on both. CONTRIBUTING.md ("Outputs that do not depend on the CPU") has the rule.
test-portable: install-test corpus
	ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=2 $(PY) -m pytest -q $(NBVAL_FLAGS) notebooks

test-unit: install-test
	$(PY) -m pytest -q tests

test-notebooks: install-test corpus
	$(PY) -m pytest -q $(NBVAL_FLAGS) notebooks

# Chromium is looked for first, so a machine without it stops here with the way to get it.
check-chromium:
	@test -n "$(CHROMIUM)" && test -x "$(CHROMIUM)" || { \
		echo "make test-browser needs Chromium: none at /usr/bin/chromium or on PATH (CHROMIUM='$(CHROMIUM)')."; \
		echo "  Debian/Ubuntu: apt-get install -y chromium   (as root; Playwright's browser download is not used)"; \
		echo "  elsewhere: make test-browser CHROMIUM=/path/to/chromium-or-chrome"; exit 1; }

# Every chapter in JupyterLab in headless Chromium (tests/browser): screenshots in build/browser-shots/,
# widget latencies in build/widget_latency.json (print them: $(PY) bench/widget_latency.py).
test-browser: check-chromium install-browser corpus
	OMP_NUM_THREADS=2 DSV3_CHROMIUM=$(CHROMIUM) $(PY) -m pytest -q tests/browser

notebooks: install-test corpus
	for nb in notebooks/*.ipynb notebooks/solutions/*.ipynb; do \
		[ -e "$$nb" ] || continue; \
		echo "executing $$nb"; \
		$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
			--ExecutePreprocessor.kernel_name=python3 --ExecutePreprocessor.timeout=600 "$$nb" || exit 1; \
	done
	$(PY) notebooks/.jupyter/normalize_notebooks.py

bench: install-test corpus
	$(PY) bench/train_cpu.py
	$(PY) bench/mla_decode.py
	$(PY) bench/speculative.py
	$(PY) bench/expert_parallel.py

clean:
	rm -rf $(VENV) data/cache .pytest_cache
