"""Embedding initialization quality: how sane is the expanded model before a single step of training?

For Korean and Chinese (SmolLM2-135M's tokenizer expanded by 8k tokens with the tokenizer stage), on the
validation splits (paragraphs joined into their documents, the first --max-chars characters):

- bits per character of the base model with its own tokenizer (the reference), on the validation split
  (in-domain) and on the same budget of the language's `heldout_corpora` (out-of-domain: laws, news,
  reviews, text of another kind that no stage trains on, shown first),
- bits per character of the expanded model under each initializer, with the expanded tokenizer,
- English bits per character next to it (the expansion must leave it almost unchanged),
- the wall time of the initializer call;
- where the bits go, on both texts (out-of-domain first): bits per character of the text covered by new
  tokens and by base tokens, each split into first occurrences in their document and repeats (which the
  base model predicts by copying from its context), and a copy probe (random frequent tokens read twice:
  a model that copies predicts the second reading almost perfectly);
- the same for SmolLM2 with its output matrix copied ("untied": the same function, the layout of
  Llama-2-style models), where input and output rows are initialized separately.

Then the time each initializer takes on a 7B-shaped embedding matrix (4096 wide, the SmolLM2 tokenizer
expanded by 16k Chinese tokens: 49k + 16k rows; a one-layer random model so that it fits here).

    .venv/bin/python bench/init_quality.py --cache-dir .cache/xlang-test
    .venv/bin/python bench/init_quality.py --languages ko --initializers subword-mean subword-freq --skip-7b
    .venv/bin/python bench/init_quality.py --languages zh --initializers subword-fit --row-steps 400 --skip-7b
    .venv/bin/python bench/init_quality.py --initializers subword-freq --init-option prior_weight=0.3 --skip-7b
    .venv/bin/python bench/init_quality.py --languages ko --expansion ko=runs/ko/expand/tokenizer \
        --initializers subword-freq subword-fit --untied --init-text heldout-rest --skip-7b --max-chars 5000

The last line is a one-line summary.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from tokenizer_compression import language  # noqa: E402  (the installed plugin or this checkout's)


def resolver(cache_dir: Path) -> Any:
    from xlang.resolve import Resolver
    from xlang.settings import XlangSettings

    return Resolver(XlangSettings(cache_dir=cache_dir))


def validation_documents(spec: Any, cache_dir: Path) -> list[str]:
    """The whole validation split as documents, as `xlang eval bpc` and the evaluate stage read it."""
    from xlang.data.views import documents

    return documents(resolver(cache_dir).dataset(spec, "validation"), spec)


def heldout_texts(spec: Any, cache_dir: Path, max_chars: int) -> list[str]:
    """The out-of-domain text (`heldout_corpora`) as the evaluate stage and `xlang eval bpc` read it."""
    from xlang.data.heldout import heldout_documents

    found = resolver(cache_dir)
    return heldout_documents(spec, [found.load(source, "validation") for source in spec.heldout_corpora], max_chars)


def heldout_rest(spec: Any, cache_dir: Path, max_chars: int) -> list[str]:
    """The held-out text that is *not* scored: what follows the scored part of each document, and the documents
    not scored at all. Given to the initializers by `--init-text heldout-rest`, it asks how far an initializer
    gets when what it reads is text of the scored kind, not help pages."""
    scored = heldout_texts(spec, cache_dir, max_chars)
    rest = []
    for document in heldout_texts(spec, cache_dir, None):
        part = max((text for text in scored if document.startswith(text)), key=len, default="")
        if len(document) > len(part):
            rest.append(document[len(part) :])
    return rest


def training_documents(spec: Any, cache_dir: Path) -> list[str]:
    """The training split as documents, as the recipe's init stage gives it to initializers."""
    from xlang.data.views import documents

    return documents(resolver(cache_dir).dataset(spec, "train"), spec)


def training_texts(spec: Any, cache_dir: Path) -> list[str]:
    """The training split's paragraphs, as the tokenizer stage learns from them."""
    from xlang.data.views import paragraphs

    return paragraphs(resolver(cache_dir).dataset(spec, "train"), spec)


def expanded_tokenizer(base: Path, spec: Any, train: list[str], budget: int, cache_dir: Path) -> Path:
    """The tokenizer stage's expansion, built once per (language, budget) into the cache."""
    from xlang.tokenizer import expand_tokenizer

    out = cache_dir / "bench" / "init-quality" / f"{spec.code}-{budget}"
    if not (out / "tokenizer.json").is_file():
        expand_tokenizer(base, spec, train, budget, out, overwrite=True)
    return out


