"""The shipped language plugins (xlang-ko, xlang-zh, xlang-en): installed, valid, and saying what they mean."""

from __future__ import annotations

import pytest

from xlang import plugins
from xlang.spec import LanguageSpec


@pytest.fixture(scope="module")
def specs() -> dict[str, LanguageSpec]:
    known = plugins.languages(plugins.make_plugin_manager())
    missing = {"ko", "zh", "en"} - set(known)
    assert not missing, f"install the language plugins: pip install -e languages/{' -e languages/'.join(missing)}"
    return {code: known[code].value for code in ("ko", "zh", "en")}


def test_each_language_comes_from_its_own_distribution(specs):
    known = plugins.languages(plugins.make_plugin_manager())
    assert {code: known[code].plugin for code in specs} == {"ko": "ko", "zh": "zh", "en": "en"}
    infos = {info.name: info for info in plugins.plugin_infos(plugins.make_plugin_manager())}
    assert {infos[code].distribution for code in specs} == {"xlang-ko", "xlang-zh", "xlang-en"}


def test_specs_revalidate(specs):
    for spec in specs.values():
        again = LanguageSpec.model_validate(spec.model_dump())
        assert again == spec
        assert spec.chat.system_prompt


def test_companions_vit_data_and_fonts_are_declared(specs):
    assert specs["ko"].companions == ("en",) and specs["zh"].companions == ("en",)
    assert specs["en"].companions == ()
    for spec in specs.values():
        assert len(spec.vit_data) == 1 and spec.vit_data[0].startswith("file://")
    assert specs["ko"].font and specs["ko"].font == specs["zh"].font
    assert specs["ko"].sample_chars() and all(specs["ko"].is_target_char(c) for c in specs["ko"].sample_chars())


@pytest.mark.parametrize(
    ("code", "inside", "outside"),
    [
        ("ko", "가힣가ㄱㅎꥠힰ", "中A。，1 "),
        ("zh", "中文龘㐀，。、「」！", "가ㄱAa1 ,.ñ"),
        ("en", "", "Aa가中，"),
    ],
)
def test_scripts_tell_target_text_from_the_rest(specs, code, inside, outside):
    spec = specs[code]
    assert all(spec.is_target_char(char) for char in inside)
    assert not any(spec.is_target_char(char) for char in outside)


def test_system_prompts_are_written_in_the_language(specs):
    for code in ("ko", "zh"):
        assert specs[code].target_share(specs[code].chat.system_prompt) > 0.6


def test_normalizers_keep_the_script_as_written(specs):
    assert specs["ko"].normalize("\u1100\u1161") == "가"  # conjoining Jamo compose to a syllable
    assert specs["zh"].normalize("你好，世界！") == "你好，世界！"  # full-width punctuation survives
    assert {spec.normalizer for spec in specs.values()} == {"NFC"}


def test_corpora_offline_parallel_and_hub(specs):
    for code, spec in specs.items():
        assert spec.monolingual_corpora(), code
        hub = [source for source in spec.corpora if source.kind == "hub"]
        assert len(hub) == 1 and hub[0].uri.startswith("hf://wikimedia/wikipedia?config=20231101.")
        for source in spec.corpora:
            assert source.license
            if source.uri.startswith("debian://"):
                assert source.uri.count("sha256=") == source.uri.count("deb=") > 0
    assert [source.parallel for source in specs["ko"].parallel_corpora()] == [("en", "ko")]
    assert [source.parallel for source in specs["zh"].parallel_corpora()] == [("en", "zh")]
    assert specs["en"].parallel_corpora() == ()


def test_vocabulary_sources_are_declared(specs):
    names = {code: {vocabulary.name for vocabulary in spec.vocabularies} for code, spec in specs.items()}
    assert names["ko"] == {"hunspell-ko", "wordfreq-ko"}
    assert names["zh"] == {"jieba-dict", "wordfreq-zh"}
    for code in ("ko", "zh"):  # the general-text prior is part of the default choice
        assert specs[code].defaults.candidate_sources == ("corpus-bpe", "vocabulary")
    for spec in specs.values():
        for vocabulary in spec.vocabularies:
            assert "://" in vocabulary.uri and vocabulary.license
