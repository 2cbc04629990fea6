# Two entry points on a fresh clone: `make demo` (the main job) and `make test`.
# Everything lives inside the repo: the venv in .venv/, downloads and converted models in .cache/.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
XLANG_CACHE_DIR ?= $(CURDIR)/.cache/xlang
XLANG_TEST_CACHE ?= $(CURDIR)/.cache/xlang-test
export XLANG_CACHE_DIR XLANG_TEST_CACHE
# torch is pinned everywhere: an unpinned resolve pulls a multi-GB CUDA build.
TORCH := torch==2.13.0
SETUP_STAMP := $(VENV)/.xlang-setup

.PHONY: setup demo test bench lint clean

setup: $(SETUP_STAMP)

$(SETUP_STAMP): pyproject.toml languages/ko/pyproject.toml languages/zh/pyproject.toml languages/en/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH) -e ".[vision,test]" \
		-e languages/ko -e languages/zh -e languages/en
	touch $@

demo: setup
	$(VENV)/bin/xlang extend --lang ko --steps 100 --out runs/demo-ko

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/tokenizer_compression.py
	$(PY) bench/init_quality.py
	$(PY) bench/pretrain_throughput.py --device cpu --shape smollm2
	$(PY) bench/vit_throughput.py --device cpu

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache
