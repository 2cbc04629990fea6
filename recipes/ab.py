"""The A/B recipe (`xlang extend --recipe x-llava-ab`): did vocabulary expansion pay off for this language?

The same base, data and compute twice: the expanded arm is the X-LLaVA recipe (expand → init → pretrain →
align → vit, the same stages and settings), and the `base-vocab` stage runs pretrain → align → vit again
on the base tokenizer, in `arms/base-vocab/` (a run folder of its own, resumable like any). Both arms take
the same steps, batch size and block length, so they see the same number of tokens; the expanded arm's
tokens hold more text. The evaluate stage then measures both final models on the same text and suites
(bits per character, tokens per character, judged and reference scores, replies in the language, characters
per second of generation) and draws them side by side.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pydantic import Field
from xlang_recipes.llava_stages import ALIGN, VIT
from xlang_recipes.x_llava import EXPAND, INIT, PRETRAIN, X_LLAVA, EvaluateConfig, resolve_evaluate

from xlang.contract import Recipe, Resolver, Stage, StageConfig, StageContext, StageOutput
from xlang.spec import LanguageSpec

ARMS_FOLDER = "arms"
BASE_VOCAB = "base-vocab"
EXPANDED = "expanded"
ARM_STAGES = (PRETRAIN, ALIGN, VIT)
"""What the base-vocabulary arm runs: the expanded arm's training stages, with no expand or init."""


class BaseVocabConfig(StageConfig):
    stages: dict[str, Any] = Field(default_factory=dict)
    """Filled from the pretrain, align and vit settings, so that changing them redoes this arm too."""


def resolve_base_vocab(config: BaseVocabConfig, language: LanguageSpec, resolver: Resolver) -> BaseVocabConfig:
    return config.model_copy(update={"stages": arm_stage_settings(resolver.settings)})


def arm_stage_settings(settings: Any) -> dict[str, Any]:
    """The expanded arm's pretrain, align and vit settings, less what has no meaning without new tokens: the
    pretraining schedule keeps its steps, rates and every other part, without `new-rows`."""
    from xlang.train.config import PretrainConfig

    stages = {stage.name: settings.stage(stage.name) for stage in ARM_STAGES}
    pretrain = PretrainConfig(**stages["pretrain"])
    schedule = []
    for part in pretrain.schedule_stages():
        train = [name for name in part.train if name != "new-rows"]
        if train:
            schedule.append({**part.model_dump(mode="json"), "train": train})
    if not schedule:
        from xlang.errors import XlangError

        raise XlangError(
            "the pretraining schedule trains only the new tokens' rows, so the base-vocabulary arm of x-llava-ab "
            "would train nothing; train lora too (stages.pretrain.trainable = 'lora')"
        )
    stages["pretrain"] = {**stages["pretrain"], "stages": schedule}
    return stages


def base_vocab(context: StageContext) -> StageOutput:
    """pretrain → align → vit on the base tokenizer, in a run folder of its own under `arms/`."""
    from xlang.runner import run_recipe

    arm_dir = context.run_dir / ARMS_FOLDER / BASE_VOCAB
    recipe = Recipe(name="x-llava-base-vocab", description="the A/B recipe's base-vocabulary arm", stages=ARM_STAGES)
    settings = context.settings.model_copy(update={"stages": arm_stage_settings(context.settings)})

    def on_stage(name: str, event: str) -> None:
        print(f"  {BASE_VOCAB}: {name} {event}", flush=True)

    began = time.perf_counter()
    manifest = run_recipe(recipe, context.language, settings, arm_dir, context.base_model, None, on_stage)
    final = manifest.get("final_model")
    if not final:
        from xlang.errors import XlangError

        raise XlangError(f"the base-vocabulary arm in {arm_dir} made no model; see {arm_dir / 'report.md'}")
    steps = {name: (record.get("metrics") or {}).get("steps") for name, record in manifest["stages"].items()}
    (context.out_dir / "arm.json").write_text(
        json.dumps({"run": f"{ARMS_FOLDER}/{BASE_VOCAB}", "final_model": final}, indent=2), encoding="utf-8"
    )
    report = [
        f"## {BASE_VOCAB}",
        "",
        f"The same pretrain, align and vit settings on the base tokenizer (no expand, no init), in "
        f"`{ARMS_FOLDER}/{BASE_VOCAB}/` (its own report.md has every stage's figures); "
        f"{time.perf_counter() - began:.0f} s. Final model: `{ARMS_FOLDER}/{BASE_VOCAB}/{final}`.",
    ]
    return StageOutput(
        metrics={"final_model": f"{ARMS_FOLDER}/{BASE_VOCAB}/{final}", **{f"steps/{k}": v for k, v in steps.items()}},
        report="\n".join(report),
    )


