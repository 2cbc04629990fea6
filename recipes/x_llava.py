"""The X-LLaVA recipe: expand → init → pretrain → align → vit → evaluate.

Read top to bottom: each stage is a config (only the knobs it uses) and a short function that looks
its strategies up by name, hands texts and folders to the stage code and says what it wrote. The stage
names are part of the CLI (`xlang extend --until STAGE`) and of every run folder: keep them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from xlang import resolve
from xlang.runner import Recipe, Stage, StageContext, StageOutput
from xlang.train.config import PretrainConfig
from xlang.vlm.config import AlignConfig, AssembleConfig, InstructConfig


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- expand --------------------------------------------------------------------------------------------


class ExpandConfig(_Config):
    budget: int = Field(default=8000, gt=0)
    """New vocabulary entries (the intermediate entries a merge path needs count too)."""
    candidate_sources: tuple[str, ...] | None = None
    """Names of candidate sources; default: the language's defaults."""
    expander: str | None = None
    """Name of the expander; default: the language's default."""
    user_tokens: tuple[str, ...] = ()
    """Tokens added whatever their gain."""
    pad_to_multiple_of: int = Field(default=64, ge=0)


def expand(context: StageContext) -> StageOutput:
    from xlang.tokenizer import expand_tokenizer, tokenizer_stats

    config: ExpandConfig = context.config
    language = context.language
    source_names = config.candidate_sources or language.defaults.candidate_sources
    sources = {name: resolve.strategy("token_candidate_sources", name) for name in source_names}
    expander = resolve.strategy("tokenizer_expanders", config.expander or language.defaults.tokenizer_expander)
    result = expand_tokenizer(
        base=context.base_model,
        language=language,
        train_texts=resolve.corpus_texts(language, "train", context.settings),
        budget=config.budget,
        out_dir=context.out_dir / "tokenizer",
        candidate_sources=sources,
        expander=expander,
        required_tokens=config.user_tokens,
        pad_to_multiple_of=config.pad_to_multiple_of,
    )
    rows = tokenizer_stats(
        context.out_dir / "tokenizer", resolve.validation_texts(language, context.settings), base=result.base
    )
    metrics: dict[str, Any] = {
        "family": result.family,
        "base_vocab_size": result.base_vocab_size,
        "vocab_size": result.vocab_size,
        "new_tokens": len(result.new_token_ids),
        "seconds": result.seconds,
    }
    for row in rows:
        metrics[f"tokens_per_char/{row.language}/base"] = round(row.base_tokens_per_char, 4)
        metrics[f"tokens_per_char/{row.language}"] = round(row.tokens_per_char, 4)
        metrics[f"identical_ids/{row.language}"] = round(row.identical_share, 4)
    lines = [
        "## expand",
        "",
        f"{len(result.new_token_ids):,} new {language.name} tokens ({result.family}), vocabulary "
        f"{result.base_vocab_size:,} → {result.vocab_size:,}, in {result.seconds:.1f} s.",
        "",
        "| language | tokens/char base | tokens/char expanded | texts with identical ids |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r.language} | {r.base_tokens_per_char:.3f} | {r.tokens_per_char:.3f} | {r.identical_share:.1%} |"
        for r in rows
    ]
    whole = [token for token in result.new_tokens if "\ufffd" not in token and token.strip()]
    lines += ["", "Longest new tokens: " + ", ".join(f"`{t}`" for t in sorted(whole, key=len)[-16:])]
    return StageOutput(metrics=metrics, report="\n".join(lines))


# --- init ----------------------------------------------------------------------------------------------


class InitConfig(_Config):
    initializer: str | None = None
    """Name of the embedding initializer; default: the language's default."""
    seed: int = 0
    fit_steps: int | None = None
    """Steps of a fitting initializer (`subword-fit`); default: its own (150)."""
    row_steps: int | None = None
    """Steps of `subword-fit`'s second phase (a free residual per new row); default: its own (0)."""


