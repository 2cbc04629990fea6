"""Sharded pretraining (FSDP2, FULL_SHARD) on two CPU processes over gloo, against one process.

Real components at toy size: a byte-level BPE grown by a few Korean tokens (305 tokens: not a multiple
of the world size, so the vocabulary shards unevenly), a random Llama from `tiny_models`, `torchrun`.
One rank is killed with SIGKILL after the first sharded checkpoint; the restart must land on the
one-process curve, and the exported folders must be the plain ones a single process writes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from launching import python_command

KO_WORDS = "고양이 는 작은 빨간 집 근처 강 에서 사람들 이 걸어가는 동안 매트 위에 앉아 있었다".split()
EN_WORDS = "the cat sat on a mat and looked at the small red house near the river while people walked by".split()
NEW_TOKENS = ["고양이", "빨간", "사람들", "근처", "작은"]
STEPS = 24
LOSS_TOLERANCE = 1e-4
"""Relative, per step: the sharded run sums the same tokens in another order (reduce-scatter, all-reduce)."""

RUN_SCRIPT = """
import json, os, sys
import torch
torch.set_num_threads(1)
from xlang.train import PretrainConfig, pretrain
spec = json.loads(open(sys.argv[1]).read())
rank = int(os.environ.get("RANK", "0"))
open(os.path.join(spec["out_root"], f"pid-{spec['name']}-rank{rank}"), "w").write(str(os.getpid()))
pretrain(spec["model"], spec["tokenizer"], spec["texts"], None, PretrainConfig(**spec["config"]), spec["out"],
         new_token_ids=spec["new_ids"], distributed=spec["distributed"])
"""


def _texts(words: list[str], count: int, seed: str) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 40))) + "." for _ in range(count)]


@pytest.fixture(scope="module")
def tiny_expanded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[int]]:
    """(model_dir, tokenizer_dir, new ids): an untied tiny Llama whose 305 rows match the grown tokenizer."""
    from tiny_models import tiny_llama
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("tiny-fsdp")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(_texts(EN_WORDS, 200, "bpe"), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>")
    base_size = len(tokenizer)
    tokenizer.add_tokens(NEW_TOKENS)
    assert len(tokenizer) % 2 == 1, "the vocabulary must not split evenly across two processes"
    tokenizer.save_pretrained(root / "tokenizer")
    model = tiny_llama(len(tokenizer), tied=False)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(root / "model")
    return root / "model", root / "tokenizer", list(range(base_size, len(tokenizer)))


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONHASHSEED": "0",
        "ACCELERATE_USE_CPU": "true",
        "GLOO_SOCKET_IFNAME": "lo",
        "MASTER_ADDR": "127.0.0.1",
    }


def _script_command(tmp_path: Path, script: str, text: str, spec: dict[str, Any], processes: int) -> list[str]:
    """Write the run's script and its spec (`<name>.json`), and the command that runs them in `processes`."""
    (tmp_path / f"{spec['name']}.json").write_text(json.dumps(spec, ensure_ascii=False))
    (tmp_path / script).write_text(text)
    return python_command([str(tmp_path / script), str(tmp_path / f"{spec['name']}.json")], processes)


def _run(command: list[str]) -> None:
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _kill_a_rank_after_the_first_checkpoint(command: list[str], checkpoints: Path, victim: Path) -> Path:
    """Launch the sharded run, SIGKILL the rank whose pid file is `victim` once a checkpoint is complete, and
    return the last complete checkpoint (the one a restart resumes from)."""
    launcher = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (victim.is_file() and any(checkpoints.glob("step-*/meta.json"))):
        assert launcher.poll() is None, "the sharded run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no sharded checkpoint appeared"
        time.sleep(0.005)
    os.kill(int(victim.read_text()), signal.SIGKILL)
    assert launcher.wait(timeout=120) != 0, "torchrun reported success after a rank was killed"
    complete = [path for path in checkpoints.glob("step-*") if (path / "meta.json").is_file()]
    return max(complete, key=lambda path: int(path.name.split("-")[1]))


