"""LanguageSpec validation reads as sentences naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from xlang.spec import ChatBits, CorpusSource, LanguageSpec, ScriptRange

CHAT = ChatBits(system_prompt="s")


def test_fields_nothing_reads_are_refused():
    """Fields that used to be declared without a caller are gone; a plugin that sets one hears so."""
    with pytest.raises(ValidationError, match="image_placeholder"):
        ChatBits(system_prompt="s", image_placeholder="<image>")
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


def test_reply_share_tells_the_shipped_languages_apart():
    """Letters only count (digits and punctuation are neutral); English names its Latin letters in
    `reply_scripts`, Korean and Chinese reply in their `scripts`."""
    from xlang import plugins

    pm = plugins.make_plugin_manager()
    ko, zh, en = (plugins.get_language(code, pm) for code in ("ko", "zh", "en"))
    korean, chinese, english = "사진 속 고양이는 2마리입니다.", "照片里有两只猫。", "There are 2 cats in the photo."
    assert [ko.reply_share(t) for t in (korean, chinese, english)] == [1.0, 0.0, 0.0]
    assert [zh.reply_share(t) for t in (korean, chinese, english)] == [0.0, 1.0, 0.0]
    assert [en.reply_share(t) for t in (korean, chinese, english)] == [0.0, 0.0, 1.0]
    mixed = "이 사진은 NASA의 우주비행사입니다"  # a brand name inside Korean stays Korean
    assert ko.is_reply_in_language(mixed) and not en.is_reply_in_language(mixed)
    assert ko.reply_share("123 ...") == 0.0 and not ko.is_reply_in_language("")


def test_teacher_prompts_are_checked_when_declared():
    from xlang.spec import TaskPrompts, TeacherPrompts

    with pytest.raises(ValidationError, match="3 turns need at least 3 distinct questions"):
        TaskPrompts(questions=("a?", "b?"), turns=3)
    with pytest.raises(ValidationError, match=r"must contain \{text\}"):
        TeacherPrompts(system="s", tasks={"caption": TaskPrompts(questions=("q",))}, translate="Translate it.")
    with pytest.raises(ValidationError, match="tasks"):
        TeacherPrompts(system="s", tasks={}, translate="{text}")