def init(context: StageContext) -> StageOutput:
    from xlang.embeddings import initialize_embeddings

    config: InitConfig = context.config
    name = config.initializer or context.language.defaults.embedding_initializer
    initializer = resolve.strategy("embedding_initializers", name)
    # every built-in ignores the options it does not use; `subword-freq` counts frequencies on the texts,
    # `subword-fit` also fits on them and on the companion languages' text (English), which it must keep.
    # Whole documents, not paragraphs: the fit must see text in context, as BPC and users read it.
    companions = resolve.companion_languages(context.language)[1:]
    options: dict[str, Any] = {
        "seed": config.seed,
        "texts": resolve.corpus_documents(context.language, "train", context.settings),
        "keep_texts": [
            text for spec in companions for text in resolve.corpus_documents(spec, "train", context.settings)
        ],
    }
    for knob in ("fit_steps", "row_steps"):
        if getattr(config, knob) is not None:
            options[knob] = getattr(config, knob)
    result = initialize_embeddings(
        context.base_model,
        _expanded_tokenizer(context),
        context.out_dir / "model",
        initializer,
        initializer_name=name,
        options=options,
    )
    report = (
        f"## init\n\n{result.new_rows:,} new embedding rows ({'tied' if result.tied else 'untied'} embeddings), "
        f"initializer `{name}`, vocabulary {result.base_vocab_size:,} → {result.vocab_size:,}, "
        f"{result.seconds:.1f} s. The evaluate stage measures what this model scores before any training."
    )
    metrics = {
        "initializer": name,
        "new_rows": result.new_rows,
        "vocab_size": result.vocab_size,
        "seconds": result.seconds,
    }
    return StageOutput(metrics=metrics, report=report, model_dir="model")


# --- pretrain ------------------------------------------------------------------------------------------


def pretrain(context: StageContext) -> StageOutput:
    from xlang.train import pretrain as run_pretraining

    config: PretrainConfig = context.config
    language = context.language
    tokenizer_dir = _expanded_tokenizer(context)
    languages = resolve.companion_languages(language)
    texts = {spec.code: resolve.corpus_dataset(spec, "train", context.settings) for spec in languages}
    validation = resolve.validation_texts(language, context.settings)
    parallel = resolve.parallel_records(language, "train", context.settings) or None
    result = run_pretraining(
        model_dir=context.latest_model(),
        tokenizer_dir=tokenizer_dir,
        texts_by_language=texts,
        parallel=parallel,
        config=config,
        out_dir=context.work_dir,
        new_token_ids=_new_token_ids(context),
        validation_by_language=validation,
    )
    for name in ("model", "adapter", "report"):
        if (context.work_dir / name).is_dir():
            shutil.move(str(context.work_dir / name), context.out_dir / name)
    for path in context.work_dir.iterdir():
        if path.is_file():
            shutil.copy2(path, context.out_dir / path.name)
    summary = dict(result.summary)
    schedule = ", ".join(
        f"{part['name']}: {part['steps']} steps training {'+'.join(part['train'])}"
        for part in summary.get("stages", [])
        if isinstance(part, dict)
    )
    lines = [
        "## pretrain",
        "",
        f"Schedule: {schedule or config.steps}; "
        f"language mix {summary.get('mix_measured', summary.get('mix', config.mix))}; "
        f"{summary.get('tokens_per_s', 0):,.0f} tokens/s.",
    ]
    before, after = summary.get("bpc_before") or {}, summary.get("bpc_after") or {}
    if before and after:
        lines += ["", "| validation | bits/char before | bits/char after |", "|---|---|---|"]
        lines += [f"| {key} | {before[key]:.3f} | {after.get(key, float('nan')):.3f} |" for key in before]
    if (context.out_dir / "report" / "curves.png").is_file():
        lines += ["", "![loss and bits per character](pretrain/report/curves.png)"]
    return StageOutput(metrics=summary, report="\n".join(lines), model_dir="model")


# --- align (LLaVA stage 1) and vit (stage 2) -------------------------------------------------------------


EVAL_SAMPLES = 16
"""A fixed set of training samples whose answer loss both LLaVA stages measure before and after training:
the logged loss is a mean over a few random micro-batches of mixed languages and tasks, too noisy for
"did it learn?" at demo step counts."""


class AlignStageConfig(_Config):
    """Assembly of the LLaVA plus stage 1 (projector only, on captions)."""

    assemble: AssembleConfig = AssembleConfig(image_size=112)
    """112 px: 64 image tokens from the embedded DINOv2 tower, sized for a CPU demo; set `image_size`
    to null for towers with a fixed input size (CLIP, SigLIP)."""
    train: AlignConfig = AlignConfig(steps=24, eval_samples=EVAL_SAMPLES)
    data: str = "seed://?split=train"
    """Visual-instruction data URI (`seed://`, `file://PATH.jsonl`, or a plugin's scheme)."""


class VitConfig(_Config):
    """Stage 2: projector + LoRA on multilingual visual instructions."""

    train: InstructConfig = InstructConfig(steps=48, eval_samples=EVAL_SAMPLES)
    data: str = "seed://?split=train"
    report_data: str = "seed://?split=heldout"
    """Held-aside records whose questions are answered before and after stage 2 in the report."""
    report_images: int = Field(default=2, ge=0)


def _vit_records(uri: str, context: StageContext) -> list[dict[str, Any]]:
    from xlang import plugins
    from xlang.errors import XlangError

    records = plugins.call_first("load_vit_data", uri=uri, cache_dir=context.settings.cache_dir)
    if records is None:
        raise XlangError(f"no plugin loads visual-instruction data {uri!r}; use seed://, file://PATH.jsonl")
    return list(records)