def _command(
    tmp_path: Path,
    tiny: tuple[Path, Path, list[int]],
    name: str,
    processes: int,
    distributed: str = "fsdp",
    save_every: int = 2,
    **options: Any,
) -> list[str]:
    model_dir, tokenizer_dir, new_ids = tiny
    config = {
        **options,
        "steps": STEPS,
        "seq_len": 64,
        "micro_batch": 2,
        "grad_accum": 2 // processes,  # the same global batch: 4 blocks per step
        "save_every": save_every,
        "eval_every": 8,
        "log_every": 1,
        "mix": {"ko": 0.5, "en": 0.5},
        "progress": False,
        "tensorboard": False,
        "warmup_steps": 1,
        "lr": 5e-3,
        "keep_checkpoints": 3,
    }
    spec = {
        "model": str(model_dir),
        "tokenizer": str(tokenizer_dir),
        "texts": {"ko": _texts(KO_WORDS, 120, "ko"), "en": _texts(EN_WORDS, 120, "en")},
        "new_ids": new_ids,
        "out": str(tmp_path / name),
        "out_root": str(tmp_path),
        "name": name,
        "config": config,
        "distributed": distributed if processes > 1 else "ddp",
    }
    return _script_command(tmp_path, "run.py", RUN_SCRIPT, spec, processes)


def _records(out: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (out / "stages" / "lora" / "metrics.jsonl").open()]


@pytest.fixture(scope="module")
def single_run(tiny_expanded: tuple[Path, Path, list[int]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one-process run both sharded runs must reproduce (same global batch: 4 blocks per step)."""
    root = tmp_path_factory.mktemp("single-process")
    _run(_command(root, tiny_expanded, "single", 1))
    return root / "single"


@pytest.mark.slow
def test_fsdp_two_processes_match_one_survive_kill_9_and_export_plain_folders(
    tiny_expanded: tuple[Path, Path, list[int]], single_run: Path, tmp_path: Path
) -> None:

    sharded = tmp_path / "sharded"
    command = _command(tmp_path, tiny_expanded, "sharded", 2)
    checkpoints = sharded / "stages" / "lora" / "checkpoints"
    kept = _kill_a_rank_after_the_first_checkpoint(command, checkpoints, tmp_path / "pid-sharded-rank1")
    assert not (sharded / "pretrain.json").exists(), "the run finished before the kill"
    assert int(kept.name.split("-")[1]) < STEPS
    first = sorted(checkpoints.glob("step-*"))[0]
    assert json.loads((first / "meta.json").read_text())["sharded"] == "fsdp2"
    assert {p.name for p in (first / "dcp").glob("*.distcp")} == {"__0_0.distcp", "__1_0.distcp"}

    _run(command)
    summary = json.loads((sharded / "report" / "summary.json").read_text())
    assert (summary["processes"], summary["sharded"]) == (2, "fsdp")
    _assert_same_curve(single_run, sharded)
    _assert_plain_exports(tiny_expanded, single_run, sharded)


def _assert_same_curve(single: Path, sharded: Path) -> None:
    """The same loss curve and validation BPC as one process on the same global batch."""
    expected, got = _records(single), _records(sharded)
    train = {r["step"]: r["loss"] for r in expected if r["kind"] == "train"}
    train_sharded = {r["step"]: r["loss"] for r in got if r["kind"] == "train"}
    assert sorted(train_sharded) == list(range(1, STEPS + 1))
    assert [train_sharded[s] for s in sorted(train)] == pytest.approx(
        [train[s] for s in sorted(train)], rel=LOSS_TOLERANCE
    )
    evals = [{k: v for k, v in r.items() if k.startswith("bpc/")} for r in expected if r["kind"] == "eval"]
    evals_sharded = [{k: v for k, v in r.items() if k.startswith("bpc/")} for r in got if r["kind"] == "eval"]
    assert evals and len(evals) == len(evals_sharded)
    for one, two in zip(evals, evals_sharded, strict=True):
        assert two == pytest.approx(one, rel=LOSS_TOLERANCE)


def _assert_plain_exports(tiny: tuple[Path, Path, list[int]], single: Path, sharded: Path) -> None:
    """The exported folders are plain: the merged model and base + adapter load in this one process, only the
    new rows moved, and the adapter is the one-process run's."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    model_dir, _, new_ids = tiny
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    merged = AutoModelForCausalLM.from_pretrained(sharded / "model")
    old = torch.ones(merged.config.vocab_size, dtype=torch.bool)
    old[new_ids] = False
    for layer in ("get_input_embeddings", "get_output_embeddings"):
        before, after = getattr(base, layer)().weight, getattr(merged, layer)().weight
        assert torch.equal(after[old], before[old]), f"{layer}: a frozen row changed"
        assert not torch.equal(after[~old], before[~old]), f"{layer}: the new rows did not train"
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), sharded / "adapter").eval()
    ids = torch.tensor([[1, 5, 9, *new_ids, 40]])
    with torch.no_grad():
        torch.testing.assert_close(adapted(ids).logits, merged.eval()(ids).logits, atol=1e-5, rtol=1e-4)
    single_adapter = load_file(str(single / "adapter" / "adapter_model.safetensors"))
    sharded_adapter = load_file(str(sharded / "adapter" / "adapter_model.safetensors"))
    assert single_adapter.keys() == sharded_adapter.keys()
    for name, tensor in single_adapter.items():
        torch.testing.assert_close(sharded_adapter[name], tensor, atol=1e-4, rtol=1e-3, msg=name)


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
            launch = _command(tmp_path, tiny_expanded, refused_name, 2, distributed="deepspeed", **options)
            refused = subprocess.run(launch, env=_env(), capture_output=True, text=True, timeout=600)
            assert refused.returncode != 0
            assert message in refused.stderr, refused.stderr[-2000:]
            assert not (tmp_path / refused_name / "stages").exists(), f"the refused run {refused_name} trained"
    # DeepSpeed's save_checkpoint takes seconds even at this size: one checkpoint before the kill, two after
    command = _command(tmp_path, tiny_expanded, name, 2, distributed="deepspeed", save_every=8)
    checkpoints = sharded / "stages" / "lora" / "checkpoints"
    kept = _kill_a_rank_after_the_first_checkpoint(command, checkpoints, tmp_path / f"pid-{name}-rank1")
    assert not (sharded / "pretrain.json").exists(), "the run finished before the kill"
    assert int(kept.name.split("-")[1]) < STEPS
    meta = json.loads((kept / "meta.json").read_text())
    assert meta["sharded"] == kind
    engine_files = {path.name for path in (kept / "accelerate").rglob("*.pt")}
    assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= engine_files

    if stage == "3":  # resumed under the other stage: one line, the checkpoint left as it was
        monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
        before = sorted((path.name, path.stat().st_mtime_ns) for path in kept.rglob("*"))
        refused = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
        assert refused.returncode != 0
        assert "was written sharded as 'deepspeed-zero3' and this run is 'deepspeed'" in refused.stderr
        assert sorted((path.name, path.stat().st_mtime_ns) for path in kept.rglob("*")) == before
        monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", stage)

    _run(command)
    summary = json.loads((sharded / "report" / "summary.json").read_text())
    assert (summary["processes"], summary["sharded"]) == (2, kind)
    _assert_same_curve(single_run, sharded)
    _assert_plain_exports(tiny_expanded, single_run, sharded)
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
    command = _command(
        tmp_path, tiny_expanded, "staged", 2, distributed="deepspeed", save_every=2, stages=stages, eval_every=0
    )
    run = tmp_path / "staged"
    _kill_a_rank_after_the_first_checkpoint(
        command, run / "stages" / "lora" / "checkpoints", tmp_path / "pid-staged-rank1"
    )
    assert not (run / "pretrain.json").exists(), "the run finished before the kill"
    _run(command)

    rows_final = load_file(str(run / "stages" / "rows" / "checkpoints" / "step-000002" / "trainable.safetensors"))
    trained = next(tensor for name, tensor in rows_final.items() if "embed_tokens" in name)
    exported = AutoModelForCausalLM.from_pretrained(run / "model").get_input_embeddings().weight.detach()
    base = AutoModelForCausalLM.from_pretrained(model_dir).get_input_embeddings().weight.detach()
    assert not torch.equal(trained, base[new_ids]), "stage rows did not train the new rows"
    torch.testing.assert_close(exported[new_ids], trained.to(exported.dtype), atol=0, rtol=0)


