"""Shared fixtures: one cache for the whole session (downloads and the converted SmolLM2 happen once),
and a fresh plugin manager per test that asks for one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers on two cores: one thread each (and in every process a test starts), or they fight for the cores
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


LONGEST_MODULES = ("test_deepspeed", "test_recipe_e2e", "test_distributed", "test_train", "test_embeddings_quality")
"""Modules that take minutes each on two cores (CI's `--durations`), the longest first."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest modules run first, then the other modules with slow tests, then the rest (in their own
    order otherwise). Two workers take whole modules (`--dist loadfile`, with `--no-loadscope-reorder`, which
    keeps this order instead of xdist's, by number of tests), so a long module left for last would keep one
    worker busy while the other has nothing to do."""
    slow = {item.module.__name__ for item in items if item.get_closest_marker("slow") and item.module is not None}

    def rank(item: pytest.Item) -> tuple[int, int]:
        name = item.module.__name__ if item.module is not None else ""
        if name in LONGEST_MODULES:
            return (0, LONGEST_MODULES.index(name))
        return (1, 0) if name in slow else (2, 0)

    items.sort(key=rank)


@pytest.fixture(scope="session", autouse=True)
def subprocess_tmpdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`$TMPDIR` for every process a test starts: a folder of this session's pytest folder, which pytest
    rotates away. torch's launcher leaves a `torchelastic_*` folder (of empty folders) in `$TMPDIR` per launch, and a
    suite that launches dozens of jobs would otherwise leave them all in /tmp."""
    path = tmp_path_factory.mktemp("tmpdir")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(path))
        yield path


@pytest.fixture(scope="session")
def test_cache_dir() -> Path:
    """`$XLANG_TEST_CACHE` or `<repo>/.cache/xlang-test`: survives between sessions so CI downloads once."""
    path = Path(os.environ.get("XLANG_TEST_CACHE", REPO / ".cache" / "xlang-test"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def smollm2_dir(test_cache_dir: Path) -> Path:
    """The real SmolLM2-135M-Instruct, converted once per cache."""
    from xlang.assets.models import ensure_smollm2

    return ensure_smollm2(test_cache_dir)


@pytest.fixture
def fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A new plugin manager for this test only (installed plugins loaded), restored afterwards."""
    from xlang import plugins

    pm = plugins.make_plugin_manager()
    plugins.reset_plugin_manager(pm)
    yield pm
    plugins.reset_plugin_manager(None)


@pytest.fixture
def cli_env(test_cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for running `xlang` in a subprocess against the shared cache, from an empty folder."""
    env = dict(os.environ)
    env["XLANG_CACHE_DIR"] = str(test_cache_dir)
    env.pop("XLANG_CONFIG", None)
    env.pop("XLANG_DISABLE_PLUGIN_AUTOLOAD", None)
    monkeypatch.chdir(tmp_path)
    return env


@pytest.fixture
def xlang_cli(test_cache_dir: Path, smollm2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run `xlang ARGS` in this process (click's CliRunner) from an empty folder against the shared cache:
    `xlang_cli(*args, env=None) -> (status, stdout, stderr)`. An exception other than the command's own exit
    fails the test with its traceback: a bad input must end in one line, never in a traceback. SmolLM2 is
    converted first (`smollm2_dir`), so no command's stderr holds the one-time conversion's progress."""
    import os

    from click.testing import CliRunner

    from xlang.cli import build_cli

    monkeypatch.chdir(tmp_path)
    for variable in [name for name in os.environ if name.startswith("XLANG_") or name == "OPENAI_API_KEY"]:
        monkeypatch.delenv(variable)
    monkeypatch.setenv("XLANG_CACHE_DIR", str(test_cache_dir))
    monkeypatch.setenv("COLUMNS", "200")
    group = build_cli()

    def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        result = CliRunner().invoke(group, list(args), env=env, catch_exceptions=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            import traceback

            trace = "".join(traceback.format_exception(result.exception))
            pytest.fail(f"xlang {' '.join(args)} raised instead of ending in one line:\n{trace}")
        return result.exit_code, result.stdout, result.stderr

    return invoke


@pytest.fixture(scope="module")
def tiny_expanded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[int]]:
    """(model_dir, tokenizer_dir, new ids): an untied tiny Llama whose 305 rows match a grown tokenizer, for the
    sharded runs of tests/test_distributed.py and tests/test_deepspeed.py (one per module)."""
    from sharded_runs import make_tiny_expanded

    return make_tiny_expanded(tmp_path_factory.mktemp("tiny-sharded"))


@pytest.fixture(scope="module")
def single_run(tiny_expanded: tuple[Path, Path, list[int]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one-process run the sharded runs must reproduce (same global batch: 4 blocks per step)."""
    from sharded_runs import run_one_process

    return run_one_process(tmp_path_factory.mktemp("single-process"), tiny_expanded)
