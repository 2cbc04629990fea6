"""Launching sharded training runs on two CPU processes over gloo, for tests/test_distributed.py (FSDP2) and
tests/test_deepspeed.py (DeepSpeed ZeRO-2 and ZeRO-3), which compare them with one process.

Real components at toy size: a byte-level BPE grown by a few Korean tokens (305 tokens: not a multiple
of the world size, so the vocabulary shards unevenly), a random Llama from `tiny_models`, `torchrun`, and
for stage 2 of LLaVA a tiny random LLaVA with SmolLM2's tokenizer and the ko and en plugins' seed records.
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
from launching import accelerate_command, python_command

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


def random_texts(words: list[str], count: int, seed: str) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 40))) + "." for _ in range(count)]


def make_tiny_expanded(root: Path) -> tuple[Path, Path, list[int]]:
    """(model_dir, tokenizer_dir, new ids): an untied tiny Llama whose 305 rows match the grown tokenizer."""
    from tiny_models import tiny_llama
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    root.mkdir(parents=True, exist_ok=True)
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(random_texts(EN_WORDS, 200, "bpe"), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>")
    base_size = len(tokenizer)
    tokenizer.add_tokens(NEW_TOKENS)
    assert len(tokenizer) % 2 == 1, "the vocabulary must not split evenly across two processes"
    tokenizer.save_pretrained(root / "tokenizer")
    model = tiny_llama(len(tokenizer), tied=False)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(root / "model")
    return root / "model", root / "tokenizer", list(range(base_size, len(tokenizer)))


def launch_env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONHASHSEED": "0",
        "ACCELERATE_USE_CPU": "true",
        "GLOO_SOCKET_IFNAME": "lo",
        "MASTER_ADDR": "127.0.0.1",
    }


def script_command(
    tmp_path: Path,
    script: str,
    text: str,
    name: str,
    processes: int,
    *,
    config: dict[str, Any],
    distributed: str,
    accelerate_config: Path | None = None,
    **inputs: Any,
) -> list[str]:
    """Write the run's script and its spec (`<name>.json`: `inputs`, `config`, the output folder `<name>`),
    and the command that runs them in `processes` (one process runs as `ddp`): torchrun's, or `accelerate
    launch` with `accelerate_config`."""
    spec = {
        **inputs,
        "out": str(tmp_path / name),
        "out_root": str(tmp_path),
        "name": name,
        "config": config,
        "distributed": distributed if processes > 1 else "ddp",
    }
    (tmp_path / f"{name}.json").write_text(json.dumps(spec, ensure_ascii=False))
    (tmp_path / script).write_text(text)
    args = [str(tmp_path / script), str(tmp_path / f"{name}.json")]
    if accelerate_config is not None and processes > 1:
        return accelerate_command(args, processes, str(accelerate_config))
    return python_command(args, processes)


def run_to_completion(command: list[str]) -> None:
    done = subprocess.run(command, env=launch_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def kill_a_rank_after_the_first_checkpoint(command: list[str], checkpoints: Path, victim: Path) -> Path:
    """Launch the sharded run, SIGKILL the rank whose pid file is `victim` once a checkpoint is complete, and
    return the last complete checkpoint (the one a restart resumes from)."""
    launcher = subprocess.Popen(command, env=launch_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (victim.is_file() and any(checkpoints.glob("step-*/meta.json"))):
        assert launcher.poll() is None, "the sharded run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no sharded checkpoint appeared"
        time.sleep(0.005)
    os.kill(int(victim.read_text()), signal.SIGKILL)
    assert launcher.wait(timeout=120) != 0, "torchrun reported success after a rank was killed"
    complete = [path for path in checkpoints.glob("step-*") if (path / "meta.json").is_file()]
    return max(complete, key=lambda path: int(path.name.split("-")[1]))


def pretrain_command(
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
    return script_command(
        tmp_path,
        "run.py",
        RUN_SCRIPT,
        name,
        processes,
        config=config,
        distributed=distributed,
        model=str(model_dir),
        tokenizer=str(tokenizer_dir),
        texts={"ko": random_texts(KO_WORDS, 120, "ko"), "en": random_texts(EN_WORDS, 120, "en")},
        new_ids=new_ids,
    )


def step_records(out: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (out / "stages" / "lora" / "metrics.jsonl").open()]


def run_one_process(root: Path, tiny: tuple[Path, Path, list[int]]) -> Path:
    """The one-process run the sharded runs must reproduce (same global batch: 4 blocks per step)."""
    run_to_completion(pretrain_command(root, tiny, "single", 1))
    return root / "single"


def assert_same_curve(single: Path, sharded: Path) -> None:
    """The same loss curve and validation BPC as one process on the same global batch."""
    expected, got = step_records(single), step_records(sharded)
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


def assert_plain_exports(tiny: tuple[Path, Path, list[int]], single: Path, sharded: Path) -> None:
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


def vit_command(
    tmp_path: Path,
    llava: Path,
    records: list[dict],
    name: str,
    processes: int,
    distributed: str = "fsdp",
    accelerate_config: Path | None = None,
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
    inputs = {"model": str(llava), "records": records}
    return script_command(
        tmp_path,
        "vit.py",
        VIT_SCRIPT,
        name,
        processes,
        config=config,
        distributed=distributed,
        accelerate_config=accelerate_config,
        **inputs,
    )


ZERO3_ACCELERATE_CONFIG = """\
compute_environment: LOCAL_MACHINE
distributed_type: DEEPSPEED
deepspeed_config:
  zero_stage: 3
  zero3_init_flag: true
  gradient_accumulation_steps: 1
mixed_precision: 'no'
num_machines: 1
machine_rank: 0
rdzv_backend: static
same_network: true
use_cpu: false
"""
"""What `accelerate config` writes for DeepSpeed ZeRO-3 on one machine, with `zero3_init_flag` on: the
setting under which transformers would build the model as empty shards."""


def check_sharded_vit_stage(
    distributed: str,
    checkpoint_kind: str,
    smollm2_dir: Path,
    test_cache_dir: Path,
    tmp_path: Path,
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
    run_to_completion(vit_command(tmp_path, llava, records, "single", 1))

    accelerate_config = None
    if distributed == "zero3":  # through `accelerate launch` and its config file, not torchrun
        accelerate_config = tmp_path / "zero3.yaml"
        accelerate_config.write_text(ZERO3_ACCELERATE_CONFIG)
    sharded = tmp_path / "sharded"
    # under the DeepSpeed config file, `distributed` is left at its default, as a user's command would be
    command = vit_command(
        tmp_path, llava, records, "sharded", 2, "ddp" if accelerate_config else distributed, accelerate_config
    )
    checkpoints = sharded / "run" / "checkpoints"
    kept = kill_a_rank_after_the_first_checkpoint(command, checkpoints, tmp_path / "pid-sharded-rank0")
    assert not (sharded / "model").exists(), "the killed run exported a model"
    assert int(kept.name.split("-")[1]) < VIT_STEPS
    written = (kept / "meta.json").stat().st_mtime_ns
    run_to_completion(command)
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
