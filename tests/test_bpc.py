"""Bits per character: every token scored once, the same number as a direct computation, fair cuts by
characters, clear errors. Tiny random Llama models with a byte-level BPE trained here."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from xlang.data.views import join_documents, take_chars  # noqa: E402
from xlang.errors import XlangError  # noqa: E402
from xlang.eval.bpc import (  # noqa: E402
    _windows,
    bits_per_character,
    bits_per_character_of,
    character_bits,
    load_for_text,
    tokens_per_character,
)

TEXTS = [
    "Select the cells, then choose Format - Cells and open the Numbers tab.",
    "대화 상자는 지역화 데이터를 포함할 수 있습니다. 취소를 클릭하면 대화 상자를 불러오지 않습니다.",
    "Python functions return values; classes group data and behaviour. " * 3,
    "选择单元格，然后选择格式 - 单元格。",
]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>", "<|im_start|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(TEXTS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def model(tokenizer: Any) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )
    return LlamaForCausalLM(config).eval()


def _direct_bits(model: Any, tokenizer: Any, texts: list[str]) -> tuple[float, int]:
    """Each document read in one piece after a BOS: the reference the sliding windows must reproduce."""
    bits, tokens = 0.0, 0
    for text in texts:
        ids = [tokenizer.bos_token_id] + tokenizer.encode(text, add_special_tokens=False)
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
        bits += float(torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum")) / math.log(2)
        tokens += len(ids) - 1
    return bits, tokens


@pytest.mark.parametrize("length", [1, 2, 7, 64, 65, 300])
@pytest.mark.parametrize(("window", "stride"), [(16, 16), (16, 8), (16, 5), (64, 48)])
def test_windows_score_every_token_once(length: int, window: int, stride: int) -> None:
    scored: list[int] = []
    for start, end, count in _windows(length, window, stride):
        assert end - start <= window and 0 < count <= end - start
        if start > 0:  # a later window: exactly window - stride tokens of context before its first score
            assert end - count - start == window - stride
        scored.extend(range(end - count, end))
    assert scored == list(range(1, length))


def test_one_window_per_document_equals_the_direct_computation(model: Any, tokenizer: Any) -> None:
    """A document that fits one window is scored exactly as reading it alone after a BOS."""
    for text in TEXTS:
        bits, tokens = _direct_bits(model, tokenizer, [text])
        result = bits_per_character(model, tokenizer, [text], window=512, stride=256, max_chars=None)
        assert result.tokens == tokens and result.characters == len(text)
        assert result.bits == pytest.approx(bits, rel=1e-5)
        assert result.bpc == pytest.approx(bits / len(text), rel=1e-5)


def test_sliding_windows_and_batching_agree(model: Any, tokenizer: Any) -> None:
    texts = TEXTS * 3
    wide = bits_per_character(model, tokenizer, texts, window=1024, stride=1024, max_chars=None)
    one = bits_per_character(model, tokenizer, texts, window=48, stride=16, max_chars=None, batch_size=1)
    many = bits_per_character(model, tokenizer, texts, window=48, stride=16, max_chars=None, batch_size=5)
    assert wide.tokens == one.tokens == many.tokens
    assert one.bits == pytest.approx(many.bits, rel=1e-5)
    # a random model barely uses context, so short windows land close to the full-context number
    assert one.bpc == pytest.approx(wide.bpc, rel=0.05)
    assert wide.documents == len(texts)


def test_separators_are_never_scored(model: Any, tokenizer: Any) -> None:
    result = bits_per_character(model, tokenizer, TEXTS, max_chars=None)
    assert result.tokens == sum(len(tokenizer.encode(t, add_special_tokens=False)) for t in TEXTS)
    assert result.tokens_per_char == pytest.approx(tokens_per_character(tokenizer, TEXTS))


def test_character_bits_add_up_to_the_total_and_follow_the_tokens(model: Any, tokenizer: Any) -> None:
    """Per-character bits sum to the BPC total per document, including characters split into byte pieces."""
    profiles = character_bits(model, tokenizer, TEXTS, window=48, stride=16, max_chars=None)
    total = bits_per_character(model, tokenizer, TEXTS, window=48, stride=16, max_chars=None)
    assert [len(profile) for profile in profiles] == [len(text) for text in TEXTS]
    assert float(sum(profile.sum() for profile in profiles)) == pytest.approx(total.bits, rel=1e-9)
    for text, profile in zip(TEXTS, profiles, strict=True):  # one window per document: the direct computation
        direct, _ = _direct_bits(model, tokenizer, [text])
        alone = character_bits(model, tokenizer, [text], window=512, stride=256, max_chars=None)[0]
        assert float(alone.sum()) == pytest.approx(direct, rel=1e-5)
        assert float(profile.min()) >= 0
    # every character of a token carries the same share of it: a two-character token's characters match
    ids = tokenizer(TEXTS[0], add_special_tokens=False, return_offsets_mapping=True)
    start, end = next((s, e) for s, e in ids["offset_mapping"] if e - s >= 2)
    assert len(set(profiles[0][start:end].tolist())) == 1 and profiles[0][start] > 0


def test_max_chars_cuts_by_characters_in_order() -> None:
    assert take_chars(["abcd", "", "efgh", "ij"], 6) == ["abcd", "ef"]
    assert take_chars(["abcd", "efgh"], None) == ["abcd", "efgh"]
    assert take_chars(["abcd"], 0) == []
    assert sum(map(len, take_chars(TEXTS, 100))) == 100


def test_join_documents_groups_paragraphs_of_a_document() -> None:
    records = [
        {"text": "a", "doc": "1"},
        {"text": "b", "doc": "1"},
        {"text": "c", "doc": "2"},
        {"text": "d"},
        {"text": "e", "doc": "1"},
    ]
    assert join_documents(records) == ["a\nb", "c", "d", "e"]


def test_bad_input_is_refused(model: Any, tokenizer: Any) -> None:
    with pytest.raises(XlangError, match="no text"):
        bits_per_character(model, tokenizer, [])
    with pytest.raises(XlangError, match="stride"):
        bits_per_character(model, tokenizer, TEXTS, window=8, stride=9)
    with pytest.raises(XlangError, match="not in the tokenizer"):
        bits_per_character(model, tokenizer, TEXTS, separator="<|nope|>")


def test_a_tokenizer_larger_than_the_model_is_refused(tokenizer: Any) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    small = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer) - 1,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    with pytest.raises(XlangError, match="do not belong together"):
        bits_per_character(small, tokenizer, TEXTS)


def test_folder_evaluators_through_the_plugin_manager(
    model: Any, tokenizer: Any, tmp_path: Path, fresh_plugins: Any
) -> None:
    from xlang import plugins

    model.save_pretrained(tmp_path, safe_serialization=True)
    tokenizer.save_pretrained(tmp_path)
    direct = bits_per_character(model, tokenizer, TEXTS, max_chars=None)
    loaded, loaded_tokenizer = load_for_text(tmp_path)
    bpc = plugins.get_strategy("evaluators", "bpc", fresh_plugins)
    metrics = bpc(None, model=loaded, tokenizer=loaded_tokenizer, language=None, texts=TEXTS)
    assert metrics["bpc"] == pytest.approx(direct.bpc, rel=1e-6)
    assert metrics["tokens_per_char"] == pytest.approx(direct.tokens_per_char)
    narrow = bpc({"window": 8, "stride": 4}, model=loaded, tokenizer=loaded_tokenizer, texts=TEXTS)
    assert narrow["bpc"] == pytest.approx(bits_per_character(model, tokenizer, TEXTS, window=8, stride=4).bpc)
    with pytest.raises(XlangError, match="evaluator 'bpc' has no option 'max_chars'"):
        bpc({"max_chars": 5}, model=loaded, tokenizer=loaded_tokenizer, texts=TEXTS)
    per_char = plugins.get_strategy("evaluators", "tokens-per-char", fresh_plugins)
    assert per_char(None, model=loaded, tokenizer=loaded_tokenizer, language=None, texts=TEXTS) == {
        "tokens_per_char": pytest.approx(tokens_per_character(tokenizer, TEXTS))
    }
    assert bits_per_character_of(tmp_path, TEXTS, dtype="bfloat16", max_chars=None).bpc == pytest.approx(
        direct.bpc, rel=0.02
    )


def test_pickle_only_folders_are_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04junk")
    with pytest.raises(XlangError, match="never unpickles"):
        bits_per_character_of(tmp_path, TEXTS)


def test_validation_documents_join_paragraphs_and_cut_by_characters(test_cache_dir: Path) -> None:
    from xlang.data.views import documents, paragraphs
    from xlang.resolve import Resolver
    from xlang.settings import load_settings

    resolver = Resolver(load_settings(cache_dir=test_cache_dir))
    english = resolver.language("en")
    split = resolver.dataset(english, "validation")
    texts = paragraphs(split, english)
    pages = documents(split, english, 5000)
    assert sum(len(document) for document in pages) == 5000
    assert len(pages) < len(take_chars(texts, 5000))  # whole pages, not paragraph by paragraph
    assert pages[0].startswith(texts[0] + "\n" + texts[1])


def test_training_documents_are_the_paragraphs_joined_and_splits_are_checked(test_cache_dir: Path) -> None:
    from xlang.data.views import documents, paragraphs
    from xlang.resolve import Resolver
    from xlang.settings import load_settings

    resolver = Resolver(load_settings(cache_dir=test_cache_dir))
    korean = resolver.language("ko")
    split = resolver.dataset(korean, "train")
    texts, pages = paragraphs(split, korean), documents(split, korean)
    # every paragraph once, in order, joined within its page: the text the fitting initializer reads
    assert "\n".join(pages) == "\n".join(texts)
    assert len(pages) < len(texts) / 5
    with pytest.raises(XlangError, match="unknown split 'test'"):
        resolver.dataset(korean, "test")