def initialize(
    model: Any,
    base_tokenizer: Any,
    tokenizer: Any,
    name: str,
    train: list[str],
    keep: list[str] = (),
    row_steps: int = 0,
    prior: list[str] = (),
    extra_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Resize ``model`` for ``tokenizer`` and fill the new rows with initializer ``name``, as the init stage
    does: the registered strategy, its options (``row_steps`` for a fitting one, then ``extra_options`` that
    it takes), the stage's inputs."""
    from xlang.embeddings import expand_model
    from xlang.resolve import Resolver
    from xlang.settings import XlangSettings

    strategy = Resolver(XlangSettings()).strategy("embedding_initializers", name)
    options = {"row_steps": row_steps} if name in FITTING else {}
    options.update({key: value for key, value in (extra_options or {}).items() if key in strategy.options.model_fields})
    return expand_model(
        model,
        base_tokenizer,
        tokenizer,
        strategy,
        options=options or None,
        inputs={"texts": train, "keep_texts": list(keep), "prior_texts": list(prior), "seed": 0},
        initializer_name=name,
    )


def prior_texts(spec: Any, paragraphs: list[str], cache_dir: Path) -> list[str]:
    """The init stage's ``prior_texts``: the language's word-frequency lists written out as general text."""
    from xlang.tokenizer.candidates import general_text_prior

    return general_text_prior(language=spec, texts=paragraphs, vocabularies=resolver(cache_dir).vocabularies(spec))


def untie(model: Any) -> None:
    """Give ``model`` an output matrix of its own, a copy of its input one: the same function, with the
    layout of Llama-2-style models, so that input and output rows can be initialized separately."""
    import torch

    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())


def bpc(model: Any, tokenizer: Any, documents: list[str], max_chars: int) -> float:
    from xlang.eval.bpc import bits_per_character

    return bits_per_character(model, tokenizer, documents, max_chars=max_chars).bpc


def profile(model: Any, tokenizer: Any, documents: list[str]) -> list[Any]:
    """Bits per character of each document (their sum over all characters is the bench's BPC)."""
    from xlang.eval.bpc import character_bits

    return character_bits(model, tokenizer, documents, max_chars=None)


FITTING = {"subword-fit", "subword-copy"}
"""Initializers whose cost is passes of the whole model: a one-layer 7B-shaped stand-in would time nothing real."""

CATEGORIES = (
    "new token, first in document",
    "new token, repeat",
    "base token, first in document",
    "base token, repeat",
)


def occurrences(tokenizer: Any, documents: list[str], base_size: int) -> list[list[int]]:
    """Per character, the index in CATEGORIES of the expanded-tokenizer token that covers it.

    Splitting the bits this way shows what the expanded model reads well (text it sees for the first time)
    and what it has lost (repeats, which the base model predicts by copying from earlier in the document).
    """
    from xlang.eval.bpc import character_span

    encoded = tokenizer(documents, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    labels = []
    for document, ids, spans in zip(documents, encoded["input_ids"], encoded["offset_mapping"], strict=True):
        per_char = [0] * len(document)
        seen: set[int] = set()
        for token_id, (start, end) in zip(ids, spans, strict=True):
            category = (0 if token_id >= base_size else 2) + (1 if token_id in seen else 0)
            seen.add(token_id)
            first, last = character_span(start, end, len(document))
            per_char[first:last] = [category] * (last - first)
        labels.append(per_char)
    return labels


def split_bits(profiles: list[Any], labels: list[list[int]]) -> list[float]:
    """Total bits per category of CATEGORIES."""
    import torch

    totals = [0.0] * len(CATEGORIES)
    for bits, per_char in zip(profiles, labels, strict=True):
        categories = torch.tensor(per_char, dtype=torch.long)
        for index in range(len(CATEGORIES)):
            totals[index] += float(bits[categories == index].sum())
    return totals


def scores(
    model: Any, tokenizer: Any, texts: dict[str, list[str]], labels: dict[str, list[list[int]]]
) -> dict[str, Any]:
    """`ood_bpc` and `bpc` (in-domain), and the bits of each text split by CATEGORIES, from one scoring pass per
    text (the per-character bits sum to the BPC). `ood_bpc` is None for a language without heldout text."""
    split: dict[str, list[float]] = {}
    totals: dict[str, float | None] = {}
    for text, documents in texts.items():
        characters = sum(len(document) for document in documents)
        if not characters:
            totals[text] = None
            continue
        bits = profile(model, tokenizer, documents)
        totals[text] = sum(float(values.sum()) for values in bits) / characters
        split[text] = split_bits(bits, labels[text])
    return {"ood_bpc": totals["ood"], "bpc": totals["id"], "split_bits": split}


def frequent_tokens(tokenizer: Any, texts: list[str], keep: Any, count: int = 1000) -> list[int]:
    """The ``count`` most frequent token ids on ``texts`` that satisfy ``keep``."""
    from collections import Counter

    counts: Counter[int] = Counter()
    for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]:
        counts.update(ids)
    return [token_id for token_id, _ in counts.most_common() if keep(token_id)][:count]


