"""The X-LLaVA recipe: expand → init → pretrain → align → vit → evaluate.

Read top to bottom: each stage is a config (only the knobs it uses, with the one default each knob has),
an optional `resolve` that fills the defaults the language or a strategy decides (so the manifest records
what ran), and a short function that looks its strategies up through `context.resolver`, hands texts and
folders to the stage code and says what it wrote. The LLaVA stages are in `llava_stages.py`. The stage
names are part of the CLI (`xlang extend --until STAGE`) and of every run folder: keep them.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from pydantic import Field
from xlang_recipes.llava_stages import ALIGN, VIT, processes_note

from xlang.contract import Flag, Recipe, Resolver, Stage, StageConfig, StageContext, StageOutput
from xlang.data.views import documents, paragraphs
from xlang.errors import XlangError
from xlang.spec import LanguageSpec
from xlang.train.config import PretrainConfig, parse_mix

# --- expand --------------------------------------------------------------------------------------------


class ExpandConfig(StageConfig):
    budget: int = Field(default=8000, gt=0, le=1_000_000)
    """New vocabulary entries (the intermediate entries a merge path needs count too)."""
    candidate_sources: tuple[str, ...] | None = None
    """Names of candidate sources; unset: the language's defaults."""
    source_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Options per candidate source name, validated by that source (e.g. `{"user": {"tokens": [...]}}`)."""
    expander: str | None = None
    """Name of the expander; unset: the language's default."""
    expander_options: dict[str, Any] = Field(default_factory=dict)
    user_tokens: tuple[str, ...] = ()
    """Tokens added whatever their gain."""
    pad_to_multiple_of: int = Field(default=64, ge=0)


def resolve_expand(config: ExpandConfig, language: LanguageSpec, resolver: Resolver) -> ExpandConfig:
    """Strategy names from the language's defaults; every source's and the expander's options validated.

    A source given options (e.g. `--word-list`) but not named in `candidate_sources` joins the sources. The
    language's own source options (`Strategies.source_options`) are the starting point of each used source's.
    """
    from xlang.tokenizer import with_language_defaults

    names = tuple(config.candidate_sources or language.defaults.candidate_sources)
    names += tuple(name for name in config.source_options if name not in names)
    expander = config.expander or language.defaults.tokenizer_expander
    chosen = config.candidate_sources or ()
    sources = {
        name: resolver.strategy("token_candidate_sources", name)
        if name in chosen or name in config.source_options
        else resolver.language_default("token_candidate_sources", name, language, "--source")
        for name in names
    }
    expander_strategy = (
        resolver.strategy("tokenizer_expanders", expander)
        if config.expander
        else resolver.language_default("tokenizer_expanders", expander, language, "--expander")
    )
    given = with_language_defaults(language, sources, config.source_options)
    return config.model_copy(
        update={
            "candidate_sources": names,
            "source_options": {
                name: source.configure(given.get(name)).model_dump(mode="json") for name, source in sources.items()
            },
            "expander": expander,
            "expander_options": expander_strategy.configure(config.expander_options).model_dump(mode="json"),
        }
    )


def expand_for(
    language: LanguageSpec, resolver: Resolver, base: str, config: ExpandConfig, out_dir: Path
) -> tuple[Any, list[Any]]:
    """Expand `base` for `language` into `out_dir`; returns the result and the tokens-per-character rows of
    the language and its companions. `xlang tokenizer expand` calls it too, so both give the same tokenizer."""
    from xlang.tokenizer import expand_tokenizer, tokenizer_stats

    config = resolve_expand(config, language, resolver)
    sources = {name: resolver.strategy("token_candidate_sources", name) for name in config.candidate_sources or ()}
    # word lists are fetched only when a chosen source reads them
    needs_lists = any("vocabularies" in source.accepted()[0] for source in sources.values())
    result = expand_tokenizer(
        base=base,
        language=language,
        train_texts=paragraphs(resolver.dataset(language, "train"), language),
        budget=config.budget,
        out_dir=out_dir,
        candidate_sources=sources,
        expander=resolver.strategy("tokenizer_expanders", config.expander or ""),
        required_tokens=config.user_tokens,
        pad_to_multiple_of=config.pad_to_multiple_of,
        vocabularies=resolver.vocabularies(language) if needs_lists else None,
        source_options=config.source_options,
        expander_options=config.expander_options,
    )
    languages = (language, *resolver.companions(language))
    return result, tokenizer_stats(out_dir, measured_texts(resolver, languages), base=result.base)


