"""The Accelerator a training stage gets: DeepSpeed's refusals come before any model loads, in one message
naming the setting and the way out. (The DeepSpeed runs themselves are in tests/test_deepspeed.py and the
torchrun test of tests/test_recipe_e2e.py.)"""

from __future__ import annotations

import pytest

from xlang.errors import XlangError
from xlang.train.accelerators import check_distributed, deepspeed_requested, make_accelerator


def test_an_unknown_mode_is_refused_with_the_known_ones() -> None:
    with pytest.raises(XlangError, match=r"distributed='zero9' is not known; choose one of ddp, fsdp, deepspeed"):
        check_distributed("zero9")


@pytest.mark.parametrize("stage", ["1", "0", "three"])
def test_a_zero_stage_other_than_2_or_3_is_refused_before_accelerate_starts(
    stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stage 1 shards the optimizer state alone, which stage 2 does too while sharding the gradients, and
    stage 0 shards nothing: refused with the stages that are tested, rather than half-supported."""
    from accelerate.state import is_initialized

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", stage)
    monkeypatch.delenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", raising=False)
    before = is_initialized()  # another test in this process may have made an Accelerator already
    with pytest.raises(XlangError, match=rf"ZeRO stage {stage} was asked for .* runs ZeRO stage 2 .* or 3 .*=2 or 3"):
        make_accelerator(mixed_precision=None, cuda=False, distributed="deepspeed")
    assert is_initialized() == before, "accelerate's process state was set up before the refusal"


def test_deepspeed_is_for_launched_runs_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """One process has nothing to shard: `deepspeed` then trains as a plain run, as `fsdp` does."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    assert not deepspeed_requested("deepspeed")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert deepspeed_requested("ddp"), "an accelerate config file that chose DeepSpeed was ignored"
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "false")
    assert deepspeed_requested("deepspeed") and not deepspeed_requested("fsdp")


def test_deepspeed_without_the_package_stops_when_the_settings_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test environment has deepspeed; its absence is simulated by the lookup every check uses."""
    import importlib.util

    from xlang.settings import load_settings

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    with pytest.raises(XlangError, match=r"distributed.*deepspeed is not installed; `pip install --no-build-isolation"):
        load_settings(None, language="ko", distributed="deepspeed")
    with pytest.raises(XlangError, match=r"needs the deepspeed package"):
        check_distributed("deepspeed")
    assert load_settings(None, language="ko", distributed="fsdp").distributed == "fsdp"


def test_a_deepspeed_config_file_and_fsdp_together_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """`accelerate launch --config_file ds.yaml ... --distributed fsdp` asks for two ways to shard: one line, before
    any Accelerator exists."""
    from accelerate.state import is_initialized

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    before = is_initialized()
    with pytest.raises(XlangError, match=r"config file that selects DeepSpeed, and distributed=fsdp.*choose one"):
        make_accelerator(mixed_precision=None, cuda=False, distributed="fsdp")
    assert is_initialized() == before