def copy_probe(model: Any, pool: list[int], separator: int) -> tuple[float, float]:
    """(first, second) reading of xlang's copy probe, for the JSON record and the table."""
    from dataclasses import astuple

    from xlang.eval.copying import copy_probe as probe

    return astuple(probe(model, pool, separator))


def measure_language(
    code: str,
    args: argparse.Namespace,
    base_dir: Path,
    english: list[str],
    base_english: float,
    english_train: list[str],
) -> list[dict[str, Any]]:
    from xlang.embeddings.checkpoint import load_causal_lm, load_tokenizer

    spec = language(code)
    if args.init_text == "heldout-rest":
        train = heldout_rest(spec, args.cache_dir, args.max_chars)
    else:
        train = training_documents(spec, args.cache_dir)
    validation = validation_documents(spec, args.cache_dir)
    paragraphs = training_texts(spec, args.cache_dir)
    tokenizer_dir = args.expansion.get(code)
    if tokenizer_dir is None:
        tokenizer_dir = expanded_tokenizer(base_dir, spec, paragraphs, args.budget, args.cache_dir)
    base_tokenizer = load_tokenizer(base_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    prior = prior_texts(spec, paragraphs, args.cache_dir)

    from xlang.data.views import take_chars

    texts = {
        "ood": heldout_texts(spec, args.cache_dir, args.max_chars),
        "id": take_chars(validation, args.max_chars),
    }
    labels = {text: occurrences(tokenizer, documents, len(base_tokenizer)) for text, documents in texts.items()}
    separator = base_tokenizer.bos_token_id
    probe_text = paragraphs[:2000]
    base_pool = frequent_tokens(base_tokenizer, probe_text, lambda token_id: token_id != separator)
    new_pool = frequent_tokens(tokenizer, probe_text, lambda token_id: token_id >= len(base_tokenizer))

    base_model = load_causal_lm(base_dir, dtype=args.dtype)
    rows = [
        {
            "language": code,
            "model": "base",
            **scores(base_model, base_tokenizer, texts, labels),
            "en_bpc": base_english,
            "init_s": None,
            "copy": copy_probe(base_model, base_pool, separator),
            "split_chars": {
                text: [sum(per_char.count(index) for per_char in per_text) for index in range(len(CATEGORIES))]
                for text, per_text in labels.items()
            },
        }
    ]
    del base_model
    print(f"{code} base: {rows[0]['bpc']:.4f} bits/char", file=sys.stderr, flush=True)
    import torch

    runs = [(name, False) for name in args.initializers] + [(name, True) for name in args.untied]
    for name, untied in runs:
        model = load_causal_lm(base_dir, dtype="float32")
        if untied:
            untie(model)
        started = time.perf_counter()
        row_steps = args.row_steps if name in FITTING else 0
        done = initialize(
            model, base_tokenizer, tokenizer, name, train, english_train, row_steps, prior, args.init_option
        )
        seconds = time.perf_counter() - started
        model.to(getattr(torch, args.dtype))
        label = f"{name} + {row_steps} row steps" if row_steps else name
        label = f"{label} (untied)" if untied else label
        row = {
            "language": code,
            "model": label,
            "en_bpc": bpc(model, tokenizer, english, args.max_chars),
            **scores(model, tokenizer, texts, labels),
            "init_s": seconds,
            "facts": done["facts"],
            "copy": copy_probe(model, new_pool, separator),
        }
        rows.append(row)
        print(
            f"{code} {label}: {row['bpc']:.4f} bits/char in-domain, {row['ood_bpc'] or float('nan'):.4f} "
            f"out-of-domain, en {row['en_bpc']:.4f}, init {seconds:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        del model
        gc.collect()
    return rows


def breakdown_table(code: str, rows: list[dict[str, Any]]) -> Any:
    """Bits per character by where the text's tokens occur, out-of-domain first, and the copy probe, one column
    per model."""
    from rich.table import Table

    base = rows[0]
    table = Table(
        title=f"{code}: where the bits go (characters grouped by the expanded tokenizer's tokens; "
        "copy probe: nats/token reading random frequent tokens, then again)"
    )
    table.add_column("text")
    table.add_column("chars", justify="right")
    for row in rows:
        table.add_column(row["model"], justify="right")
    for text, name in (("ood", "out-of-domain"), ("id", "in-domain")):
        if text not in base["split_bits"]:
            continue
        for index, category in enumerate(CATEGORIES):
            chars = base["split_chars"][text][index]
            table.add_row(
                f"{name}: {category}",
                f"{chars:,}",
                *[f"{row['split_bits'][text][index] / chars:.3f}" if chars else "" for row in rows],
            )
    table.add_row("copy probe, 1st reading", "", *[f"{row['copy'][0]:.2f}" for row in rows])
    table.add_row("copy probe, 2nd reading", "", *[f"{row['copy'][1]:.2f}" for row in rows])
    return table


def seven_b_shape(args: argparse.Namespace, base_dir: Path) -> list[dict[str, Any]]:
    """Initializer time on a 4096-wide, 49k + 16k row bf16 embedding (untied, so both matrices are filled)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from xlang.embeddings.checkpoint import load_tokenizer

    spec = language("zh")  # the larger corpus: it fills a 16k budget
    train = training_texts(spec, args.cache_dir)
    tokenizer = load_tokenizer(expanded_tokenizer(base_dir, spec, train, 16_000, args.cache_dir))
    base_tokenizer = load_tokenizer(base_dir)
    config = LlamaConfig(
        vocab_size=len(base_tokenizer),
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=1,
        num_attention_heads=32,
        num_key_value_heads=32,
        tie_word_embeddings=False,
    )
    results = []
    for name in args.initializers:
        if name in FITTING:
            print(f"7B-shape {name}: not timed (it runs forward and backward passes of the model)", file=sys.stderr)
            continue
        torch.manual_seed(0)
        torch.set_default_dtype(torch.bfloat16)  # how 7B checkpoints ship
        try:
            model = LlamaForCausalLM(config).eval()
        finally:
            torch.set_default_dtype(torch.float32)
        started = time.perf_counter()
        done = initialize(model, base_tokenizer, tokenizer, name, train)
        results.append(
            {
                "initializer": name,
                "seconds": time.perf_counter() - started,
                "init_s": done["init_seconds"],
                "rows": done["embedding_rows"],
                "new": len(done["new_token_ids"]),
            }
        )
        print(f"7B-shape {name}: {results[-1]['init_s']:.2f} s", file=sys.stderr, flush=True)
        del model
        gc.collect()
    return results


def main() -> None:
    from xlang import plugins

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".cache" / "xlang-test")
    parser.add_argument("--languages", nargs="*", default=["ko", "zh"])
    parser.add_argument("--budget", type=int, default=8000)
    parser.add_argument("--max-chars", type=int, default=20_000)
    parser.add_argument(
        "--initializers",
        nargs="+",
        default=list(plugins.strategies("embedding_initializers")),
        help="registered initializer names (default: all, the xlang-subword-fit plugin's included when installed)",
    )
    parser.add_argument(
        "--untied",
        nargs="*",
        default=["subword-mean", "subword-freq"],
        help="also run these on SmolLM2 with its output matrix copied (untied, the same function)",
    )
    parser.add_argument(
        "--expansion",
        action="append",
        default=[],
        metavar="CODE=DIR",
        help="score this expanded tokenizer folder for CODE (e.g. a run's expand/tokenizer: the recipe's expansion) "
        "instead of the bench's own corpus-bpe expansion",
    )
    parser.add_argument(
        "--init-text",
        choices=["training", "heldout-rest"],
        default="training",
        help="what the initializers read: the training documents (as the init stage), or the held-out text "
        "that is not scored (a ceiling: text of the scored kind)",
    )
    parser.add_argument("--row-steps", type=int, default=0, help="subword-fit: steps of its per-row phase")
    parser.add_argument(
        "--init-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an initializer option, given to each initializer that takes it (repeatable), e.g. prior_weight=0.3",
    )
    parser.add_argument("--dtype", default="float32", help="evaluation dtype (bfloat16 is ~3x faster on AMX CPUs)")
    parser.add_argument("--skip-7b", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    from xlang.cli import keyed_entry

    args.init_option = dict(keyed_entry(entry) for entry in args.init_option)
    args.expansion = {code: Path(folder) for code, folder in (keyed_entry(entry) for entry in args.expansion)}

    from rich.console import Console
    from rich.table import Table

    from xlang.assets.models import ensure_smollm2
    from xlang.embeddings.checkpoint import load_causal_lm, load_tokenizer

    base_dir = ensure_smollm2(args.cache_dir)
    english = validation_documents(language("en"), args.cache_dir)
    model = load_causal_lm(base_dir, dtype=args.dtype)
    base_english = bpc(model, load_tokenizer(base_dir), english, args.max_chars)
    del model
    english_train = training_documents(language("en"), args.cache_dir)  # subword-fit keeps English as it was
    rows = [
        row
        for code in args.languages
        for row in measure_language(code, args, base_dir, english, base_english, english_train)
    ]

    table = Table(
        title=f"Expanded model before training: bits per character out-of-domain (heldout_corpora) and in-domain "
        f"(validation), first {args.max_chars:,} chars of each, SmolLM2-135M, +{args.budget} tokens, {args.dtype}"
        + ("; the initializers read the unscored held-out text" if args.init_text == "heldout-rest" else "")
    )
    columns = ("language", "model", "OOD bits/char", "OOD × base", "ID bits/char", "ID × base")
    for column in (*columns, "English bits/char", "English Δ", "init s"):
        table.add_column(column, justify="left" if column in ("language", "model") else "right")
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        reference = next(r for r in rows if r["language"] == row["language"] and r["model"] == "base")
        row["ratio"] = row["bpc"] / reference["bpc"]
        row["ood_ratio"] = row["ood_bpc"] / reference["ood_bpc"] if row["ood_bpc"] is not None else None
        row["en_change"] = row["en_bpc"] / base_english - 1
        table.add_row(
            row["language"],
            row["model"],
            "" if row["ood_bpc"] is None else f"{row['ood_bpc']:.4f}",
            "" if row["ood_ratio"] is None else f"{row['ood_ratio']:.3f}",
            f"{row['bpc']:.4f}",
            f"{row['ratio']:.3f}",
            f"{row['en_bpc']:.4f}",
            f"{row['en_change']:+.3%}",
            "" if row["init_s"] is None else f"{row['init_s']:.1f}",
        )
        key = (row["language"], "untied" if row["model"].endswith("(untied)") else "tied")
        ranked = "ood_ratio" if row["ood_ratio"] is not None else "ratio"  # out-of-domain decides
        if row["model"] != "base" and (key not in best or row[ranked] < best[key][ranked]):
            best[key] = row
    console = Console(width=max(Console().width, 110))
    console.print(table)
    for code in args.languages:
        console.print(breakdown_table(code, [row for row in rows if row["language"] == code]))

    big = [] if args.skip_7b else seven_b_shape(args, base_dir)
    if big:
        timing = Table(title=f"7B-shaped embeddings ({big[0]['rows']:,} rows x 4096, untied, {big[0]['new']:,} new)")
        timing.add_column("initializer")
        timing.add_column("init s", justify="right")
        for result in big:
            timing.add_row(result["initializer"], f"{result['init_s']:.2f}")
        console.print(timing)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "seven_b": big}, indent=2, default=str))

    parts = [
        f"{code}: best {row['model']} "
        + ("" if row["ood_ratio"] is None else f"{row['ood_ratio']:.2f}x base BPC out-of-domain, ")
        + f"{row['ratio']:.2f}x in-domain (en {row['en_change']:+.2%})"
        for (code, _layout), row in best.items()
    ]
    randoms = [r for r in rows if r["model"] == "random"]
    if randoms:
        parts.append("random " + "/".join(f"{r['ratio']:.1f}x" for r in randoms))
    if big:
        slowest = max(big, key=lambda r: r["init_s"])
        parts.append(f"7B-shape init <= {slowest['init_s']:.1f} s ({slowest['initializer']})")
    print("init_quality: " + "; ".join(parts))


if __name__ == "__main__":
    main()
