"""Tokenizer expansion on the real assets: SmolLM2 (byte-level BPE) and Mistral v1 (SentencePiece BPE),
with the real Korean, Chinese and English corpora.

The invariants: text without a target-script character keeps its exact ids (hypothesis over all planes,
emoji, combining marks, code, and real English/Chinese text); decode(encode(s)) == s wherever the base
round-trips; the written SentencePiece model and the fast tokenizer give the same ids.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xlang.data.views import paragraphs
from xlang.errors import XlangError
from xlang.resolve import Resolver
from xlang.settings import XlangSettings
from xlang.spec import LanguageSpec, VocabularySource
from xlang.tokenizer import MANIFEST, expand_tokenizer, stats_table, tokenizer_stats

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
BUDGET = 1000


def _language(code: str) -> LanguageSpec:
    """The installed language plugin, or the one in languages/ of this checkout."""
    try:
        return Resolver(XlangSettings()).language(code)
    except XlangError:
        path = REPO / "languages" / code / f"xlang_{code}" / "__init__.py"
        module_spec = importlib.util.spec_from_file_location(f"_test_xlang_{code}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module.SPEC


def _texts(language: LanguageSpec, split: str, cache_dir: Path) -> list[str]:
    """The language's paragraphs through the real `load_corpus` hook (cached after one build), as the
    tokenizer stage reads them."""
    resolver = Resolver(XlangSettings(cache_dir=cache_dir))
    return paragraphs(resolver.dataset(language, split), language)


@pytest.fixture(scope="module")
def ko() -> LanguageSpec:
    return _language("ko")


@pytest.fixture(scope="module")
def zh() -> LanguageSpec:
    return _language("zh")


@pytest.fixture(scope="module")
def corpora(test_cache_dir: Path, ko: LanguageSpec, zh: LanguageSpec) -> dict[str, dict[str, list[str]]]:
    en = _language("en")
    return {
        spec.code: {split: _texts(spec, split, test_cache_dir) for split in ("train", "validation")}
        for spec in (ko, zh, en)
    }


@pytest.fixture(scope="module")
def mistral_dir(tmp_path_factory: pytest.TempPathFactory, test_cache_dir: Path) -> Path:
    from xlang.assets.wheels import MISTRAL_V1_TOKENIZER, wheel_member
    from xlang.tokenizer.sentencepiece import sentencepiece_folder

    model = wheel_member(MISTRAL_V1_TOKENIZER, test_cache_dir)
    return sentencepiece_folder(model, tmp_path_factory.mktemp("bases") / "mistral-v1")


_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@pytest.fixture(scope="module")
def llama3_style_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """SmolLM2's vocabulary behind Llama-3's pre-tokenizer (a regex Split, then ByteLevel without its own
    regex) and `ignore_merges`, which looks whole words up in the vocabulary before any merge."""
    folder = tmp_path_factory.mktemp("bases") / "llama3-style"
    folder.mkdir()
    data = json.loads((smollm2_dir / "tokenizer.json").read_text())
    data["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": _LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ],
    }
    data["model"]["ignore_merges"] = True
    (folder / "tokenizer.json").write_text(json.dumps(data))
    (folder / "tokenizer_config.json").write_text((smollm2_dir / "tokenizer_config.json").read_text())
    return folder


@pytest.fixture(scope="module")
def mistral_fast_only_dir(tmp_path_factory: pytest.TempPathFactory, mistral_dir: Path) -> Path:
    """Mistral v1 without its tokenizer.model: the fast tokenizer alone (strict BPE merges appended)."""
    import shutil

    folder = tmp_path_factory.mktemp("bases") / "mistral-fast-only"
    shutil.copytree(mistral_dir, folder)
    (folder / "tokenizer.model").unlink()
    return folder


@pytest.fixture(scope="module")
def expanded(
    tmp_path_factory: pytest.TempPathFactory,
    smollm2_dir: Path,
    mistral_dir: Path,
    llama3_style_dir: Path,
    mistral_fast_only_dir: Path,
    ko: LanguageSpec,
    zh: LanguageSpec,
    corpora: dict[str, dict[str, list[str]]],
) -> dict[str, tuple[Path, Path, LanguageSpec]]:
    """(base, expanded, language) for SmolLM2 + ko/zh, Mistral + ko (with and without its SentencePiece
    model) and a Llama-3-style base + ko."""
    out = tmp_path_factory.mktemp("expanded")
    made = {}
    for name, base, language, budget in (
        ("smollm2-ko", smollm2_dir, ko, BUDGET),
        ("smollm2-zh", smollm2_dir, zh, BUDGET),
        ("mistral-ko", mistral_dir, ko, BUDGET),
        ("llama3-style-ko", llama3_style_dir, ko, 500),
        ("mistral-fast-only-ko", mistral_fast_only_dir, ko, 500),
    ):
        expand_tokenizer(base, language, corpora[language.code]["train"], budget, out / name)
        made[name] = (base, out / name, language)
    return made


def _backend(folder: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def _ids(tokenizer, texts: list[str]) -> list[list[int]]:
    return [encoding.ids for encoding in tokenizer.encode_batch(texts, add_special_tokens=False)]


# --- what a user of plain transformers sees ----------------------------------------------------------


def test_expanded_folder_loads_with_plain_transformers(expanded, smollm2_dir: Path) -> None:
    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(smollm2_dir)
    tokenizer = AutoTokenizer.from_pretrained(expanded["smollm2-ko"][1])
    assert len(tokenizer) % 64 == 0 and len(base) < len(tokenizer) <= len(base) + BUDGET + 63
    assert tokenizer.all_special_tokens == base.all_special_tokens
    assert tokenizer.chat_template == base.chat_template
    chat = [{"role": "user", "content": "안녕하세요"}]
    assert tokenizer.apply_chat_template(chat, tokenize=False) == base.apply_chat_template(chat, tokenize=False)
    manifest = json.loads((expanded["smollm2-ko"][1] / MANIFEST).read_text())
    assert manifest["family"] == "byte-level-bpe" and manifest["language"] == "ko"
    assert len(manifest["new_tokens"]) == BUDGET


def test_korean_and_chinese_get_cheaper_and_english_does_not_move(expanded, corpora) -> None:
    for name, code in (("smollm2-ko", "ko"), ("smollm2-zh", "zh"), ("mistral-ko", "ko"), ("llama3-style-ko", "ko")):
        _, folder, _ = expanded[name]
        rows = tokenizer_stats(folder, {code: corpora[code]["validation"], "en": corpora["en"]["validation"]})
        target, english = rows
        assert target.tokens_per_char < 0.75 * target.base_tokens_per_char, stats_table(rows)
        assert english.identical_share == 1.0 and english.tokens == english.base_tokens


def test_real_english_chinese_and_code_keep_their_ids(expanded, corpora) -> None:
    import json as json_module

    code = [textwrap.dedent(inspect.getsource(module)) for module in (json_module, textwrap, inspect)]
    for name, (base, folder, language) in expanded.items():
        others = [corpora[c]["validation"] for c in ("en", "zh", "ko") if c != language.code]
        texts = [t for group in others for t in group if not language.has_target_text(t)] + code
        assert len(texts) > 1000
        assert _ids(_backend(base), texts) == _ids(_backend(folder), texts), name


def test_reserved_padding_is_never_produced(expanded, corpora) -> None:
    _, folder, _ = expanded["smollm2-ko"]
    manifest = json.loads((folder / MANIFEST).read_text())
    start, stop = manifest["reserved_id_range"]
    assert stop % 64 == 0 and stop > start
    ids = {i for row in _ids(_backend(folder), corpora["ko"]["validation"]) for i in row}
    assert not ids & set(range(start, stop))


def test_sentencepiece_model_matches_the_fast_tokenizer(expanded, corpora, mistral_dir: Path) -> None:
    import sentencepiece

    fast_only = json.loads((expanded["mistral-fast-only-ko"][1] / MANIFEST).read_text())
    assert fast_only["sentencepiece_model"] is False and "only the fast tokenizer" in fast_only["notes"][0]
    assert not (expanded["mistral-fast-only-ko"][1] / "tokenizer.model").exists()
    _, folder, _ = expanded["mistral-ko"]
    assert json.loads((folder / MANIFEST).read_text())["sentencepiece_model"] is True
    for base_or_new in (mistral_dir, folder):
        slow = sentencepiece.SentencePieceProcessor(model_file=str(base_or_new / "tokenizer.model"))
        fast = _backend(base_or_new)
        assert slow.get_piece_size() == fast.get_vocab_size()
        for code in ("ko", "zh", "en"):
            texts = corpora[code]["validation"]
            assert _ids(fast, texts) == slow.encode(texts), (base_or_new.name, code)


# --- property tests -------------------------------------------------------------------------------

_SNIPPETS = [
    "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "SELECT name FROM users WHERE id = 42;",
    "    \t\n\n  ",
    " the quick brown fox",
    "naïve café façade",
    "1234567890",
    "👨‍👩‍👧‍👦 👍🏽 🇰🇷 🇨🇳 ❤️",
    "e\u0301 a\u0308 n\u0303 \u0915\u094d\u0937",
    "中文汉字，测试。",
    "日本語のテキスト、カタカナ",
    "ꀀꀁ ꤰꤱ ꯀꯁ \ud7a4",  # Yi, Rejang, Meetei Mayek, unassigned: lead bytes shared with Hangul
    "<|im_start|>user\nhi<|im_end|>",
    "▁ <0xEA> <s> </s>",
]
_ANY_CHAR = st.one_of(
    st.characters(exclude_categories=("Cs",)),
    st.integers(0, 0x10FFFF).filter(lambda p: not 0xD800 <= p <= 0xDFFF).map(chr),
    st.integers(0x3000, 0x4FFF).map(chr),
    st.integers(0x9F00, 0xD7FF).map(chr),
    st.integers(0xFF00, 0xFFFF).map(chr),
    st.integers(0x300, 0x36F).map(chr),
)


def _neighbours(language: LanguageSpec) -> st.SearchStrategy[str]:
    """Characters that share UTF-8 lead bytes with the target scripts: where partial-byte merges bite."""
    return st.one_of(
        *(
            st.integers(max(0, script.start - 0x1000), min(0x10FFFF, script.end + 0x1000))
            .filter(lambda p: not 0xD800 <= p <= 0xDFFF)
            .map(chr)
            for script in language.scripts
        )
    )


def _text_without(language: LanguageSpec) -> st.SearchStrategy[str]:
    piece = st.one_of(
        _ANY_CHAR, _neighbours(language), st.sampled_from(_SNIPPETS), st.sampled_from([" ", "  ", "\n", "0", "7"])
    )
    strip = lambda text: "".join(c for c in text if not language.is_target_char(c))  # noqa: E731
    return st.lists(piece, max_size=30).map("".join).map(strip)


def _text_with(language: LanguageSpec, samples: list[str]) -> st.SearchStrategy[str]:
    piece = st.one_of(_ANY_CHAR, st.sampled_from(_SNIPPETS), st.sampled_from(samples))
    return st.lists(piece, max_size=20).map("".join)


_VARIANTS = ["smollm2-ko", "smollm2-zh", "mistral-ko", "llama3-style-ko", "mistral-fast-only-ko"]
_PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", _VARIANTS)
def test_text_without_the_target_script_keeps_its_ids(expanded, name: str) -> None:
    base_dir, folder, language = expanded[name]
    base, new = _backend(base_dir), _backend(folder)

    @_PROPERTY
    @given(_text_without(language))
    def check(text: str) -> None:
        assert base.encode(text, add_special_tokens=False).ids == new.encode(text, add_special_tokens=False).ids

    check()


@pytest.mark.parametrize("name", _VARIANTS)
def test_decode_encode_round_trips_wherever_the_base_does(expanded, corpora, name: str) -> None:
    base_dir, folder, language = expanded[name]
    base, new = _backend(base_dir), _backend(folder)
    samples = [text[:40] for text in corpora[language.code]["validation"][:200]]

    def round_trips(tokenizer, text: str) -> bool:
        return tokenizer.decode(tokenizer.encode(text, add_special_tokens=False).ids, skip_special_tokens=False) == text

    @_PROPERTY
    @given(_text_with(language, samples))
    def check(text: str) -> None:
        if round_trips(base, text):
            assert round_trips(new, text)

    check()
    assert all(round_trips(new, text) for text in corpora[language.code]["validation"] if round_trips(base, text))


# --- candidate sources and required tokens ---------------------------------------------------------


def test_builtin_sources_through_the_registry(tmp_path: Path, smollm2_dir: Path, ko, corpora, fresh_plugins) -> None:
    """`vocabulary` reads the language's declared lists (here one `file://` list in a copy of the spec),
    `user` takes its tokens through its options; both run as Strategies in the stage."""
    resolver = Resolver(XlangSettings(cache_dir=tmp_path / "cache"), fresh_plugins)
    vocabulary = resolver.strategy("token_candidate_sources", "vocabulary")
    user = resolver.strategy("token_candidate_sources", "user")
    expander = resolver.strategy("tokenizer_expanders", "merges")
    word_list = tmp_path / "words.txt"
    word_list.write_text("# a lexicon\n선택 100 n\n문서\n사용자/N\nhello\n", encoding="utf-8")
    listed = ko.model_copy(update={"vocabularies": (VocabularySource(name="words", uri=f"file://{word_list}"),)})
    vocabularies = {"words": word_list}
    texts = corpora["ko"]["train"]
    proposed = vocabulary(language=listed, texts=texts, limit=10, vocabularies=vocabularies)
    assert sorted(proposed) == ["문서", "사용자", "선택"]  # ranked by their use in the text
    with pytest.raises(XlangError, match="no Korean character"):
        user(options={"tokens": ["한국어", "hello"]}, language=ko, texts=[], limit=10)

    result = expand_tokenizer(
        smollm2_dir,
        listed,
        texts,
        30,
        tmp_path / "out",
        candidate_sources={"vocabulary": vocabulary, "user": user},
        expander=expander,
        required_tokens=["한국어"],
        vocabularies=vocabularies,
        source_options={"user": {"tokens": ["대화 상자"]}},
    )
    assert result.candidates == {"vocabulary": 3, "user": 1}
    assert "한국어" in result.new_tokens
    allowed = "".join(["선택", "문서", "사용자", "대화 상자", "한국어"])
    assert all(token.strip(" \ufffd") in allowed for token in result.new_tokens), result.new_tokens


# --- bad input: one clear message, nothing written -------------------------------------------------


def _wordpiece_folder(folder: Path) -> Path:
    from tokenizers import Tokenizer, models

    folder.mkdir()
    Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]")).save(str(folder / "tokenizer.json"))
    return folder


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("budget-zero", "positive number"),
        ("budget-negative", "positive number"),
        ("empty-corpus", "corpus is empty"),
        ("english-corpus", "has no Korean character"),
        ("wordpiece", "WordPiece model"),
        ("unreadable", "cannot read"),
        ("missing", "does not exist"),
        ("existing-token", "already in the base vocabulary"),
        ("out-exists", "already exists"),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(
    tmp_path: Path, smollm2_dir: Path, ko, corpora, case: str, message: str
) -> None:
    korean = corpora["ko"]["train"][:300]
    arguments = {"base": smollm2_dir, "language": ko, "train_texts": korean, "budget": 50}
    if case == "budget-zero":
        arguments["budget"] = 0
    elif case == "budget-negative":
        arguments["budget"] = -5
    elif case == "empty-corpus":
        arguments["train_texts"] = ["", "  "]
    elif case == "english-corpus":
        arguments["train_texts"] = corpora["en"]["train"][:300]
    elif case == "wordpiece":
        arguments["base"] = _wordpiece_folder(tmp_path / "wordpiece")
    elif case == "unreadable":
        (tmp_path / "broken").mkdir()
        (tmp_path / "broken" / "tokenizer.json").write_text("{not json")
        arguments["base"] = tmp_path / "broken"
    elif case == "missing":
        arguments["base"] = tmp_path / "nowhere"
    elif case == "existing-token":
        arguments["required_tokens"] = ["이"]
    out_parent = tmp_path / "runs"
    out_parent.mkdir()
    out = out_parent / "tok"
    if case == "out-exists":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    with pytest.raises(XlangError, match=message) as raised:
        expand_tokenizer(out_dir=out, **arguments)
    assert raised.value.exit_code == 2
    left = sorted(p.name for p in out_parent.iterdir())
    assert left == (["tok"] if case == "out-exists" else []), left
    if case == "out-exists":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
