"""LLaVA training stages on the shared engine: stage 1 aligns the projector on captions, stage 2 tunes
projector + LoRA (or everything) on multilingual visual instructions.

Why it looks like this:
- Only assistant tokens carry loss. Labels come from the chat template itself: each assistant turn's
  text is located by rendering the conversation up to that turn with and without the answer, and the
  tokens inside that span (answer + end-of-turn token) are the labels. This works for any template
  whose renderings extend each other, which the check enforces.
- The loss is computed on the selected answer positions only (the image and prompt positions never
  reach the output layer) with the engine's fused, chunked cross-entropy.
- The vision tower stays frozen (as in LLaVA-1.5 and X-LLaVA); with a modest number of distinct
  images its features are computed once and reused (`cache_vision_features`).
- Sampling per language follows `lang_weights`; the order is a pure function of the seed, so a
  resumed run sees exactly the samples the interrupted one would have.
- Every sample is prepared (checked, tokenized, image decoded) before the engine starts: a bad sample
  is reported and skipped, and a stage that cannot run stops before writing anything.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xlang.assets.loading import load_pretrained
from xlang.errors import XlangError
from xlang.train.accelerators import (
    check_distributed,
    layers_may_compile,
    make_accelerator,
    partitions_parameters,
    sharding_of,
)
from xlang.vlm.config import AlignConfig, InstructConfig, VitStageConfig
from xlang.vlm.data import IMAGE_PLACEHOLDER, SkippedSample, check_record, to_messages, write_skipped

if TYPE_CHECKING:
    import torch

__all__ = ["AlignConfig", "InstructConfig", "VitStageConfig", "VitStageResult", "train_vit_stage"]

IGNORE_INDEX = -100
MODEL_FOLDER = "model"
RUN_FOLDER = "run"
SKIPPED_FILE = "skipped.jsonl"
SUMMARY_FILE = "stage.json"
OUTPUT_ONLY_FIELDS: tuple[str, ...] = (
    "save_every",
    "keep_checkpoints",
    "log_every",
    "progress",
    "tensorboard",
    "eval_samples",
    "on_bad_sample",
    "export_adapter",
)
"""Settings that do not change the trained weights: a run may resume with other values."""


# ----------------------------------------------------------------------------------------- samples


@dataclass
class Sample:
    """One tokenized conversation."""

    id: str
    lang: str
    input_ids: list[int]
    labels: list[int]
    image: int | None
    """Index into the stage's image table, or None for a text-only sample."""


@dataclass
class PreparedData:
    samples: list[Sample]
    images: list[Any]
    """Image references (or PIL images), in first-use order."""
    skipped: list[SkippedSample] = field(default_factory=list)


def _render(tokenizer: Any, template: str, messages: list[dict[str, str]], lang: str, generation: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=generation, lang=lang
    )


