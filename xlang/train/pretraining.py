"""Continued bilingual pretraining: the stage function that teaches new tokens their meaning.

`pretrain(model_dir, tokenizer_dir, texts_by_language, parallel, config, out_dir, ...)` takes the
expanded, initialized model and plain texts (the caller resolves corpora through the language plugins),
mixes and packs them, trains the schedule's stages with the shared engine, and writes:

    out_dir/
      run.json              config hash of this run (a different config is refused, nothing touched)
      stages/<name>/        one engine run per stage: checkpoints/, metrics.jsonl, tensorboard/
      adapter/              plain peft adapter for the expanded base (absent for full fine-tuning)
      model/                merged plain model (safetensors) + tokenizer: what evaluation and VIT load
      report/curves.png     training loss and validation BPC per language over the run
      report/summary.json   numbers for the run report (BPC before/after, tokens/s, stages)
      pretrain.json         written last: the stage finished (a second call returns it untouched)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlang.assets.loading import load_pretrained
from xlang.data.views import take_chars
from xlang.errors import XlangError
from xlang.train.accelerators import (
    check_distributed,
    layers_may_compile,
    make_accelerator,
    partitions_parameters,
    sharding_of,
)
from xlang.train.config import NON_TRAJECTORY_FIELDS, PARALLEL_KEY, PretrainConfig

RESULT_FILE = "pretrain.json"
RUN_FILE = "run.json"


@dataclass
class PretrainResult:
    out_dir: Path
    model_dir: Path
    """Merged plain model folder (with tokenizer)."""
    adapter_dir: Path | None
    """Plain peft adapter on the expanded base; None when the schedule trained every weight."""
    curve_png: Path | None
    summary: dict[str, Any] = field(default_factory=dict)
    """bpc_before / bpc_after per language, final_loss, tokens_per_s, stages, mix shares, seconds."""

    def to_json(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "model_dir": str(self.model_dir),
            "adapter_dir": str(self.adapter_dir) if self.adapter_dir else None,
            "curve_png": str(self.curve_png) if self.curve_png else None,
            "summary": self.summary,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PretrainResult:
        return cls(
            out_dir=Path(data["out_dir"]),
            model_dir=Path(data["model_dir"]),
            adapter_dir=Path(data["adapter_dir"]) if data.get("adapter_dir") else None,
            curve_png=Path(data["curve_png"]) if data.get("curve_png") else None,
            summary=dict(data.get("summary", {})),
        )


# ----------------------------------------------------------------------------------------- inputs


def _is_streaming(value: Any) -> bool:
    return type(value).__name__ == "IterableDataset"


def resolve_mix(config: PretrainConfig, languages: Sequence[str], has_parallel: bool) -> dict[str, float]:
    """Normalized token shares; unknown names are an XlangError that lists what exists."""
    known = [*languages, *([PARALLEL_KEY] if has_parallel else [])]
    if config.mix:
        unknown = [name for name in config.mix if name not in known]
        if unknown:
            raise XlangError(
                f"mix names {', '.join(repr(n) for n in unknown)}, but corpora exist only for "
                f"{', '.join(known) or 'nothing'}; fix --mix (e.g. {'=0.5,'.join(languages[:2])}=0.5)"
            )
        weights = dict(config.mix)
    else:
        if not languages:
            raise XlangError("pretrain got no corpus; give it the target language's text and its companions'")
        weights = dict.fromkeys(languages, 1.0)
        if has_parallel:
            weights[PARALLEL_KEY] = 0.1 * len(languages) / 0.9
    total = sum(weights.values())
    return {name: weight / total for name, weight in weights.items()}


def _digest_texts(values: Any) -> str:
    digest = hashlib.sha256()
    if _is_streaming(values):
        digest.update(repr(getattr(values, "info", None)).encode())
        return digest.hexdigest()[:16]
    for text in values["text"] if hasattr(values, "column_names") else values:
        digest.update(str(text).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _split_validation(texts: list[str], max_chars: int, seed: int, name: str) -> tuple[list[str], list[str]]:
    """Hold out documents (at most 5% of them, about `max_chars` characters) when the caller gave no
    validation split; deterministic in the seed."""
    import numpy as np

    if len(texts) < 20:
        return texts, []
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "little"))
    held: set[int] = set()
    chars = 0
    for index in rng.permutation(len(texts)).tolist()[: max(1, len(texts) // 20)]:
        if chars >= max_chars:
            break
        held.add(index)
        chars += len(texts[index])
    return [t for i, t in enumerate(texts) if i not in held], [t for i, t in enumerate(texts) if i in held]


def make_bpc_eval(
    tokenizer: Any, validation: Mapping[str, Sequence[str]], *, window: int, stride: int
) -> Callable[[Any], dict[str, float]]:
    """The default `eval_fn`: validation BPC per language (`bpc/<code>`) of the model inside the training
    wrapper, by the one scorer every xlang number comes from (`xlang.eval.bpc.bits_per_character`)."""
    from xlang.eval.bpc import bits_per_character

    def evaluate(wrapper: Any) -> dict[str, float]:
        model = getattr(wrapper, "model", wrapper)
        return {
            f"bpc/{language}": bits_per_character(
                model, tokenizer, texts, window=window, stride=stride, max_chars=None
            ).bpc
            for language, texts in validation.items()
            if texts
        }

    return evaluate


# ----------------------------------------------------------------------------------------- report


def plot_curves(
    stage_metrics: Sequence[tuple[str, int, Path]],
    png: Path,
    languages: Sequence[str] = (),
    validation_chars: int | None = None,
) -> Path | None:
    """Training loss and training-time validation BPC per language over the whole run, stages one after
    another. `languages` (the run's, target first) fixes each language's colour, the same as in the evaluate
    stage's plot; `validation_chars` names the text the validation points were scored on. Few points get
    markers and their values (a curve drawn through two measurements would suggest a trend nobody measured)."""
    from xlang.eval.plots import language_colours, plot_series
    from xlang.train.engine import read_metrics

    train_x, train_y, evals, bounds = [], [], {}, []
    for name, offset, path in stage_metrics:
        records = read_metrics(path)
        bounds.append((offset, name))
        for record in records:
            if record.get("kind") == "train" and record.get("loss") is not None:
                train_x.append(offset + record["step"])
                train_y.append(record["loss"])
            elif record.get("kind") == "eval":
                for key, value in record.items():
                    if key.startswith("bpc/"):
                        evals.setdefault(key[4:], []).append((offset + record["step"], value))
    if not train_x:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = language_colours([*languages, *sorted(evals)])
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    plot_series(top, train_x, train_y, colour="tab:gray")
    top.set_ylabel("training loss\n(nats/token, per logging window)")
    for language in colours:
        if language not in evals:
            continue
        points = sorted(dict(evals[language]).items())
        plot_series(bottom, [p[0] for p in points], [p[1] for p in points], colour=colours[language], label=language)
    text = f"first {validation_chars:,} chars" if validation_chars else "validation text"
    bottom.set_ylabel(f"validation bits/char\n({text}, lower is better)")
    bottom.set_xlabel("optimizer step")
    if evals:
        bottom.legend()
    from matplotlib.ticker import MaxNLocator

    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axis in (top, bottom):
        axis.grid(alpha=0.3)
        axis.margins(x=0.08, y=0.15)
        for offset, _name in bounds[1:]:
            axis.axvline(offset, color="grey", ls="--", lw=0.8)
    if len(bounds) > 1:
        for offset, name in bounds:
            top.annotate(name, (offset, 1.0), xycoords=("data", "axes fraction"), fontsize=8, va="top")
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.stem}.tmp.png")
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    os.replace(tmp, png)
    return png


# ----------------------------------------------------------------------------------------- the stage


def _write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def _replace_dir(staging: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX tiles (Sapphire Rapids and later), where bf16 matmuls run ~7x faster than fp32."""
    import torch

    probe = getattr(getattr(torch, "cpu", None), "_is_amx_tile_supported", None)
    try:
        return bool(probe and probe())
    except RuntimeError:
        return False


COMPILE_MIN_STEPS_CPU = 100
"""Compiling the decoder layers costs about a minute on a small CPU and saves ~30% per step after it."""


def choose_runtime(config: PretrainConfig, cuda: bool) -> tuple[str, str, bool]:
    """(weights dtype, accelerate mixed precision, compile decoder layers?) for the `auto` settings.

    GPU: bf16 weights, bf16 autocast, compiled layers. CPU: fp32 weights; bf16 autocast where AMX makes
    it fast; compiled layers when the run is long enough to repay compilation and a C++ compiler exists.
    """
    dtype = config.dtype if config.dtype != "auto" else ("bfloat16" if cuda else "float32")
    if config.mixed_precision != "auto":
        mixed = config.mixed_precision
    elif cuda:
        mixed = "bf16" if dtype != "float32" else "no"
    else:
        mixed = "bf16" if cpu_has_fast_bf16() else "no"
    if config.compile != "auto":
        compile_layers = config.compile == "yes"
    elif cuda:
        compile_layers = True
    else:
        steps = sum(stage.steps for stage in config.schedule_stages())
        compile_layers = steps >= COMPILE_MIN_STEPS_CPU and bool(shutil.which("c++") or shutil.which("g++"))
    return dtype, mixed, compile_layers


def compile_decoder_layers(model: Any) -> int:
    """`torch.compile` every decoder layer in place (names and state dicts unchanged); returns how many.

    A layer that fails to compile runs eagerly (dynamo's `suppress_errors`): slower, never wrong.
    """
    import torch._dynamo

    from xlang.train.loss import causal_lm_parts

    torch._dynamo.config.suppress_errors = True
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    decoder, _, _ = causal_lm_parts(model)
    layers = getattr(decoder, "layers", None) or []
    for layer in layers:
        layer.compile()
    return len(layers)


@dataclass
class PreparedModel:
    trainable: Any
    """`xlang.train.trainable.Trainable`: the (peft) model and what it can train."""
    wrapper: Any
    """`CausalLMWithFusedLoss` around it: what the engine trains."""
    selections: list[tuple[Callable[[str, Any], bool], list[Any]]]
    """Per stage: the engine's `trainable=` predicate and the parameters to row-mask."""


def prepare_model(
    base: Any, new_token_ids: Sequence[int], config: PretrainConfig, *, mixed: str, compile_layers: bool
) -> PreparedModel:
    """The training-time model of a schedule: adapter for every stage's parts, trainable weights in fp32
    under autocast, optional checkpointing and compiled decoder layers, the fused loss around it all.

    Shared by `pretrain` and `bench/pretrain_throughput.py`, so the benchmark measures this exact step.
    """
    import torch

    from xlang.train.loss import CausalLMWithFusedLoss
    from xlang.train.trainable import build_trainable, disable_lora_input_cast, stage_selection, upcast_trainable

    stages = config.schedule_stages()
    base.config.use_cache = False
    torch.manual_seed(config.seed)  # LoRA's initial values: the same in every process and every restart
    trainable = build_trainable(
        base,
        new_token_ids,
        {part for stage in stages for part in stage.train},
        lora_r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        lora_targets=config.lora_targets,
    )
    selections = [stage_selection(trainable, stage.train) for stage in stages]
    if mixed != "no":
        upcast_trainable(trainable, [pred for pred, _ in selections])
        disable_lora_input_cast(trainable.model)
    if config.gradient_checkpointing:
        inner = trainable.model.get_base_model() if trainable.has_adapter else trainable.model
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if compile_layers:
        compile_decoder_layers(trainable.model)
    wrapper = CausalLMWithFusedLoss(trainable.model, chunk_tokens=config.loss_chunk_tokens)
    return PreparedModel(trainable, wrapper, selections)


def new_rows_groups(rows_lr: float) -> Callable[[list[tuple[str, Any]]], list[dict[str, Any]]]:
    """The engine's `param_groups`: new-row deltas at `rows_lr`, everything else at the stage's rate."""

    def groups(named: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        rows = [p for n, p in named if "trainable_tokens_delta" in n]
        rest = [p for n, p in named if "trainable_tokens_delta" not in n]
        return [g for g in ({"params": rest}, {"params": rows, "lr": rows_lr}) if g["params"]]

    return groups


def pretrain(
    model_dir: str | os.PathLike[str],
    tokenizer_dir: str | os.PathLike[str],
    texts_by_language: Mapping[str, Any],
    parallel: Sequence[Mapping[str, Any]] | None,
    config: PretrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    new_token_ids: Sequence[int] | None = None,
    validation_by_language: Mapping[str, Sequence[str]] | None = None,
    eval_fn: Callable[[Any], Mapping[str, float]] | None = None,
    accelerator: Any = None,
    distributed: str = "ddp",
) -> PretrainResult:
    """Continue causal-LM training of the expanded model on a bilingual mix; see the module docstring.

    texts_by_language: language code -> list of documents (`xlang.data.views.documents`), or a streamed
        `datasets.IterableDataset` (hub corpora).
    parallel: aligned records such as `{"en": ..., "ko": ...}`, used when the mix names `parallel`
        (or, with an empty mix, at a 10% share), each packed as one bilingual document.
    new_token_ids: the ids the tokenizer stage added (their embedding rows train); required for the
        `new-rows` part.
    validation_by_language: held-out texts for BPC (the first `eval_max_chars` characters of each are
        scored); None holds out documents of each local corpus.
    eval_fn: replaces the default validation (called with the training wrapper; `.model` is the peft
        model) and returns `{"bpc/<code>": value, ...}`.
    distributed: `ddp` (every process holds the whole model; also one process), `fsdp` (FULL_SHARD
        with FSDP2 across the launched processes: see `xlang.train.engine`) or `deepspeed` (ZeRO stage 2
        through accelerate: see `xlang.train.accelerators`); the exported folders are the same plain ones
        in every mode.
    """
    check_distributed(distributed)
    out_dir = Path(out_dir)
    model_dir, tokenizer_dir = Path(model_dir), Path(tokenizer_dir)
    languages = [code for code in texts_by_language if code != PARALLEL_KEY]
    shares = resolve_mix(config, languages, bool(parallel))
    stages = config.schedule_stages()
    parts_union = {part for stage in stages for part in stage.train}
    if "new-rows" in parts_union and not new_token_ids:
        raise XlangError(
            "pretrain trains the new tokens' rows but got no new_token_ids; pass the ids the "
            "tokenizer stage added (or choose trainable='all')"
        )

    fingerprint = {
        "config": {k: v for k, v in config.model_dump(mode="json").items() if k not in NON_TRAJECTORY_FIELDS},
        "model_dir": str(model_dir.resolve()) if model_dir.exists() else str(model_dir),
        "tokenizer_dir": str(tokenizer_dir.resolve()) if tokenizer_dir.exists() else str(tokenizer_dir),
        "new_token_ids": hashlib.sha256(json.dumps(sorted(new_token_ids or [])).encode()).hexdigest()[:16],
        "data": {name: _digest_texts(texts_by_language[name]) for name in shares if name != PARALLEL_KEY},
        "parallel": _digest_texts([json.dumps(r, sort_keys=True) for r in parallel]) if parallel else None,
        "validation": {k: _digest_texts(list(v)) for k, v in (validation_by_language or {}).items()},
        **({"distributed": distributed} if distributed != "ddp" else {}),
    }
    run_hash = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
    existing = out_dir / RUN_FILE
    if existing.is_file():
        found = json.loads(existing.read_text()).get("config_hash")
        if found != run_hash:
            raise XlangError(
                f"{out_dir} holds a pretraining run with another configuration (config hash {found}, this one's "
                f"is {run_hash}); resume with the same settings and data, or choose a new output folder. "
                "Nothing was changed."
            )
        if (out_dir / RESULT_FILE).is_file():
            return PretrainResult.from_json(json.loads((out_dir / RESULT_FILE).read_text()))

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xlang.train.data import LocalDocs, PackedStream, StreamingDocs, bilingual_documents, tokenize_documents
    from xlang.train.engine import run_training
    from xlang.train.loss import fused_loss
    from xlang.train.trainable import add_row_masks

    started = time.time()
    cuda = torch.cuda.is_available() and (accelerator is None or accelerator.device.type == "cuda")
    dtype_name, mixed, compile_layers = choose_runtime(config, cuda)
    if accelerator is None:
        accelerator = make_accelerator(mixed_precision=mixed, cuda=cuda, distributed=distributed)
    compile_layers = compile_layers and layers_may_compile(config.compile, accelerator)
    tokenizer = load_pretrained(AutoTokenizer, tokenizer_dir, weights=False)

    # data: tokenized sources, validation split, mixing weights, packing
    sources: dict[str, Any] = {}
    validation: dict[str, list[str]] = {k: list(v) for k, v in (validation_by_language or {}).items()}
    for name in shares:
        if name == PARALLEL_KEY:
            docs = tokenize_documents(tokenizer, bilingual_documents(parallel or [], None, config.seed))
            sources[name] = LocalDocs(name, docs, config.seed)
            continue
        values = texts_by_language[name]
        if _is_streaming(values):
            sources[name] = StreamingDocs(name, values, tokenizer, config.seed)
            continue
        texts = [t for t in values if isinstance(t, str)]
        if validation_by_language is None:
            texts, held = _split_validation(texts, config.eval_max_chars, config.seed, name)
            validation[name] = held
        sources[name] = LocalDocs(name, tokenize_documents(tokenizer, texts), config.seed)
    for name, source in sources.items():
        if source.total_tokens is not None and source.total_tokens < config.seq_len + 1:
            raise XlangError(
                f"corpus {name!r} has {source.total_tokens} tokens, fewer than one block of seq_len="
                f"{config.seq_len} (+1); give it more text or lower --seq-len"
            )
    validation = {k: take_chars(v, config.eval_max_chars) for k, v in validation.items() if k in shares and v}
    stream = PackedStream(
        sources,
        shares,
        config.seq_len,
        micro_batch=config.micro_batch,
        grad_accum=config.grad_accum,
        document_mask=config.document_mask,
    )

    # model: the expanded base, wrapped once for every stage's parts
    load_kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype_name)}
    if config.attn_implementation:
        load_kwargs["attn_implementation"] = config.attn_implementation
    base = load_pretrained(AutoModelForCausalLM, model_dir, **load_kwargs)
    rows = base.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise XlangError(
            f"tokenizer has {len(tokenizer)} tokens but the model only {rows} embedding rows; "
            "pretrain needs the model the embedding stage wrote"
        )
    prepared = prepare_model(base, new_token_ids or [], config, mixed=mixed, compile_layers=compile_layers)
    trainable, wrapper, selections = prepared.trainable, prepared.wrapper, prepared.selections
    fsdp = distributed == "fsdp" and accelerator.num_processes > 1
    partitioned = fsdp or partitions_parameters(accelerator)
    if partitioned and any(masked for _, masked in selections):
        mode = "fsdp" if fsdp else "DeepSpeed ZeRO-3"
        raise XlangError(
            f"{mode} cannot train part of a whole vocabulary matrix (a stage with 'new-rows' and 'output' or "
            "'embeddings'): its row mask would be lost when the matrix is sharded; use distributed=ddp or "
            "DeepSpeed ZeRO-2"
        )
    # the run's record only once every check has passed: a refused run leaves no folder whose configuration
    # would refuse the corrected one
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not existing.is_file():
            _write_json_atomic(existing, {"config_hash": run_hash, "fingerprint": fingerprint})
    accelerator.wait_for_everyone()
    # by name: sharding replaces the parameter objects, names stay
    stage_names = [{n for n, p in wrapper.named_parameters() if predicate(n, p)} for predicate, _ in selections]
    evaluate = eval_fn or (
        make_bpc_eval(tokenizer, validation, window=config.eval_window, stride=config.eval_window // 2)
        if validation
        else None
    )

    # stages, one engine run each; the data stream continues where the previous stage stopped
    stage_runs = []
    block_offset = 0
    step_offset = 0
    for index, (stage, (_, masked)) in enumerate(zip(stages, selections, strict=True)):
        handles = add_row_masks(masked, trainable.new_token_ids)
        try:
            result = run_training(
                wrapper,
                stream.make_batches(block_offset),
                config.loop_config(stage, mixed_precision=mixed),
                out_dir / "stages" / stage.name,
                trainable=lambda name, param, names=stage_names[index]: name in names,
                param_groups=new_rows_groups(stage.lr * config.new_rows_lr_scale)
                if config.new_rows_lr_scale != 1.0
                else None,
                loss_fn=fused_loss,
                eval_fn=evaluate,
                accelerator=accelerator,
                fingerprint={"run": run_hash, "stage": index, "parts": list(stage.train)},
                name=f"pretrain:{stage.name}",
                eval_at_start=index == 0,
                fsdp=fsdp,
            )
        finally:
            for handle in handles:
                handle.remove()
        stage_runs.append((stage, step_offset, result))
        block_offset += stage.steps * stream.blocks_per_step(accelerator.num_processes)
        step_offset += stage.steps

    # outputs: adapter, merged model, report; main process only, each folder renamed into place
    adapter_dir = out_dir / "adapter" if trainable.has_adapter else None
    model_out = out_dir / "model"
    curve = None
    summary: dict[str, Any] = {}
    if accelerator.is_main_process:
        if partitioned:  # the trained model is in shards: export from a whole copy with the gathered weights
            trainable = _whole_copy(model_dir, load_kwargs, new_token_ids or [], config, mixed, stage_runs)
        trainable.model.to("cpu")
        if adapter_dir is not None:
            staging = out_dir / ".adapter.tmp"
            if staging.exists():
                shutil.rmtree(staging)
            trainable.model.save_pretrained(str(staging))
            _replace_dir(staging, adapter_dir)
        merged = trainable.model.merge_and_unload() if trainable.has_adapter else trainable.model
        merged.to(getattr(torch, dtype_name))
        merged.config.use_cache = True
        staging = out_dir / ".model.tmp"
        if staging.exists():
            shutil.rmtree(staging)
        merged.save_pretrained(str(staging), safe_serialization=True)
        tokenizer.save_pretrained(str(staging))
        _replace_dir(staging, model_out)

        curve = plot_curves(
            [(stage.name, offset, result.metrics_path) for stage, offset, result in stage_runs],
            out_dir / "report" / "curves.png",
            languages=list(validation),
            validation_chars=config.eval_max_chars if eval_fn is None else None,
        )
        summary = _summary(stage_runs, shares, stream, started, trainable.kind, dtype_name, mixed, compile_layers)
        summary["processes"] = accelerator.num_processes
        summary["sharded"] = sharding_of(accelerator, fsdp)
        _write_json_atomic(out_dir / "report" / "summary.json", summary)
        result_obj = PretrainResult(out_dir, model_out, adapter_dir, curve, summary)
        _write_json_atomic(out_dir / RESULT_FILE, result_obj.to_json())
    accelerator.wait_for_everyone()
    return PretrainResult(out_dir, model_out, adapter_dir, curve, summary)


def _whole_copy(
    model_dir: Path,
    load_kwargs: Mapping[str, Any],
    new_token_ids: Sequence[int],
    config: PretrainConfig,
    mixed: str,
    stage_runs: Sequence[tuple[Any, int, Any]],
) -> Any:
    """An unsharded model with every stage's final trainable weights, loaded in stage order."""
    from transformers import AutoModelForCausalLM

    from xlang.train.engine import load_trainable

    base = load_pretrained(AutoModelForCausalLM, model_dir, **load_kwargs)
    prepared = prepare_model(base, new_token_ids, config, mixed=mixed, compile_layers=False)
    for _, _, result in stage_runs:
        load_trainable(prepared.wrapper, result.checkpoint / "trainable.safetensors")
    return prepared.trainable


def _summary(
    stage_runs: Sequence[tuple[Any, int, Any]],
    shares: Mapping[str, float],
    stream: Any,
    started: float,
    kind: str,
    dtype: str,
    mixed: str,
    compiled: bool,
) -> dict[str, Any]:
    from xlang.train.engine import read_metrics

    evals = [r for _, _, result in stage_runs for r in read_metrics(result.metrics_path) if r.get("kind") == "eval"]
    first = evals[0] if evals else {}
    last = evals[-1] if evals else {}
    rates = [result.median_tokens_per_s() for _, _, result in stage_runs]
    return {
        "stages": [
            {
                "name": stage.name,
                "train": list(stage.train),
                "steps": stage.steps,
                "lr": stage.lr,
                "final_loss": result.final_loss,
                "tokens_per_s": result.median_tokens_per_s(),
                "resumed_from": result.resumed_from,
            }
            for stage, _, result in stage_runs
        ],
        "final_loss": stage_runs[-1][2].final_loss if stage_runs else None,
        "bpc_before": {k[4:]: v for k, v in first.items() if k.startswith("bpc/")},
        "bpc_after": {k[4:]: v for k, v in last.items() if k.startswith("bpc/")},
        "mix": dict(shares),
        "mix_measured": stream.token_shares(64),
        "tokens_per_s": next((r for r in reversed(rates) if r), None),
        "trainable": kind,
        "dtype": dtype,
        "mixed_precision": mixed,
        "compiled_layers": compiled,
        "seconds": round(time.time() - started, 1),
    }
