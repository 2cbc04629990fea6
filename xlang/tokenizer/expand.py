"""The `merges` expander: new vocabulary entries with real BPE merges, safe by construction.

It reads the base's own segmentation of the corpus's target-language words, learns merges on top of it
(`merging.learn_merges`), admits only merges that the candidate pool allows and that cannot fire on text
without a target character (`families`), and appends them after every old merge. For a script written with
combining marks it first lets the pre-tokenizer keep a word and its marks in one piece (`marks`), which
changes nothing for text without the target script; option `join_marks` (`MergesOptions`) controls that.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ConfigDict

from xlang.contract import Options
from xlang.errors import XlangError
from xlang.spec import LanguageSpec
from xlang.tokenizer.candidates import CandidatePool, symbol_form
from xlang.tokenizer.families import (
    BYTE_LEVEL,
    METASPACE,
    TargetScripts,
    byte_token_value,
    bytes_force_target,
    detect_family,
    from_byte_symbols,
)
from xlang.tokenizer.marks import JoinMarks, marked_pre_tokenizer
from xlang.tokenizer.merging import MergePlan, learn_merges

_CHUNK = re.compile(f"{METASPACE}*[^{METASPACE}]+|{METASPACE}+")


class MergesOptions(Options):
    """What the ``merges`` expander lets a user tune."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    join_marks: JoinMarks = "auto"
    """Keep the target script's combining marks (Devanagari vowel signs, Thai vowels and tone marks) in one
    pre-tokenizer piece with their letters, so new tokens can be whole words. ``auto``: when marks make up
    at least 1% of the training text's target characters and the base's pre-tokenizer can be rewritten;
    ``on``: whenever the script has marks (an error if the pre-tokenizer cannot be rewritten); ``off``: keep
    the base's pre-tokenizer. Text without the target script keeps its ids in every case."""


@dataclass(frozen=True)
class CorpusWords:
    """The target-language words of a corpus as the base segments them, and what missing symbols cost."""

    words: dict[tuple[str, ...], int]
    missing_cost: dict[str, int]


def _spell_with_chars(tokens: Iterable[str], scripts: TargetScripts) -> tuple[list[str], dict[str, int]]:
    """SentencePiece-style: turn each run of byte-fallback tokens that spells a target character into that
    character (a symbol the vocabulary lacks, costing one token per byte); other byte tokens stay."""
    symbols: list[str] = []
    missing: dict[str, int] = {}
    pending: list[str] = []

    def flush() -> None:
        data = bytes(byte_token_value(token) or 0 for token in pending)
        text = data.decode("utf-8", errors="replace")
        if len(text) == 1 and text != "\ufffd" and scripts.has_target(text):
            symbols.append(text)
            missing[text] = len(pending)
        else:
            symbols.extend(pending)
        pending.clear()

    for token in tokens:
        value = byte_token_value(token)
        if value is None:
            if pending:
                flush()
            symbols.append(token)
            continue
        if pending and 0x80 <= value <= 0xBF:
            pending.append(token)
        else:
            if pending:
                flush()
            pending.append(token)
        if pending:
            lead = byte_token_value(pending[0]) or 0
            need = 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
            if len(pending) >= need:
                flush()
    if pending:
        flush()
    return symbols, missing


def pre_tokens(backend: Any, family: str, text: str) -> list[str]:
    """The pieces the base cuts `text` into before BPE runs (normalizer, then pre-tokenizer; SentencePiece-style
    text is cut before each `▁` that follows another character). No token, old or new, crosses a piece."""
    normalizer, pre_tokenizer = backend.normalizer, backend.pre_tokenizer
    normalized = normalizer.normalize_str(text) if normalizer is not None else text
    pieces = [piece for piece, _ in pre_tokenizer.pre_tokenize_str(normalized)] if pre_tokenizer else [normalized]
    if family == BYTE_LEVEL:
        return pieces
    return [chunk for piece in pieces for chunk in _CHUNK.findall(piece)]


def collect_words(backend: Any, family: str, texts: Iterable[str], scripts: TargetScripts) -> CorpusWords:
    """Count the pre-tokenized words that hold a target character and segment each once with the base
    model. SentencePiece-style text has no pre-tokenizer: words are cut before each `▁` that follows
    another character, which no old piece and no new one crosses."""
    model = backend.model
    counts: Counter[str] = Counter()
    for text in texts:
        if scripts.has_target(text):
            counts.update(pre_tokens(backend, family, text))
    words: dict[tuple[str, ...], int] = {}
    missing: dict[str, int] = {}
    for word, count in counts.items():
        text = from_byte_symbols(word).decode("utf-8", errors="replace") if family == BYTE_LEVEL else word
        if not scripts.has_target(text):
            continue
        tokens = [token.value for token in model.tokenize(word)]
        if family != BYTE_LEVEL:
            tokens, word_missing = _spell_with_chars(tokens, scripts)
            missing.update(word_missing)
        key = tuple(tokens)
        words[key] = words.get(key, 0) + count
    return CorpusWords(words=words, missing_cost=missing)


def _acceptable(family: str, scripts: TargetScripts, pool: CandidatePool) -> Callable[[str, str, bool], bool]:
    def acceptable(left: str, right: str, has_new_operand: bool) -> bool:
        merged = left + right
        if merged not in pool:
            return False
        if family != BYTE_LEVEL:
            # `▁` only at the start: a new piece never spans two words, and text without the target
            # script never holds the target character every new piece contains.
            return METASPACE not in merged[1:] and scripts.has_target(merged)
        if has_new_operand:
            return True  # a new token never forms on text without the target script, so this never fires there
        try:
            return bytes_force_target(from_byte_symbols(merged), scripts)
        except KeyError:  # a symbol outside the byte alphabet (an added token's text): not a byte run
            return False

    return acceptable


