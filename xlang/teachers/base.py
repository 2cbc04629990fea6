"""The request, the reply and the one retryable error every teacher speaks."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Protocol

from xlang.spec import LanguageSpec


@dataclass(frozen=True)
class TeacherRequest:
    """One chat completion: OpenAI chat `messages` whose image parts are
    `{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}`."""

    messages: list[dict[str, Any]]
    max_tokens: int = 512
    temperature: float = 0.7
    seed: int | None = None
    """Sent to the endpoint so that a retry of the same request is a new draw only when asked to be."""
    reply_language: str | None = None
    """The code of the language the reply must be in: a hint that `xlang serve` can enforce while decoding
    (other endpoints are sent it only when the teacher's options say so)."""
    language: LanguageSpec | None = None
    """That language's spec, for a teacher that decodes in process and can hold the reply to its scripts."""
    choices: tuple[str, ...] | None = None
    """The reply must be one of these strings (a judge's verdicts): a teacher that decodes in process picks
    the likeliest; an endpoint is sent them as `guided_choice` (xlang serve, vLLM) when its options say so,
    and otherwise the reply is parsed as it comes."""


@dataclass(frozen=True)
class TeacherReply:
    """The text and the token counts the server reported (`usage`), which are what costs money."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str = ""
    finish_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class TeacherRetryable(Exception):
    """A failure that a later attempt may not meet: rate limits, server errors, timeouts, cut-off or
    malformed replies. `retry_after` is the server's own wait (seconds), when it gave one; `usage` the
    (prompt, completion) tokens of a reply that came back unusable (empty) but is billed all the same."""

    def __init__(self, reason: str, *, retry_after: float | None = None, usage: tuple[int, int] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.usage = usage


class Teacher(Protocol):
    async def complete(self, request: TeacherRequest) -> TeacherReply: ...

    async def aclose(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


def image_data_url(data: bytes, mime: str = "image/png") -> str:
    """An image as the `data:` URL that OpenAI-compatible endpoints take in an `image_url` part."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
