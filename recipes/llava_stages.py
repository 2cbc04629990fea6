"""The LLaVA stages of the X-LLaVA recipe: align (stage 1, projector on captions) and vit (stage 2).

Each stage is a config (only the knobs it uses) and a short function that hands folders, records and
strategies (looked up through `context.resolver`) to the stage code in `xlang.vlm`.

Data: `data` empty (the default) means the `vit_data` of the run's languages (`context.languages`: the
target, then its companions): the seed records. `extra_data` (`xlang extend --vit-data FILE`, e.g. the
output of `xlang data generate`) is added to them; `seed_weight` and `extra_weight` say how often each
group's training records are drawn (2.0: every record twice; 0.5: a fixed half). A target language
without data stops the stage with the fix; so does data with no training record in the target language,
so a stage never trains on the other languages alone. A record that lacks `lang` counts as the language
whose `vit_data` it came from, or, for files named in `data` or `extra_data`, as the target language.
Records with `split: heldout` never train; stage 2's report asks their questions.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
from pathlib import Path
from typing import Any

from pydantic import Field

from xlang.contract import Resolver, Stage, StageConfig, StageContext, StageOutput
from xlang.errors import XlangError
from xlang.spec import LanguageSpec
from xlang.vlm.config import AlignConfig, AssembleConfig, InstructConfig
from xlang.vlm.data import HELDOUT, split_heldout

EVAL_SAMPLES = 16
"""A fixed set of training samples whose answer loss both LLaVA stages measure before and after training:
the logged loss is a mean over a few random micro-batches of mixed languages and tasks, too noisy for
"did it learn?" at demo step counts."""


class VitDataConfig(StageConfig):
    """Where a LLaVA stage's records come from and how the groups are weighted."""

    data: tuple[str, ...] = ()
    """Visual-instruction data URIs (`file://PATH.jsonl`, `hf://...` or a plugin's scheme) that replace the
    seed records; empty: the `vit_data` of the run's languages."""
    extra_data: tuple[str, ...] = ()
    """Data added to the seed records (`--vit-data FILE`): paths or URIs of LLaVA-format JSONL, such as
    `xlang data generate` writes. A record without `lang` counts as the target language."""
    seed_weight: float = Field(default=1.0, ge=0, le=100)
    """How often each seed (or `data`) training record is drawn: its integer part repeats every record,
    its fraction draws a fixed share of them."""
    extra_weight: float = Field(default=1.0, ge=0, le=100)
    """The same for `extra_data` (`--vit-data-weight`)."""


class AlignStageConfig(VitDataConfig):
    """Assembly of the LLaVA plus stage 1 (projector only, on captions)."""

    assemble: AssembleConfig = AssembleConfig(image_size=112)
    """112 px: 64 image tokens from the DINOv2-small tower, sized for a CPU demo; set `image_size` to null
    for towers with a fixed input size (CLIP, SigLIP through the `hf` tower)."""
    train: AlignConfig = AlignConfig(steps=24, eval_samples=EVAL_SAMPLES)


class VitConfig(VitDataConfig):
    """Stage 2: projector + LoRA on multilingual visual instructions; the `split: heldout` records of its
    data supply the report's questions."""

    train: InstructConfig = InstructConfig(steps=48, eval_samples=EVAL_SAMPLES)
    report_images: int = Field(default=2, ge=0)
    """Held-aside images whose questions both models answer in the report (0: no report)."""


# --- data -----------------------------------------------------------------------------------------------


def vit_records(context: StageContext, config: VitDataConfig, setting: str) -> list[dict[str, Any]]:
    """The stage's records: the URIs in `data`, else every run language's `vit_data` (target first), each
    group's training records weighted, plus `extra_data`.

    `setting` names the knob (`stages.align.data`) for messages. Stops when the target language has no
    data of its own, or when no training record is in the target language.
    """
    target = context.language
    data = config.data
    seed: list[dict[str, Any]] = []
    if data:
        for uri in dict.fromkeys(data):
            seed += context.resolver.vit_records(uri)
        where = f"{setting} ({', '.join(data)})"
    else:
        require_own_data(target, data, setting)
        seen: set[str] = set()
        for spec in context.languages:
            for uri in spec.vit_data:
                if uri not in seen:
                    seen.add(uri)
                    loaded = context.resolver.vit_records(uri)
                    seed += [{**record, "lang": record.get("lang") or spec.code} for record in loaded]
        where = "the vit_data of " + ", ".join(spec.code for spec in context.languages)
    extra: list[dict[str, Any]] = []
    for uri in dict.fromkeys(config.extra_data):
        extra += context.resolver.vit_records(vit_data_uri(uri))
    if extra:
        where += " and " + ", ".join(config.extra_data)
    records = weighted(seed, config.seed_weight) + weighted(extra, config.extra_weight)
    train = [record for record in records if record.get("split") != HELDOUT]
    if not any((record.get("lang") or target.code) == target.code for record in train):
        raise XlangError(
            f"{where} holds no training record in {target.name} ({target.code!r}); the stage would learn the "
            f"other languages only. Add {target.code} records (`lang`: {target.code!r}) or set {setting} to "
            "a file://...jsonl that has them"
        )
    return records


