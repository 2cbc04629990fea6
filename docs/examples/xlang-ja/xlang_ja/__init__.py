"""Japanese for xlang: the complete plugin that the tutorial in docs/plugin-tutorial.md builds."""

from pathlib import Path

from xlang import hookimpl
from xlang.spec import ChatBits, CorpusSource, LanguageSpec, ScriptRange

CORPUS = Path(__file__).with_name("corpus.txt")

SPEC = LanguageSpec(
    code="ja",
    name="Japanese",
    native_name="日本語",
    scripts=(
        ScriptRange(name="Hiragana", start=0x3040, end=0x309F),
        ScriptRange(name="Katakana", start=0x30A0, end=0x30FF),
        ScriptRange(name="CJK Unified Ideographs", start=0x4E00, end=0x9FFF),
    ),
    normalizer="NFKC",
    corpora=(CorpusSource(name="ja-tutorial", uri=CORPUS.as_uri(), license="CC0-1.0"),),
    chat=ChatBits(system_prompt="あなたは画像を理解し、日本語で丁寧に答えるアシスタントです。"),
    companions=("en",),
)


@hookimpl
def register_languages(register):
    register(SPEC)