# ----------------------------------------------------------------------------------------- VIT stage 2

VIT_STEPS = 4
VIT_SCRIPT = """
import json, os, sys
import torch
torch.set_num_threads(1)
from xlang.vlm.config import InstructConfig
from xlang.vlm.train import train_vit_stage
spec = json.loads(open(sys.argv[1]).read())
rank = int(os.environ.get("RANK", "0"))
open(os.path.join(spec["out_root"], f"pid-{spec['name']}-rank{rank}"), "w").write(str(os.getpid()))
train_vit_stage(spec["model"], spec["records"], InstructConfig(**spec["config"]), spec["out"],
                default_lang="ko", distributed=spec["distributed"])
"""


def _vit_command(
    tmp_path: Path, llava: Path, records: list[dict], name: str, processes: int, distributed: str = "fsdp"
) -> list[str]:
    config = {
        "steps": VIT_STEPS,
        "micro_batch": 2,
        "grad_accum": 2 // processes,  # the same global batch: 4 samples per step
        "lr": 5e-3,
        "warmup_steps": 1,
        "save_every": 2,
        "log_every": 1,
        "eval_samples": 4,
        "progress": False,
        "seed": 3,
    }
    spec = {
        "model": str(llava),
        "records": records,
        "out": str(tmp_path / name),
        "out_root": str(tmp_path),
        "name": name,
        "config": config,
        "distributed": distributed if processes > 1 else "ddp",
    }
    return _script_command(tmp_path, "vit.py", VIT_SCRIPT, spec, processes)