def measured_texts(resolver: Resolver, languages: tuple[LanguageSpec, ...]) -> dict[str, list[str]]:
    """The text every figure of a run is measured on, per language: the first `stages.evaluate.max_chars`
    characters of the validation split as whole documents. The expand section's tokens per character, the
    evaluate table and `xlang eval bpc` / `xlang tokenizer stats` read exactly this, so they agree."""
    max_chars = EvaluateConfig(**resolver.settings.stage("evaluate")).max_chars
    return {spec.code: documents(resolver.dataset(spec, "validation"), spec, max_chars) for spec in languages}


def heldout_texts(
    resolver: Resolver, languages: tuple[LanguageSpec, ...], max_chars: int | None = None
) -> dict[str, list[str]]:
    """The out-of-domain text of each language that declares `heldout_corpora` (the others are left out): whole
    documents of their validation splits, `max_chars` (default `stages.evaluate.max_chars`) shared evenly
    between the sources. Never a training split: these sources are not among the language's `corpora`."""
    from xlang.data.heldout import heldout_documents

    if max_chars is None:
        max_chars = EvaluateConfig(**resolver.settings.stage("evaluate")).max_chars
    return {
        spec.code: heldout_documents(
            spec, [resolver.load(source, "validation") for source in spec.heldout_corpora], max_chars
        )
        for spec in languages
        if spec.heldout_corpora
    }


def expand(context: StageContext) -> StageOutput:
    config: ExpandConfig = context.config
    language = context.language
    result, rows = expand_for(language, context.resolver, context.base_model, config, context.out_dir / "tokenizer")
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
    texts = measured_texts(context.resolver, context.languages)
    lines = [
        "## expand",
        "",
        f"{len(result.new_token_ids):,} new {language.name} tokens ({result.family}) for a budget of "
        f"{result.budget:,}, vocabulary {result.base_vocab_size:,} → {result.vocab_size:,}, in {result.seconds:.1f} s.",
        "",
        "| language | characters | tokens/char base | tokens/char expanded | floor | documents with identical ids |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.language} | {r.chars:,} | {r.base_tokens_per_char:.3f} | {r.tokens_per_char:.3f} | "
        f"{r.floor_tokens_per_char:.3f} | {r.identical_share:.0%} |"
        for r in rows
    ]
    lines += [
        "",
        f"Measured on the evaluate stage's text: the first {_max_chars(context):,} characters of each language's "
        f"validation split as whole documents ({_sizes(texts)}), so the expanded column is the `tokens/char` of "
        "`init` in the evaluate table. Floor: tokens per character if every piece the base pre-tokenizer cuts "
        "the text into were one token, the most any expansion of this tokenizer can reach.",
    ]
    for note in result.notes:
        lines += ["", f"Note: {note}"]
        print(f"  expand: note: {note}", flush=True)
    whole = [token for token in result.new_tokens if "\ufffd" not in token and token.strip()]
    lines += ["", "Longest new tokens: " + ", ".join(f"`{t}`" for t in sorted(whole, key=len)[-16:])]
    return StageOutput(metrics=metrics, report="\n".join(lines))


def _max_chars(context: StageContext) -> int:
    return EvaluateConfig(**context.settings.stage("evaluate")).max_chars


def _sizes(texts: dict[str, list[str]]) -> str:
    """`ko 20,000 characters in 31 documents; en ...`"""
    return "; ".join(
        f"{code} {sum(map(len, values)):,} characters in {len(values):,} document{'s' * (len(values) != 1)}"
        for code, values in texts.items()
    )


# --- init ----------------------------------------------------------------------------------------------


class InitConfig(StageConfig):
    initializer: str | None = None
    """Name of the embedding initializer; unset: the language's default."""
    options: dict[str, Any] = Field(default_factory=dict)
    """The initializer's options (e.g. `{"fit_steps": 150}` for `subword-fit`), validated by it."""
    seed: int = 0
    texts: tuple[str, ...] = ()
    """Local `.txt` or `.jsonl` files (paths or `file://` URIs, read as corpus files are) whose whole text the
    initializer reads in place of the language's training split (`--init-text`): a sample of the text the
    model will meet. A fitting initializer learns what it reads (docs/embeddings.md, "Fitted on text of the
    scored kind"). Unset: the training split."""


def init_text_uri(path_or_uri: str) -> str:
    """`--init-text sample.txt` as an absolute `file://` URI; anything but an existing local `.txt` or `.jsonl`
    file stops the run before any stage, with the fix."""
    if "://" in path_or_uri and not path_or_uri.startswith("file://"):
        raise XlangError(
            f"--init-text {path_or_uri}: only local files are read here (a stream would be read whole); "
            "write a sample of it to a .txt or .jsonl file and pass that"
        )
    path = Path(path_or_uri.removeprefix("file://").split("?", 1)[0]).expanduser()
    if not path.is_file() or path.suffix not in (".txt", ".jsonl"):
        raise XlangError(
            f"--init-text {path_or_uri}: not a .txt or .jsonl file; pass a file of the text the model will meet "
            "(.txt: blank-line-separated paragraphs, .jsonl: a text field)"
        )
    query = path_or_uri.split("?", 1)[1] if "?" in path_or_uri else ""
    return f"file://{path.resolve()}" + (f"?{query}" if query else "")