def encode_conversation(
    messages: list[dict[str, str]],
    tokenizer: Any,
    chat_template: str,
    *,
    lang: str,
    num_image_tokens: int,
    image_token: str = IMAGE_PLACEHOLDER,
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of a conversation; labels are -100 except on each assistant answer and the
    end-of-turn token that closes it. `<image>` placeholders become `num_image_tokens` image tokens."""

    def expand(text: str) -> str:
        return text.replace(image_token, image_token * num_image_tokens)

    spans: list[tuple[int, int]] = []
    previous = ""
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = expand(_render(tokenizer, chat_template, messages[:index], lang, True))
        full = expand(_render(tokenizer, chat_template, messages[: index + 1], lang, False))
        if not prompt.startswith(previous) or not full.startswith(prompt):
            raise XlangError(
                "the chat template does not render a conversation as a growing prefix (turn "
                f"{index}); assistant-only loss masking needs one. Use a template like ChatML or Llama's"
            )
        answer = full[len(prompt) :]
        spans.append((len(prompt), len(prompt) + len(answer.rstrip())))
        previous = full
    return _labelled(tokenizer, previous, spans)


def encode_plain(
    messages: list[dict[str, str]], tokenizer: Any, *, num_image_tokens: int, image_token: str = IMAGE_PLACEHOLDER
) -> tuple[list[int], list[int]]:
    """LLaVA-1.5's stage-1 format: image tokens, newline, the first answer, end token; no chat template.

    Captions need no instruction or system prompt to align the projector, and the sequence is about half
    as long. Labels cover the answer and the end token."""
    first = next(m for m in messages if m["role"] == "user")
    answer = next(m for m in messages if m["role"] == "assistant")["content"].strip()
    prefix = (image_token * num_image_tokens + "\n") if image_token in first["content"] else ""
    end = tokenizer.eos_token or ""
    text = prefix + answer + end
    return _labelled(tokenizer, text, [(len(prefix), len(text))])


def _labelled(tokenizer: Any, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Token ids of `text`; labels only on tokens that lie entirely inside one of the character `spans`."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoded["input_ids"])
    labels = [IGNORE_INDEX] * len(input_ids)
    span_index = 0
    for position, (start, end) in enumerate(encoded["offset_mapping"]):
        while span_index < len(spans) and start >= spans[span_index][1]:
            span_index += 1
        if span_index == len(spans):
            break
        low, high = spans[span_index]
        if start >= low and end <= high and end > start:
            labels[position] = input_ids[position]
    return input_ids, labels


def prepare_samples(
    records: Sequence[dict[str, Any]],
    processor: Any,
    *,
    image_token_id: int,
    num_image_tokens: int,
    config: VitStageConfig,
    default_lang: str,
) -> PreparedData:
    """Check, filter and tokenize records; decode every image once to catch bad files early."""
    from xlang.vlm.images import load_image

    tokenizer = processor.tokenizer
    template = processor.chat_template
    if not template:
        raise XlangError("the LLaVA processor has no chat template; assemble the model with xlang.vlm.assemble")
    image_token = getattr(processor, "image_token", IMAGE_PLACEHOLDER)
    wanted_tasks = set(config.tasks)
    wanted_langs = set(config.lang_weights)
    image_index: dict[str, int] = {}
    images: list[Any] = []
    bad_images: dict[str, str] = {}
    samples: list[Sample] = []
    skipped: list[SkippedSample] = []
    for record in records:
        source, rid = str(record.get("source", "?")), str(record.get("id", "?"))
        if wanted_tasks and record.get("task") not in wanted_tasks:
            continue
        lang = str(record.get("lang") or default_lang)
        if wanted_langs and lang not in wanted_langs:
            continue

        def skip(reason: str, _source: str = source, _rid: str = rid) -> None:
            skipped.append(SkippedSample(_source, _rid, reason))

        problem = check_record(record)
        if problem:
            skip(problem)
            continue
        ref = record.get("image")
        slot = None
        if ref not in (None, ""):
            key = ref if isinstance(ref, str) else f"{source}#{rid}"
            if key in bad_images:
                skip(bad_images[key])
                continue
            if key not in image_index:
                try:
                    load_image(ref)
                except XlangError as error:
                    bad_images[key] = str(error)
                    skip(str(error))
                    continue
                image_index[key] = len(images)
                images.append(ref)
            slot = image_index[key]
        if config.prompt_format == "plain":
            input_ids, labels = encode_plain(
                to_messages(record), tokenizer, num_image_tokens=num_image_tokens, image_token=image_token
            )
        else:
            input_ids, labels = encode_conversation(
                to_messages(record),
                tokenizer,
                template,
                lang=lang,
                num_image_tokens=num_image_tokens,
                image_token=image_token,
            )
        found = sum(1 for token in input_ids if token == image_token_id)
        expected = num_image_tokens if slot is not None else 0
        if found != expected:
            skip(
                f"{found} image tokens after tokenization, the tower gives {expected} (is '{image_token}' in the text?)"
            )
            continue
        if all(label == IGNORE_INDEX for label in labels):
            skip("no assistant token survived tokenization")
            continue
        if len(input_ids) > config.max_length:
            skip(f"{len(input_ids)} tokens, longer than max_length {config.max_length}")
            continue
        samples.append(Sample(rid, lang, input_ids, labels, slot))
    return PreparedData(samples=samples, images=images, skipped=skipped)


# ----------------------------------------------------------------------------------------- order


def _stable_int(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")


def sample_order(samples: Sequence[Sample], lang_weights: dict[str, float], seed: int) -> Iterator[int]:
    """Endless sample indices: a language drawn by weight, then that language's next sample in a seeded
    permutation (a new one per pass). Pure function of its arguments."""
    by_lang: dict[str, list[int]] = {}
    for index, sample in enumerate(samples):
        by_lang.setdefault(sample.lang, []).append(index)
    langs = sorted(by_lang)
    if lang_weights:
        weights = [lang_weights.get(lang, 0.0) for lang in langs]
    else:
        weights = [float(len(by_lang[lang])) for lang in langs]
    rng = random.Random(_stable_int("vit-order", seed))
    passes = dict.fromkeys(langs, 0)
    cursors = dict.fromkeys(langs, 0)
    orders = {lang: _permutation(by_lang[lang], seed, lang, 0) for lang in langs}
    while True:
        lang = rng.choices(langs, weights=weights)[0]
        if cursors[lang] == len(orders[lang]):
            passes[lang] += 1
            cursors[lang] = 0
            orders[lang] = _permutation(by_lang[lang], seed, lang, passes[lang])
        yield orders[lang][cursors[lang]]
        cursors[lang] += 1


def _permutation(indices: list[int], seed: int, lang: str, pass_index: int) -> list[int]:
    order = list(indices)
    random.Random(_stable_int("vit-pass", seed, lang, pass_index)).shuffle(order)
    return order


# ----------------------------------------------------------------------------------------- batches


class VitBatches:
    """The engine's `make_batches`: padded micro-batches with pixel values or cached tower features."""

    def __init__(
        self,
        data: PreparedData,
        *,
        image_processor: Any,
        pad_id: int,
        micro_batch: int,
        grad_accum: int,
        lang_weights: dict[str, float],
        seed: int,
        features: Any = None,
    ) -> None:
        self.data = data
        self.image_processor = image_processor
        self.pad_id = pad_id
        self.micro_batch = micro_batch
        self.grad_accum = grad_accum
        self.lang_weights = lang_weights
        self.seed = seed
        self.features = features

    def pixel_values(self, slots: Sequence[int]) -> torch.Tensor:
        from xlang.vlm.images import load_image

        images = [load_image(self.data.images[slot]) for slot in slots]
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def collate(self, indices: Sequence[int]) -> dict[str, Any]:
        import torch

        samples = [self.data.samples[i] for i in indices]
        width = max(len(s.input_ids) for s in samples)
        input_ids = torch.full((len(samples), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(samples), width), dtype=torch.long)
        for row, sample in enumerate(samples):
            n = len(sample.input_ids)
            input_ids[row, :n] = torch.tensor(sample.input_ids)
            labels[row, :n] = torch.tensor(sample.labels)
            attention[row, :n] = 1
        batch: dict[str, Any] = {"input_ids": input_ids, "labels": labels, "attention_mask": attention}
        slots = [s.image for s in samples if s.image is not None]
        if slots:
            if self.features is not None:
                batch["image_features"] = self.features[slots]
            else:
                batch["pixel_values"] = self.pixel_values(slots)
        return batch

    def eval_batches(self, count: int) -> list[dict[str, Any]]:
        """Micro-batches of a fixed, seeded choice of `count` samples."""
        order = list(range(len(self.data.samples)))
        random.Random(_stable_int("vit-eval", self.seed)).shuffle(order)
        chosen = order[:count]
        return [self.collate(chosen[i : i + self.micro_batch]) for i in range(0, len(chosen), self.micro_batch)]

    def __call__(self, step_offset: int, rank: int, world: int) -> Iterator[dict[str, Any]]:
        order = sample_order(self.data.samples, self.lang_weights, self.seed)
        skip = step_offset * self.grad_accum * world * self.micro_batch
        for _ in range(skip):
            next(order)
        index = 0
        while True:
            group = [next(order) for _ in range(self.micro_batch)]
            owner = index % world
            index += 1
            if owner == rank:
                yield self.collate(group)


# ----------------------------------------------------------------------------------------- the stage


@dataclass
class VitStageResult:
    model_dir: Path
    """The trained LLaVA folder (plain transformers)."""
    steps: int
    first_loss: float | None
    final_loss: float | None
    samples: int
    skipped: list[SkippedSample]
    losses: list[float]
    eval_loss_start: float | None = None
    eval_loss_end: float | None = None
    already_done: bool = False
    peak_memory_bytes: int | None = None
    processes: int = 1
    """How many processes trained the stage (sharded across them when `sharded`)."""
    sharded: str | None = None
    """`fsdp` or `deepspeed` (`xlang.train.accelerators.sharding_of`); None: every process held it all."""


def _sharding_in(summary: dict[str, Any]) -> str | None:
    """The `sharded` of a stage.json; summaries written before DeepSpeed say `true` for FSDP."""
    value = summary.get("sharded")
    return "fsdp" if value is True else (value or None)


def _device_defaults(config: VitStageConfig, device_type: str) -> tuple[Any, str]:
    import torch

    if config.dtype == "auto":
        dtype = torch.bfloat16 if device_type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, config.dtype)
    if config.mixed_precision == "auto":
        mixed = "bf16" if device_type == "cuda" else "no"
    else:
        mixed = config.mixed_precision
    return dtype, mixed


