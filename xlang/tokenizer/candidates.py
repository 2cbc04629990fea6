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

import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from pydantic import ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from xlang.contract import Options
from xlang.errors import XlangError
from xlang.spec import LanguageSpec, VocabularySource
from xlang.tokenizer.families import BYTE_LEVEL, METASPACE, TargetScripts, to_byte_symbols

MAX_CANDIDATE_CHARS = 24
"""Longer strings are phrases, not tokens; they are cut from the candidate pool."""
DEFAULT_PRIOR_WEIGHT = 0.3
"""The ``vocabulary`` source's default share of general text (see `VocabularyOptions.prior_weight`)."""


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


WordEntry = tuple[str, float | None]
"""A word of a word list and its frequency in general text (None: the list gives none)."""


def read_word_frequencies(path: str | Path) -> list[WordEntry]:
    """The words of a word list with their frequencies, in the list's order.

    A file named ``*.msgpack.gz`` is read as wordfreq's cBpack (gzip of msgpack ``[header, bucket0,
    bucket1, ...]``, each word of bucket ``i`` seen with frequency ``10 ** (-i / 100)``). Any other file is
    text, one entry per line, the word first: ``word freq tag`` (jieba) gives the count in its second
    field; ``word/FLAGS`` (hunspell, flags cut) and plain lists give no frequency. ``#`` comments and blank
    lines are skipped.
    """
    file = Path(path).expanduser()
    if file.name.endswith(".msgpack.gz"):
        return _read_cbpack(file)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise XlangError(f"cannot read word list {file}: {error}; give a UTF-8 text file, one word per line") from error
    entries: list[WordEntry] = []
    for line in lines:
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        entries.append((fields[0].split("/", 1)[0], _frequency(fields[1]) if len(fields) > 1 else None))
    return entries


def _frequency(field: str) -> float | None:
    try:
        value = float(field)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _read_cbpack(file: Path) -> list[WordEntry]:
    """wordfreq's frequency format: a bucket per centibel of frequency, most frequent first."""
    import gzip

    import msgpack

    try:
        with gzip.open(file, "rb") as handle:
            data = msgpack.unpack(handle, raw=False)
    except (OSError, EOFError, ValueError, msgpack.UnpackException) as error:
        raise XlangError(
            f"cannot read word list {file}: {error}; a .msgpack.gz list must be wordfreq's cBpack"
        ) from error
    header = data[0] if isinstance(data, list) and data else None
    if not isinstance(header, dict) or header.get("format") != "cB" or header.get("version") != 1:
        raise XlangError(
            f"{file} is not a wordfreq cBpack list (its header is {header!r}, expected format 'cB' version 1); "
            "name other lists without the .msgpack.gz suffix"
        )
    return [(word, 10 ** (-bucket / 100)) for bucket, words in enumerate(data[1:]) for word in words]


def read_word_list(path: str | Path) -> list[str]:
    """The words of a word list (see `read_word_frequencies` for the formats), without frequencies."""
    return [word for word, _ in read_word_frequencies(path)]


def _counts_in_runs(
    words: Iterable[str], texts: Iterable[str], language: LanguageSpec
) -> tuple[Counter[str], Counter[str]]:
    """How often each word occurs inside the target-script runs of ``texts`` (as a substring: a lexicon
    lists stems, running text inflects and compounds them), and how often it starts a run right after a
    space. One pass over the text; at each position it extends the match only while the piece is a prefix
    of some word."""
    wanted = set(words)
    prefixes = {word[:end] for word in wanted for end in range(1, len(word))}
    counts: Counter[str] = Counter()
    starts: Counter[str] = Counter()
    for run in target_runs(texts, language):
        spaced = run.startswith(" ")
        run = run.lstrip(" ")
        length = len(run)
        for start in range(length):
            for end in range(start + 1, length + 1):
                piece = run[start:end]
                if piece in wanted:
                    counts[piece] += 1
                    if spaced and not start:
                        starts[piece] += 1
                if piece not in prefixes:
                    break
    return counts, starts


def occurrences(words: Iterable[str], texts: Iterable[str], language: LanguageSpec) -> Counter[str]:
    """How often each of ``words`` occurs inside the target-script runs of ``texts``, as a substring."""
    return _counts_in_runs(words, texts, language)[0]


class Candidates(list[str]):
    """Candidate strings, plus ``prior_texts``: text written from general-text word frequencies, which the
    tokenizer stage hands the expander next to the training text, so gains are counted on both."""

    def __init__(self, tokens: Iterable[str] = (), prior_texts: Iterable[str] = ()) -> None:
        super().__init__(tokens)
        self.prior_texts: list[str] = list(prior_texts)


_PRIOR_BLOCK = 64
"""A word repeated this many times is one prior text: the same string again and again is pre-tokenized
cheaply and counted once per distinct piece."""


