"""Scripts written with combining marks (Devanagari, Thai): SmolLM2's GPT-2-style pre-tokenizer cuts their
words at every vowel sign, so expansion could only add fragments. The `merges` expander's `join_marks` keeps
a target-script word and its marks in one piece; text without the target script keeps its exact ids.

The languages are plugins built here (a `LanguageSpec` registered through a plugin manager) with real Hindi
and Thai sentences written into the test: no Hindi or Thai corpus is cached.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xlang import plugins
from xlang.errors import XlangError
from xlang.hookspecs import hookimpl
from xlang.resolve import Resolver
from xlang.settings import XlangSettings
from xlang.spec import ChatBits, LanguageSpec, ScriptRange
from xlang.tokenizer import MANIFEST, MERGES, ExpansionResult, expand_tokenizer
from xlang.tokenizer.families import TargetScripts
from xlang.tokenizer.marks import GPT2_REGEX, letters_with_marks, mark_class, marked_pre_tokenizer, script_marks

pytestmark = pytest.mark.slow

HINDI = [
    "भारत एक विशाल देश है जिसमें अनेक भाषाएँ बोली जाती हैं।",
    "हिंदी भारत की सबसे अधिक बोली जाने वाली भाषा है।",
    "मेरा घर शहर के पुराने हिस्से में एक छोटी सी गली में है।",
    "आज सुबह से लगातार बारिश हो रही है, इसलिए बच्चे घर पर ही खेल रहे हैं।",
    "मैं हर दिन सुबह जल्दी उठकर पार्क में टहलने जाता हूँ।",
    "हमारे विद्यालय में एक बड़ा पुस्तकालय है जहाँ हज़ारों किताबें रखी हुई हैं।",
    "किसान अपने खेतों में गेहूँ और धान की खेती करते हैं।",
    "दिल्ली भारत की राजधानी है और यहाँ संसद भवन भी स्थित है।",
    "गंगा नदी हिमालय से निकलकर बंगाल की खाड़ी में मिलती है।",
    "इस फ़ाइल को खोलने के लिए मेनू में जाकर खोलें विकल्प पर क्लिक करें।",
    "दस्तावेज़ को सहेजने से पहले उसका नाम और स्थान चुनें।",
    "यदि प्रोग्राम अचानक बंद हो जाए तो अपने कंप्यूटर को फिर से शुरू करें।",
    "तालिका में नई पंक्ति जोड़ने के लिए सम्मिलित करें मेनू का उपयोग करें।",
    "चयनित पाठ का रंग और आकार बदलने के लिए स्वरूप संवाद खोलें।",
    "मेरी माँ रसोई में स्वादिष्ट खाना बना रही हैं।",
    "दादी जी हमें हर रात सोने से पहले एक नई कहानी सुनाती हैं।",
    "रेलगाड़ी समय पर स्टेशन पहुँच गई और यात्री उतरने लगे।",
    "बाज़ार में आज बहुत भीड़ थी क्योंकि कल त्योहार है।",
    "दीवाली रोशनी का त्योहार है और लोग इस दिन अपने घरों में दीये जलाते हैं।",
    "होली पर लोग एक दूसरे को रंग लगाते हैं और मिठाइयाँ बाँटते हैं।",
    "डॉक्टर ने कहा कि रोज़ व्यायाम करना स्वास्थ्य के लिए अच्छा है।",
    "पानी को बचाना हम सबकी ज़िम्मेदारी है।",
    "पेड़ हमें छाया, फल और स्वच्छ हवा देते हैं।",
    "शिक्षक ने छात्रों को गणित के कठिन प्रश्न समझाए।",
    "मैंने कल एक नई किताब खरीदी और रात भर उसे पढ़ता रहा।",
    "मेरे भाई को क्रिकेट खेलना बहुत पसंद है।",
    "गर्मी के मौसम में दिन लंबे और रातें छोटी होती हैं।",
    "सर्दियों में पहाड़ों पर बर्फ़ गिरती है और ठंड बढ़ जाती है।",
    "हमें अपने बड़ों का सम्मान करना चाहिए।",
    "समाचार पत्र में आज चुनाव के परिणाम छपे हैं।",
    "सरकार ने गाँवों में नई सड़कें बनाने की योजना शुरू की है।",
    "इंटरनेट ने दुनिया भर के लोगों को एक दूसरे से जोड़ दिया है।",
    "बच्चों को कहानियाँ सुनना और चित्र बनाना अच्छा लगता है।",
    "संगीत मन को शांति और खुशी देता है।",
    "मेरे मित्र ने मुझे अपने जन्मदिन की दावत पर बुलाया।",
    "यह सड़क सीधे शहर के मुख्य बाज़ार तक जाती है।",
    "कृपया अपना नाम और पता इस फ़ॉर्म में साफ़ अक्षरों में लिखें।",
    "सूरज पूर्व दिशा में उगता है और पश्चिम में डूबता है।",
    "मुझे चाय के साथ गरम समोसे खाना बहुत पसंद है।",
    "पुस्तक पढ़ने से ज्ञान बढ़ता है और सोचने की शक्ति विकसित होती है।",
    "वैज्ञानिकों ने अंतरिक्ष में एक नया उपग्रह भेजा है।",
    "इस सप्ताह के अंत में हम अपने परिवार के साथ पहाड़ों पर घूमने जाएँगे।",
    "अस्पताल में मरीज़ों की देखभाल के लिए अनेक नर्सें काम करती हैं।",
    "स्क्रीन पर दिखाई देने वाले संदेश को ध्यान से पढ़ें और फिर आगे बढ़ें।",
    "अपनी सेटिंग्स बदलने के लिए उपकरण मेनू में विकल्प चुनें।",
    "यह सुविधा केवल नए संस्करण में उपलब्ध है।",
    "हम सबको मिलकर अपने देश को स्वच्छ और सुंदर बनाना चाहिए।",
    "पिताजी हर शाम समाचार सुनते हैं और फिर हमसे बातें करते हैं।",
]
THAI = [
    "วันนี้อากาศดีมาก เราจึงไปเดินเล่นที่สวนสาธารณะ",
    "ประเทศไทยมีอาหารอร่อยหลายชนิด",
    "ฉันชอบกินข้าวผัดกับไข่ดาว",
    "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
    "นักเรียนกำลังอ่านหนังสืออยู่ในห้องสมุด",
    "คุณแม่ทำอาหารเย็นให้ทุกคนในครอบครัว",
    "พรุ่งนี้ฉันจะไปทำงานแต่เช้า",
    "ฝนตกหนักตั้งแต่เมื่อคืน ถนนหลายสายจึงมีน้ำท่วม",
    "เขาเรียนภาษาไทยมาสองปีแล้ว",
    "กรุณาบันทึกเอกสารก่อนปิดโปรแกรม",
    "คลิกที่เมนูแฟ้มแล้วเลือกเปิดเพื่อเปิดเอกสาร",
    "ตลาดน้ำเป็นสถานที่ท่องเที่ยวที่มีชื่อเสียง",
    "เด็กๆ ชอบเล่นฟุตบอลหลังเลิกเรียน",
    "คุณพ่ออ่านหนังสือพิมพ์ทุกเช้า",
    "ร้านกาแฟนี้เปิดตั้งแต่เจ็ดโมงเช้า",
    "เราควรดื่มน้ำวันละแปดแก้ว",
    "รถไฟออกจากสถานีตรงเวลา",
    "ทะเลที่ภูเก็ตสวยงามมาก",
    "ฉันอยากไปเที่ยวเชียงใหม่ในฤดูหนาว",
    "ครูสอนคณิตศาสตร์ให้นักเรียนทุกวันจันทร์",
    "โทรศัพท์ของฉันแบตเตอรี่หมดแล้ว",
    "กรุณาเลือกแบบอักษรและขนาดตัวอักษรที่ต้องการ",
    "ต้นไม้ช่วยให้อากาศสดชื่น",
    "เพื่อนของฉันทำงานที่โรงพยาบาล",
    "ช่วงสงกรานต์ผู้คนสาดน้ำกันอย่างสนุกสนาน",
    "แมวของฉันชอบนอนบนโซฟา",
    "หากโปรแกรมไม่ตอบสนอง ให้ปิดแล้วเปิดใหม่อีกครั้ง",
    "ฉันไปซื้อผลไม้ที่ตลาดทุกวันเสาร์",
    "พี่ชายของฉันเล่นกีตาร์เก่งมาก",
    "เราจะไปกินข้าวด้วยกันที่ร้านอาหารใกล้บ้าน",
]
OTHER_TEXT = {
    "English": "The quick brown fox jumps over the lazy dog. It's 2024, isn't it?",
    "code": "def square(x: int) -> int:\n    return x ** 2  # 100% sure\n\n\tprint(f'{x!r}')",
    "Korean": "한국어 문장은 이렇게 씁니다. 대화 상자를 클릭하세요!",
    "Chinese": "中文文本的编码不应改变，对吗？（测试）",
    "emoji": "👩\u200d👩\u200d👧 🇰🇷 👍🏽 ✨ ok",
    "decomposed Latin": "cafe\u0301 nai\u0308ve a\u0300 la\u0327",
    "Bengali": "বাংলা ভাষায় লেখা একটি বাক্য",  # Bengali ends sentences with the danda, a Devanagari character
    "Tamil": "தமிழ் மொழியில் எழுதிய வாக்கியம்.",
    "Vedic and Devanagari Extended (outside the range)": "\u1cd0\u1cd1 \ua8e0\ua8e1\ua8f2",
}
HINDI_BUDGET = 200
THAI_BUDGET = 250


def _language(code: str, name: str, *ranges: tuple[int, int]) -> LanguageSpec:
    return LanguageSpec(
        code=code,
        name=name,
        scripts=tuple(ScriptRange(name=f"{name} {start:04X}", start=start, end=end) for start, end in ranges),
        chat=ChatBits(system_prompt="test"),
    )


HINDI_SPEC = _language("hi", "Hindi", (0x0900, 0x097F))
THAI_SPEC = _language("th", "Thai", (0x0E00, 0x0E7F))


class TestLanguages:
    """A third-party language plugin: Hindi (Devanagari) and Thai, nothing but their specs."""

    @hookimpl
    def register_languages(self, register: Any) -> None:
        register(HINDI_SPEC)
        register(THAI_SPEC)


@pytest.fixture(scope="module")
def resolver(tmp_path_factory: pytest.TempPathFactory) -> Resolver:
    manager = plugins.make_plugin_manager()
    plugins.register_plugin(TestLanguages(), name="test-marked-scripts", pm=manager)
    return Resolver(XlangSettings(cache_dir=tmp_path_factory.mktemp("cache")), manager)


def _expand(
    base: Path, language: LanguageSpec, texts: list[str], budget: int, out: Path, join_marks: str | None
) -> ExpansionResult:
    options = {"join_marks": join_marks} if join_marks is not None else None
    return expand_tokenizer(base, language, texts, budget, out, expander_options=options)


@pytest.fixture(scope="module")
def hindi(
    resolver: Resolver, smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, ExpansionResult]:
    """SmolLM2 expanded for Hindi with the default (`auto`: marks kept with letters) and with `off`."""
    language = resolver.language("hi")
    folder = tmp_path_factory.mktemp("hindi")
    return {
        mode: _expand(smollm2_dir, language, HINDI, HINDI_BUDGET, folder / mode, None if mode == "auto" else mode)
        for mode in ("auto", "off")
    }


@pytest.fixture(scope="module")
def thai(resolver: Resolver, smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ExpansionResult]:
    language = resolver.language("th")
    folder = tmp_path_factory.mktemp("thai")
    return {mode: _expand(smollm2_dir, language, THAI, THAI_BUDGET, folder / mode, mode) for mode in ("auto", "off")}


def _backend(folder: Path) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def _is_mark(char: str) -> bool:
    return unicodedata.category(char).startswith("M")


def _letter_then_mark(token: str) -> bool:
    """Whether a letter is directly followed by a combining mark somewhere in `token`."""
    categories = [unicodedata.category(char) for char in token]
    return any(a.startswith("L") and b.startswith("M") for a, b in zip(categories, categories[1:], strict=False))


def test_the_letter_class_takes_the_marks_and_nothing_else() -> None:
    marks = [(0x0901, 0x0903), (0x093C, 0x093C)]
    body = r"\x{0901}-\x{0903}\x{093C}"
    assert letters_with_marks(GPT2_REGEX, marks) == (
        rf"'s|'t|'re|'ve|'m|'ll|'d| ?[\p{{L}}{body}]+| ?\p{{N}}+| ?[^\s\p{{L}}{body}\p{{N}}]+|\s+(?!\S)|\s+"
    )
    assert letters_with_marks(r"[\p{Lu}\p{Ll}]+|\pL", marks) == rf"[\p{{Lu}}\p{{Ll}}]+|[\p{{L}}{body}]"
    assert letters_with_marks(r"[^\]\p{L}]", marks) == rf"[^\]\p{{L}}{body}]"
    assert letters_with_marks(r"\s+|\d", marks) == r"\s+|\d"
    with pytest.raises(XlangError, match="negated letter class"):
        letters_with_marks(r"\P{L}+", marks)


def test_marks_are_found_by_category_and_auto_needs_them_in_the_text(smollm2_dir: Path) -> None:
    hindi_scripts = TargetScripts.of(HINDI_SPEC)
    marks = script_marks(hindi_scripts)
    marked = {point for start, end in marks for point in range(start, end + 1)}
    assert {0x0902, 0x093E, 0x093F, 0x0947, 0x094D} <= marked  # anusvara, vowel signs AA, I, E, virama
    assert {0x0915, 0x0905, 0x0964, 0x0966} & marked == set()  # KA, A, danda, digit zero
    assert all(unicodedata.category(chr(point)).startswith("M") for point in marked)

    base = json.loads((smollm2_dir / "tokenizer.json").read_text())
    changed, share = marked_pre_tokenizer(base, hindi_scripts, HINDI, "auto")
    assert changed != base["pre_tokenizer"] and 0.3 < share < 0.5
    assert marked_pre_tokenizer(base, hindi_scripts, HINDI, "off") == (base["pre_tokenizer"], 0.0)

    # CJK Symbols and Punctuation holds four ideographic tone marks: Chinese text never uses them, so `auto`
    # keeps the base's pre-tokenizer; `on` changes it anyway.
    chinese = TargetScripts.of(_language("zh", "Chinese", (0x4E00, 0x9FFF), (0x3000, 0x303F)))
    assert script_marks(chinese)
    assert marked_pre_tokenizer(base, chinese, [OTHER_TEXT["Chinese"]], "auto") == (base["pre_tokenizer"], 0.0)
    assert marked_pre_tokenizer(base, chinese, [OTHER_TEXT["Chinese"]], "on")[0] != base["pre_tokenizer"]

    # A ByteLevel that adds a prefix space before its own regex cannot be split in two: `auto` keeps it,
    # `on` says why it cannot.
    prefixed = {**base, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "use_regex": True}}
    assert marked_pre_tokenizer(prefixed, hindi_scripts, HINDI, "auto")[0] == prefixed["pre_tokenizer"]
    with pytest.raises(XlangError, match="prefix space"):
        marked_pre_tokenizer(prefixed, hindi_scripts, HINDI, "on")


def test_the_option_is_checked_before_any_work(smollm2_dir: Path, tmp_path: Path) -> None:
    assert MERGES.configure({}).join_marks == "auto"
    with pytest.raises(XlangError, match="join_marks"):
        MERGES.configure({"join_marks": "sometimes"})
    with pytest.raises(XlangError, match="join_marks"):
        expand_tokenizer(
            smollm2_dir, HINDI_SPEC, HINDI, 10, tmp_path / "out", expander_options={"join_marks": "sometimes"}
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("shape", ["smollm2", "llama3-style"])
def test_text_without_the_target_script_is_cut_exactly_as_before(smollm2_dir: Path, shape: str) -> None:
    """The rewritten pre-tokenizer against the base's on every other kind of text, for SmolLM2 (a
    ByteLevel that runs GPT-2's regex itself) and a Llama-3-style Split regex; with no marks to add, the
    ByteLevel turned into Split + ByteLevel cuts even Hindi exactly as before (the regex is GPT-2's)."""
    from tokenizers import Tokenizer

    base_json = json.loads((smollm2_dir / "tokenizer.json").read_text())
    if shape == "llama3-style":
        base_json["pre_tokenizer"] = {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        }
    scripts = TargetScripts.of(HINDI_SPEC)
    base = Tokenizer.from_str(json.dumps(base_json))
    joined_json, _ = marked_pre_tokenizer(base_json, scripts, HINDI, "on")
    joined = Tokenizer.from_str(json.dumps({**base_json, "pre_tokenizer": joined_json}))
    same_json = json.loads(json.dumps(joined_json).replace(_class_of(scripts), ""))
    same = Tokenizer.from_str(json.dumps({**base_json, "pre_tokenizer": same_json}))
    assert json.dumps(same_json).count("Split") == 1

    for text in [*OTHER_TEXT.values(), "".join(THAI[:3])]:
        assert joined.encode(text).ids == base.encode(text).ids, text
    for text in HINDI[:10]:
        assert same.encode(text).ids == base.encode(text).ids, text
    words = HINDI[1].replace("।", "").split()
    assert len(joined.pre_tokenizer.pre_tokenize_str(HINDI[1])) == len(words) + 1  # each word whole, then the danda
    assert len(base.pre_tokenizer.pre_tokenize_str(HINDI[1])) > 2 * len(words)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.text(alphabet=NEAR_THE_TARGET, max_size=40))
    def same_ids(text: str) -> None:
        assert joined.encode(text).ids == base.encode(text).ids

    same_ids()


