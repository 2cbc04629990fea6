"""The messages a teacher is sent, built from the language plugins' `TeacherPrompts`.

A native record asks the task's questions in the record's language: the system message is the
language's `system` prompt plus the task's `guidance`, the image goes with the first question as a data
URL, and each later question of a conversation comes with the earlier turns. Which questions a record
asks is drawn from the image's hash, the language and the task, so every run asks the same ones.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any

from xlang.teachers.base import image_data_url

IMAGE_PLACEHOLDER = "<image>"
TEXT_SLOT = "{text}"


def draw_questions(questions: Sequence[str], turns: int, image_sha256: str, lang: str, task: str) -> list[str]:
    """`turns` distinct questions, drawn deterministically from (image, language, task)."""
    digest = hashlib.sha256(f"{image_sha256}\x1f{lang}\x1f{task}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    return rng.sample(list(questions), turns)


def system_prompt(prompts: Any, task: str) -> str:
    """The language's system prompt followed by the task's guidance."""
    guidance = prompts.tasks[task].guidance.strip()
    return f"{prompts.system.strip()}\n\n{guidance}" if guidance else prompts.system.strip()


def native_messages(
    system: str, earlier: Sequence[tuple[str, str]], question: str, image: bytes, mime: str
) -> list[dict[str, Any]]:
    """OpenAI chat messages for the next question: the image rides with the first user turn."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    turns = [*earlier, (question, None)]
    for index, (asked, answered) in enumerate(turns):
        if index == 0:
            content: Any = [
                {"type": "text", "text": asked},
                {"type": "image_url", "image_url": {"url": image_data_url(image, mime)}},
            ]
        else:
            content = asked
        messages.append({"role": "user", "content": content})
        if answered is not None:
            messages.append({"role": "assistant", "content": answered})
    return messages


def translate_messages(prompts: Any, text: str) -> list[dict[str, Any]]:
    """A text-only request: the target language's system prompt and its translate instruction around `text`."""
    return [
        {"role": "system", "content": prompts.system.strip()},
        {"role": "user", "content": prompts.translate.replace(TEXT_SLOT, text)},
    ]


def conversation(pairs: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """LLaVA turns for question-answer pairs; the first question carries the image placeholder."""
    turns = []
    for index, (question, answer) in enumerate(pairs):
        turns.append({"from": "human", "value": f"{IMAGE_PLACEHOLDER}\n{question}" if index == 0 else question})
        turns.append({"from": "gpt", "value": answer})
    return turns


def strip_placeholder(text: str) -> str:
    """A human turn without its image placeholder (what a translator is given)."""
    return text.replace(IMAGE_PLACEHOLDER, "").strip()


def text_bytes(messages: Sequence[dict[str, Any]]) -> int:
    """UTF-8 bytes of the text parts of `messages` (images not counted)."""
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content.encode())
        elif isinstance(content, list):
            total += sum(len(str(part.get("text", "")).encode()) for part in content if part.get("type") == "text")
    return total
