"""Sharded pretraining and LLaVA stage 2 under FSDP2 (FULL_SHARD) on two CPU processes over gloo, against one
process. One rank is killed with SIGKILL after the first sharded checkpoint; the restart must land on the
one-process curve, and the exported folders must be the plain ones a single process writes. The runs are
launched by `sharded_runs`; DeepSpeed's are in tests/test_deepspeed.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sharded_runs import (
    STEPS,
    assert_plain_exports,
    assert_same_curve,
    check_sharded_vit_stage,
    kill_a_rank_after_the_first_checkpoint,
    pretrain_command,
    run_to_completion,
)


@pytest.mark.slow
def test_fsdp_two_processes_match_one_survive_kill_9_and_export_plain_folders(
    tiny_expanded: tuple[Path, Path, list[int]], single_run: Path, tmp_path: Path
) -> None:

    sharded = tmp_path / "sharded"
    command = pretrain_command(tmp_path, tiny_expanded, "sharded", 2)
    checkpoints = sharded / "stages" / "lora" / "checkpoints"
    kept = kill_a_rank_after_the_first_checkpoint(command, checkpoints, tmp_path / "pid-sharded-rank1")
    assert not (sharded / "pretrain.json").exists(), "the run finished before the kill"
    assert int(kept.name.split("-")[1]) < STEPS
    first = sorted(checkpoints.glob("step-*"))[0]
    assert json.loads((first / "meta.json").read_text())["sharded"] == "fsdp2"
    assert {p.name for p in (first / "dcp").glob("*.distcp")} == {"__0_0.distcp", "__1_0.distcp"}

    run_to_completion(command)
    summary = json.loads((sharded / "report" / "summary.json").read_text())
    assert (summary["processes"], summary["sharded"]) == (2, "fsdp")
    assert_same_curve(single_run, sharded)
    assert_plain_exports(tiny_expanded, single_run, sharded)


@pytest.mark.slow
def test_fsdp_vit_stage_matches_one_process_survives_kill_9_and_exports_a_plain_llava(
    smollm2_dir: Path, test_cache_dir: Path, tmp_path: Path
) -> None:
    """Stage 2 (projector + LoRA) of a tiny LLaVA under FSDP2: sharded over two processes, killed, restarted
    (`sharded_runs.check_sharded_vit_stage`)."""
    check_sharded_vit_stage("fsdp", "fsdp2", smollm2_dir, test_cache_dir, tmp_path)
