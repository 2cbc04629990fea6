# Two entry points on a fresh clone: `make demo` (the main job) and `make test`.
# The venv lives in .venv/. Downloads and converted models go to xlang's one cache, the same for make, the
# `xlang` command and Python from any folder: $XLANG_CACHE_DIR when set, else ~/.cache/xlang
# (`xlang assets where` prints it). The Makefile does not set it, so nothing is fetched twice.
# The tests keep their own cache in .cache/xlang-test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
XLANG_TEST_CACHE ?= $(CURDIR)/.cache/xlang-test
export XLANG_TEST_CACHE
# torch is pinned everywhere: an unpinned resolve pulls a multi-GB CUDA build.
TORCH := torch==2.13.0
# `--distributed deepspeed` (ZeRO-2); its CPU path (gloo) is tested
DEEPSPEED := deepspeed==0.19.8
SETUP_STAMP := $(VENV)/.xlang-setup

.PHONY: setup demo test bench lint docs clean

setup: $(SETUP_STAMP)

# first-party plugins install like a third party's: their own distributions, the `xlang` entry point group
PLUGINS := plugins/xlang-debian plugins/xlang-dinov2 plugins/xlang-subword-fit
LANGUAGES := languages/ko languages/zh languages/en
PROJECTS := pyproject.toml $(addsuffix /pyproject.toml,$(PLUGINS) $(LANGUAGES))

$(SETUP_STAMP): $(PROJECTS) Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH) -e ".[vision,test]" \
		$(addprefix -e ,$(PLUGINS)) $(addprefix -e ,$(LANGUAGES))
	# DeepSpeed ships a setup.py that imports torch: built against the torch above, not an isolated one
	$(PY) -m pip install -q --disable-pip-version-check wheel "setuptools>=70"
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation $(TORCH) $(DEEPSPEED)
	touch $@

demo: setup
	$(VENV)/bin/xlang extend --lang ko --steps 100 --out runs/demo-ko

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15

bench: setup
	$(PY) bench/tokenizer_compression.py
	$(PY) bench/init_quality.py
	$(PY) bench/pretrain_throughput.py --device cpu --shape smollm2
	$(PY) bench/vit_throughput.py --device cpu

# docs/plugin-reference.md is generated from the spec models and the URI option tables
docs: setup
	$(PY) docs/plugin_reference.py

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache
