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
