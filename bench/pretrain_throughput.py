"""Training throughput: xlang's pretraining step against the Trainer script users write today.

Both sides train the same expanded model on the same documents with the same effective batch
(sequences per optimizer step), each in its own subprocess so that peak memory is its own:

- baseline: Hugging Face `Trainer` + peft LoRA (all linear layers) with
  `modules_to_save=["embed_tokens", "lm_head"]` so the new rows can learn, every document truncated to
  the block length and padded to the longest in its batch (a plain pad-to-longest collator);
- xlang: `xlang.train.pretraining.prepare_model` + `run_training` exactly as `pretrain` runs them:
  packed blocks (no padding), LoRA + only the new rows trainable (`trainable_token_indices`), fused
  chunked cross-entropy, on GPU bf16 autocast, fused AdamW and compiled decoder layers.

Throughput counts real (non-padding) input tokens per second of wall-clock step time (data loading
included), median over the steps after warm-up. Peak memory is `torch.cuda.max_memory_allocated` on GPU
and the subprocess's peak RSS on CPU. On GPU, MFU is reported with 6 x parameters per token (the usual
convention, which counts weight gradients that frozen weights never compute) and with 4 x next to it.

    .venv/bin/python bench/pretrain_throughput.py --device cpu --shape smollm2      # SmolLM2-135M, seq 256
    .venv/bin/python bench/pretrain_throughput.py --device cuda --shape llama2-7b   # random bf16 7B, seq 2048
    .venv/bin/python bench/pretrain_throughput.py --device cpu --shape tiny         # seconds: proves it runs

The last line is `tokens_per_s xlang=N baseline=N ratio=R`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
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
    # random Llama, runs anywhere in seconds
    "tiny": dict(
        hidden=64,
        layers=2,
        heads=4,
        kv_heads=4,
        intermediate=128,
        vocab=1000,
        new_tokens=200,
        seq_len=128,
        batch=8,
        baseline_micro=8,
        xlang_micro=8,
        warmup=2,
        steps=5,
        docs="random",
    ),
    # the real SmolLM2-135M (tied embeddings, vocabulary 49,152) + 8,000 new rows, real ko/en text
    "smollm2": dict(
        model="smollm2",
        new_tokens=8000,
        seq_len=256,
        batch=8,
        baseline_micro=8,
        xlang_micro=8,
        warmup=1,
        steps=3,
        docs="corpus",
    ),
    # Llama-2-7B's shape, random bf16 weights, vocabulary 32,000 + 8,000 new rows
    "llama2-7b": dict(
        hidden=4096,
        layers=32,
        heads=32,
        kv_heads=32,
        intermediate=11008,
        vocab=32000,
        new_tokens=8000,
        seq_len=2048,
        batch=8,
        baseline_micro=1,
        xlang_micro=4,
        warmup=2,
        steps=5,
        docs="random",
    ),
}
LORA = dict(r=16, alpha=32, dropout=0.0)


# ----------------------------------------------------------------------------------------- assets


def _cache_dir() -> Path:
    return Path(os.environ.get("XLANG_TEST_CACHE", REPO / ".cache" / "xlang-test"))


def build_model(shape: dict[str, Any], device: str) -> Any:
    """The expanded base model: SmolLM2 resized by `new_tokens` rows, or a random Llama of the shape."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if shape.get("model") == "smollm2":
        from xlang.assets.models import ensure_smollm2

        model = AutoModelForCausalLM.from_pretrained(str(ensure_smollm2(_cache_dir())), dtype=dtype)
        rows = model.get_input_embeddings().weight.shape[0]
        torch.manual_seed(0)
        model.resize_token_embeddings(rows + shape["new_tokens"], mean_resizing=False)
        with torch.no_grad():
            embed = model.get_input_embeddings().weight
            embed[rows:] = embed[:rows].mean(0) + 0.01 * torch.randn_like(embed[rows:])
        return model.to(device)
    config = LlamaConfig(
        vocab_size=shape["vocab"] + shape["new_tokens"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        max_position_embeddings=max(4096, shape["seq_len"]),
        tie_word_embeddings=False,
        use_cache=False,
    )
    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def documents(shape: dict[str, Any], vocab: int, seed: int = 0) -> dict[str, list[list[int]]]:
    """Token documents per language. Real LibreOffice help pages (ko, en) through the language plugins
    when the corpora are reachable; otherwise random ids in documents of varied length. `long` documents
    (1-4 blocks) give the baseline full blocks and no padding: only the training step is compared."""
    if shape["docs"] == "corpus":
        try:
            return _corpus_documents()
        except Exception as error:  # no cached corpus and no network: say so, use random documents
            print(f"[bench] real corpus unavailable ({error}); using random documents", file=sys.stderr)
    rng = random.Random(seed)
    seq = shape["seq_len"]
    budget = seq * shape["batch"] * (shape["warmup"] + shape["steps"] + 4) * 2
    docs: dict[str, list[list[int]]] = {"a": [], "b": []}
    for name in docs:
        total = 0
        while total < budget:
            if shape["docs"] == "long":
                length = rng.randint(seq, 4 * seq)
            else:
                length = max(8, int(rng.lognormvariate(0, 0.8) * seq * 0.8))
            docs[name].append([rng.randrange(5, vocab) for _ in range(length)])
            total += length
    return docs


def _corpus_documents() -> dict[str, list[list[int]]]:
    from transformers import AutoTokenizer

    from xlang.assets.models import ensure_smollm2
    from xlang.data.views import documents
    from xlang.resolve import Resolver
    from xlang.settings import load_settings

    resolver = Resolver(load_settings(cache_dir=_cache_dir()))
    tokenizer = AutoTokenizer.from_pretrained(str(ensure_smollm2(_cache_dir())))
    out = {}
    for code in ("ko", "en"):
        spec = resolver.language(code)
        pages = documents(resolver.dataset(spec, "train"), spec)
        random.Random(code).shuffle(pages)
        ids = tokenizer(pages[:600], add_special_tokens=True)["input_ids"]
        out[code] = [[*row, tokenizer.eos_token_id] for row in ids]
    return out


# ----------------------------------------------------------------------------------------- the two sides


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def run_baseline(shape: dict[str, Any], device: str, docs: dict[str, list[list[int]]], options: Any) -> dict[str, Any]:
    """HF Trainer + peft LoRA + modules_to_save embeddings, pad to longest: the script users copy."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model = build_model(shape, device)
    model = get_peft_model(
        model,
        LoraConfig(
            r=LORA["r"],
            lora_alpha=LORA["alpha"],
            lora_dropout=LORA["dropout"],
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            modules_to_save=["embed_tokens", "lm_head"],
            task_type="CAUSAL_LM",
        ),
    )
    seq = shape["seq_len"]
    rows = [doc[:seq] for name in sorted(docs) for doc in docs[name]]
    dataset = Dataset.from_dict({"input_ids": rows})

    def collate(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.zeros((len(features), width), dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
            mask[i, : len(f["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}

    class CountingTrainer(Trainer):
        tokens = 0
        padded = 0

        def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
            CountingTrainer.tokens += int(inputs["attention_mask"].sum())
            CountingTrainer.padded += int(inputs["input_ids"].numel())
            return super().training_step(model, inputs, num_items_in_batch)

    records: list[tuple[int, float]] = []

    class StepTimer(TrainerCallback):
        last = (0, 0.0)

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 0:
                _sync(device)
                StepTimer.last = (CountingTrainer.tokens, time.perf_counter())

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            _sync(device)
            now = (CountingTrainer.tokens, time.perf_counter())
            records.append((now[0] - StepTimer.last[0], now[1] - StepTimer.last[1]))
            StepTimer.last = now

    micro = shape["baseline_micro"]
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=micro,
            gradient_accumulation_steps=shape["batch"] // micro,
            max_steps=shape["warmup"] + shape["steps"],
            learning_rate=2e-4,
            lr_scheduler_type="cosine",
            logging_steps=10**6,
            save_strategy="no",
            report_to=[],
            bf16=options.baseline_precision == "bf16" or (options.baseline_precision == "auto" and device == "cuda"),
            use_cpu=device == "cpu",
            dataloader_num_workers=0,
            remove_unused_columns=False,
            disable_tqdm=True,
            seed=0,
        )
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        trainer = CountingTrainer(
            model=model, args=args, train_dataset=dataset, data_collator=collate, callbacks=[StepTimer()]
        )
        trainer.train()
    share = CountingTrainer.tokens / max(CountingTrainer.padded, 1)
    extra = {"bf16": args.bf16, "real_token_share": share}
    return _result("baseline", shape, device, records, model, extra)


def _resolved_compile(choice: str, device: str) -> str:
    """`auto` means what the default recipe (a few hundred steps) would choose, not what these few steps would."""
    if choice != "auto":
        return choice
    from xlang.train.config import PretrainConfig
    from xlang.train.pretraining import choose_runtime

    return "yes" if choose_runtime(PretrainConfig(), device == "cuda")[2] else "no"


def run_xlang(shape: dict[str, Any], device: str, docs: dict[str, list[list[int]]], options: Any) -> dict[str, Any]:
    """xlang's pretraining step: the same prepare_model + run_training calls `pretrain` makes."""
    import numpy as np
    import torch
    from accelerate import Accelerator

    from xlang.train.config import PretrainConfig
    from xlang.train.data import LocalDocs, PackedStream
    from xlang.train.engine import run_training
    from xlang.train.loss import fused_loss
    from xlang.train.pretraining import choose_runtime, prepare_model

    micro = options.xlang_micro_batch or shape["xlang_micro"]
    config = PretrainConfig(
        steps=shape["warmup"] + shape["steps"],
        seq_len=shape["seq_len"],
        micro_batch=micro,
        grad_accum=shape["batch"] // micro,
        lr=2e-4,
        lora_r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        document_mask=options.document_mask == "on",
        compile=_resolved_compile(options.compile, device),
        mixed_precision={"auto": "auto", "fp32": "no", "bf16": "bf16"}[options.precision],
        attn_implementation=options.attn,
        save_every=0,
        eval_every=0,
        log_every=1,
        progress=False,
        tensorboard=False,
    )
    _, mixed, compile_layers = choose_runtime(config, device == "cuda")
    accelerator = Accelerator(cpu=device == "cpu")
    model = build_model(shape, device)
    if options.attn:
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation(options.attn)
        else:
            model.config._attn_implementation = options.attn
    rows = model.get_input_embeddings().weight.shape[0]
    new_ids = list(range(rows - shape["new_tokens"], rows))
    prepared = prepare_model(model, new_ids, config, mixed=mixed, compile_layers=compile_layers)
    predicate, _ = prepared.selections[0]
    sources = {name: LocalDocs(name, [np.asarray(d, dtype=np.int64) for d in ds], seed=0) for name, ds in docs.items()}
    stream = PackedStream(
        sources,
        dict.fromkeys(sources, 1.0),
        config.seq_len,
        micro_batch=micro,
        grad_accum=config.grad_accum,
        document_mask=config.document_mask,
    )
    stage = config.schedule_stages()[0]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_training(
            prepared.wrapper,
            stream.make_batches(),
            config.loop_config(stage, mixed_precision=mixed),
            tmp,
            trainable=predicate,
            loss_fn=fused_loss,
            accelerator=accelerator,
            name="xlang",
        )
    records = [(r.tokens, r.seconds) for r in result.history]
    extra = {
        "micro_batch": micro,
        "compiled_layers": compile_layers,
        "document_mask": config.document_mask,
        "mixed_precision": mixed,
        "final_loss": result.final_loss,
    }
    return _result("xlang", shape, device, records, prepared.trainable.model, extra)


def _result(
    side: str,
    shape: dict[str, Any],
    device: str,
    records: list[tuple[int, float]],
    model: Any,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    import torch

    measured = records[shape["warmup"] :]
    rates = [tokens / seconds for tokens, seconds in measured if seconds > 0]
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = sum(
        p.numel()
        for n, p in inner.named_parameters()
        if "lora_" not in n and "modules_to_save" not in n and "trainable_tokens" not in n
    )
    out = {
        "side": side,
        "tokens_per_s": statistics.median(rates) if rates else None,
        "step_seconds": [round(s, 4) for _, s in records],
        "step_tokens": [t for t, _ in records],
        "params": params,
        **(extra or {}),
    }
    if device == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["device_name"] = torch.cuda.get_device_name()
    else:
        out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


# ----------------------------------------------------------------------------------------- driver


def peak_flops(name: str, override: float | None) -> float | None:
    """Dense bf16 peak of the GPU, FLOP/s (H100/H200 SXM 989 TFLOP/s, H100 PCIe 756, A100 312)."""
    if override:
        return override * 1e12
    if "H100" in name and "PCIe" in name:
        return 756e12
    if "H100" in name or "H200" in name or "H800" in name:
        return 989.4e12
    if "A100" in name:
        return 312e12
    return None


def child(options: Any) -> int:
    import torch

    shape = SHAPES[options.shape]
    docs = json.loads(Path(options.docs).read_text())
    if options.threads:
        torch.set_num_threads(options.threads)
    torch.manual_seed(0)
    try:
        if options.side == "baseline":
            result = run_baseline(shape, options.device, docs, options)
        else:
            result = run_xlang(shape, options.device, docs, options)
    except torch.OutOfMemoryError as error:
        Path(options.result).write_text(json.dumps({"side": options.side, "oom": str(error)[:500]}))
        return OOM_EXIT
    Path(options.result).write_text(json.dumps(result))
    return 0


def spawn(options: Any, side: str, docs_path: Path, extra: list[str]) -> tuple[int, dict[str, Any]]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result_path = Path(handle.name)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    if options.threads:
        env["OMP_NUM_THREADS"] = str(options.threads)
    command = [
        sys.executable,
        __file__,
        "--child",
        "--side",
        side,
        "--device",
        options.device,
        "--shape",
        options.shape,
        "--docs",
        str(docs_path),
        "--result",
        str(result_path),
        *extra,
    ]
    started = time.perf_counter()
    code = subprocess.run(command, env=env).returncode
    result = json.loads(result_path.read_text()) if result_path.stat().st_size else {}
    result_path.unlink()
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return code, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smollm2")
    parser.add_argument("--steps", type=int, help="measured steps (after warm-up)")
    parser.add_argument("--warmup", type=int, help="warm-up steps (compilation happens here)")
    parser.add_argument("--xlang-micro-batch", type=int, help="xlang's micro-batch (default per shape)")
    parser.add_argument("--compile", choices=["auto", "yes", "no"], default="auto")
    parser.add_argument("--document-mask", choices=["on", "off"], default="on")
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="xlang's autocast: auto = bf16 on GPU and on CPUs with AMX, else fp32",
    )
    parser.add_argument(
        "--baseline-precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="the Trainer's bf16 flag: auto = on for GPU (as users do), off on CPU (Trainer default)",
    )
    parser.add_argument("--attn", default=None, help="attn_implementation for xlang (default: the model's, sdpa)")
    parser.add_argument("--peak-tflops", type=float, help="GPU dense bf16 peak for MFU, if not detected")
    parser.add_argument("--only", choices=["xlang", "baseline"], help="run one side (for profiling)")
    parser.add_argument("--threads", type=int, help="CPU threads per side (default: torch's, all cores)")
    parser.add_argument("--json", type=Path, help="write all numbers here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--docs", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.steps:
        SHAPES[options.shape]["steps"] = options.steps
    if options.warmup is not None:
        SHAPES[options.shape]["warmup"] = options.warmup
    if options.child:
        return child(options)

    shape = SHAPES[options.shape]
    vocab = shape.get("vocab", 49152) + shape["new_tokens"]  # random documents use the new rows too
    print(
        f"[bench] shape={options.shape} device={options.device} seq={shape['seq_len']} "
        f"batch={shape['batch']} sequences/step warmup={shape['warmup']} measured={shape['steps']}",
        flush=True,
    )
    docs = documents(shape, vocab)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(docs, handle)
        docs_path = Path(handle.name)
    extra = [
        f"--steps={shape['steps']}",
        f"--warmup={shape['warmup']}",
        f"--compile={options.compile}",
        f"--document-mask={options.document_mask}",
        f"--precision={options.precision}",
        f"--baseline-precision={options.baseline_precision}",
    ]
    if options.attn:
        extra.append(f"--attn={options.attn}")
    if options.threads:
        extra.append(f"--threads={options.threads}")
    results: dict[str, dict[str, Any]] = {}
    try:
        for side in ("baseline", "xlang"):
            if options.only and side != options.only:
                continue
            micro = options.xlang_micro_batch or shape["xlang_micro"]
            while True:
                side_extra = [*extra, f"--xlang-micro-batch={micro}"] if side == "xlang" else extra
                code, result = spawn(options, side, docs_path, side_extra)
                if code == OOM_EXIT and side == "xlang" and micro > 1:
                    print(
                        f"[bench] xlang ran out of memory at micro-batch {micro}; retrying with {micro // 2}",
                        flush=True,
                    )
                    micro //= 2
                    continue
                break
            if code != 0:
                print(f"[bench] {side} failed (exit {code}): {result}", flush=True)
                return 1
            results[side] = result
    finally:
        docs_path.unlink()

    peak = None
    for side, result in results.items():
        line = f"[bench] {side:8s} tokens/s={result['tokens_per_s']:,.0f}"
        if "peak_memory_gib" in result:
            line += f" peak={result['peak_memory_gib']:.1f} GiB"
            peak = peak_flops(result.get("device_name", ""), options.peak_tflops)
            if peak:
                result["mfu_6n"] = result["tokens_per_s"] * 6 * result["params"] / peak
                result["mfu_4n"] = result["tokens_per_s"] * 4 * result["params"] / peak
                line += f" MFU={result['mfu_6n']:.1%} (6N) {result['mfu_4n']:.1%} (4N)"
        else:
            line += f" peak_rss={result['peak_rss_gib']:.2f} GiB"
        line += f" steps_s={result['step_seconds']} wall={result['wall_s']}s"
        if side == "xlang":
            line += (
                f" micro_batch={result.get('micro_batch')} compiled={result.get('compiled_layers')}"
                f" autocast={result.get('mixed_precision')} document_mask={result.get('document_mask')}"
            )
        else:
            line += f" bf16={result.get('bf16')} real_token_share={result.get('real_token_share', 0):.2f}"
        print(line, flush=True)
    if options.json:
        options.json.write_text(
            json.dumps({"shape": options.shape, "device": options.device, "results": results}, indent=2)
        )
    if "xlang" in results and "baseline" in results:
        x, b = results["xlang"]["tokens_per_s"], results["baseline"]["tokens_per_s"]
        print(f"tokens_per_s xlang={x:.0f} baseline={b:.0f} ratio={x / b:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