def evaluate_ab(context: StageContext) -> StageOutput:
    """Both arms' final models, side by side, on the same text and suites; base too, for scale."""
    from xlang_recipes.suites import evaluate_judged, suite_sets
    from xlang_recipes.x_llava import OOD_SUFFIX, heldout_texts, measured_texts, move_finished

    from xlang.eval.report import metrics_table, plot_rows

    config: EvaluateConfig = context.config
    resolver = context.resolver
    arms = {
        EXPANDED: context.model_of("vit"),
        BASE_VOCAB: context.run_dir / context.manifest["stages"][BASE_VOCAB]["metrics"]["final_model"],
    }
    texts = measured_texts(resolver, context.languages)
    heldout = heldout_texts(resolver, context.languages, config.max_chars)
    bpc = resolver.strategy("evaluators", "bpc")
    bpc_options = config.evaluator_options.get("bpc")
    rows: list[tuple[str, str, dict[str, float]]] = []
    metrics: dict[str, Any] = {}
    for arm, folder in arms.items():
        from xlang.eval import load_for_text

        model, tokenizer = load_for_text(str(folder))
        text_metrics: dict[str, dict[str, float]] = {}
        for spec in context.languages:  # out-of-domain first, as every figure of a run
            for suffix, measured in ((OOD_SUFFIX, heldout), ("", texts)):
                if spec.code in measured:
                    found = bpc(bpc_options, model=model, tokenizer=tokenizer, texts=measured[spec.code], language=spec)
                    text_metrics.setdefault(spec.code, {}).update(
                        {f"{name}{suffix}": value for name, value in found.items()}
                    )
        del model
        for spec in context.languages:
            found = dict(text_metrics[spec.code])
            for suite in config.suites:
                if not spec.suite(suite):
                    continue
                results = evaluate_judged(
                    resolver,
                    config.judge,
                    out_dir=context.work_dir / arm / suite / spec.code,  # kept across a kill
                    model_dir=folder,
                    language=spec,
                    suite=suite,
                    sets=suite_sets(spec, suite),
                    max_tokens=config.max_tokens,
                )
                found.update(results["metrics"])
            print(f"  evaluate: {arm} {spec.code} done", flush=True)
            rows.append((arm, spec.code, found))
            for name, value in found.items():
                metrics[f"{arm}/{spec.code}/{name}"] = round(float(value), 4)
    for arm in arms:
        move_finished(context.work_dir / arm, context.out_dir / arm)
    ratios, speeds = _speed_probe(context, config, arms)
    metrics.update(ratios)
    for arm, code, found in rows:  # the side-by-side table and plot show the speed too
        found.update(speeds.get(code, {}).get(arm, {}))
    plot = plot_rows(rows, context.out_dir / "ab.png", title="expanded vs base vocabulary: same base, data and steps")
    lines = [
        "## evaluate",
        "",
        "Expanded (X-LLaVA) against the same recipe on the base tokenizer: the same base, data, steps, batch size "
        "and block length, so the same number of training tokens.",
        "",
        *metrics_table(rows),
        "",
    ]
    for spec in context.languages:
        ratio = ratios.get(f"chars_per_s_ratio/{spec.code}")
        if ratio is not None:
            looping = ", ".join(
                f"{arm} {values.get('in_language_looping_share', 0):.0%}" for arm, values in speeds[spec.code].items()
            )
            lines.append(
                f"- {spec.name}: the expanded model generates {ratio:.2f}× the {spec.name} characters per second "
                "of the base-vocabulary model (replies in the language only; both models answer the same "
                f"questions in turn, so a change of load falls on both). Of those replies, these loop on one "
                f"phrase and say little however fast they come: {looping}."
            )
        elif spec.code in speeds:
            lines.append(
                f"- {spec.name}: no speed ratio: "
                + ", ".join(
                    f"{arm} replied in {spec.name} to {values.get('in_language_share', 0):.0%} of the questions"
                    for arm, values in speeds[spec.code].items()
                )
                + " (only replies in the language are timed)."
            )
        same_text = ratios.get(f"same_text_chars_per_s_ratio/{spec.code}")
        if same_text is not None:
            reply_only = ratios.get(f"same_text_reply_chars_per_s_ratio/{spec.code}")
            lines.append(
                f"- {spec.name}, the same text: writing the suites' reference replies token by token, the expanded "
                f"model is {same_text:.2f}× as fast in characters per second"
                + (f" ({reply_only:.2f}× after the pass over the prompt)" if reply_only is not None else "")
                + ". This is the spelling's payoff alone, whatever each model would write itself."
                + (
                    f" {skipped:.0f} reference(s) longer than a model's context were left out for both."
                    if (skipped := speeds[spec.code][EXPANDED].get("same_text_skipped"))
                    else ""
                )
            )
    lines += [
        "",
        f"Bits and tokens per character on the first {config.max_chars:,} characters of each language's "
        f"validation split (in-domain) and of its out-of-domain text (`{OOD_SUFFIX}`, where the language declares "
        "`heldout_corpora`), as the evaluate stage measures them; suites as `xlang eval run` measures them, "
        "with answers "
        f"in `evaluate/ARM/SUITE/LANG/`. Judge: {config.judge or 'none (chrF against the reference only)'}.",
    ]
    if plot is not None:
        lines += ["", f"![A/B](evaluate/{plot.name})"]
    return StageOutput(metrics=metrics, report="\n".join(lines))


