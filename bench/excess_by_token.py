"""Where an expanded model loses bits against the base model, token by token.

Both models score the same text character by character (`xlang.eval.character_bits`: each token's bits
spread over the characters it covers). Every character is then charged to the expanded tokenizer's token
that covers it, and the difference (expanded minus base) is summed per token. The table groups the tokens by
kind: base tokens, and new tokens by their length in characters (with a leading space apart), so one can see
whether the loss sits in whole words, in single syllables or characters, or in the base tokens read after
new ones; the first and the repeated occurrences in a document are split, and the tokens that lose the
most are listed. Out-of-domain text (the language's `heldout_corpora`) by default, `--text in-domain` for
the validation split.

    .venv/bin/python bench/excess_by_token.py --model runs/ko/init/model --language ko
    .venv/bin/python bench/excess_by_token.py --model runs/zh/init/model --language zh --text in-domain --top 30
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from init_quality import heldout_texts, validation_documents  # noqa: E402
from tokenizer_compression import language  # noqa: E402


@dataclass
class TokenExcess:
    """Bits the expanded model spends beyond the base model on one token's characters, over the text."""

    bits: float = 0.0
    occurrences: int = 0
    repeat_bits: float = 0.0


@dataclass
class Charged:
    """The per-token excess of one scoring, and the totals it came from."""

    per_token: dict[int, TokenExcess] = field(default_factory=lambda: defaultdict(TokenExcess))
    characters: int = 0
    base_bits: float = 0.0
    expanded_bits: float = 0.0


def charge(documents: list[str], base_bits: list[Any], expanded_bits: list[Any], tokenizer: Any) -> Charged:
    """Sum (expanded − base) bits per expanded token, counting a token's repeats within its document apart.

    Characters are matched to tokens as `character_bits` spreads the bits (`character_span`), and the byte
    pieces of one character, which all cover it, split its bits."""
    from xlang.eval.bpc import character_span

    charged = Charged()
    for document, base, expanded in zip(documents, base_bits, expanded_bits, strict=True):
        scored = len(base)  # the character budget may cut the last document
        charged.characters += scored
        charged.base_bits += float(base.sum())
        charged.expanded_bits += float(expanded.sum())
        encoding = tokenizer(document[:scored], add_special_tokens=False, return_offsets_mapping=True)
        spans = [character_span(start, end, scored) for start, end in encoding["offset_mapping"]]
        sharing = Counter(spans)
        seen: set[int] = set()
        for token, (start, end) in zip(encoding["input_ids"], spans, strict=True):
            excess = float(expanded[start:end].sum() - base[start:end].sum()) / sharing[(start, end)]
            entry = charged.per_token[token]
            entry.bits += excess
            entry.occurrences += 1
            if token in seen:
                entry.repeat_bits += excess
            seen.add(token)
    return charged


def kind_of(token: int, first_new: int, tokenizer: Any) -> str:
    """`base`, or a new token's length in characters (leading space apart): the groups of the table."""
    if token < first_new:
        return "base"
    text = tokenizer.decode([token])
    length = len(text.strip())
    return f"new, {length if length < 3 else '3+'} chars{', after space' if text.startswith(' ') else ''}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the expanded model folder (an init or later)")
    parser.add_argument("--base", type=Path, help="the base model folder (default: the embedded SmolLM2)")
    parser.add_argument("--language", default="ko")
    parser.add_argument("--text", choices=("out-of-domain", "in-domain"), default="out-of-domain")
    parser.add_argument("--max-chars", type=int, default=5000)
    parser.add_argument("--top", type=int, default=20, help="how many of the costliest tokens to list")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".cache" / "xlang-test")
    args = parser.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from xlang.assets.models import ensure_smollm2
    from xlang.embeddings.checkpoint import load_causal_lm, load_tokenizer
    from xlang.embeddings.pieces import check_extends
    from xlang.errors import XlangError
    from xlang.eval.bpc import character_bits

    base_dir = args.base or ensure_smollm2(args.cache_dir)
    try:
        base_tokenizer, tokenizer = load_tokenizer(base_dir), load_tokenizer(args.model)
        new_ids = check_extends(base_tokenizer, tokenizer)
    except (XlangError, OSError) as error:
        parser.error(f"--model {args.model}: {error}")
    if not new_ids:
        parser.error(f"--model {args.model}: its tokenizer adds no token to the base's; give an expanded model")
    spec = language(args.language)
    if args.text == "out-of-domain":
        if not spec.heldout_corpora:
            parser.error(f"--language {args.language} declares no out-of-domain text; use --text in-domain")
        documents = heldout_texts(spec, args.cache_dir, args.max_chars)
    else:
        documents = validation_documents(spec, args.cache_dir)

    with torch.no_grad():
        base = load_causal_lm(base_dir, dtype="float32").eval()
        base_bits = character_bits(base, base_tokenizer, documents, max_chars=args.max_chars)
        del base
        expanded = load_causal_lm(args.model, dtype="float32").eval()
        expanded_bits = character_bits(expanded, tokenizer, documents, max_chars=args.max_chars)
    documents = documents[: len(base_bits)]
    charged = charge(documents, base_bits, expanded_bits, tokenizer)
    excess = charged.expanded_bits - charged.base_bits

    console = Console()
    console.print(
        f"{args.language}, {args.text}, first {charged.characters:,} characters: base "
        f"{charged.base_bits / charged.characters:.4f} bits/char, expanded "
        f"{charged.expanded_bits / charged.characters:.4f} ({charged.expanded_bits / charged.base_bits:.3f}x); "
        f"{excess:,.0f} bits more in all"
    )
    first_new = min(new_ids)
    groups: dict[str, list[TokenExcess]] = defaultdict(list)
    for token, entry in charged.per_token.items():
        groups[kind_of(token, first_new, tokenizer)].append(entry)
    table = Table(title="Excess bits (expanded − base) by the expanded token covering each character")
    for column in ("tokens", "distinct", "times", "excess bits", "share", "bits each", "on repeats"):
        table.add_column(column, justify="left" if column == "tokens" else "right")
    for name in sorted(groups):
        entries = groups[name]
        bits, count = sum(e.bits for e in entries), sum(e.occurrences for e in entries)
        table.add_row(
            name,
            str(len(entries)),
            f"{count:,}",
            f"{bits:,.0f}",
            f"{bits / excess:.0%}",
            f"{bits / count:.2f}",
            f"{sum(e.repeat_bits for e in entries):,.0f}",
        )
    console.print(table)
    ranked = sorted(charged.per_token.items(), key=lambda item: -item[1].bits)
    worst = Table(title=f"The {args.top} tokens that lose the most")
    for column in ("token", "new", "times", "excess bits", "on repeats"):
        worst.add_column(column, justify="left" if column == "token" else "right")
    for token, entry in ranked[: args.top]:
        worst.add_row(
            repr(tokenizer.decode([token])),
            "yes" if token >= first_new else "",
            str(entry.occurrences),
            f"{entry.bits:,.1f}",
            f"{entry.repeat_bits:,.1f}",
        )
    console.print(worst)
    tenth = max(1, len(ranked) // 10)
    share = sum(entry.bits for _, entry in ranked[:tenth]) / excess
    console.print(f"the costliest tenth of the {len(ranked)} distinct tokens: {share:.0%} of the excess")


if __name__ == "__main__":
    main()