def vit_data_uri(path_or_uri: str) -> str:
    """`--vit-data gen.jsonl` means the file: a bare path becomes a `file://` URI (absolute)."""
    if "://" in path_or_uri:
        return path_or_uri
    path = Path(path_or_uri).expanduser()
    if not path.is_file():
        raise XlangError(f"--vit-data {path_or_uri}: no such file; pass a LLaVA-format JSONL (xlang data generate)")
    return f"file://{path.resolve()}"


def weighted(records: list[dict[str, Any]], weight: float) -> list[dict[str, Any]]:
    """Training records drawn `weight` times each: the integer part repeats all of them, the fraction keeps a
    fixed share (chosen by a hash of the record's id, so every run and resume draws the same ones).
    Held-aside records are kept once whatever the weight: they are questions, not training."""
    if weight == 1.0:
        return list(records)
    heldout = [record for record in records if record.get("split") == HELDOUT]
    train = [record for record in records if record.get("split") != HELDOUT]
    whole, fraction = divmod(weight, 1.0)
    drawn = train * int(whole)
    if fraction > 0:
        ranked = sorted(train, key=lambda r: hashlib.sha256(f"{r.get('source')}|{r.get('id')}".encode()).digest())
        drawn += ranked[: round(fraction * len(train))]
    return drawn + heldout


def require_own_data(target: LanguageSpec, data: tuple[str, ...], setting: str) -> None:
    """A target language without visual-instruction data of its own stops the stage (and, checked when the
    run starts, the run before any work): it would otherwise train on other languages' records only."""
    if not data and not target.vit_data:
        raise XlangError(
            f"language {target.code!r} ({target.name}) has no visual-instruction data: add `vit_data` "
            f"(file://...jsonl in the LLaVA format) to its LanguageSpec, or set {setting} to a file://...jsonl"
        )


# --- align (LLaVA stage 1) and vit (stage 2) -------------------------------------------------------------


def resolve_align(config: AlignStageConfig, language: LanguageSpec, resolver: Resolver) -> AlignStageConfig:
    """The vision tower's options validated and completed with its defaults, and the target's own data
    required, before any stage runs (a run `--until` an earlier stage is not asked)."""
    require_own_data(language, config.data, "stages.align.data")
    for path_or_uri in config.extra_data:
        vit_data_uri(path_or_uri)  # a missing --vit-data file fails before any stage runs
    strategy = resolver.strategy("vision_towers", config.assemble.vision_tower)
    options = strategy.configure(config.assemble.vision_tower_options).model_dump(mode="json")
    return config.model_copy(update={"assemble": config.assemble.model_copy(update={"vision_tower_options": options})})


def tower_loader(context: StageContext, assemble: AssembleConfig) -> Any:
    """The named vision tower with its validated options bound: `loader(cache_dir=, image_size=)`."""
    strategy = context.resolver.strategy("vision_towers", assemble.vision_tower)
    return functools.partial(strategy, options=strategy.configure(assemble.vision_tower_options))