def _speed_probe(
    context: StageContext, config: EvaluateConfig, arms: dict[str, Path]
) -> tuple[dict[str, float], dict[str, dict[str, dict[str, float]]]]:
    """Both arms answer the suites' open-ended questions in turn (`xlang.eval.speed`): characters per second
    of replies in the language, measured under the same load. Returns (metrics, per language per arm)."""
    from xlang_recipes.suites import local_path, suite_sets

    from xlang.eval.benchmarks import OpenEndedItem, item_image
    from xlang.eval.speed import interleaved_speed
    from xlang.eval.suite import load_sets
    from xlang.serve.engine import ChatModel

    chats = {arm: ChatModel.load(folder) for arm, folder in arms.items()}
    metrics: dict[str, float] = {}
    per_language: dict[str, dict[str, dict[str, float]]] = {}
    for spec in context.languages:
        items = [
            (f"{entry.name}/{item.id}", item)
            for suite in config.suites
            for entry, items in load_sets(suite_sets(spec, suite), lambda uri: local_path(context.resolver, uri))
            for item in items
            if isinstance(item, OpenEndedItem)
        ]
        if not items:
            continue
        prompts = [(key, item.question, item_image(item)) for key, item in items]
        references = {key: item.reference for key, item in items if spec.is_reply_in_language(item.reference)}
        found = interleaved_speed(chats, prompts, spec, max_tokens=config.max_tokens, references=references)
        per_language[spec.code] = found
        for arm, values in found.items():
            metrics.update({f"speed/{arm}/{spec.code}/{name}": round(value, 4) for name, value in values.items()})
        for figure, ratio in SPEED_RATIOS.items():
            expanded = found[EXPANDED].get(figure)
            base = found[BASE_VOCAB].get(figure)
            if expanded and base:
                metrics[f"{ratio}/{spec.code}"] = round(expanded / base, 3)
        print(f"  evaluate: speed {spec.code} done", flush=True)
    return metrics, per_language


SPEED_RATIOS = {
    "in_language_chars_per_s": "chars_per_s_ratio",
    "same_text_chars_per_s": "same_text_chars_per_s_ratio",
    "same_text_reply_chars_per_s": "same_text_reply_chars_per_s_ratio",
}
"""Expanded over base vocabulary, per language: free replies in the language, and the suites' reference replies
written by both (prompt included, and after the prompt)."""

BASE_VOCAB_STAGE = Stage(
    BASE_VOCAB,
    "pretrain, align and vit again on the base tokenizer (the A/B recipe's other arm)",
    BaseVocabConfig,
    base_vocab,
    resolve_base_vocab,
)
EVALUATE_AB = Stage("evaluate", "both arms' final models side by side", EvaluateConfig, evaluate_ab, resolve_evaluate)

X_LLAVA_AB = Recipe(
    name="x-llava-ab",
    description="X-LLaVA with and without vocabulary expansion, same base, data and compute, compared.",
    stages=(EXPAND, INIT, PRETRAIN, ALIGN, VIT, BASE_VOCAB_STAGE, EVALUATE_AB),
    flags=X_LLAVA.flags,
)