def _loop_config(config: VitStageConfig, mixed_precision: str) -> Any:
    from xlang.train.config import TrainLoopConfig

    return TrainLoopConfig(
        steps=config.steps,
        lr=config.lr,
        warmup_steps=config.warmup_steps,
        schedule=config.schedule,
        min_lr_ratio=config.min_lr_ratio,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        micro_batch=config.micro_batch,
        grad_accum=config.grad_accum,
        seed=config.seed,
        mixed_precision=mixed_precision,  # type: ignore[arg-type]
        eval_every=config.steps if config.eval_samples else 0,
        save_every=config.save_every,
        keep_checkpoints=config.keep_checkpoints,
        log_every=config.log_every,
        progress=config.progress,
        tensorboard=config.tensorboard,
    )


def _records_digest(records: Sequence[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for record in records:
        light = {k: v for k, v in record.items() if isinstance(v, str | int | float | list | dict | type(None))}
        digest.update(json.dumps(light, sort_keys=True, ensure_ascii=False, default=str).encode())
    return digest.hexdigest()[:16]


def compute_features(llava: Any, batches: VitBatches, slots: int, *, batch_size: int = 8) -> torch.Tensor:
    """Tower features (before the projector) of every image of the stage, in slot order."""
    import torch

    from xlang.vlm.modeling import vision_features

    tower = llava.model.vision_tower
    dtype = next(tower.parameters()).dtype
    device = next(tower.parameters()).device
    chunks = []
    with torch.no_grad():
        for start in range(0, slots, batch_size):
            pixels = batches.pixel_values(list(range(start, min(slots, start + batch_size))))
            chunks.append(vision_features(llava, pixels.to(device, dtype)).float().cpu())
    return torch.cat(chunks) if chunks else torch.empty(0)


def _float_trainable(llava: Any, config: VitStageConfig) -> None:
    """Trainable weights in float32 (frozen ones stay in the stage's dtype)."""
    llava.model.multi_modal_projector.float()
    if config.trainable == "full":
        llava.model.language_model.float()
        llava.lm_head.float()


def _training_module(llava: Any, config: VitStageConfig, image_token_id: int) -> Any:
    """`llava` as the engine trains it: LoRA adapters (seeded: their initialization is part of the run's
    identity) when the stage trains them, in the loss-returning wrapper. Also how the export of a sharded
    run rebuilds a whole copy, so both have the same parameter names."""
    import torch

    from xlang.vlm.modeling import LlavaForTraining, apply_lora

    if config.trainable == "lora":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            llava = apply_lora(llava, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout)
    return LlavaForTraining(llava, image_token_id=image_token_id)


def train_vit_stage(
    model_dir: Path,
    records: Sequence[dict[str, Any]],
    config: VitStageConfig,
    out_dir: Path,
    *,
    default_lang: str,
    accelerator: Any = None,
    distributed: str = "ddp",
) -> VitStageResult:
    """Train one LLaVA stage from the folder `model_dir`; the trained model lands in `out_dir/model`.

    `records`: LLaVA conversation records (`xlang.vlm.data`). A record without `lang` counts as
    `default_lang`, which the caller chooses (the recipe passes the target language): it picks the chat
    template's system prompt and the `lang_weights` share of such records. Resumes from `out_dir`'s last
    checkpoint; a finished stage with the same settings returns at once. Writes `out_dir/skipped.jsonl`
    (samples left out, with file, id and reason) and `out_dir/stage.json` (a summary).

    `distributed`: `ddp` (every process holds the whole model; also one process), `fsdp` (FULL_SHARD with
    FSDP2 across the launched processes, the decoder and tower layers as units; see `xlang.train.engine`) or
    `deepspeed` (ZeRO through accelerate; see `xlang.train.accelerators`). In every mode the folder written is
    the plain one a single process writes.
    """
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from xlang.train.engine import load_trainable, read_metrics, run_training
    from xlang.vlm.export import PROVENANCE_FILE, save_llava
    from xlang.vlm.modeling import compile_language_layers, merged_llava, trainable_selector

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    check_distributed(distributed)
    if not (model_dir / "config.json").is_file():
        raise XlangError(f"LLaVA folder {model_dir} has no config.json; run the assembly stage first")
    fingerprint = {
        "vit_stage": config.model_dump(mode="json", exclude=set(OUTPUT_ONLY_FIELDS)),
        "model": str(model_dir.resolve()),
        "records": _records_digest(records),
        "default_lang": default_lang,
    }
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
    target = out_dir / MODEL_FOLDER
    summary_path = out_dir / SUMMARY_FILE
    if (target / PROVENANCE_FILE).is_file() and summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("digest") == digest:
            return VitStageResult(
                model_dir=target,
                steps=summary["steps"],
                first_loss=summary.get("first_loss"),
                final_loss=summary.get("final_loss"),
                samples=summary["samples"],
                skipped=[SkippedSample(**s) for s in summary.get("skipped", [])],
                losses=summary.get("losses", []),
                eval_loss_start=summary.get("eval_loss_start"),
                eval_loss_end=summary.get("eval_loss_end"),
                already_done=True,
                processes=summary.get("processes", 1),
                sharded=_sharding_in(summary),
            )

    if accelerator is None:
        cuda = torch.cuda.is_available()
        # bf16 is the engine's own autocast; only fp16 needs accelerate's scaler. One precision per process,
        # so a pretrain stage earlier in the same process does not clash with this one.
        wanted = _device_defaults(config, "cuda" if cuda else "cpu")[1]
        accelerator = make_accelerator(mixed_precision=wanted, cuda=cuda, distributed=distributed)
    dtype, mixed = _device_defaults(config, accelerator.device.type)
    processor = load_pretrained(AutoProcessor, model_dir, weights=False)
    llava = load_pretrained(LlavaForConditionalGeneration, model_dir, dtype=dtype)
    image_token_id = int(llava.config.image_token_index)
    num_image_tokens = int(llava.config.image_seq_length)

    data = prepare_samples(
        records,
        processor,
        image_token_id=image_token_id,
        num_image_tokens=num_image_tokens,
        config=config,
        default_lang=default_lang,
    )
    for sample in data.skipped:
        print(f"xlang: skipped {sample.line()}")
    if data.skipped and config.on_bad_sample == "stop":
        listing = "\n  ".join(s.line() for s in data.skipped[:10])
        raise XlangError(
            f"{len(data.skipped)} bad sample(s) and on_bad_sample='stop'; fix or remove them:\n  {listing}"
        )
    if not data.samples:
        what = f"task(s) {', '.join(config.tasks)}" if config.tasks else "any task"
        raise XlangError(
            f"stage {config.stage}: no usable sample ({len(records)} record(s) given, {len(data.skipped)} skipped) "
            f"for {what}" + (f" in language(s) {', '.join(config.lang_weights)}" if config.lang_weights else "")
        )
    langs_present = {s.lang for s in data.samples}
    if config.lang_weights and not langs_present & set(config.lang_weights):
        raise XlangError(f"no sample in any weighted language ({', '.join(config.lang_weights)})")

    _float_trainable(llava, config)
    batches = VitBatches(
        data,
        image_processor=processor.image_processor,
        pad_id=processor.tokenizer.pad_token_id,
        micro_batch=config.micro_batch,
        grad_accum=config.grad_accum,
        lang_weights=dict(config.lang_weights),
        seed=config.seed,
    )
    use_cache = config.cache_vision_features == "yes" or (
        config.cache_vision_features == "auto" and len(data.images) <= 512
    )
    llava.model.vision_tower.to(accelerator.device)
    if use_cache and data.images:
        batches.features = compute_features(llava, batches, len(data.images))
    module = _training_module(llava, config, image_token_id)
    if config.gradient_checkpointing:
        module.base().model.language_model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    wants_compile = config.compile == "yes" or (config.compile == "auto" and accelerator.device.type == "cuda")
    if wants_compile and layers_may_compile(config.compile, accelerator):
        compile_language_layers(module)
    eval_fn = None
    if config.eval_samples:
        fixed = batches.eval_batches(config.eval_samples)

        def eval_fn(model: Any) -> dict[str, float]:
            device = next(model.parameters()).device
            total, tokens = 0.0, 0
            for batch in fixed:
                loss_sum, n_tokens = model(**{k: v.to(device) for k, v in batch.items()})
                total, tokens = total + float(loss_sum), tokens + int(n_tokens)
            return {"loss": total / max(tokens, 1)}

    fsdp = distributed == "fsdp" and accelerator.num_processes > 1
    sharding = sharding_of(accelerator, fsdp)
    result = run_training(
        module,
        batches,
        _loop_config(config, mixed),
        out_dir / RUN_FOLDER,
        trainable=trainable_selector(config.trainable),
        loss_fn=lambda model, batch: model(**batch),
        eval_fn=eval_fn,
        accelerator=accelerator,
        fingerprint=fingerprint,
        name=f"vit-{config.stage}",
        fsdp=fsdp,
    )
    metrics = read_metrics(result.metrics_path)
    losses = [record["loss"] for record in metrics if record.get("kind") == "train"]
    evals = [record["loss"] for record in metrics if record.get("kind") == "eval"]
    if accelerator.is_main_process:
        if fsdp or partitions_parameters(accelerator):  # in shards: export from a whole copy, gathered weights
            whole = load_pretrained(LlavaForConditionalGeneration, model_dir, dtype=dtype)
            _float_trainable(whole, config)
            module = _training_module(whole, config, image_token_id)
            load_trainable(module, result.checkpoint / "trainable.safetensors")
        else:
            module = accelerator.unwrap_model(module) if hasattr(accelerator, "unwrap_model") else module
        if config.export_adapter and config.trainable == "lora":
            module.llava.save_pretrained(out_dir / "adapter")
        final = merged_llava(module)
        final.to(torch.float32 if dtype == torch.float32 else dtype)
        save_llava(
            final,
            processor,
            target,
            provenance={
                "stage": config.stage,
                "from": str(model_dir),
                "digest": digest,
                "final_loss": result.final_loss,
            },
        )
        write_skipped(data.skipped, out_dir / SKIPPED_FILE)
        summary = {
            "digest": digest,
            "stage": config.stage,
            "steps": config.steps,
            "samples": len(data.samples),
            "images": len(data.images),
            "first_loss": losses[0] if losses else None,
            "final_loss": result.final_loss,
            "losses": losses,
            "eval_loss_start": evals[0] if evals else None,
            "eval_loss_end": evals[-1] if len(evals) > 1 else None,
            "skipped": [vars(s) for s in data.skipped],
            "peak_memory_bytes": result.peak_memory_bytes,
            "processes": accelerator.num_processes,
            "sharded": sharding,
        }
        tmp = summary_path.with_name(f".{summary_path.name}.tmp")
        tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False))
        tmp.replace(summary_path)
    accelerator.wait_for_everyone()
    return VitStageResult(
        model_dir=target,
        steps=config.steps,
        first_loss=losses[0] if losses else None,
        final_loss=result.final_loss,
        samples=len(data.samples),
        skipped=data.skipped,
        losses=losses,
        eval_loss_start=evals[0] if evals else None,
        eval_loss_end=evals[-1] if len(evals) > 1 else None,
        peak_memory_bytes=result.peak_memory_bytes,
        processes=accelerator.num_processes,
        sharded=sharding,
    )
