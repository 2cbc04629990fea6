"""Where candidate tokens come from, and which merge results they make acceptable.

A source proposes strings (``corpus-bpe``: a BPE trained on the language's text; ``vocabulary``: the word
lists the language declares; ``user``: a user's own list, given through its options); the engine decides
which of them are worth the budget. Each source names the inputs it uses among ``language``, ``texts``,
``limit`` and ``vocabularies`` and takes its options class (``CorpusBpeOptions``, ``VocabularyOptions``,
``UserOptions``). A candidate admits itself and everything a merge path to it
passes through: every piece of it that starts at a character boundary, with and without a leading space
(a word in running text usually follows a space, and the pre-tokenizer keeps that space on the word).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from pydantic import ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from xlang.contract import Options
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


class CorpusBpeOptions(Options):
    """What ``corpus-bpe`` lets a user tune."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    min_frequency: int = Field(default=2, ge=1)
    """Occurrences in the target-script runs a pair needs before the BPE merges it: a merge seen once is
    noise, and the expander ranks the rest by what they save."""


def corpus_bpe_candidates(
    *, language: LanguageSpec, texts: Sequence[str], limit: int, options: CorpusBpeOptions = CorpusBpeOptions()
) -> list[str]:
    """Train a BPE (Hugging Face `tokenizers`) on the target-script runs of `texts`: the language's
    characters, most frequent first, then up to `limit` merged tokens in the order BPE learned them.

    Splitting on the script first keeps tokens inside the language: no candidate glues a target letter to
    Latin letters or punctuation. Characters do not count toward `limit` (every token is built from them).
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
        min_frequency=options.min_frequency,
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


def occurrences(words: Iterable[str], texts: Iterable[str], language: LanguageSpec) -> Counter[str]:
    """How often each of ``words`` occurs inside the target-script runs of ``texts`` (as a substring: a
    lexicon lists stems, running text inflects and compounds them). One pass over the text; at each
    position it extends the match only while the piece is a prefix of some word."""
    wanted = set(words)
    prefixes = {word[:end] for word in wanted for end in range(1, len(word))}
    counts: Counter[str] = Counter()
    for run in target_runs(texts, language):
        run = run.lstrip(" ")
        length = len(run)
        for start in range(length):
            for end in range(start + 1, length + 1):
                piece = run[start:end]
                if piece in wanted:
                    counts[piece] += 1
                if piece not in prefixes:
                    break
    return counts


class VocabularyOptions(Options):
    """What ``vocabulary`` lets a user choose."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    lists: tuple[str, ...] | None = None
    """Names of the language's declared word lists to read (``VocabularySource.name``); unset: all of them."""


def vocabulary_candidates(
    *,
    language: LanguageSpec,
    texts: Sequence[str],
    limit: int,
    vocabularies: Mapping[str, Path],
    options: VocabularyOptions = VocabularyOptions(),
) -> list[str]:
    """Words of the language's word lists (a morpheme lexicon, a segmenter's dictionary) that contain its
    script and occur in ``texts``: every single character, then up to ``limit`` longer words, the most
    frequent in ``texts`` first. Lists are alphabetical or ordered by reading, so their own order would
    pick words by their first letter; a word the text never uses cannot buy compression there.

    ``vocabularies`` are the lists the language declares (``LanguageSpec.vocabularies``), fetched to local
    files by name; ``options.lists`` picks some of them.
    """
    declared = [source.name for source in language.vocabularies]
    if not declared:
        raise XlangError(
            f"language {language.code!r} ({language.name}) declares no word lists, so the 'vocabulary' candidate "
            "source has nothing to read; add a VocabularySource to its LanguageSpec.vocabularies, or give your "
            "own list to the 'user' source (its path option)"
        )
    chosen = list(options.lists) if options.lists is not None else declared
    unknown = [name for name in chosen if name not in declared]
    if unknown:
        raise XlangError(
            f"language {language.code!r} declares no word list {', '.join(map(repr, unknown))}; its lists: "
            f"{', '.join(declared)}. Fix the 'vocabulary' source's lists option"
        )
    missing = [name for name in chosen if name not in vocabularies]
    if missing:
        raise XlangError(
            f"word list(s) {', '.join(map(repr, missing))} of language {language.code!r} were not fetched; the "
            "caller must pass vocabularies= (the resolver's vocabularies(language)) to the tokenizer stage"
        )
    scripts = TargetScripts.of(language)
    listed = (language.normalize(word) for name in chosen for word in read_word_list(vocabularies[name]))
    words = [word for word in dict.fromkeys(listed) if scripts.has_target(word) and len(word) <= MAX_CANDIDATE_CHARS]
    counts = occurrences(words, texts, language)
    used = sorted((word for word in words if counts[word]), key=lambda word: -counts[word])
    chars = [word for word in used if len(word) == 1]
    return chars + [word for word in used if len(word) > 1][: max(limit, 0)]


class UserOptions(Options):
    """A user's own tokens: ``tokens``, a word-list file, or both."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    tokens: tuple[str, ...] = ()
    """Tokens to offer, each holding a character of the language's scripts."""
    path: Path | None = None
    """A UTF-8 word list (one word per line; the first field of a line counts, ``#`` lines are comments)."""

    @model_validator(mode="after")
    def _something_to_offer(self) -> UserOptions:
        if not self.tokens and self.path is None:
            raise PydanticCustomError(
                "nothing_to_offer", "give tokens (a list of tokens) or path (a word-list file) to the 'user' source"
            )
        return self


def user_candidates(*, language: LanguageSpec, limit: int, options: UserOptions) -> list[str]:
    """A user's own token list, ranked with the rest by the compression it buys. Tokens without a
    target-script character are an error: adding them would change how other text is encoded."""
    listed = list(options.tokens) + (read_word_list(options.path) if options.path is not None else [])
    listed = [language.normalize(token) for token in listed]
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