def init_text_documents(uris: tuple[str, ...], language: LanguageSpec, resolver: Resolver) -> list[str]:
    """Every document of the `--init-text` files (both splits of each: the whole file), normalized as the
    language normalizes its corpora."""
    from xlang.spec import CorpusSource

    found: list[str] = []
    for index, uri in enumerate(uris):
        source = CorpusSource(name=f"init-text-{index}", uri=uri)
        found += [
            text for split in ("train", "validation") for text in documents(resolver.load(source, split), language)
        ]
    if not found:
        raise XlangError(f"--init-text {', '.join(uris)}: no text in it; pass a file of the text the model will meet")
    return found


def resolve_init(config: InitConfig, language: LanguageSpec, resolver: Resolver) -> InitConfig:
    kind, name = "embedding_initializers", config.initializer or language.defaults.embedding_initializer
    strategy = (
        resolver.strategy(kind, name)
        if config.initializer
        else resolver.language_default(kind, name, language, "--initializer")
    )
    options = strategy.configure(config.options)
    texts = tuple(init_text_uri(text) for text in config.texts)
    if texts:
        init_text_documents(texts, language, resolver)  # an unreadable or empty file stops the run up front
    return config.model_copy(update={"initializer": name, "options": options.model_dump(mode="json"), "texts": texts})


def init(context: StageContext) -> StageOutput:
    from xlang.embeddings import initialize_embeddings

    config: InitConfig = context.config
    name = config.initializer or ""
    strategy = context.resolver.strategy("embedding_initializers", name)
    needs = strategy.accepted()[0]
    inputs: dict[str, Any] = {"seed": config.seed}
    # Whole documents, not paragraphs: a fitting initializer must see text in context, as BPC and users
    # read it; the companions' text is what its predictions must keep.
    if "texts" in needs and config.texts:
        inputs["texts"] = init_text_documents(config.texts, context.language, context.resolver)
    elif "texts" in needs:
        inputs["texts"] = documents(context.resolver.dataset(context.language, "train"), context.language)
    if "keep_texts" in needs:
        inputs["keep_texts"] = [
            text for spec in context.companions for text in documents(context.resolver.dataset(spec, "train"), spec)
        ]
    if "prior_texts" in needs:
        from xlang.tokenizer.candidates import general_text_prior

        language = context.language
        inputs["prior_texts"] = general_text_prior(
            language=language,
            texts=paragraphs(context.resolver.dataset(language, "train"), language),
            vocabularies=context.resolver.vocabularies(language),
        )
    result = initialize_embeddings(
        context.base_model,
        _expanded_tokenizer(context),
        context.out_dir / "model",
        strategy,
        initializer_name=name,
        options=strategy.configure(config.options),
        inputs=inputs,
    )
    # what the initializer learned from, in the report and the metrics
    read_from = (
        {"text_documents": len(inputs["texts"]), "text_chars": sum(map(len, inputs["texts"]))}
        if "texts" in needs
        else {}
    )
    read = ""
    if read_from:
        where = ", ".join(f"`{uri}`" for uri in config.texts) or "the training split"
        read = (
            f" It read {read_from['text_documents']:,} documents ({read_from['text_chars']:,} characters) of {where}."
        )
    report = (
        f"## init\n\n{result.new_rows:,} new embedding rows ({'tied' if result.tied else 'untied'} embeddings), "
        f"initializer `{name}`, vocabulary {result.base_vocab_size:,} → {result.vocab_size:,}, "
        f"{result.seconds:.1f} s.{read} The evaluate stage measures what this model scores before any training."
    )
    metrics = {
        "initializer": name,
        "new_rows": result.new_rows,
        "vocab_size": result.vocab_size,
        "seconds": result.seconds,
        **read_from,
    }
    return StageOutput(metrics=metrics, report=report, model_dir="model")


# --- pretrain ------------------------------------------------------------------------------------------