def _system_prompts() -> dict[str, str]:
    from xlang import plugins

    return {code: registered.value.chat.system_prompt for code, registered in plugins.languages().items()}


def align(context: StageContext) -> StageOutput:
    from xlang import plugins
    from xlang.vlm import build_llava, train_vit_stage

    config: AlignStageConfig = context.config
    language = context.language
    assembled = context.work_dir / "assembled"
    if not (assembled / "config.json").is_file():
        # a plugin may supply the whole template; None keeps the default built from the chat bits
        template = plugins.call_first("chat_template", language=language, base_template=None)
        build_llava(
            context.latest_model(),
            context.settings.cache_dir,
            assembled,
            system_prompts=_system_prompts(),
            target_lang=language.code,
            config=config.assemble,
            chat_template=template,
        )
    result = train_vit_stage(
        assembled,
        _vit_records(config.data, context),
        config.train,
        context.work_dir / "train",
        default_lang=language.code,
    )
    shutil.move(str(result.model_dir), context.out_dir / "model")
    _keep_stage_files(context.work_dir / "train", context.out_dir)
    metrics = _vit_metrics(result)
    report = (
        f"## align\n\nLLaVA assembled ({config.assemble.vision_tower} + mlp2x_gelu + the extended LLM); "
        f"projector trained {result.steps} steps on {result.samples} caption samples: {_losses(result)}; "
        f"{len(result.skipped)} samples skipped."
    )
    return StageOutput(metrics=metrics, report=report, model_dir="model")


def vit(context: StageContext) -> StageOutput:
    from xlang import plugins
    from xlang.vlm import before_after_report, train_vit_stage

    config: VitConfig = context.config
    stage1 = context.stage_dir("align") / "model"
    result = train_vit_stage(
        stage1,
        _vit_records(config.data, context),
        config.train,
        context.work_dir / "train",
        default_lang=context.language.code,
    )
    shutil.move(str(result.model_dir), context.out_dir / "model")
    _keep_stage_files(context.work_dir / "train", context.out_dir)
    metrics = _vit_metrics(result)
    lines = [
        "## vit",
        "",
        f"Stage 2 trained {result.steps} steps on {result.samples} samples: {_losses(result)}; "
        f"{len(result.skipped)} samples skipped.",
    ]
    if config.report_images:
        languages = plugins.languages()
        langs = [code for code in ("en", context.language.code) if code in languages]
        langs += [code for code in ("ko", "zh") if code in languages and code not in langs]
        files = before_after_report(
            stage1,
            context.out_dir / "model",
            _vit_records(config.report_data, context),
            context.out_dir / "answers",
            langs=langs,
            images=config.report_images,
            cache_dir=context.settings.cache_dir,
            scorers={code: languages[code].value.target_share for code in langs if languages[code].value.scripts},
        )
        table = f"vit/answers/{Path(files.markdown).name}"
        lines += ["", f"Answers to held-aside questions before and after stage 2: [{table}]({table})"]
        if files.png is not None:
            lines += ["", f"![answers before and after stage 2](vit/answers/{Path(files.png).name})"]
    return StageOutput(metrics=metrics, report="\n".join(lines), model_dir="model")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _losses(result: Any) -> str:
    """The fixed-set answer loss before → after when measured, and the logged training loss."""
    logged = f"training loss {_fmt(result.first_loss)} → {_fmt(result.final_loss)} (first and last logging window)"
    if result.eval_loss_start is None:
        return logged
    return (
        f"answer loss on a fixed set of training samples {_fmt(result.eval_loss_start)} → "
        f"{_fmt(result.eval_loss_end)}, {logged}"
    )


def _vit_metrics(result: Any) -> dict[str, Any]:
    return {
        "steps": result.steps,
        "samples": result.samples,
        "skipped": len(result.skipped),
        "first_loss": result.first_loss,
        "final_loss": result.final_loss,
        "eval_loss_start": result.eval_loss_start,
        "eval_loss_end": result.eval_loss_end,
    }


def _keep_stage_files(train_dir: Path, out_dir: Path) -> None:
    for name in ("skipped.jsonl", "stage.json", "metrics.jsonl"):
        if (train_dir / name).is_file():
            shutil.copy2(train_dir / name, out_dir / name)


# --- evaluate ------------------------------------------------------------------------------------------


class EvaluateConfig(_Config):
    max_chars: int = Field(default=20_000, gt=0)
    """Validation characters per language (a prefix of the split, whole documents)."""
    window: int = Field(default=512, gt=0)
    stride: int = Field(default=256, gt=0)
    extra_languages: tuple[str, ...] = ("en",)
    """Measured next to the target language, to show that they did not get worse."""