@pytest.mark.slow
@pytest.mark.parametrize(("distributed", "checkpoint_kind"), [("fsdp", "fsdp2"), ("zero3", "deepspeed-zero3")])
def test_sharded_vit_stage_matches_one_process_survives_kill_9_and_exports_a_plain_llava(
    distributed: str,
    checkpoint_kind: str,
    smollm2_dir: Path,
    test_cache_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stage 2 (projector + LoRA) on a tiny random LLaVA (a 2-layer Llama with SmolLM2's tokenizer, a 2-layer
    DINOv2) with the ko and en plugins' seed records: sharded over two processes (FSDP2, or DeepSpeed ZeRO-3,
    whose fused loss reads the output layer outside its forward), killed, restarted."""
    import torch
    from serving import build_tiny_llava
    from transformers import LlavaForConditionalGeneration

    from xlang import plugins
    from xlang.vlm.data import load_vit_uri

    llava = build_tiny_llava(tmp_path / "tiny", smollm2_dir, test_cache_dir)
    manager = plugins.make_plugin_manager()
    records = [
        record
        for code in ("ko", "en")
        for uri in plugins.get_language(code, manager).vit_data
        for record in load_vit_uri(uri, test_cache_dir)
        if record.get("split") != "heldout"
    ]
    _run(_vit_command(tmp_path, llava, records, "single", 1))

    if distributed == "zero3":
        monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    sharded = tmp_path / "sharded"
    command = _vit_command(tmp_path, llava, records, "sharded", 2, "fsdp" if distributed == "fsdp" else "deepspeed")
    checkpoints = sharded / "run" / "checkpoints"
    kept = _kill_a_rank_after_the_first_checkpoint(command, checkpoints, tmp_path / "pid-sharded-rank0")
    assert not (sharded / "model").exists(), "the killed run exported a model"
    assert int(kept.name.split("-")[1]) < VIT_STEPS
    written = (kept / "meta.json").stat().st_mtime_ns
    _run(command)
    assert (kept / "meta.json").stat().st_mtime_ns == written, "the restart did not resume from the checkpoint"
    first = sorted(checkpoints.glob("step-*"))[0]
    assert json.loads((first / "meta.json").read_text())["sharded"] == checkpoint_kind

    # the same answer-loss curve as one process on the same global batch
    def losses(out: Path, kind: str) -> dict[int, float]:
        records = [json.loads(line) for line in (out / "run" / "metrics.jsonl").open()]
        return {r["step"]: r["loss"] for r in records if r["kind"] == kind}

    expected, got = losses(tmp_path / "single", "train"), losses(sharded, "train")
    assert sorted(got) == list(range(1, VIT_STEPS + 1))
    assert [got[s] for s in sorted(expected)] == pytest.approx([expected[s] for s in sorted(expected)], rel=1e-4)
    assert losses(sharded, "eval") == pytest.approx(losses(tmp_path / "single", "eval"), rel=1e-4)

    # the export is the plain LLaVA folder one process writes: same weights, frozen ones untouched
    one = LlavaForConditionalGeneration.from_pretrained(tmp_path / "single" / "model")
    two = LlavaForConditionalGeneration.from_pretrained(sharded / "model")
    base = LlavaForConditionalGeneration.from_pretrained(llava)
    weights_one, weights_two = dict(one.named_parameters()), dict(two.named_parameters())
    assert weights_one.keys() == weights_two.keys()
    for name, tensor in weights_one.items():
        torch.testing.assert_close(weights_two[name], tensor, atol=1e-4, rtol=1e-3, msg=name)
    frozen = dict(base.named_parameters())
    for name in (
        "model.vision_tower.embeddings.patch_embeddings.projection.weight",
        "model.language_model.embed_tokens.weight",
    ):
        assert torch.equal(weights_two[name], frozen[name]), f"{name}: a frozen weight changed"
    projector = "model.multi_modal_projector.linear_1.weight"
    assert not torch.equal(weights_two[projector], frozen[projector]), "the projector did not train"