def align(context: StageContext) -> StageOutput:
    from xlang.vlm import base_chat_template, build_llava

    config: AlignStageConfig = context.config
    language = context.language
    train_records, _ = split_heldout(vit_records(context, config, "stages.align.data"))
    loader = tower_loader(context, config.assemble)  # a bad tower name or option stops before any model loads
    assembled = context.work_dir / "assembled"
    if not (assembled / "config.json").is_file():
        llm = context.latest_model()
        # a plugin may supply the whole template, seeing the LLM's own; None keeps the default built from the
        # run languages' chat bits
        template = context.resolver.chat_template(language, base_chat_template(llm))
        build_llava(
            llm,
            context.settings.cache_dir,
            assembled,
            vision_tower=loader,
            system_prompts={spec.code: spec.chat.system_prompt for spec in context.languages},
            target_lang=language.code,
            config=config.assemble,
            chat_template=template,
        )
    result = _train(context, assembled, train_records, config.train)
    metrics = _vit_metrics(result)
    report = (
        f"## align\n\nLLaVA assembled ({config.assemble.vision_tower} + mlp2x_gelu + the extended LLM); "
        f"projector trained {result.steps} steps on {result.samples} caption samples: {_losses(result)}; "
        f"{len(result.skipped)} samples skipped.{processes_note(metrics)}"
    )
    return StageOutput(metrics=metrics, report=report, model_dir="model")


def _train(context: StageContext, model_dir: Path, records: list[dict[str, Any]], config: Any) -> Any:
    """One LLaVA stage's training, in every launched process (`xlang.collective`), its model and files moved
    from the work folder into the stage folder."""
    from xlang.collective import collective
    from xlang.vlm import train_vit_stage

    result = collective(
        train_vit_stage,
        model_dir=model_dir,
        records=records,
        config=config,
        out_dir=context.work_dir / "train",
        default_lang=context.language.code,
        distributed=context.settings.distributed,
    )
    shutil.move(str(result.model_dir), context.out_dir / "model")
    _keep_stage_files(context.work_dir / "train", context.out_dir)
    return result


def vit(context: StageContext) -> StageOutput:
    from xlang.vlm import before_after_report

    config: VitConfig = context.config
    train_records, heldout = split_heldout(vit_records(context, config, "stages.vit.data"))
    stage1 = context.stage_dir("align") / "model"
    result = _train(context, stage1, train_records, config.train)
    metrics = _vit_metrics(result)
    lines = [
        "## vit",
        "",
        f"Stage 2 trained {result.steps} steps on {result.samples} samples: {_losses(result)}; "
        f"{len(result.skipped)} samples skipped.{processes_note(metrics)}",
    ]
    codes = {spec.code for spec in context.languages}
    questions = [record for record in heldout if (record.get("lang") or context.language.code) in codes]
    if config.report_images and not questions:
        lines += ["", "No held-aside record (`split: heldout`) in the run's languages: no before/after answers."]
    elif config.report_images:
        files = before_after_report(
            stage1,
            context.out_dir / "model",
            [{**record, "lang": record.get("lang") or context.language.code} for record in questions],
            context.out_dir / "answers",
            languages=context.languages,
            images=config.report_images,
            fetch_file=context.resolver.fetch_file,
        )
        table = f"vit/answers/{Path(files.markdown).name}"
        lines += ["", f"Answers to held-aside questions before and after stage 2: [{table}]({table})"]
        if files.png is not None:
            lines += ["", f"![answers before and after stage 2](vit/answers/{Path(files.png).name})"]
    return StageOutput(metrics=metrics, report="\n".join(lines), model_dir="model")


def processes_note(metrics: dict[str, Any]) -> str:
    """` Trained in N processes (sharded with FSDP).` for a stage launched as several processes, else nothing."""
    processes = metrics.get("processes") or 1
    if processes == 1:
        return ""
    sharding = {"deepspeed": " (DeepSpeed ZeRO-2).", None: " (DDP).", False: " (DDP)."}
    return f" Trained in {processes} processes" + sharding.get(metrics.get("sharded"), " (sharded with FSDP).")


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
        "processes": result.processes,
        "sharded": result.sharded,
    }


def _keep_stage_files(train_dir: Path, out_dir: Path) -> None:
    for name in ("skipped.jsonl", "stage.json", "metrics.jsonl"):
        if (train_dir / name).is_file():
            shutil.copy2(train_dir / name, out_dir / name)


def resolve_vit(config: VitConfig, language: LanguageSpec, resolver: Resolver) -> VitConfig:
    require_own_data(language, config.data, "stages.vit.data")
    for path_or_uri in config.extra_data:
        vit_data_uri(path_or_uri)
    return config


ALIGN = Stage(
    "align", "LLaVA stage 1: assemble, train the projector on captions", AlignStageConfig, align, resolve_align
)
VIT = Stage("vit", "LLaVA stage 2: multilingual visual instruction tuning", VitConfig, vit, resolve_vit)
