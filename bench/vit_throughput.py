"""Stage-2 throughput: xlang's LLaVA visual-instruction step against a plain Trainer-based LLaVA script.

Both sides train the same LLaVA (frozen tower, projector + LoRA on the LLM) on the same micro-batches
(identical tensors, in the same order), each in its own subprocess so that peak memory is its own:

- baseline: Hugging Face `Trainer` + peft LoRA on every linear layer of the LLM, the projector in
  `modules_to_save`, gradient checkpointing, `LlavaForConditionalGeneration`'s own loss (logits for
  every position), bf16 on GPU: the script people write today;
- xlang: `xlang.vlm.modeling.LlavaForTraining` on `xlang.train.engine.run_training`, as
  `train_vit_stage` runs it: loss only on answer positions (fused, chunked cross-entropy), no
  activation recomputation, on GPU bf16 autocast, fused AdamW and compiled decoder layers.

Samples/s = micro-batch / median step time after warm-up (wall clock, device-synchronized, host to
device copies included). Peak memory: `torch.cuda.max_memory_allocated` on GPU, peak RSS on CPU.

    .venv/bin/python bench/vit_throughput.py --shape smol       # CPU: SmolLM2-135M + DINOv2-S, seed data
    .venv/bin/python bench/vit_throughput.py --shape 7b-clip336 # GPU: Llama-2-7B + CLIP-L/336 shapes, random bf16
    .venv/bin/python bench/vit_throughput.py --shape tiny       # seconds: proves it runs

The last line is `samples_per_s xlang=N baseline=N ratio=R`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OOM_EXIT = 3

SHAPES: dict[str, dict[str, Any]] = {
    # random tiny Llama + tiny CLIP: seconds anywhere
    "tiny": dict(
        llm=dict(hidden=64, layers=2, heads=4, kv=4, intermediate=128, vocab=1024),
        tower=dict(hidden=32, layers=2, heads=2, intermediate=64, image=56, patch=14),
        text_tokens=48,
        answer_tokens=16,
        micro=4,
        warmup=1,
        steps=4,
        lora_r=8,
    ),
    # the real SmolLM2-135M + the converted DINOv2-S on the seed data (CPU); 15 timed steps: with 3 the
    # median moved between 0.66x and 1.89x on a loaded machine
    "smol": dict(real=True, image_size=112, micro=2, warmup=2, steps=15, lora_r=128),
    # Llama-2-7B and CLIP-L/336 shapes, random bf16 weights: 576 image + 424 text tokens per sample (H100)
    "7b-clip336": dict(
        llm=dict(hidden=4096, layers=32, heads=32, kv=32, intermediate=11008, vocab=32064),
        tower=dict(hidden=1024, layers=24, heads=16, intermediate=4096, image=336, patch=14),
        text_tokens=424,
        answer_tokens=200,
        micro=4,
        warmup=3,
        steps=10,
        lora_r=128,
    ),
}
IMAGE_TOKEN_ID = 0
"""Random shapes: the image placeholder id (never a label)."""


def _cache_dir() -> Path:
    """The converted SmolLM2 and DINOv2 live here (shared with the tests and the other benchmarks)."""
    return Path(os.environ.get("XLANG_TEST_CACHE", REPO / ".cache" / "xlang-test"))


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------- data


def random_batches(shape: dict[str, Any], count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Micro-batches of [bos, image tokens, prompt, answer]; labels on the answer only."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    tower, llm = shape["tower"], shape["llm"]
    image_tokens = (tower["image"] // tower["patch"]) ** 2
    text, answer, micro = shape["text_tokens"], shape["answer_tokens"], shape["micro"]
    batches = []
    for _ in range(count):
        ids = torch.randint(1, llm["vocab"], (micro, 1 + image_tokens + text), generator=generator)
        ids[:, 1 : 1 + image_tokens] = IMAGE_TOKEN_ID
        labels = torch.full_like(ids, -100)
        labels[:, -answer:] = ids[:, -answer:]
        pixels = torch.randn((micro, 3, tower["image"], tower["image"]), generator=generator)
        batches.append(
            {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids), "pixel_values": pixels}
        )
    return batches


def smol_folder(shape: dict[str, Any]) -> Path:
    """The assembled SmolLM2 + DINOv2-S LLaVA (the `xlang-dinov2` plugin's tower), built once into the cache."""
    import functools

    from xlang import plugins
    from xlang.assets.models import ensure_smollm2
    from xlang.vlm.assemble import build_llava
    from xlang.vlm.config import AssembleConfig

    cache = _cache_dir()
    target = cache / "bench" / f"vit-smol-{shape['image_size']}"
    if not (target / "config.json").is_file():
        config = AssembleConfig(image_size=shape["image_size"])
        tower = plugins.get_strategy("vision_towers", config.vision_tower)
        languages = _bench_languages()
        build_llava(
            str(ensure_smollm2(cache)),
            cache,
            target,
            vision_tower=functools.partial(tower, options=tower.configure(config.vision_tower_options)),
            system_prompts={spec.code: spec.chat.system_prompt for spec in languages},
            target_lang=languages[0].code,
            config=config,
        )
    return target


def _bench_languages() -> list[Any]:
    """Every installed language that ships visual-instruction data (the seed sets of the language plugins)."""
    from xlang import plugins

    found = [registered.value for _, registered in sorted(plugins.languages().items()) if registered.value.vit_data]
    if not found:
        raise SystemExit("no installed language plugin ships vit_data; install xlang-en, xlang-ko or xlang-zh")
    return found


def _seed_training_records() -> list[dict[str, Any]]:
    """The training records of every installed language's `vit_data` (all languages and tasks)."""
    from xlang.vlm.data import load_vit_uri, split_heldout

    records = []
    for spec in _bench_languages():
        for uri in spec.vit_data:
            records += [{**record, "lang": record.get("lang") or spec.code} for record in load_vit_uri(uri)]
    return split_heldout(records)[0]


def seed_batches(shape: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Real micro-batches: seed conversations (all languages and tasks) with their photos."""
    from transformers import AutoProcessor

    from xlang.vlm.config import InstructConfig
    from xlang.vlm.train import VitBatches, prepare_samples, sample_order

    folder = smol_folder(shape)
    config = json.loads((folder / "config.json").read_text())
    processor = AutoProcessor.from_pretrained(folder)
    data = prepare_samples(
        _seed_training_records(),
        processor,
        image_token_id=config["image_token_index"],
        num_image_tokens=config["image_seq_length"],
        config=InstructConfig(),
        default_lang=_bench_languages()[0].code,
    )
    batches = VitBatches(
        data,
        image_processor=processor.image_processor,
        pad_id=processor.tokenizer.pad_token_id,
        micro_batch=shape["micro"],
        grad_accum=1,
        lang_weights={},
        seed=0,
    )
    order = sample_order(data.samples, {}, 0)
    return [batches.collate([next(order) for _ in range(shape["micro"])]) for _ in range(count)]


# ----------------------------------------------------------------------------------------- models


def build_llava(shape: dict[str, Any], device: str) -> tuple[Any, int]:
    """(LlavaForConditionalGeneration on `device`, image token id): bf16 on GPU, float32 on CPU."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if shape.get("real"):
        model = LlavaForConditionalGeneration.from_pretrained(smol_folder(shape), dtype=dtype).to(device)
        return model, int(model.config.image_token_index)
    llm, tower = shape["llm"], shape["tower"]
    text_config = LlamaConfig(
        hidden_size=llm["hidden"],
        num_hidden_layers=llm["layers"],
        num_attention_heads=llm["heads"],
        num_key_value_heads=llm["kv"],
        intermediate_size=llm["intermediate"],
        vocab_size=llm["vocab"],
        max_position_embeddings=4096,
    )
    vision_config = CLIPVisionConfig(
        hidden_size=tower["hidden"],
        num_hidden_layers=tower["layers"],
        num_attention_heads=tower["heads"],
        intermediate_size=tower["intermediate"],
        image_size=tower["image"],
        patch_size=tower["patch"],
        projection_dim=768,
    )
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=IMAGE_TOKEN_ID,
        image_seq_length=(tower["image"] // tower["patch"]) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(0)
        with torch.device(device):
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    return model, IMAGE_TOKEN_ID


def _lora_regex(model: Any) -> str:
    from xlang.vlm.modeling import lora_target_regex

    return lora_target_regex(model)


def _result(side: str, device: str, micro: int, seconds: list[float], warmup: int, extra: dict[str, Any]) -> dict:
    import torch

    timed = seconds[warmup:] or seconds
    median = statistics.median(timed)
    out = {"side": side, "micro_batch": micro, "step_s": median, "samples_per_s": micro / median, "steps": len(timed)}
    if device == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        out["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out.update(extra)
    return out


def run_baseline(shape: dict[str, Any], device: str, batches: list[dict[str, Any]], options: Any) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import IterableDataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model, _ = build_llava(shape, device)
    lora = LoraConfig(
        r=shape["lora_r"],
        lora_alpha=2 * shape["lora_r"],
        lora_dropout=0.0,
        target_modules=_lora_regex(model),
        modules_to_save=["multi_modal_projector"],
    )
    model = get_peft_model(model, lora)

    class Samples(IterableDataset):
        def __iter__(self) -> Any:
            for batch in batches:
                for row in range(batch["input_ids"].shape[0]):
                    yield {key: value[row] for key, value in batch.items()}

    def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {key: torch.stack([row[key] for row in rows]) for key in rows[0]}

    seconds: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            _sync(device)
            self.started = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            _sync(device)
            seconds.append(time.perf_counter() - self.started)

    with tempfile.TemporaryDirectory() as out_dir:
        arguments = TrainingArguments(
            output_dir=out_dir,
            per_device_train_batch_size=shape["micro"],
            max_steps=len(batches),
            learning_rate=2e-4,
            lr_scheduler_type="constant",
            bf16=device == "cuda",
            gradient_checkpointing=True,
            gradient_checkpointing_kwargs={"use_reentrant": False},
            logging_steps=10_000,
            save_strategy="no",
            report_to=[],
            dataloader_num_workers=0,
            remove_unused_columns=False,
            optim="adamw_torch_fused" if device == "cuda" else "adamw_torch",
            use_cpu=device == "cpu",
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model, args=arguments, train_dataset=Samples(), data_collator=collate, callbacks=[Timer()]
        )
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
    return _result("baseline", device, shape["micro"], seconds, options.warmup, {"gradient_checkpointing": True})


def run_xlang(shape: dict[str, Any], device: str, batches: list[dict[str, Any]], options: Any) -> dict[str, Any]:
    import torch
    from accelerate import Accelerator

    from xlang.train.config import TrainLoopConfig
    from xlang.train.engine import run_training
    from xlang.vlm.modeling import LlavaForTraining, apply_lora, compile_language_layers, trainable_selector

    model, image_token_id = build_llava(shape, device)
    model.model.multi_modal_projector.float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = apply_lora(model, r=shape["lora_r"], alpha=2 * shape["lora_r"], dropout=0.0)
    module = LlavaForTraining(model, image_token_id=image_token_id)
    checkpointing = options.xlang_checkpointing == "on"
    if checkpointing:
        module.base().model.language_model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    compiled = 0
    if options.compile == "yes" or (options.compile == "auto" and device == "cuda"):
        compiled = compile_language_layers(module)
    mixed = "bf16" if device == "cuda" else "no"
    config = TrainLoopConfig(
        steps=len(batches),
        lr=2e-4,
        schedule="constant",
        micro_batch=shape["micro"],
        mixed_precision=mixed,
        progress=False,
        tensorboard=False,
    )

    def make_batches(step_offset: int, rank: int, world: int) -> Any:
        return iter(batches[step_offset:])

    with tempfile.TemporaryDirectory() as out_dir:
        result = run_training(
            module,
            make_batches,
            config,
            out_dir,
            trainable=trainable_selector("lora"),
            loss_fn=lambda inner, batch: inner(**batch),
            accelerator=Accelerator(mixed_precision=mixed, cpu=device == "cpu"),
            name="bench-vit",
        )
    seconds = [record.seconds for record in result.history]
    out = _result("xlang", device, shape["micro"], seconds, options.warmup, {"gradient_checkpointing": checkpointing})
    out["compiled_layers"] = compiled
    if device == "cuda" and result.peak_memory_bytes:
        out["peak_gib"] = max(out["peak_gib"], result.peak_memory_bytes / 2**30)
    return out


# ----------------------------------------------------------------------------------------- processes


def child(options: Any) -> int:
    import torch

    shape = dict(SHAPES[options.shape])
    shape["micro"] = options.micro or shape["micro"]
    batches = torch.load(options.batches, weights_only=True)
    runner = run_xlang if options.side == "xlang" else run_baseline
    try:
        result = runner(shape, options.device, batches, options)
    except torch.OutOfMemoryError as error:
        Path(options.result).write_text(json.dumps({"side": options.side, "error": f"out of memory: {error}"}))
        return OOM_EXIT
    Path(options.result).write_text(json.dumps(result))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default=None, help="default: 7b-clip336 on GPU, smol on CPU")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--micro", type=int, default=0, help="micro-batch (default: the shape's)")
    parser.add_argument("--steps", type=int, default=0, help="timed steps (default: the shape's)")
    parser.add_argument("--warmup", type=int, default=-1, help="untimed first steps (default: the shape's)")
    parser.add_argument("--compile", choices=["auto", "yes", "no"], default="auto", help="xlang: compile layers")
    parser.add_argument("--xlang-checkpointing", choices=["on", "off"], default="off")
    parser.add_argument("--sides", default="baseline,xlang")
    parser.add_argument("--json", type=Path, default=None, help="also write both results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", default="", help=argparse.SUPPRESS)
    parser.add_argument("--batches", default="", help=argparse.SUPPRESS)
    parser.add_argument("--result", default="", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        return child(options)

    import torch

    device = options.device if options.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    name = options.shape or ("7b-clip336" if device == "cuda" else "smol")
    shape = dict(SHAPES[name])
    shape["micro"] = options.micro or shape["micro"]
    warmup = shape["warmup"] if options.warmup < 0 else options.warmup
    steps = options.steps or shape["steps"]
    batches = seed_batches(shape, warmup + steps) if shape.get("real") else random_batches(shape, warmup + steps)
    tokens = int(batches[0]["attention_mask"].sum()) / shape["micro"]
    print(
        f"shape={name} device={device} micro_batch={shape['micro']} steps={steps} (+{warmup} warm-up) "
        f"~{tokens:.0f} tokens/sample"
    )
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        data_path = Path(scratch) / "batches.pt"
        torch.save(batches, data_path)
        for side in [s.strip() for s in options.sides.split(",") if s.strip()]:
            result_path = Path(scratch) / f"{side}.json"
            command = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                f"--side={side}",
                f"--shape={name}",
                f"--device={device}",
                f"--micro={shape['micro']}",
                f"--warmup={warmup}",
                f"--compile={options.compile}",
                f"--xlang-checkpointing={options.xlang_checkpointing}",
                f"--batches={data_path}",
                f"--result={result_path}",
            ]
            started = time.perf_counter()
            code = subprocess.run(command, cwd=REPO).returncode
            if result_path.is_file():
                results[side] = json.loads(result_path.read_text())
            else:
                results[side] = {"side": side, "error": f"exit status {code}"}
            results[side]["wall_s"] = time.perf_counter() - started
            line = f"{side}: " + ", ".join(
                f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
                for key, value in results[side].items()
                if key != "side"
            )
            print(line, flush=True)
    if options.json:
        options.json.write_text(json.dumps({"shape": name, "device": device, "results": results}, indent=2))
    xlang = results.get("xlang", {}).get("samples_per_s")
    baseline = results.get("baseline", {}).get("samples_per_s")
    ratio = xlang / baseline if xlang and baseline else float("nan")
    print(f"samples_per_s xlang={xlang or float('nan'):.3f} baseline={baseline or float('nan'):.3f} ratio={ratio:.2f}")
    return 0 if xlang and baseline else 1


if __name__ == "__main__":
    sys.exit(main())