def pretrain(context: StageContext) -> StageOutput:
    from xlang.collective import collective
    from xlang.train import pretrain as run_pretraining

    config: PretrainConfig = context.config
    resolver = context.resolver
    texts = {spec.code: documents(resolver.dataset(spec, "train"), spec) for spec in context.languages}
    validation = {
        spec.code: documents(resolver.dataset(spec, "validation"), spec, config.eval_max_chars)
        for spec in context.languages
    }
    parallel = resolver.parallel_records(context.language, "train") or None
    # the stage folder appears only when the stage succeeds: say where its metrics grow meanwhile
    print(f"  pretrain: metrics while it runs: {context.work_dir / 'stages'}/*/metrics.jsonl", flush=True)
    result = collective(
        run_pretraining,
        model_dir=context.latest_model(),
        tokenizer_dir=_expanded_tokenizer(context),
        texts_by_language=texts,
        parallel=parallel,
        config=config,
        out_dir=context.work_dir,
        new_token_ids=_new_token_ids(context),
        validation_by_language=validation,
        distributed=context.settings.distributed,
    )
    for name in ("model", "adapter", "report"):
        move_finished(context.work_dir / name, context.out_dir / name)
    for path in context.work_dir.iterdir():
        if path.is_file() and not path.name.startswith("."):
            shutil.copy2(path, context.out_dir / path.name)
    summary = dict(result.summary)
    schedule = ", ".join(
        f"{part['name']}: {part['steps']} steps training {'+'.join(part['train'])}"
        for part in summary.get("stages", [])
        if isinstance(part, dict)
    )
    mix = summary.get("mix_measured") or summary.get("mix") or {}
    lines = [
        "## pretrain",
        "",
        f"Schedule: {schedule or config.steps}. Training tokens by source (measured on the first 64 batches): "
        f"{_shares(mix)}. Throughput: {_rate(summary.get('tokens_per_s'))}. Training loss of the last logging "
        f"window: {_number(summary.get('final_loss'))} nats per token.{processes_note(summary)}",
    ]
    if (context.out_dir / "report" / "curves.png").is_file():
        lines += ["", _curves_note(context, config), "", "![loss and bits per character](pretrain/report/curves.png)"]
    return StageOutput(metrics=summary, report="\n".join(lines), model_dir="model")