def merges_as_pairs(merges: Sequence[Any]) -> list[list[str]]:
    """Merges as `[left, right]` lists (tokenizer.json also allows the older `"left right"` strings)."""
    if merges and isinstance(merges[0], list):
        return list(merges)
    return [m.split(" ", 1) if isinstance(m, str) else list(m) for m in merges]


def next_free_id(tokenizer_json: dict[str, Any]) -> int:
    ids = list((tokenizer_json["model"].get("vocab") or {}).values())
    ids += [token["id"] for token in tokenizer_json.get("added_tokens") or []]
    return max(ids, default=-1) + 1


def expand_tokenizer_json(
    tokenizer_json: dict[str, Any],
    language: LanguageSpec,
    texts: Sequence[str],
    candidates: Iterable[str],
    budget: int,
    required_tokens: Sequence[str] = (),
    min_frequency: int = 2,
    backend: Any = None,
    join_marks: JoinMarks = "off",
) -> tuple[dict[str, Any], MergePlan]:
    """The expanded `tokenizer.json` (new entries appended, new merges after the old ones) and the plan.

    `backend` is the same tokenizer as a `tokenizers.Tokenizer` when the caller already has one.
    `join_marks` (see `MergesOptions`) may give the result a pre-tokenizer that keeps the script's
    combining marks with their letters; the corpus is then read with that pre-tokenizer."""
    from tokenizers import Tokenizer

    family = detect_family(tokenizer_json)
    scripts = TargetScripts.of(language)
    pre_tokenizer, _ = marked_pre_tokenizer(tokenizer_json, scripts, texts, join_marks)
    if pre_tokenizer != tokenizer_json.get("pre_tokenizer"):
        tokenizer_json = {**tokenizer_json, "pre_tokenizer": pre_tokenizer}
        backend = None
    if backend is None:
        backend = Tokenizer.from_str(json.dumps(tokenizer_json))
    vocab: dict[str, int] = tokenizer_json["model"]["vocab"]
    corpus = collect_words(backend, family, texts, scripts)
    required = _required(required_tokens, family, scripts, vocab, backend, language, corpus.missing_cost)
    pool = CandidatePool([*candidates, *required_tokens], family)
    plan = learn_merges(
        corpus.words,
        vocab,
        budget,
        _acceptable(family, scripts, pool),
        missing_cost=corpus.missing_cost,
        addable=lambda symbol: symbol in pool and scripts.has_target(symbol),
        required=required,
        min_frequency=min_frequency,
    )
    next_id = next_free_id(tokenizer_json)
    model = dict(tokenizer_json["model"])
    model["vocab"] = {**vocab, **{token: next_id + offset for offset, token in enumerate(plan.new_tokens)}}
    model["merges"] = merges_as_pairs(model.get("merges") or []) + [list(pair) for pair in plan.merges]
    return {**tokenizer_json, "model": model}, plan


def _required(
    tokens: Sequence[str],
    family: str,
    scripts: TargetScripts,
    vocab: dict[str, int],
    backend: Any,
    language: LanguageSpec,
    missing_cost: dict[str, int],
) -> list[tuple[str, list[str]]]:
    """Required tokens as (form, base segmentation); each must be new and hold a target character."""
    required = []
    for token in dict.fromkeys(tokens):
        if not scripts.has_target(token):
            raise XlangError(
                f"required token {token!r} has no {language.name} character; xlang only adds tokens of the "
                "language's scripts, so text in other scripts keeps its ids"
            )
        form = symbol_form(token, family)
        if form in vocab:
            raise XlangError(
                f"required token {token!r} is already in the base vocabulary (id {vocab[form]}); remove it from "
                "the list of tokens to add"
            )
        pieces = [piece.value for piece in backend.model.tokenize(form)]
        if family != BYTE_LEVEL:
            pieces, missing = _spell_with_chars(pieces, scripts)
            missing_cost.update(missing)
        required.append((form, pieces))
    return required


def merges_expander(
    *,
    tokenizer: Any,
    tokens: Sequence[str],
    language: LanguageSpec,
    texts: Sequence[str],
    budget: int,
    required_tokens: Sequence[str],
    min_frequency: int,
    options: MergesOptions = MergesOptions(),
) -> Any:
    """The `merges` expander: a fast tokenizer (`tokenizers.Tokenizer` or a transformers fast tokenizer)
    and candidate tokens in, the expanded `tokenizers.Tokenizer` out, with real BPE merges ranked by the
    tokens they save on `texts`. The budget and `min_frequency` are the stage's; `options.join_marks`
    says whether a script's combining marks may stay with their letters (see `MergesOptions`)."""
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    tokenizer_json = json.loads(backend.to_str())
    join_marks = options.join_marks if isinstance(options, MergesOptions) else MergesOptions().join_marks
    expanded, _ = expand_tokenizer_json(
        tokenizer_json,
        language,
        texts,
        tokens,
        budget,
        required_tokens,
        min_frequency,
        backend=backend,
        join_marks=join_marks,
    )
    return Tokenizer.from_str(json.dumps(expanded))