def _class_of(scripts: TargetScripts) -> str:
    """The marks as the rewrite writes them into a class, JSON-escaped (to undo the rewrite)."""
    return json.dumps(mark_class(script_marks(scripts)))[1:-1]


LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
NEAR_THE_TARGET = st.one_of(
    st.characters(blacklist_categories=("Cs",), max_codepoint=0x08FF),
    st.characters(blacklist_categories=("Cs",), min_codepoint=0x0980, max_codepoint=0x0DFF),
    st.characters(blacklist_categories=("Cs",), min_codepoint=0x0980),
    st.sampled_from(" \t\n'.,!?0123456789abcXYZ\u200c\u200d\u0301\u0308\u1cd0\ua8e0"),
)
"""Characters outside Devanagari (0900-097F): Latin and its combining marks, the Indic scripts next to it
(Bengali to Sinhala, each with marks of its own), the rest of Unicode, joiners and punctuation."""


def test_hindi_expansion_uses_its_budget_on_whole_words(hindi: dict[str, ExpansionResult]) -> None:
    joined, cut = hindi["auto"], hindi["off"]
    assert len(joined.new_tokens) >= 0.9 * HINDI_BUDGET
    assert len(cut.new_tokens) < len(joined.new_tokens)
    assert any("combining marks in one piece" in note for note in joined.notes)
    assert not any("combining marks in one piece" in note for note in cut.notes)

    # whole words with their vowel signs: words of the text, with their leading space, holding a mark
    words = {" " + word.strip("।,") for line in HINDI for word in line.split()}
    whole = [token for token in joined.new_tokens if token in words and any(map(_is_mark, token))]
    assert len(whole) >= 15, whole
    assert {" हैं", " में", " लिए", " जाती"} <= set(whole)  # ending in a vowel sign or an anusvara
    assert sum(map(_letter_then_mark, joined.new_tokens)) > HINDI_BUDGET / 4  # the rest: byte steps, marks, letters
    assert not any(map(_letter_then_mark, cut.new_tokens))  # the old pre-tokenizer never lets a mark follow a letter

    before, after = joined.train_tokens_per_char
    assert cut.train_tokens_per_char[0] == before
    assert after < 0.8 * cut.train_tokens_per_char[1] and after < 0.5 * before
    manifest = json.loads((joined.out_dir / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["new_tokens"] == list(joined.new_tokens)


def test_hindi_tokenizer_loads_in_transformers_keeps_other_ids_and_round_trips(
    hindi: dict[str, ExpansionResult], smollm2_dir: Path
) -> None:
    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(str(smollm2_dir))
    expanded = AutoTokenizer.from_pretrained(str(hindi["auto"].out_dir))
    assert len(expanded) == hindi["auto"].vocab_size
    for name, text in OTHER_TEXT.items():
        assert expanded.encode(text, add_special_tokens=False) == base.encode(text, add_special_tokens=False), name
    mixed = [*HINDI[:5], "फ़ाइल menu (File) में Save क्लिक करें: 12 बार!", "ॐ नमः\n\tशिवाय ००१२ ।॥"]
    for text in mixed:
        ids = expanded.encode(text, add_special_tokens=False)
        assert expanded.decode(ids) == text
    new_ids = set(hindi["auto"].new_token_ids)
    assert new_ids & set(expanded.encode(HINDI[0], add_special_tokens=False))

    backend, base_backend = _backend(hindi["auto"].out_dir), _backend(smollm2_dir)

    def round_trips(tokenizer: Any, text: str) -> bool:
        return tokenizer.decode(tokenizer.encode(text, add_special_tokens=False).ids) == text

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.text(alphabet=st.one_of(st.sampled_from("".join(HINDI[:8])), NEAR_THE_TARGET), max_size=40))
    def round_trip(text: str) -> None:
        # SmolLM2 lacks a few lead bytes (0xF1: U+40000 and up), so it cannot round-trip every string itself
        assert round_trips(backend, text) or not round_trips(base_backend, text)

    round_trip()


def test_thai_expansion_spans_its_marks_too(thai: dict[str, ExpansionResult], smollm2_dir: Path) -> None:
    joined, cut = thai["auto"], thai["off"]
    assert len(joined.new_tokens) > len(cut.new_tokens)
    assert sum(map(_letter_then_mark, joined.new_tokens)) > len(joined.new_tokens) / 5
    assert not any(map(_letter_then_mark, cut.new_tokens))
    assert {"ของฉัน", "แล้ว", "เปิด", "ให้"} & set(joined.new_tokens)
    assert joined.train_tokens_per_char[1] < 0.85 * cut.train_tokens_per_char[1]

    base, expanded = _backend(smollm2_dir), _backend(joined.out_dir)
    for text in [*OTHER_TEXT.values(), *HINDI[:3]]:
        assert expanded.encode(text).ids == base.encode(text).ids, text
    for text in THAI[:10]:
        assert expanded.decode(expanded.encode(text).ids) == text
