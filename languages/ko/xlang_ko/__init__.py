"""Korean (한국어) for xlang: Hangul, offline Debian corpora, en–ko parallel text, Korean prompts."""

from __future__ import annotations

from typing import Any

from xlang.hookspecs import hookimpl
from xlang.spec import ChatBits, CorpusSource, LanguageSpec, ScriptRange, Strategies, VocabularySource

_POOL = "pool/main/libr/libreoffice"
_HELP_KO = f"{_POOL}/libreoffice-help-ko_7.4.7-1%2Bdeb12u14_all.deb"
_HELP_KO_SHA256 = "7ef2d854e9ed58e6bf861cfa9fa2579555233f9df874baf327fcb07ccd190669"
_HELP_EN = f"{_POOL}/libreoffice-help-en-us_7.4.7-1%2Bdeb12u14_all.deb"
_HELP_EN_SHA256 = "8faa840285734d6cfe1ed25537b48f07e74bd6412e3917bf8e5f8a653f7b3712"
_HUNSPELL_KO = "pool/main/h/hunspell-dict-ko/hunspell-ko_0.7.92-1_all.deb"
_HUNSPELL_KO_SHA256 = "d02674324f1b320f069d93336578f01df4ab6cff23d0878867ccdc80eb6307f2"

SPEC = LanguageSpec(
    code="ko",
    name="Korean",
    native_name="한국어",
    # Hangul only: Hanja and CJK punctuation also occur in Korean text, but they are Chinese's too,
    # and a character that belongs to the base model's world must keep its old tokens.
    scripts=(
        ScriptRange(name="Hangul Syllables", start=0xAC00, end=0xD7A3),
        ScriptRange(name="Hangul Jamo", start=0x1100, end=0x11FF),
        ScriptRange(name="Hangul Compatibility Jamo", start=0x3130, end=0x318F),
        ScriptRange(name="Hangul Jamo Extended-A", start=0xA960, end=0xA97F),
        ScriptRange(name="Hangul Jamo Extended-B", start=0xD7B0, end=0xD7FF),
        ScriptRange(name="Halfwidth Hangul", start=0xFFA0, end=0xFFDC),
    ),
    # NFC composes conjoining Jamo into syllables (one character, one future token); NFKC would also
    # fold full-width forms and circled Hangul, which changes the text rather than its encoding.
    normalizer="NFC",
    corpora=(
        CorpusSource(
            name="libreoffice-help-ko",
            uri=f"debian://libreoffice-help?deb={_HELP_KO}&sha256={_HELP_KO_SHA256}&require=hangul",
            license="MPL-2.0",
        ),
        CorpusSource(
            name="libreoffice-help-en-ko",
            uri=(
                f"debian://libreoffice-help-parallel?deb={_HELP_EN}&sha256={_HELP_EN_SHA256}"
                f"&deb={_HELP_KO}&sha256={_HELP_KO_SHA256}&require=hangul&validation_chars=60000"
            ),
            parallel=("en", "ko"),
            license="MPL-2.0",
        ),
        CorpusSource(
            name="wikipedia-ko",
            uri="hf://wikimedia/wikipedia?config=20231101.ko&field=text&split=train",
            kind="hub",
            license="CC-BY-SA-4.0",
        ),
    ),
    vocabularies=(
        VocabularySource(
            name="kiwi-lexicon",
            uri="pypi://kiwipiepy-model==0.24.0/kiwipiepy_model/default.dict",
            license="Apache-2.0",
        ),
        VocabularySource(
            name="hunspell-ko",
            uri=f"debian://file?deb={_HUNSPELL_KO}&sha256={_HUNSPELL_KO_SHA256}&path=usr/share/hunspell/ko.dic",
            license="MPL-1.1 OR GPL-2.0-or-later OR LGPL-2.1-or-later",
        ),
        VocabularySource(
            name="wordfreq-ko",
            uri="pypi://wordfreq==3.1.1/wordfreq/data/small_ko.msgpack.gz",
            license="Apache-2.0 AND CC-BY-SA-4.0",
        ),
    ),
    prompts={
        "object-centric": (
            "이미지에 보이는 사물들을 하나씩 살펴보세요. 각 사물의 종류, 개수, 색깔, 모양, 재질, 상태처럼 "
            "사용자가 궁금해할 만한 점을 묻는 질문을 만들고, 이미지에서 확실히 보이는 내용만으로 자세하고 "
            "정확하게 답하세요. 질문과 답변은 모두 자연스러운 한국어로 작성하세요."
        ),
        "location-centric": (
            "이미지 속 사물과 사람들이 어디에 있는지, 서로 어떤 위치 관계(위, 아래, 왼쪽, 오른쪽, 앞, 뒤, 옆, "
            "안쪽)에 있는지 묻는 질문을 만들고, 이미지에 근거해 공간 배치를 구체적으로 설명하는 답변을 "
            "작성하세요. 질문과 답변은 모두 자연스러운 한국어로 작성하세요."
        ),
        "atmosphere-centric": (
            "이 이미지의 분위기와 느낌을 묻는 질문을 만드세요. 빛과 색감, 날씨나 시간대, 장소의 성격, "
            "사람들의 표정과 감정처럼 분위기를 이루는 요소를 근거로 들어, 보는 사람이 받는 인상을 풍부하게 "
            "설명하는 답변을 작성하세요. 질문과 답변은 모두 자연스러운 한국어로 작성하세요."
        ),
        "conversation": (
            "이 이미지를 보고 있는 사용자와 AI 도우미가 나누는 여러 차례의 자연스러운 대화를 만드세요. "
            "사용자는 이미지의 내용, 세부 사항, 이유나 추론이 필요한 점을 차례로 묻고, 도우미는 이미지에 "
            "근거해 친절하고 정확하게 답합니다. 대화는 모두 자연스러운 한국어로 작성하세요."
        ),
    },
    chat=ChatBits(
        system_prompt=(
            "당신은 이미지와 글을 이해하는 도움이 되는 AI 도우미입니다. 사용자의 질문에 정확하고 친절하게, "
            "자연스러운 한국어로 답하세요."
        ),
        answer_in_language="한국어로 답하세요.",
    ),
    defaults=Strategies(),
)


@hookimpl
def register_languages(register: Any) -> None:
    register(SPEC)
