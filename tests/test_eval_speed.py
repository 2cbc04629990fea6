"""Generation speed measured side by side (xlang.eval.speed): every model answers every prompt in turn, the order
reversed on every other prompt, and only replies in the language are timed. Real Korean and English text,
the real ko plugin, two tiny random chat models on SmolLM2's real tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from xlang.eval.answers import Answer, is_looping
from xlang.eval.speed import interleaved_speed, speed_metrics


def _answer(text: str, seconds: float, tokens: int) -> Answer:
    return Answer(
        key=text[:8],
        text=text,
        seconds=seconds,
        prompt_tokens=10,
        completion_tokens=tokens,
        saw_image=False,
        language_bearing=True,
    )


def test_only_replies_in_the_language_are_timed() -> None:
    from xlang import plugins

    korean = plugins.get_language("ko")
    replies = [
        _answer("고양이가 매트 위에 앉아 있습니다.", 2.0, 10),
        _answer("사진 속에는 커피 한 잔이 있어요.", 2.0, 12),
        _answer("There is a cup of coffee on the table in this photo.", 1.0, 12),  # drifted into English
    ]
    metrics = speed_metrics(replies, korean)
    korean_chars = len(replies[0].text) + len(replies[1].text)
    assert metrics["in_language_share"] == pytest.approx(2 / 3)
    assert metrics["in_language_chars_per_s"] == pytest.approx(korean_chars / 4.0)
    assert metrics["in_language_chars_per_token"] == pytest.approx(korean_chars / 22)
    # all replies: the English one has more characters per token and would flatter this model
    assert metrics["chars_per_token"] == pytest.approx((korean_chars + len(replies[2].text)) / 34)
    assert metrics["chars_per_token"] > metrics["in_language_chars_per_token"]
    assert metrics["tokens_per_s"] == pytest.approx(34 / 5.0)
    assert "in_language_chars_per_s" not in speed_metrics(replies[2:], korean)
    assert speed_metrics([], korean) == {}


def test_replies_that_loop_on_one_phrase_are_told_apart_from_repeats_in_real_text() -> None:
    """Replies a 135M model gave after 20 pretraining steps (the first two) against real sentences that repeat
    a word or a pattern without looping."""
    looping = [
        "귀이, 이, 이, 이, 이, 이, 이, 이, 이, 이, 이, 이, 이, 이, 이, 이",
        "그은 이, 이 수, 이, 이, 이, 이, 이, 이, 이, 이, 이, 이, 이, 이, 이, \ufffd",
        "the cat the cat the cat the cat the cat",
        "哈哈哈哈哈哈哈哈哈哈",
    ]
    fine = [
        "사진 속 꽃을 자세히 설명해 주세요.",
        "안에 무엇이 들어 있는 안에 무엇이 들어있는 안에 무엇이",  # two copies: repetitive, not a loop
        "고양이가 매트 위에 앉아 있고, 강아지가 매트 옆에 앉아 있고, 새가 창가에 앉아 있습니다.",
        "There is a cup of coffee on the table, and a cup of tea on the shelf.",
        "아아, 그렇군요.",
        "",
    ]
    assert [is_looping(text) for text in looping] == [True] * len(looping)
    assert [is_looping(text) for text in fine] == [False] * len(fine)

    from xlang import plugins

    korean = plugins.get_language("ko")
    replies = [_answer(looping[0], 1.0, 30), _answer(fine[0], 1.0, 10), _answer(fine[3], 1.0, 14)]
    assert speed_metrics(replies, korean)["in_language_looping_share"] == pytest.approx(1 / 2)


def test_models_answer_in_turn_with_the_order_reversed_every_other_prompt(smollm2_dir: Path, tmp_path: Path) -> None:
    import torch
    from tiny_models import save_tiny_chat_lm

    from xlang import plugins
    from xlang.serve.engine import ChatModel

    first = ChatModel.load(save_tiny_chat_lm(tmp_path / "first", smollm2_dir))
    folder = save_tiny_chat_lm(tmp_path / "second", smollm2_dir)
    second_model = ChatModel.load(folder)
    with torch.no_grad():  # other weights: the two models must not be the same
        second_model.model.get_input_embeddings().weight.mul_(-1.0)
    prompts = [(f"q{i}", question, None) for i, question in enumerate(["무엇이 보이나요?", "색은?", "어디?", "왜?"])]
    order: list[tuple[str, str]] = []
    found: dict[str, Any] = interleaved_speed(
        {"A": first, "B": second_model},
        prompts,
        plugins.get_language("ko"),
        max_tokens=4,
        on_answer=lambda name, answer: order.append((name, answer.key)),
    )
    assert [name for name, _ in order] == ["A", "B", "B", "A", "A", "B", "B", "A"]
    assert [key for _, key in order] == ["q0", "q0", "q1", "q1", "q2", "q2", "q3", "q3"]
    for name in ("A", "B"):
        assert found[name]["tokens_per_s"] > 0
        assert 0 <= found[name]["in_language_share"] <= 1


REFERENCE = "고양이가 매트 위에 앉아 있습니다. 고양이는 노란 눈으로 카메라를 봅니다."
WORDS = ["고양이", "매트", "있습니다", "카메라"]


def _save_expanded_chat_lm(folder: Path, base: Path, words: list[str]) -> Path:
    """The tiny chat model with whole Korean words added to its real tokenizer and rows grown to match."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    assert tokenizer.add_tokens(words) == len(words)
    model = AutoModelForCausalLM.from_pretrained(base)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _count_passes(chat: Any) -> list[int]:
    calls: list[int] = []
    chat.model.register_forward_hook(lambda module, args, output: calls.append(1))
    return calls


