"""Where candidate tokens come from, and which merge results they make acceptable.

A source proposes strings (a BPE trained on the language's text, a word list, a user's list); the engine
decides which of them are worth the budget. A candidate admits itself and everything a merge path to it
passes through: every piece of it that starts at a character boundary, with and without a leading space
(a word in running text usually follows a space, and the pre-tokenizer keeps that space on the word).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from xlang.errors import XlangError
from xlang.spec import LanguageSpec
from xlang.tokenizer.families import BYTE_LEVEL, METASPACE, TargetScripts, to_byte_symbols

MAX_CANDIDATE_CHARS = 24
"""Longer strings are phrases, not tokens; they are cut from the candidate pool."""


def target_runs(texts: Iterable[str], language: LanguageSpec) -> Iterator[str]:
    """Maximal runs of target-script characters, each with the single space before it if there is one."""
    scripts = TargetScripts.of(language)
    char_class = scripts.pattern.pattern
    runs = re.compile(f" ?{char_class}+")
    for text in texts:
        yield from (match.group(0) for match in runs.finditer(text))


def corpus_bpe_candidates(
    language: LanguageSpec, texts: Sequence[str], limit: int, min_frequency: int = 2, **_: object
) -> list[str]:
    """Train a BPE (Hugging Face `tokenizers`) on the target-script runs of `texts`: the language's
    characters, most frequent first, then up to `limit` merged tokens in the order BPE learned them.

    Splitting on the script first keeps tokens inside the language: no candidate glues Hangul to Latin
    letters or punctuation. Characters do not count toward `limit` (every token is built from them).
    """
    from collections import Counter

    from tokenizers import Tokenizer, models, trainers

    runs = list(target_runs(texts, language))
    if not runs:
        return []
    frequency = Counter(char for run in runs for char in run)
    tokenizer = Tokenizer(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=len(frequency) + max(limit, 0),
        min_frequency=min_frequency,
        show_progress=False,
        initial_alphabet=sorted(frequency),
        limit_alphabet=len(frequency),
        max_token_length=MAX_CANDIDATE_CHARS,
    )
    tokenizer.train_from_iterator(runs, trainer=trainer, length=len(runs))
    vocab = tokenizer.get_vocab()
    scripts = TargetScripts.of(language)
    chars = [char for char, _ in frequency.most_common() if scripts.has_target(char)]
    merged = [token for token in sorted(vocab, key=vocab.__getitem__) if len(token) > 1 and scripts.has_target(token)]
    return chars + merged[: max(limit, 0)]


def read_word_list(path: str | Path) -> list[str]:
    """First whitespace-separated field of each line (plain lists, jieba's `word freq tag`, hunspell's
    `word/FLAGS` once the flags are cut); `#` comments and blank lines are skipped."""
    file = Path(path).expanduser()
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise XlangError(f"cannot read word list {file}: {error}; give a UTF-8 text file, one word per line") from error
    words = []
    for line in lines:
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        words.append(fields[0].split("/", 1)[0])
    return words


def vocabulary_candidates(
    language: LanguageSpec,
    texts: Sequence[str],
    limit: int,
    words: Sequence[str] | None = None,
    path: str | Path | None = None,
    **_: object,
) -> list[str]:
    """Words of a lexicon (a morpheme dictionary, a segmenter's word list) that contain the language's
    script, in the list's order, up to `limit`."""
    if words is None and path is None:
        raise XlangError("the 'vocabulary' candidate source needs a word list: pass words=[...] or path=FILE")
    listed = list(words) if words is not None else read_word_list(path)  # type: ignore[arg-type]
    scripts = TargetScripts.of(language)
    kept = [word for word in dict.fromkeys(listed) if scripts.has_target(word) and len(word) <= MAX_CANDIDATE_CHARS]
    return kept[: max(limit, 0)]


def user_candidates(
    language: LanguageSpec,
    texts: Sequence[str],
    limit: int,
    tokens: Sequence[str] | None = None,
    path: str | Path | None = None,
    **_: object,
) -> list[str]:
    """A user's own token list, ranked with the rest by the compression it buys. Tokens without a
    target-script character are an error: adding them would change how other text is encoded."""
    if tokens is None and path is None:
        raise XlangError("the 'user' candidate source needs tokens: pass tokens=[...] or path=FILE")
    listed = list(tokens) if tokens is not None else read_word_list(path)  # type: ignore[arg-type]
    scripts = TargetScripts.of(language)
    foreign = [token for token in listed if not scripts.has_target(token)]
    if foreign:
        raise XlangError(
            f"user token(s) {', '.join(map(repr, foreign[:5]))} have no {language.name} character; xlang only adds "
            "tokens of the language's scripts, so text in other scripts keeps its ids"
        )
    return list(dict.fromkeys(listed))[: max(limit, 0)]


def symbol_form(text: str, family: str) -> str:
    """How a string is written in the model's vocabulary."""
    return to_byte_symbols(text) if family == BYTE_LEVEL else text.replace(" ", METASPACE)


class CandidatePool:
    """The merge results the candidates admit: pieces of their symbol forms that start on a character
    boundary (they may end inside a character: the bytes of a syllable are built up from its lead byte)."""

    def __init__(self, candidates: Iterable[str], family: str) -> None:
        self.family = family
        self.pieces: set[str] = set()
        self.count = 0
        for candidate in dict.fromkeys(candidates):
            if not candidate or len(candidate) > MAX_CANDIDATE_CHARS or "\x00" in candidate:
                continue
            self.count += 1
            for text in {candidate, candidate if candidate.startswith(" ") else " " + candidate}:
                self._add(text)

    def _add(self, text: str) -> None:
        form = symbol_form(text, self.family)
        if self.family == BYTE_LEVEL:
            starts, position = [], 0
            for char in text:
                starts.append(position)
                position += len(char.encode("utf-8"))
        else:
            starts = list(range(len(form)))
        length = len(form)
        self.pieces.update(form[start:end] for start in starts for end in range(start + 1, length + 1))

    def __contains__(self, piece: str) -> bool:
        return piece in self.pieces
