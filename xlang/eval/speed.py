"""Generation speed of several models, measured side by side so that a changing load falls on all alike.

What a user of an expanded tokenizer gains at generation time is characters of their language per second.
Timing each model's evaluation on its own compares two moments of a machine, not two models: on a shared
machine the load can change by 2x between them. Here every prompt is answered by every model in turn, the
order reversed on every other prompt (A B, B A, ...), and only replies in the language count: a reply in
another language has other characters per token and would flatter the model that drifts into it.

Free replies time what each model chooses to write, so a model that loops or drifts out of the language says
little about its tokenizer. With references, every model also writes the same reference replies token by token
(`ChatModel.write`): characters per second on the same text, the payoff of a shorter spelling on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from xlang.eval.answers import Answer, Answerer, generation_rates, is_looping
from xlang.serve.engine import RequestError
from xlang.spec import LanguageSpec

Prompt = tuple[str, str, Any]
"""(key, question, image or None)."""


def interleaved_speed(
    chats: Mapping[str, Any],
    prompts: Sequence[Prompt],
    language: LanguageSpec,
    *,
    max_tokens: int,
    references: Mapping[str, str] | None = None,
    on_answer: Callable[[str, Answer], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Per model (`name -> xlang.serve.engine.ChatModel`): `in_language_chars_per_s` (characters of the replies
    in the language over their generation seconds), `in_language_share`, `tokens_per_s` and `chars_per_token`
    (all replies). Greedy; every model answers every prompt with the same `max_tokens`. `references` (prompt
    key -> a reply in the language) adds the `same_text_*` figures of `same_text_metrics`; a reference that one
    model cannot write (longer than its context) is written by none, and `same_text_skipped` counts them."""
    answerers = {name: Answerer(chat, language, None, max_tokens=max_tokens) for name, chat in chats.items()}
    answers: dict[str, list[Answer]] = {name: [] for name in chats}
    written: dict[str, list[Answer]] = {name: [] for name in chats}
    skipped = 0
    names = list(chats)
    for position, (key, question, image) in enumerate(prompts):
        order = names if position % 2 == 0 else list(reversed(names))
        for name in order:
            answer = answerers[name].ask(key, question, image)
            answers[name].append(answer)
            if on_answer is not None:
                on_answer(name, answer)
        reference = (references or {}).get(key)
        if reference:
            try:
                these = {name: answerers[name].write(key, question, reference, image) for name in order}
            except RequestError:  # e.g. longer than one model's context: no model writes it, so the text stays the same
                skipped += 1
                continue
            for name, answer in these.items():
                written[name].append(answer)
    found = {
        name: {**speed_metrics(replies, language), **same_text_metrics(written[name])}
        for name, replies in answers.items()
    }
    if skipped:
        for values in found.values():
            values["same_text_skipped"] = float(skipped)
    return found


def same_text_metrics(written: Sequence[Answer]) -> dict[str, float]:
    """Figures of the same reference replies written by a model (`Answerer.write`): `same_text_chars_per_s`
    (prompt included, as the free replies are timed), `same_text_reply_chars_per_s` (after the pass over the
    prompt: what a reader watching the reply stream sees) and `same_text_chars_per_token`."""
    rates = generation_rates(written)
    if not rates:
        return {}
    chars = sum(len(answer.text) for answer in written)
    writing = sum(answer.reply_seconds for answer in written)
    metrics = {"same_text_chars_per_s": rates["chars_per_s"], "same_text_chars_per_token": rates["chars_per_token"]}
    if writing > 0:
        metrics["same_text_reply_chars_per_s"] = chars / writing
    return metrics


def speed_metrics(answers: Sequence[Answer], language: LanguageSpec) -> dict[str, float]:
    """The figures of `interleaved_speed` from a model's answers (empty when there are none)."""
    if not answers:
        return {}
    in_language = [answer for answer in answers if language.is_reply_in_language(answer.text)]
    every = generation_rates(answers)
    metrics = {
        "in_language_share": len(in_language) / len(answers),
        "tokens_per_s": every.get("tokens_per_s", 0.0),
        "chars_per_token": every.get("chars_per_token", 0.0),
    }
    timed = generation_rates(in_language)
    if timed:
        metrics["in_language_chars_per_s"] = timed["chars_per_s"]
        metrics["in_language_chars_per_token"] = timed["chars_per_token"]
        metrics["in_language_looping_share"] = sum(is_looping(answer.text) for answer in in_language) / len(in_language)
    return metrics
