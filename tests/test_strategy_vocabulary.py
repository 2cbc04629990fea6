"""The `vocabulary` candidate source reads the word lists a language declares (`LanguageSpec.vocabularies`),
fetched by the resolver through the `fetch_file` hook; and the lists Korean and Chinese declare really
fetch and read."""

from __future__ import annotations

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
@pytest.mark.parametrize(("code", "name", "least"), [("ko", "hunspell-ko", 50_000), ("zh", "jieba-dict", 300_000)])
def test_the_declared_lists_of_korean_and_chinese_fetch_and_read(
    test_cache_dir: Path, code: str, name: str, least: int
) -> None:
    """Each list the shipped languages declare downloads (through xlang-debian's `debian://file`), reads as
    a word list, and holds the language's words; the vocabulary source ranks them on real-looking text."""
    from xlang.tokenizer.candidates import read_word_list
    from xlang.tokenizer.families import TargetScripts

    resolver = Resolver(XlangSettings(cache_dir=test_cache_dir), plugins.make_plugin_manager())
    spec = resolver.language(code)
    assert [source.name for source in spec.vocabularies] == [name]
    vocabularies = resolver.vocabularies(spec)
    scripts = TargetScripts.of(spec)
    words = {spec.normalize(word) for word in read_word_list(vocabularies[name]) if scripts.has_target(word)}
    assert len(words) >= least, len(words)
    sample = {"ko": "대화 상자에서 파일을 선택하고 확인을 클릭합니다.", "zh": "在对话框中选择文件，然后单击确定。"}[
        code
    ]
    vocabulary = resolver.strategy("token_candidate_sources", "vocabulary")
    proposed = vocabulary(language=spec, texts=[sample] * 3, limit=50, vocabularies=vocabularies)
    longer = [word for word in proposed if len(word) > 1]
    assert longer and all(word in sample for word in longer), longer
    assert {"ko": "파일", "zh": "文件"}[code] in longer
