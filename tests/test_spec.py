"""LanguageSpec validation reads as sentences naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from xlang.spec import ChatBits, CorpusSource, LanguageSpec, ScriptRange

CHAT = ChatBits(system_prompt="s")


def test_fields_nothing_reads_are_refused():
    """Fields that used to be declared without a caller are gone; a plugin that sets one hears so."""
    with pytest.raises(ValidationError, match="prompts"):
        LanguageSpec(code="th", name="Thai", chat=CHAT, prompts={"conversation": "p"})
    with pytest.raises(ValidationError, match="answer_in_language"):
        ChatBits(system_prompt="s", answer_in_language="a")


def test_a_language_cannot_be_its_own_companion():
    with pytest.raises(ValidationError, match="companions"):
        LanguageSpec(code="th", name="Thai", chat=CHAT, companions=("th",))


def test_sample_chars_are_letters_of_each_script():
    spec = LanguageSpec(
        code="th",
        name="Thai",
        chat=CHAT,
        scripts=(
            ScriptRange(name="Thai", start=0x0E00, end=0x0E7F),
            ScriptRange(name="Hangul", start=0xAC00, end=0xD7A3),
        ),
    )
    assert spec.sample_chars() == "\u0e01\uac00"  # U+0E00 is unassigned; the first letter is U+0E01


def test_reversed_script_range_is_refused():
    with pytest.raises(ValidationError, match="ends .* before it starts"):
        ScriptRange(name="bad", start=0x0E7F, end=0x0E00)


def test_corpus_uri_needs_a_scheme():
    with pytest.raises(ValidationError, match="no scheme"):
        CorpusSource(name="x", uri="/tmp/corpus.txt")


def test_duplicate_corpus_names_are_refused():
    source = CorpusSource(name="same", uri="file:///tmp/a.txt")
    with pytest.raises(ValidationError, match="used twice"):
        LanguageSpec(code="th", name="Thai", chat=CHAT, corpora=(source, source))


def test_target_share_counts_only_visible_characters():
    spec = LanguageSpec(code="ko", name="K", chat=CHAT, scripts=(ScriptRange(name="Hangul", start=0xAC00, end=0xD7A3),))
    assert spec.target_share("한국 ab") == pytest.approx(0.5)
    assert spec.has_target_text("abc 가") and not spec.has_target_text("abc")
    assert spec.target_share("   ") == 0.0


def test_spec_is_frozen():
    spec = LanguageSpec(code="th", name="Thai", chat=CHAT)
    with pytest.raises(ValidationError):
        spec.name = "other"
