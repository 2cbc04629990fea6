"""Korean (한국어) for xlang: Hangul, offline Debian corpora, en–ko parallel text, seed VIT data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xlang.hookspecs import hookimpl
from xlang.spec import (
    ChatBits,
    CorpusSource,
    EvaluationSet,
    LanguageSpec,
    ScriptRange,
    Strategies,
    TaskPrompts,
    TeacherPrompts,
    VocabularySource,
    evaluation_sets_in,
)

_POOL = "pool/main/libr/libreoffice"
_HELP_KO = f"{_POOL}/libreoffice-help-ko_7.4.7-1%2Bdeb12u14_all.deb"
_HELP_KO_SHA256 = "7ef2d854e9ed58e6bf861cfa9fa2579555233f9df874baf327fcb07ccd190669"
_KONLPY_SHA256 = "0b7928059e20eb1c72f6fe65a3d12c104fae9e68173904e16beef869cf0ea590"
"""konlpy-0.6.0-py2.py3-none-any.whl, the wheel the out-of-domain texts come from."""
_HELP_EN = f"{_POOL}/libreoffice-help-en-us_7.4.7-1%2Bdeb12u14_all.deb"
_HELP_EN_SHA256 = "8faa840285734d6cfe1ed25537b48f07e74bd6412e3917bf8e5f8a653f7b3712"
_HUNSPELL_KO = "pool/main/h/hunspell-dict-ko/hunspell-ko_0.7.92-1_all.deb"
_HUNSPELL_KO_SHA256 = "d02674324f1b320f069d93336578f01df4ab6cff23d0878867ccdc80eb6307f2"
_WORDFREQ = "pypi://wordfreq==3.1.1/wordfreq/data"
_WORDFREQ_SHA256 = "4b1c6ecffc6198be3396d5cf871c4423ca71c907c231348d352dd54d62b97473"
"""Of wordfreq-3.1.1-py3-none-any.whl."""

_FONT = (  # Droid Sans Fallback draws Hangul and Han: the report's images use it when no installed font does
    "debian://file?deb=pool/main/f/fonts-android/fonts-droid-fallback_6.0.1r16-1.1_all.deb"
    "&sha256=d2096d4edde128fedf6749be2dd204a5810210a6201126d99b8d412344f71056"
    "&path=usr/share/fonts-droid-fallback/truetype/DroidSansFallback.ttf"
)

PROMPTS = TeacherPrompts(
    system=(
        "당신은 시각 지시 학습 데이터를 만드는 전문가입니다. 이미지에 실제로 보이는 것만 근거로, 처음부터 "
        "한국어로 생각하고 자연스러운 한국어로 답하세요. 번역투를 피하고, 보이지 않는 내용은 지어내지 마세요."
    ),
    tasks={
        "caption": TaskPrompts(
            questions=(
                "이미지를 간단히 설명해 주세요.",
                "이 사진을 한두 문장으로 요약해 주세요.",
                "사진에 무엇이 찍혀 있나요?",
            ),
            guidance="한두 문장으로 이미지 전체를 요약하세요.",
        ),
        "object-centric": TaskPrompts(
            questions=(
                "이 사진의 주요 물체는 무엇이며, 어떤 특징이 있나요?",
                "사진에 보이는 물건들을 자세히 설명해 주세요.",
                "가장 눈에 띄는 대상의 색깔, 모양, 재질을 알려 주세요.",
                "이 사진 속 사물들은 각각 어떤 용도로 쓰일까요?",
            ),
            guidance="물체의 종류, 개수, 색, 모양, 재질처럼 눈에 보이는 속성을 구체적으로 설명하세요.",
        ),
        "location-centric": TaskPrompts(
            questions=(
                "주요 대상은 사진의 어디에 있나요?",
                "사진 속 물체들의 위치 관계를 설명해 주세요.",
                "배경에는 무엇이 있고, 앞쪽에는 무엇이 있나요?",
                "왼쪽과 오른쪽에는 각각 무엇이 보이나요?",
            ),
            guidance="위, 아래, 왼쪽, 오른쪽, 앞, 뒤처럼 위치와 공간 관계를 분명히 말하세요.",
        ),
        "atmosphere-centric": TaskPrompts(
            questions=(
                "이 사진의 분위기는 어떤가요?",
                "사진을 보면 어떤 느낌이 드나요? 그 이유도 알려 주세요.",
                "빛과 색감이 사진의 분위기에 어떤 영향을 주나요?",
                "이 장면은 어떤 상황이나 시간대처럼 보이나요?",
            ),
            guidance="빛, 색감, 표정, 장면의 맥락에서 느껴지는 분위기와 그 근거를 설명하세요.",
        ),
        "conversation": TaskPrompts(
            questions=(
                "사진에 무엇이 보이나요?",
                "그중에서 가장 흥미로운 부분은 무엇인가요?",
                "이 장면에서 무슨 일이 일어나고 있는 것 같나요?",
                "이 사진은 어디에서 찍은 것 같나요?",
                "이 사진을 보고 무엇을 더 알 수 있을까요?",
            ),
            turns=3,
            guidance="대화하듯 자연스럽게, 앞선 질문과 답을 이어서 답하세요.",
        ),
    },
    translate="다음 글을 자연스러운 한국어로 옮기세요. 뜻은 그대로 두고, 번역한 글만 쓰세요.\n\n{text}",
)

_EVAL = Path(__file__).resolve().parent / "eval"
EVALUATION_SETS = (
    # written for the seed photos held out of training (coffee, chelsea, flower)
    *evaluation_sets_in(_EVAL / "smoke", "smoke"),
    # needs the hub; K-MMBench (NCSOFT), MMBench translated and reviewed in Korean
    EvaluationSet(name="k-mmbench", suite="full", format="mmbench-tsv", uri="hf://NCSOFT/K-MMBench?split=dev"),
    # needs the hub; K-LLaVA-W (NCSOFT), LLaVA-Bench (in-the-wild) in Korean
    EvaluationSet(name="k-llava-w", suite="full", format="llava-bench", uri="hf://NCSOFT/K-LLaVA-W?split=test"),
)


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
    # Out-of-domain text: the Constitution and three bills of the National Assembly, from the konlpy wheel
    # (legal prose, where the corpora are software help). Each file is one document (`format=document`: the
    # bills are hard-wrapped mid-sentence) and wholly held out.
    heldout_corpora=tuple(
        CorpusSource(
            name=name,
            uri=f"pypi://konlpy==0.6.0/konlpy/data/corpus/{member}?sha256={_KONLPY_SHA256}"
            "&format=document&validation_chars=1000000&max_share=1",
            license="public-domain government work (Copyright Act art. 7), shipped in konlpy (GPL-3.0)",
        )
        for name, member in (
            ("constitution-ko", "kolaw/constitution.txt"),
            ("bill-1809896-ko", "kobill/1809896.txt"),
            ("bill-1809899-ko", "kobill/1809899.txt"),
            ("bill-1809892-ko", "kobill/1809892.txt"),
        )
    ),
    vocabularies=(
        # hunspell's ko.dic stores Hangul as conjoining Jamo (NFD); the vocabulary source normalizes each
        # word (NFC). kiwipiepy-model 0.24.0 (Kiwi's lexicon) is not listed: it is an sdist on PyPI, which
        # pypi:// (wheels only) cannot read.
        VocabularySource(
            name="hunspell-ko",
            uri=f"debian://file?deb={_HUNSPELL_KO}&sha256={_HUNSPELL_KO_SHA256}&path=usr/share/hunspell/ko.dic",
            license="MPL-1.1 OR GPL-2.0-or-later OR LGPL-2.1-or-later",
        ),
        # General-text frequencies (subtitles, news, web, Wikipedia, books), cut into morphemes by MeCab: the
        # `vocabulary` source's prior. Stems and nouns start a space-separated word, endings and particles
        # attach; each is written as the training text writes it, after a space when the text lacks it.
        VocabularySource(
            name="wordfreq-ko",
            uri=f"{_WORDFREQ}/small_ko.msgpack.gz?sha256={_WORDFREQ_SHA256}",
            license="CC-BY-SA-4.0 (wordfreq data; its code is Apache-2.0)",
        ),
    ),
    chat=ChatBits(
        system_prompt=(
            "당신은 이미지와 글을 이해하는 도움이 되는 AI 도우미입니다. 사용자의 질문에 정확하고 친절하게, "
            "자연스러운 한국어로 답하세요."
        ),
    ),
    companions=("en",),
    vit_data=(f"file://{Path(__file__).resolve().parent / 'vit_seed.jsonl'}",),
    prompts=PROMPTS,
    evaluation_sets=EVALUATION_SETS,
    font=_FONT,
    # subword-copy (from xlang-subword-fit, a dependency of this package): on Korean laws, 1.22x the base
    # model's bits per character after init (subword-freq: 1.26x), on the help pages 1.30x against 1.36x;
    # after 300 pretraining steps the best start in both (docs/embeddings.md). About 3 minutes on two cores.
    defaults=Strategies(candidate_sources=("corpus-bpe", "vocabulary"), embedding_initializer="subword-copy"),
)


@hookimpl
def register_languages(register: Any) -> None:
    register(SPEC)