def evaluate(context: StageContext) -> StageOutput:
    """Tokens per character and bits per character per language for the base and every model the run made."""
    from xlang.eval.bpc import bits_per_character

    config: EvaluateConfig = context.config
    texts = {
        spec.code: resolve.validation_documents(spec, context.settings, config.max_chars)
        for spec in resolve.companion_languages(context.language, config.extra_languages)
    }
    models = [("base", context.base_model)] + [
        (name, str(path)) for name in context.manifest["stages"] if (path := context.model_of(name)) is not None
    ]
    metrics: dict[str, Any] = {}
    rows: list[tuple[str, str, float, float]] = []
    for label, folder in models:
        model, tokenizer = _load_for_text(folder)
        for code, sample in texts.items():
            result = bits_per_character(
                model, tokenizer, sample, window=config.window, stride=config.stride, max_chars=None
            )
            metrics[f"{label}/{code}/bpc"] = round(result.bpc, 4)
            metrics[f"{label}/{code}/tokens_per_char"] = round(result.tokens_per_char, 4)
            rows.append((label, code, result.bpc, result.tokens_per_char))
        del model
    plot = _plot_bpc(rows, context.out_dir / "bpc.png")
    lines = ["## evaluate", "", "| model | language | bits/char | tokens/char |", "|---|---|---|---|"]
    lines += [f"| {label} | {code} | {bpc:.3f} | {tpc:.3f} |" for label, code, bpc, tpc in rows]
    lines += [
        "",
        f"Validation text: the first {config.max_chars:,} characters of each language's split, paragraphs "
        "joined into their documents.",
    ]
    if plot is not None:
        lines += ["", "![bits per character](evaluate/bpc.png)"]
    return StageOutput(metrics=metrics, report="\n".join(lines))


def _load_for_text(folder: str) -> tuple[Any, Any]:
    """A causal LM, or a LLaVA folder's model (text-only inputs run through its language model)."""
    import json

    from xlang.embeddings.checkpoint import load_causal_lm, load_tokenizer

    config_file = Path(folder) / "config.json"
    if config_file.is_file() and json.loads(config_file.read_text()).get("model_type") == "llava":
        from transformers import AutoTokenizer, LlavaForConditionalGeneration

        return LlavaForConditionalGeneration.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    return load_causal_lm(folder), load_tokenizer(folder)


def _plot_bpc(rows: list[tuple[str, str, float, float]], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(label for label, *_ in rows))
    codes = list(dict.fromkeys(code for _, code, *_ in rows))
    figure, axis = plt.subplots(figsize=(1.6 + 1.3 * len(labels), 3.2))
    width = 0.8 / max(len(codes), 1)
    for offset, code in enumerate(codes):
        values = [next(bpc for lab, c, bpc, _ in rows if lab == label and c == code) for label in labels]
        axis.bar([i + offset * width for i in range(len(labels))], values, width, label=code)
    axis.set_xticks([i + width * (len(codes) - 1) / 2 for i in range(len(labels))], labels)
    axis.set_ylabel("bits per character (lower is better)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


# --- helpers shared by the stages -----------------------------------------------------------------------


def _expanded_tokenizer(context: StageContext) -> str:
    if "expand" in context.manifest["stages"]:
        return str(context.stage_dir("expand") / "tokenizer")
    return context.base_model


def _new_token_ids(context: StageContext) -> list[int] | None:
    import json

    if "expand" not in context.manifest["stages"]:
        return None
    manifest = json.loads((context.stage_dir("expand") / "tokenizer" / "xlang-tokenizer.json").read_text())
    id_range = manifest["new_id_range"]  # half-open; reserved padding entries come after and never train
    return list(range(*id_range)) if id_range else []


EXPAND = Stage("expand", "add target-language tokens as real BPE merges", ExpandConfig, expand)
EVALUATE = Stage("evaluate", "tokens/char and bits/char per language for every model", EvaluateConfig, evaluate)
ALIGN = Stage("align", "LLaVA stage 1: assemble, train the projector on captions", AlignStageConfig, align)
VIT = Stage("vit", "LLaVA stage 2: multilingual visual instruction tuning", VitConfig, vit)
INIT = Stage("init", "initialize the new embedding rows", InitConfig, init)
PRETRAIN = Stage("pretrain", "continued bilingual pretraining (LoRA + new rows)", PretrainConfig, pretrain)

X_LLAVA = Recipe(
    name="x-llava",
    description="X-LLaVA: vocabulary expansion, embedding init, bilingual pretraining, LLaVA alignment and VIT.",
    stages=(EXPAND, INIT, PRETRAIN, ALIGN, VIT, EVALUATE),
)