def _repeated(piece: str, times: int) -> Iterator[str]:
    block = piece * _PRIOR_BLOCK
    for _ in range(times // _PRIOR_BLOCK):
        yield block
    if times % _PRIOR_BLOCK:
        yield piece * (times % _PRIOR_BLOCK)


class VocabularyOptions(Options):
    """What ``vocabulary`` lets a user choose."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    lists: tuple[str, ...] | None = None
    """Names of the language's declared word lists to read (``VocabularySource.name``); unset: all of them."""
    prior_weight: float = Field(default=DEFAULT_PRIOR_WEIGHT, ge=0.0, lt=1.0)
    """Share of general text in what the expander counts gains on: the lists that give frequencies are
    written out as text of ``prior_weight / (1 - prior_weight)`` times the training text's size (each word
    as often as its frequency says), so a common word or character the training text lacks can win a
    place. 0: the training text alone, and only words it uses are offered."""


def general_text_prior(*, language: LanguageSpec, texts: Sequence[str], vocabularies: Mapping[str, Path]) -> list[str]:
    """The language's word-frequency lists written out as text as large as ``texts`` (each word as often as
    its general-text frequency says, spaced as the training text writes it): what the `vocabulary` source
    blends into the expander's counts at ``prior_weight`` 0.5, given to initializers as ``prior_texts``.
    Empty when the language declares no list with frequencies."""
    if not language.vocabularies:
        return []
    found = vocabulary_candidates(
        language=language, texts=texts, limit=1, vocabularies=vocabularies, options=VocabularyOptions(prior_weight=0.5)
    )
    return found.prior_texts


def vocabulary_candidates(
    *,
    language: LanguageSpec,
    texts: Sequence[str],
    limit: int,
    vocabularies: Mapping[str, Path],
    options: VocabularyOptions = VocabularyOptions(),
) -> Candidates:
    """Words of the language's word lists (a morpheme lexicon, a segmenter's dictionary, general-text
    frequencies) that contain its script and occur in ``texts`` or in the general-text prior: every single
    character, then up to ``limit`` longer words, the most frequent in training text plus prior first.
    Lists are alphabetical or ordered by reading, so their own order would pick words by their first letter.

    The prior (``options.prior_weight``, see `VocabularyOptions`) comes back as the result's
    ``prior_texts``. Each word of it is written as the training text writes it most (after a space, or
    joined to what precedes it, as ``VocabularySource.spaced`` says for words the training text lacks).

    ``vocabularies`` are the lists the language declares (``LanguageSpec.vocabularies``), fetched to local
    files by name; ``options.lists`` picks some of them.
    """
    sources = {source.name: source for source in language.vocabularies}
    if not sources:
        raise XlangError(
            f"language {language.code!r} ({language.name}) declares no word lists, so the 'vocabulary' candidate "
            "source has nothing to read; add a VocabularySource to its LanguageSpec.vocabularies, or give your "
            "own list to the 'user' source (its path option)"
        )
    chosen = list(options.lists) if options.lists is not None else list(sources)
    unknown = [name for name in chosen if name not in sources]
    if unknown:
        raise XlangError(
            f"language {language.code!r} declares no word list {', '.join(map(repr, unknown))}; its lists: "
            f"{', '.join(sources)}. Fix the 'vocabulary' source's lists option"
        )
    missing = [name for name in chosen if name not in vocabularies]
    if missing:
        raise XlangError(
            f"word list(s) {', '.join(map(repr, missing))} of language {language.code!r} were not fetched; the "
            "caller must pass vocabularies= (the resolver's vocabularies(language)) to the tokenizer stage"
        )
    scripts = TargetScripts.of(language)
    words: dict[str, None] = {}
    shares: dict[str, float] = {}
    """Each word's frequency in general text, each list with frequencies weighing the same."""
    spaced: dict[str, bool] = {}
    per_list: list[tuple[VocabularySource, dict[str, float]]] = []
    for name in chosen:
        frequencies: dict[str, float] = {}
        for listed, frequency in read_word_frequencies(vocabularies[name]):
            word = language.normalize(listed)
            if not scripts.has_target(word) or len(word) > MAX_CANDIDATE_CHARS:
                continue
            words[word] = None
            if frequency is not None and all(scripts.has_target(char) for char in word):
                frequencies[word] = frequencies.get(word, 0.0) + frequency
        if frequencies:
            per_list.append((sources[name], frequencies))
    for source, frequencies in per_list:
        total = sum(frequencies.values())
        for word, frequency in frequencies.items():
            shares[word] = shares.get(word, 0.0) + frequency / total / len(per_list)
            spaced.setdefault(word, source.spaced)

    counts, starts = _counts_in_runs(words, texts, language)
    prior_counts: dict[str, int] = {}
    prior_texts: list[str] = []
    if options.prior_weight > 0 and shares:
        training_chars = sum(len(run.lstrip(" ")) for run in target_runs(texts, language))
        prior_chars = options.prior_weight / (1 - options.prior_weight) * training_chars
        scale = prior_chars / sum(share * len(word) for word, share in shares.items())
        for word, share in shares.items():
            times = round(share * scale)
            if times < 1:
                continue
            prior_counts[word] = times
            # as the training text writes it: the share of its uses that start a word after a space, with
            # one more use of the list's own spacing (which decides alone for a word the text lacks)
            after_space = round(times * (starts[word] + spaced[word]) / (counts[word] + 1))
            prior_texts.extend(_repeated(" " + word, after_space))
            prior_texts.extend(_repeated(word + "\n", times - after_space))
    weight = {word: counts[word] + prior_counts.get(word, 0) for word in words}
    used = sorted((word for word in words if weight[word]), key=lambda word: -weight[word])
    chars = [word for word in used if len(word) == 1]
    longer = [word for word in used if len(word) > 1][: max(limit, 0)]
    return Candidates(chars + longer, prior_texts)


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