def _curves_note(context: StageContext, config: PretrainConfig) -> str:
    """What the curves' validation points are, and whether they are the evaluate table's figures."""
    from xlang.eval.bpc import BpcOptions

    evaluate = EvaluateConfig(**context.settings.stage("evaluate"))
    options = BpcOptions(**(evaluate.evaluator_options.get("bpc") or {}))
    scorer = f"the `bpc` scorer (windows of {config.eval_window:,} tokens advancing by {config.eval_window // 2:,})"
    same = (
        "bpc" in evaluate.evaluators
        and config.eval_max_chars == evaluate.max_chars
        and (options.window, options.stride) == (config.eval_window, config.eval_window // 2)
    )
    text = f"the first {config.eval_max_chars:,} characters of each language's validation documents"
    if same:
        return (
            f"Lower panel: validation bits per character during training, {scorer} on {text}: the evaluate stage's "
            "scorer and text, so the first and last points are the `init` and `pretrain` rows of the evaluate "
            "table, the run's figures of record. Upper panel: training loss per logging window (nats per token "
            "of the training mix, not comparable across tokenizers)."
        )
    return (
        f"Lower panel: training-time validation bits per character, {scorer} on {text}; the evaluate stage "
        f"scores {evaluate.max_chars:,} characters (windows of {options.window:,}/{options.stride:,}), so these "
        "points differ from its table, which holds the run's figures of record. Upper panel: training loss per "
        "logging window (nats per token of the training mix)."
    )


def _shares(shares: dict[str, Any]) -> str:
    """`ko 45%, en 45%, parallel 10%` from a mapping of shares."""
    return ", ".join(f"{name} {float(value):.0%}" for name, value in shares.items()) or "not measured"


def _number(value: Any) -> str:
    return "not measured" if value is None else f"{float(value):.3f}"


def _rate(tokens_per_s: float | None) -> str:
    """Throughput for the report; a resumed stage that only finished its last steps may have none."""
    return "not measured" if tokens_per_s is None else f"{tokens_per_s:,.0f} tokens/s (median of the logging windows)"


# --- evaluate ------------------------------------------------------------------------------------------


class EvaluateConfig(StageConfig):
    evaluators: tuple[str, ...] = ("bpc",)
    """Evaluators run on every model the run made (and the base), per language (`register_evaluators`)."""
    evaluator_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Options per evaluator name, validated by that evaluator."""
    max_chars: int = Field(default=20_000, gt=0)
    """Validation characters per language (a prefix of the split, whole documents), as `xlang eval bpc`."""
    suites: tuple[str, ...] = ("smoke",)
    """Benchmark suites (the languages' `evaluation_sets`) run on the base and the final model, per language,
    as `xlang eval run` does; a language without sets in a suite is passed over with a note."""
    judge: str | None = None
    """The teacher that grades open-ended answers (`teacher_url`/`teacher_model` settings); unset: no judge
    (chrF against the reference still scores them)."""
    max_tokens: int = Field(default=64, gt=0)
    """The longest open-ended answer in the suites, in tokens."""


def resolve_evaluate(config: EvaluateConfig, language: LanguageSpec, resolver: Resolver) -> EvaluateConfig:
    from xlang_recipes.suites import set_evaluators

    # every suite's evaluator is looked up before any stage runs; an unknown one names its set
    scored_by = set(set_evaluators(resolver, [entry for suite in config.suites for entry in language.suite(suite)]))
    unused = sorted(set(config.evaluator_options) - set(config.evaluators) - scored_by)
    if unused:
        from xlang.errors import XlangError

        raise XlangError(f"evaluate: evaluator_options name {', '.join(unused)}, which is not among the evaluators")
    options = {
        name: resolver.strategy("evaluators", name)
        .configure(config.evaluator_options.get(name))
        .model_dump(mode="json")
        for name in (*config.evaluators, *sorted(scored_by - set(config.evaluators)))
    }
    if config.judge is not None:
        resolver.strategy("teachers", config.judge)  # an unknown judge fails before any stage runs
    return config.model_copy(update={"evaluator_options": options})


OOD_SUFFIX = "_ood"
"""Ends the name of a figure measured on the out-of-domain text (`base/ko/bpc_ood`)."""


def _domain_label(name: str) -> str:
    """The report heading of a metric: its label, and which text it was measured on."""
    if name.endswith(OOD_SUFFIX):
        plain = name[: -len(OOD_SUFFIX)]
        return f"{_METRIC_LABELS.get(plain, plain)} out-of-domain"
    return f"{_METRIC_LABELS.get(name, name)} in-domain"


def evaluate(context: StageContext) -> StageOutput:
    """Every evaluator on the base and every model the run made, per language, on the same documents."""
    from xlang.eval import load_for_text

    config: EvaluateConfig = context.config
    resolver = context.resolver
    texts = {
        spec.code: documents(resolver.dataset(spec, "validation"), spec, config.max_chars) for spec in context.languages
    }
    # out-of-domain first: metrics `MODEL/CODE/NAME_ood`, beside the in-domain `MODEL/CODE/NAME`
    texts_by_suffix = {OOD_SUFFIX: heldout_texts(resolver, context.languages, config.max_chars), "": texts}
    evaluators = [(name, resolver.strategy("evaluators", name)) for name in config.evaluators]
    models = [("base", context.base_model)] + [
        (name, str(path)) for name in context.manifest["stages"] if (path := context.model_of(name)) is not None
    ]
    metrics: dict[str, Any] = {}
    parameters: dict[str, int] = {}
    for label, folder in models:
        model, tokenizer = load_for_text(folder)
        parameters[label] = sum(parameter.numel() for parameter in model.parameters())
        for spec in context.languages:
            began = time.perf_counter()
            for suffix, measured in texts_by_suffix.items():
                if spec.code not in measured:
                    continue
                for name, evaluator in evaluators:
                    found = evaluator(
                        context.config.evaluator_options.get(name),
                        model=model,
                        tokenizer=tokenizer,
                        texts=measured[spec.code],
                        language=spec,
                    )
                    for metric, value in found.items():
                        metrics[f"{label}/{spec.code}/{metric}{suffix}"] = round(float(value), 4)
            shown = ", ".join(
                f"{_domain_label(key.split('/')[2])} {value:.3f}"
                for key, value in metrics.items()
                if key.startswith(f"{label}/{spec.code}/")
            )
            print(f"  evaluate: {label} {spec.code}: {shown} ({time.perf_counter() - began:.0f} s)", flush=True)
        del model
    suite_lines = _run_suites(context, models) if config.suites else []
    names = sorted({key.split("/", 2)[2] for key in metrics}, key=lambda name: (not name.endswith(OOD_SUFFIX), name))
    header = " | ".join(_domain_label(name) for name in names)
    lines = ["## evaluate", "", f"| model | language | {header} |", "|---|---|" + "---|" * len(names)]
    for label, _ in models:
        for spec in context.languages:
            values = [metrics.get(f"{label}/{spec.code}/{name}") for name in names]
            lines.append(
                f"| {label} | {spec.code} | " + " | ".join("" if v is None else f"{v:.3f}" for v in values) + " |"
            )
    lines += [
        "",
        f"How measured: {'evaluators' if len(config.evaluators) > 1 else 'evaluator'} "
        f"{', '.join(f'`{name}`' for name in config.evaluators)} on the first "
        f"{config.max_chars:,} characters of each language's validation split as whole documents "
        f"({_sizes(texts)}), the same text for every model: the in-domain figures. "
        + (
            f"Out-of-domain figures (`{OOD_SUFFIX}`, first) are on the same budget of the languages' "
            f"`heldout_corpora`, text of another kind that no stage trains on "
            f"({_sizes(texts_by_suffix[OOD_SUFFIX])}). "
            if texts_by_suffix[OOD_SUFFIX]
            else "No language of this run declares out-of-domain text (`heldout_corpora`). "
        )
        + f"{_scorer_note(config)} "
        "`xlang eval bpc --model FOLDER --lang CODE` gives the same figures for one model.",
        "",
        _expectations(context, parameters.get("base")),
    ]
    if any(key.endswith("/bpc") for key in metrics):
        plot = _plot_bpc(metrics, [label for label, _ in models], [s.code for s in context.languages], context.out_dir)
        lines += ["", f"![bits per character](evaluate/{plot.name})"]
    lines += suite_lines
    metrics.update(_suite_metrics(context.out_dir))
    return StageOutput(metrics=metrics, report="\n".join(lines))


SUITES_FOLDER = "suites"


def _run_suites(context: StageContext, models: list[tuple[str, str]]) -> list[str]:
    """Every suite on the base and the final model, per language (`suites/LABEL/CODE/`, each an `xlang eval
    run` folder); returns the report lines: a side-by-side table and `suites.png`. The answers are written
    into the stage's work folder first, so a killed evaluation resumes where it stopped."""
    from xlang_recipes.suites import evaluate_judged, suite_sets

    from xlang.eval.report import metrics_table, plot_rows

    config: EvaluateConfig = context.config
    chosen = [models[0], models[-1]] if len(models) > 1 else models
    lines: list[str] = []
    for suite in config.suites:
        rows = []
        passed_over = []
        for label, folder in chosen:
            for spec in context.languages:
                if not spec.suite(suite):
                    passed_over.append(spec.code)
                    continue
                began = time.perf_counter()
                results = evaluate_judged(
                    context.resolver,
                    config.judge,
                    out_dir=context.work_dir / SUITES_FOLDER / suite / label / spec.code,
                    model_dir=folder,
                    language=spec,
                    suite=suite,
                    sets=suite_sets(spec, suite),
                    max_tokens=config.max_tokens,
                )
                shown = "image" if results["saw_images"] else "no image"
                print(
                    f"  evaluate: {suite} suite, {label} {spec.code} ({shown}): {time.perf_counter() - began:.0f} s",
                    flush=True,
                )
                rows.append((label, spec.code, results["metrics"]))
        if not rows:
            lines += ["", f"### {suite} suite", "", f"No language of this run has sets in the {suite} suite."]
            continue
        plot = plot_rows(rows, context.out_dir / f"{suite}-suite.png", title=f"{suite} suite: base and final model")
        base_blind = rows[0][0] == "base"
        lines += [
            "",
            f"### {suite} suite",
            "",
            *metrics_table(rows),
            "",
            "The base is a text model, so it answered without the images: its row is what the language side "
            "knows with no vision at all."
            if base_blind
            else "",
            _judge_note(config),
            f"Each model's answers, results.json and report: `evaluate/{SUITES_FOLDER}/{suite}/MODEL/LANG/`; "
            "`xlang eval run --model FOLDER --suite NAME --lang CODE` measures the same for any model.",
        ]
        if sorted(set(passed_over)):
            lines.append(f"No {suite} sets in: {', '.join(sorted(set(passed_over)))}.")
        if plot is not None:
            lines += ["", f"![{suite} suite](evaluate/{plot.name})"]
    move_finished(context.work_dir / SUITES_FOLDER, context.out_dir / SUITES_FOLDER)
    return lines


def move_finished(work: Path, out: Path) -> None:
    """Move what a stage built in its work folder (kept across a kill) into its output folder."""
    if work.is_dir():
        shutil.move(str(work), out)


def _judge_note(config: EvaluateConfig) -> str:
    if config.judge:
        return f"Open-ended answers graded by the `{config.judge}` judge against the references (relative score)."
    return (
        "No judge was set (`stages.evaluate.judge`), so open-ended answers are scored by chrF against the "
        "reference only; an answer in another language scores zero."
    )


def _suite_metrics(out_dir: Path) -> dict[str, float]:
    """`SUITE/LABEL/CODE/METRIC` from every results.json the suites wrote, for the manifest."""
    import json

    found: dict[str, float] = {}
    for results in sorted((out_dir / SUITES_FOLDER).glob("*/*/*/results.json")):
        suite, label, code = results.parent.relative_to(out_dir / SUITES_FOLDER).parts
        for name, value in json.loads(results.read_text(encoding="utf-8"))["metrics"].items():
            found[f"{suite}/{label}/{code}/{name}"] = value
    return found


def redraw_run_report(run_dir: Path, resolver: Resolver) -> Path:
    """`xlang eval report RUN_DIR`: the evaluate stage's plots drawn again from what it recorded, and the
    run's report.md rebuilt from every stage's section."""
    import json

    from xlang.errors import XlangError
    from xlang.eval.report import plot_rows
    from xlang.runner import REPORT, _write_report

    try:
        manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
        recipe = resolver.recipe(manifest["recipe"])
        record = manifest["stages"].get("evaluate") or {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise XlangError(
            f"{run_dir / 'manifest.json'} is not an xlang run manifest ({error}); pass a run folder"
        ) from None
    evaluate_dir = run_dir / str(record.get("output", "evaluate"))
    metrics = record.get("metrics") or {}
    if record.get("status") == "done" and evaluate_dir.is_dir():
        labels = list(dict.fromkeys(key.split("/")[0] for key in metrics if key.endswith("/bpc")))
        codes = list(dict.fromkeys(key.split("/")[1] for key in metrics if key.endswith("/bpc")))
        if labels:
            _plot_bpc(metrics, labels, codes, evaluate_dir)
        for results in sorted((evaluate_dir / SUITES_FOLDER).glob("*")):
            rows = []
            for found in sorted(results.glob("*/*/results.json")):
                label, code = found.parent.parts[-2:]
                rows.append((label, code, json.loads(found.read_text(encoding="utf-8"))["metrics"]))
            rows.sort(key=lambda row: row[0] != "base")
            if rows:
                plot_rows(rows, evaluate_dir / f"{results.name}-suite.png", title=f"{results.name} suite")
    _write_report(run_dir, manifest, recipe)
    return run_dir / REPORT


_METRIC_LABELS = {"bpc": "bits/char", "tokens_per_char": "tokens/char"}
"""Report headings of the built-in evaluators' metrics (manifest keys stay as the evaluators name them)."""


def _scorer_note(config: EvaluateConfig) -> str:
    if "bpc" not in config.evaluators:
        return ""
    from xlang.eval.bpc import BpcOptions

    options = BpcOptions(**(config.evaluator_options.get("bpc") or {}))
    return (
        "Bits per character (lower is better; comparable across tokenizers): the `bpc` scorer, each document "
        f"after one unscored separator token, read in windows of {options.window:,} tokens advancing by "
        f"{options.stride:,}; tokens per character: the model's own tokenizer on the same text."
    )


def _expectations(context: StageContext, base_parameters: int | None) -> str:
    """One line that says what a run of this size can be expected to show, so nobody reads the answers of a
    small model after a short run as a measure of what the method can do."""
    stages = context.manifest["stages"]
    pretrain_steps = sum(
        int(part.get("steps", 0))
        for part in ((stages.get("pretrain") or {}).get("metrics") or {}).get("stages", [])
        if isinstance(part, dict)
    )
    vit_steps = ((stages.get("vit") or {}).get("metrics") or {}).get("steps")
    size = f"a {base_parameters / 1e6:,.0f}M-parameter base" if base_parameters else "this base"
    training = [f"{pretrain_steps:,} pretraining steps"] if pretrain_steps else []
    if vit_steps:
        training.append(f"{int(vit_steps):,} visual-instruction steps")
    done = f" after {' and '.join(training)}" if training else ""
    small = (base_parameters or 0) < 1_000_000_000 or pretrain_steps < 1_000
    if not small:
        return (
            f"What these figures mean: {size}{done}. Bits per character measure how well each model predicts "
            "the language's text; they say nothing direct about answering questions or images."
        )
    return (
        f"What these figures and answers mean: {size}{done} learns the statistics of the new script (bits per "
        "character fall) long before it can answer. Answers in the vit section are expected to be wrong, "
        "repetitive or nonsense at this size and length: they show whether a reply comes out in the language, "
        "not whether it is right. Judge this run by the bits per character above; a useful model needs a larger "
        "base and thousands of steps."
    )


def _plot_bpc(metrics: dict[str, Any], labels: list[str], codes: list[str], out_dir: Path) -> Path:
    """Bars per model and language with their values; each language keeps its colour from the pretrain plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xlang.eval.plots import language_colours

    colours = language_colours(codes)
    present = [code for code in codes if any(f"{label}/{code}/bpc" in metrics for label in labels)]
    figure, axis = plt.subplots(figsize=(1.6 + 1.3 * len(labels), 3.4))
    width = 0.8 / max(len(present), 1)
    for offset, code in enumerate(present):
        values = [metrics.get(f"{label}/{code}/bpc", float("nan")) for label in labels]
        bars = axis.bar(
            [i + offset * width for i in range(len(labels))], values, width, label=code, color=colours[code]
        )
        axis.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    axis.set_xticks([i + width * (len(present) - 1) / 2 for i in range(len(labels))], labels)
    axis.set_ylabel("bits per character\n(lower is better)")
    axis.margins(y=0.12)
    axis.legend()
    figure.tight_layout()
    path = out_dir / "bpc.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


# --- helpers shared by the stages -----------------------------------------------------------------------


def resolve_pretrain(config: PretrainConfig, language: LanguageSpec, resolver: Resolver) -> PretrainConfig:
    """`--mix` checked before any stage runs, not after expansion and initialization: every name is a
    language of the run (or `parallel`, when the language has parallel text) and every weight finite."""
    import math

    from xlang.errors import XlangError
    from xlang.train.config import PARALLEL_KEY

    codes = [language.code, *(spec.code for spec in resolver.companions(language))]
    known = codes + ([PARALLEL_KEY] if any(source.parallel for source in language.corpora) else [])
    unknown = [name for name in config.mix if name not in known]
    if unknown:
        raise XlangError(
            f"--mix names {', '.join(repr(name) for name in unknown)}, not a language of this run; "
            f"use {', '.join(known)} (e.g. {'=0.5,'.join(codes[:2])}=0.5)"
        )
    infinite = [f"{name}={weight}" for name, weight in config.mix.items() if not math.isfinite(weight)]
    if infinite:
        raise XlangError(
            f"--mix weight {', '.join(infinite)} is not a finite number; give each language a weight like 0.5"
        )
    return config


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


EXPAND = Stage("expand", "add target-language tokens as real BPE merges", ExpandConfig, expand, resolve_expand)
INIT = Stage("init", "initialize the new embedding rows", InitConfig, init, resolve_init)
PRETRAIN = Stage(
    "pretrain", "continued bilingual pretraining (LoRA + new rows)", PretrainConfig, pretrain, resolve_pretrain
)
EVALUATE = Stage(
    "evaluate", "every evaluator on every model the run made, per language", EvaluateConfig, evaluate, resolve_evaluate
)

X_LLAVA = Recipe(
    name="x-llava",
    description="X-LLaVA: vocabulary expansion, embedding init, bilingual pretraining, LLaVA alignment and VIT.",
    stages=(EXPAND, INIT, PRETRAIN, ALIGN, VIT, EVALUATE),
    flags=(
        Flag("budget", "expand.budget", "expand: number of new vocabulary entries.", int),
        Flag("source", "expand.candidate_sources", "expand: candidate source name (repeatable).", multiple=True),
        Flag(
            "word-list",
            "expand.source_options.vocabulary.lists",
            "expand: a word list of the language for the vocabulary source (repeatable).",
            multiple=True,
        ),
        Flag(
            "user-token",
            "expand.source_options.user.tokens",
            "expand: a token to offer through the user source (repeatable).",
            multiple=True,
        ),
        Flag("expander", "expand.expander", "expand: tokenizer expander name."),
        Flag("initializer", "init.initializer", "init: embedding initializer name."),
        Flag(
            "init-option",
            "init.options",
            "init: one of the initializer's options, NAME=VALUE (repeatable), e.g. fit_steps=150 for subword-fit; "
            "`xlang plugins` lists each initializer's options.",
            keyed=True,
        ),
        Flag(
            "init-text",
            "init.texts",
            "init: a .txt or .jsonl file of the text the model will meet, read by the initializer instead of the "
            "training split (repeatable).",
            multiple=True,
        ),
        Flag("steps", "pretrain.steps", "pretrain: optimizer steps.", int),
        Flag("seq-len", "pretrain.seq_len", "pretrain: block length in tokens.", int),
        Flag("mix", "pretrain.mix", "pretrain: language weights, e.g. ko=0.5,en=0.5.", parse_mix),
        Flag(
            "vit-data",
            "align.extra_data",
            "align, vit: visual-instruction JSONL added to the languages' seed records (repeatable).",
            multiple=True,
            also=("vit.extra_data",),
        ),
        Flag(
            "vit-data-weight",
            "align.extra_weight",
            "align, vit: how often each --vit-data training record is drawn (seed records: 1).",
            float,
            also=("vit.extra_weight",),
        ),
    ),
)
