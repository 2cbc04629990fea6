"""DeepSpeed (ZeRO-2 and ZeRO-3 through accelerate) on two CPU processes over gloo, against one process: the
same loss curve, a rank killed with SIGKILL and resumed, plain exported folders, the refusals, and a staged
schedule resumed in its later stage. The runs are launched by `sharded_runs`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from sharded_runs import (
    STEPS,
    assert_plain_exports,
    assert_same_curve,
    check_sharded_vit_stage,
    kill_a_rank_after_the_first_checkpoint,
    launch_env,
    pretrain_command,
    run_to_completion,
)


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "kind"), [("2", "deepspeed"), ("3", "deepspeed-zero3")])
def test_deepspeed_two_processes_match_one_survive_kill_9_and_export_plain_folders(
    stage: str,
    kind: str,
    tiny_expanded: tuple[Path, Path, list[int]],
    single_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`distributed="deepspeed"` under torchrun on CPU: DeepSpeed's engine (ZeRO-2 or ZeRO-3 over gloo) trains,
    each rank checkpoints its shards (frozen weights left out), and a restart after a rank's SIGKILL lands on
    the one-process curve. Under ZeRO-3 the parameters are partitioned too: the fused loss reads the output
    layer outside its forward, the validation BPC reads whole matrices, and the export gathers the trained
    rows. Nothing is compiled on the way (DeepSpeed's CPU all-reduce op is left unbuilt)."""
    extensions = tmp_path / "torch-extensions"  # where DeepSpeed would JIT-compile its ops
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(extensions))
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", stage)
    name = f"zero{stage}"
    sharded = tmp_path / name
    if stage == "3":  # refused up front, nothing written: compiled layers (they would recompile around
        # ZeRO-3's hooks every step), and a row mask on a whole vocabulary matrix (it would act on a shard)
        refusals = {
            "compiled": ({"compile": "yes"}, "compile=yes cannot be used with DeepSpeed ZeRO-3"),
            "masked": (
                {
                    "stages": [
                        {"name": "rows", "train": ["new-rows"], "steps": 2, "lr": 5e-3},
                        {"name": "head", "train": ["output"], "steps": 2, "lr": 5e-3},
                    ]
                },
                "DeepSpeed ZeRO-3 cannot train part of a whole vocabulary matrix",
            ),
        }
        for refused_name, (options, message) in refusals.items():
            launch = pretrain_command(tmp_path, tiny_expanded, refused_name, 2, distributed="deepspeed", **options)
            refused = subprocess.run(launch, env=launch_env(), capture_output=True, text=True, timeout=600)
            assert refused.returncode != 0
            assert message in refused.stderr, refused.stderr[-2000:]
            # no folder at all: a record of the refused configuration would refuse the corrected one
            assert not (tmp_path / refused_name).exists(), f"the refused run {refused_name} wrote its folder"
    # DeepSpeed's save_checkpoint takes seconds even at this size: one checkpoint before the kill, two after
    command = pretrain_command(tmp_path, tiny_expanded, name, 2, distributed="deepspeed", save_every=8)
    checkpoints = sharded / "stages" / "lora" / "checkpoints"
    kept = kill_a_rank_after_the_first_checkpoint(command, checkpoints, tmp_path / f"pid-{name}-rank1")
    assert not (sharded / "pretrain.json").exists(), "the run finished before the kill"
    assert int(kept.name.split("-")[1]) < STEPS
    meta = json.loads((kept / "meta.json").read_text())
    assert meta["sharded"] == kind
    engine_files = {path.name for path in (kept / "accelerate").rglob("*.pt")}
    assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= engine_files

    if stage == "3":  # resumed under the other stage: one line, the checkpoint left as it was
        monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
        before = sorted((path.name, path.stat().st_mtime_ns) for path in kept.rglob("*"))
        refused = subprocess.run(command, env=launch_env(), capture_output=True, text=True, timeout=600)
        assert refused.returncode != 0
        assert "was written sharded as 'deepspeed-zero3' and this run is 'deepspeed'" in refused.stderr
        assert sorted((path.name, path.stat().st_mtime_ns) for path in kept.rglob("*")) == before
        monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", stage)

    run_to_completion(command)
    summary = json.loads((sharded / "report" / "summary.json").read_text())
    assert (summary["processes"], summary["sharded"]) == (2, kind)
    assert_same_curve(single_run, sharded)
    assert_plain_exports(tiny_expanded, single_run, sharded)
    assert not extensions.exists() or not any(extensions.iterdir()), "DeepSpeed compiled an op"


@pytest.mark.slow
def test_deepspeed_staged_run_resumed_in_a_later_stage_keeps_what_the_finished_stage_trained(
    tiny_expanded: tuple[Path, Path, list[int]], tmp_path: Path
) -> None:
    """Staged unfreezing under DeepSpeed ZeRO-2: stage `rows` trains the new rows, stage `lora` freezes them and
    trains LoRA. A rank is killed during `lora`; the restart finds `rows` finished and must restore its rows,
    which `lora`'s engine checkpoints leave out as frozen (they were lost before: the export had the rows of
    `init`)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    model_dir, _, new_ids = tiny_expanded
    stages = [
        {"name": "rows", "train": ["new-rows"], "steps": 2, "lr": 5e-3},
        {"name": "lora", "train": ["lora"], "steps": 4, "lr": 5e-3},
    ]
    command = pretrain_command(
        tmp_path, tiny_expanded, "staged", 2, distributed="deepspeed", save_every=2, stages=stages, eval_every=0
    )
    run = tmp_path / "staged"
    kill_a_rank_after_the_first_checkpoint(
        command, run / "stages" / "lora" / "checkpoints", tmp_path / "pid-staged-rank1"
    )
    assert not (run / "pretrain.json").exists(), "the run finished before the kill"
    run_to_completion(command)

    rows_final = load_file(str(run / "stages" / "rows" / "checkpoints" / "step-000002" / "trainable.safetensors"))
    trained = next(tensor for name, tensor in rows_final.items() if "embed_tokens" in name)
    exported = AutoModelForCausalLM.from_pretrained(run / "model").get_input_embeddings().weight.detach()
    base = AutoModelForCausalLM.from_pretrained(model_dir).get_input_embeddings().weight.detach()
    assert not torch.equal(trained, base[new_ids]), "stage rows did not train the new rows"
    torch.testing.assert_close(exported[new_ids], trained.to(exported.dtype), atol=0, rtol=0)


@pytest.mark.slow
def test_zero3_vit_stage_matches_one_process_survives_kill_9_and_exports_a_plain_llava(
    smollm2_dir: Path, test_cache_dir: Path, tmp_path: Path
) -> None:
    """Stage 2 (projector + LoRA) of a tiny LLaVA under DeepSpeed ZeRO-3, whose fused loss reads the output
    layer outside its forward, launched by `accelerate launch` with a config file that turns `zero3_init_flag`
    on: sharded over two processes, killed, restarted (`sharded_runs.check_sharded_vit_stage`)."""
    check_sharded_vit_stage("zero3", "deepspeed-zero3", smollm2_dir, test_cache_dir, tmp_path)