def test_writing_a_reply_takes_the_steps_of_generation_one_per_token_of_its_spelling(
    smollm2_dir: Path, tmp_path: Path
) -> None:
    """`ChatModel.write` decodes the given reply as generation would (one pass over the cache per token, then the
    end of the turn) and returns exactly that text; a tokenizer that spells it shorter takes fewer passes."""
    from tiny_models import save_tiny_chat_lm

    from xlang.serve.engine import ChatModel

    base_folder = save_tiny_chat_lm(tmp_path / "base", smollm2_dir)
    expanded_folder = _save_expanded_chat_lm(tmp_path / "expanded", base_folder, WORDS)
    messages = [{"role": "user", "content": "무엇이 보이나요?"}]
    written = {}
    for name, folder in (("base", base_folder), ("expanded", expanded_folder)):
        chat = ChatModel.load(folder)
        passes = _count_passes(chat)
        generation = chat.write(messages, REFERENCE)
        spelling = chat.tokenizer(REFERENCE, add_special_tokens=False)["input_ids"]
        assert generation.text == REFERENCE
        assert generation.completion_tokens == len(spelling) + 1  # and the end of the turn
        assert generation.finish_reason == "stop"
        assert len(passes) == generation.completion_tokens
        assert 0 < generation.reply_seconds
        # free generation of as many tokens costs the same passes
        passes.clear()
        free = chat.generate(messages, max_tokens=5, temperature=0.0)
        assert len(passes) == free.completion_tokens
        written[name] = generation
    assert written["expanded"].completion_tokens < written["base"].completion_tokens


def test_a_reply_that_does_not_fit_the_context_is_refused_before_any_pass(smollm2_dir: Path, tmp_path: Path) -> None:
    from tiny_models import save_tiny_chat_lm

    from xlang.serve.engine import ChatModel, RequestError

    chat = ChatModel.load(save_tiny_chat_lm(tmp_path / "base", smollm2_dir))
    chat.context_length = 64
    passes = _count_passes(chat)
    with pytest.raises(RequestError, match="do not fit"):
        chat.write([{"role": "user", "content": "?"}], REFERENCE * 4)
    with pytest.raises(RequestError, match="empty"):
        chat.write([{"role": "user", "content": "?"}], "")
    assert passes == []


def test_models_write_the_same_references_in_turn_and_the_shorter_spelling_shows(
    smollm2_dir: Path, tmp_path: Path
) -> None:
    """With references, `interleaved_speed` has every model write them too (`same_text_*`): characters per token
    on the same text are the tokenizers' own, whatever the models would answer."""
    from tiny_models import save_tiny_chat_lm

    from xlang import plugins
    from xlang.serve.engine import ChatModel

    base_folder = save_tiny_chat_lm(tmp_path / "base", smollm2_dir)
    expanded_folder = _save_expanded_chat_lm(tmp_path / "expanded", base_folder, WORDS)
    chats = {"expanded": ChatModel.load(expanded_folder), "base": ChatModel.load(base_folder)}
    prompts = [("q0", "무엇이 보이나요?", None), ("q1", "고양이는 어디에 있나요?", None), ("q2", "왜?", None)]
    references = {"q0": REFERENCE, "q1": "고양이는 매트 위에 있습니다."}  # q2 has none: only answered
    found: dict[str, Any] = interleaved_speed(
        chats, prompts, plugins.get_language("ko"), max_tokens=3, references=references
    )
    chars = len(REFERENCE) + len(references["q1"])
    for name, chat in chats.items():
        spellings = [chat.tokenizer(text, add_special_tokens=False)["input_ids"] for text in references.values()]
        steps = sum(len(spelling) + 1 for spelling in spellings)
        assert found[name]["same_text_chars_per_token"] == pytest.approx(chars / steps)
        assert found[name]["same_text_reply_chars_per_s"] > found[name]["same_text_chars_per_s"] > 0
    assert found["expanded"]["same_text_chars_per_token"] > found["base"]["same_text_chars_per_token"]
    without: dict[str, Any] = interleaved_speed(chats, prompts[2:], plugins.get_language("ko"), max_tokens=3)
    assert not any(name.startswith("same_text") for name in without["base"])


def test_a_reference_one_model_cannot_fit_is_written_by_none(smollm2_dir: Path, tmp_path: Path) -> None:
    """Both models must time the same text: a reference longer than one model's context is left out for all,
    and counted, instead of stopping the probe."""
    from tiny_models import save_tiny_chat_lm

    from xlang import plugins
    from xlang.serve.engine import ChatModel

    base_folder = save_tiny_chat_lm(tmp_path / "base", smollm2_dir)
    expanded_folder = _save_expanded_chat_lm(tmp_path / "expanded", base_folder, WORDS)
    chats = {"expanded": ChatModel.load(expanded_folder), "base": ChatModel.load(base_folder)}
    chats["base"].context_length = 300
    short = "고양이는 매트 위에 있습니다."
    references = {"long": REFERENCE * 6, "short": short}
    prompts = [("long", "무엇이 보이나요?", None), ("short", "고양이는 어디에 있나요?", None)]
    found: dict[str, Any] = interleaved_speed(
        chats, prompts, plugins.get_language("ko"), max_tokens=2, references=references
    )
    for name, chat in chats.items():
        steps = len(chat.tokenizer(short, add_special_tokens=False)["input_ids"]) + 1
        assert found[name]["same_text_skipped"] == 1
        assert found[name]["same_text_chars_per_token"] == pytest.approx(len(short) / steps)
