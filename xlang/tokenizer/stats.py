"""Tokens per character and per word, base versus expanded, per language (`xlang tokenizer stats`)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlang.errors import XlangError


@dataclass(frozen=True)
class LanguageStats:
    """One language's validation texts under the base and the expanded tokenizer."""

    language: str
    texts: int
    chars: int
    words: int
    """Whitespace-separated words (meaningless for unspaced scripts such as Chinese; see chars)."""
    base_tokens: int
    tokens: int
    identical: int
    """Texts whose ids are exactly the base's (all of them, for a language the expansion did not target)."""
    pre_tokens: int = 0
    """Pieces the pre-tokenizer cuts the texts into: no token crosses one, so this many tokens is the floor."""

    @property
    def base_tokens_per_char(self) -> float:
        return self.base_tokens / self.chars if self.chars else 0.0

    @property
    def tokens_per_char(self) -> float:
        return self.tokens / self.chars if self.chars else 0.0

    @property
    def floor_tokens_per_char(self) -> float:
        """Tokens per character if every pre-tokenizer piece were one token: what no vocabulary can beat
        without another pre-tokenizer."""
        return self.pre_tokens / self.chars if self.chars else 0.0

    @property
    def base_tokens_per_word(self) -> float:
        return self.base_tokens / self.words if self.words else 0.0

    @property
    def tokens_per_word(self) -> float:
        return self.tokens / self.words if self.words else 0.0

    @property
    def ratio(self) -> float:
        """Expanded tokens over base tokens (below 1 is better)."""
        return self.tokens / self.base_tokens if self.base_tokens else 1.0

    @property
    def identical_share(self) -> float:
        return self.identical / self.texts if self.texts else 1.0


def _load_backend(where: str | Path, scratch: Path) -> Any:
    from tokenizers import Tokenizer

    from xlang.tokenizer.sentencepiece import load_proto, proto_to_tokenizer_json

    path = Path(where).expanduser()
    try:
        if path.is_file():
            return Tokenizer.from_str(json.dumps(proto_to_tokenizer_json(load_proto(path))))
        if path.is_dir() and (path / "tokenizer.json").is_file():
            return Tokenizer.from_file(str(path / "tokenizer.json"))
        if path.is_dir() and (path / "tokenizer.model").is_file():
            return Tokenizer.from_str(json.dumps(proto_to_tokenizer_json(load_proto(path / "tokenizer.model"))))
    except XlangError:
        raise
    except Exception as error:  # tokenizers raises plain Exceptions for a corrupt file; name the file instead
        raise XlangError(f"cannot read the tokenizer in {path}: {error}") from error
    raise XlangError(f"{path} is not a tokenizer folder (no tokenizer.json) nor a SentencePiece .model file")


def base_of(tokenizer_dir: str | Path) -> str:
    """The base recorded by `expand_tokenizer` in the folder's manifest."""
    from xlang.tokenizer import MANIFEST

    manifest = Path(tokenizer_dir).expanduser() / MANIFEST
    try:
        return str(json.loads(manifest.read_text(encoding="utf-8"))["base"])
    except (OSError, ValueError, KeyError) as error:
        raise XlangError(
            f"{tokenizer_dir} has no readable {MANIFEST} naming its base; pass the base tokenizer explicitly"
        ) from error


def tokenizer_stats(
    tokenizer: str | Path,
    texts_by_language: Mapping[str, Sequence[str]],
    base: str | Path | None = None,
) -> list[LanguageStats]:
    """Compare `tokenizer` with its `base` (default: the one its manifest names) on each language's texts
    (e.g. the validation splits of ko and en), without special tokens; `pre_tokens` counts the pieces the
    expanded tokenizer's pre-tokenizer makes (the base's: expansion keeps it)."""
    from xlang.tokenizer.expand import pre_tokens
    from xlang.tokenizer.families import detect_family

    with tempfile.TemporaryDirectory(prefix="xlang-stats-") as scratch:
        expanded = _load_backend(tokenizer, Path(scratch))
        original = _load_backend(base if base is not None else base_of(tokenizer), Path(scratch))
        family = detect_family(json.loads(expanded.to_str()), where=str(tokenizer))
        rows = []
        for language, texts in texts_by_language.items():
            kept = [text for text in texts if text]
            if not kept:
                raise XlangError(f"no {language} text to measure; check that language's validation split")
            old = original.encode_batch(kept, add_special_tokens=False)
            new = expanded.encode_batch(kept, add_special_tokens=False)
            rows.append(
                LanguageStats(
                    language=language,
                    texts=len(kept),
                    chars=sum(len(text) for text in kept),
                    words=sum(len(text.split()) for text in kept),
                    base_tokens=sum(len(encoding.ids) for encoding in old),
                    tokens=sum(len(encoding.ids) for encoding in new),
                    identical=sum(a.ids == b.ids for a, b in zip(old, new, strict=True)),
                    pre_tokens=sum(len(pre_tokens(expanded, family, text)) for text in kept),
                )
            )
        return rows


def stats_table(rows: Sequence[LanguageStats], title: str = "tokens per character and per word") -> Any:
    """A `rich` table of the rows (what `xlang tokenizer stats` prints).

    `floor` is tokens per character if every pre-tokenizer piece were one token: the most any expansion of
    this tokenizer can reach."""
    from rich.table import Table

    table = Table(title=title, caption="floor: tokens/char if every pre-tokenizer piece were one token")
    for column in ("lang", "texts", "chars", "tokens/char", "floor", "tokens/word", "new/base", "same ids"):
        table.add_column(column, justify="left" if column == "lang" else "right")
    for row in rows:
        table.add_row(
            row.language,
            f"{row.texts:,}",
            f"{row.chars:,}",
            f"{row.base_tokens_per_char:.3f} → {row.tokens_per_char:.3f}",
            f"{row.floor_tokens_per_char:.3f}",
            f"{row.base_tokens_per_word:.2f} → {row.tokens_per_word:.2f}",
            f"{row.ratio:.2f}",
            f"{row.identical_share:.1%}",
        )
    return table
