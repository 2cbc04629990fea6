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

# first-party plugins install like a third party's: their own distributions, the `xlang` entry point group
PLUGINS := plugins/xlang-debian plugins/xlang-dinov2 plugins/xlang-subword-fit
LANGUAGES := languages/ko languages/zh languages/en
PROJECTS := pyproject.toml $(addsuffix /pyproject.toml,$(PLUGINS) $(LANGUAGES))

$(SETUP_STAMP): $(PROJECTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH) -e ".[vision,test]" \
		$(addprefix -e ,$(PLUGINS)) $(addprefix -e ,$(LANGUAGES))
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
