"""The `openai` teacher: any endpoint that speaks OpenAI's chat-completions API (a hosted model, vLLM,
Ollama, LM Studio or `xlang serve`), reached with plain `httpx`.

What a retry may cure (rate limits, server errors, timeouts, dropped connections, a reply cut off or
without text) raises `TeacherRetryable`, with the server's `Retry-After` when it sent one; what it cannot
(a bad key, an unknown model, a request the endpoint refuses) raises `XlangError` with one line. The key
is sent in the `Authorization` header only: every message this module builds has it scrubbed, because
some endpoints echo it back in their errors.

Importing this module stays light; `httpx` loads when the first request is sent.
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr

from xlang.contract import Options
from xlang.errors import XlangError
from xlang.teachers.base import TeacherReply, TeacherRequest, TeacherRetryable

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
"""Statuses that say "not now" rather than "never": timeouts, conflicts, rate limits and server errors."""
ERROR_TEXT_LIMIT = 300


class OpenAITeacherOptions(Options):
    """Options of the `openai` teacher (the `teacher_options` setting)."""

    timeout_s: float = Field(default=120.0, gt=0)
    """Seconds one request may take, connection included, before it counts as a (retryable) timeout."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    """When set, sent instead of the pipeline's temperature (some models accept only their own)."""
    send_reply_language: bool = False
    """Send xlang's request extensions `reply_language` and `valid_utf8`: `xlang serve` then constrains
    decoding to the language's scripts. Off by default, because hosted endpoints reject unknown fields."""
    send_choices: bool = False
    """Send a request's fixed set of allowed replies (a judge's verdicts) as `guided_choice`, which `xlang
    serve` and vLLM honour; off by default, because hosted endpoints reject unknown fields."""
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    """The body field that carries the reply's token limit (newer hosted models take `max_completion_tokens`)."""
    image_detail: Literal["auto", "low", "high"] | None = None
    """OpenAI's `detail` of image parts (`low` costs a fixed, small number of tokens); None sends none."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra HTTP headers (e.g. an organization or project header); never written to records."""


def openai_teacher(
    *, url: str | None, model: str | None, api_key: SecretStr | str | None, options: OpenAITeacherOptions
) -> OpenAICompatibleTeacher:
    """A teacher for the endpoint at `url` (its base, ending in `/v1`) asking for `model`."""
    if not url:
        raise XlangError(
            "the openai teacher needs an endpoint: set teacher_url (--teacher-url URL, e.g. "
            "https://api.openai.com/v1 or http://127.0.0.1:8000/v1 for a local server)"
        )
    if not model:
        raise XlangError(
            "the openai teacher needs a model name: set teacher_model (--teacher-model NAME, e.g. gpt-4o, or "
            "the name your server lists at /v1/models)"
        )
    if not url.startswith(("http://", "https://")):
        raise XlangError(
            f"teacher_url {public_url(url)!r} is not an http(s) URL; pass e.g. --teacher-url http://HOST:PORT/v1"
        )
    key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
    return OpenAICompatibleTeacher(url=url, model=model, api_key=key or None, options=options)


def public_url(url: str) -> str:
    """The URL without user, password, query or fragment: what may appear in messages and records."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def retry_after_seconds(headers: Any, now: float | None = None) -> float | None:
    """The server's wait before a retry: `retry-after-ms`, or `Retry-After` in seconds or as an HTTP date."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class OpenAICompatibleTeacher:
    """One endpoint and model; one `httpx.AsyncClient` (its connection pool) per event loop's use."""

    def __init__(self, *, url: str, model: str, api_key: str | None, options: OpenAITeacherOptions) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self._key = api_key
        self.options = options
        self._client: Any = None

    def describe(self) -> dict[str, Any]:
        return {"name": "openai", "url": public_url(self.url), "model": self.model}

    def _scrub(self, text: str) -> str:
        """`text` with the key replaced, should the endpoint have echoed it."""
        if self._key:
            text = text.replace(self._key, "***")
        return text

    def body(self, request: TeacherRequest) -> dict[str, Any]:
        """The JSON body of a chat-completions request for `request`."""
        messages = request.messages
        if self.options.image_detail is not None:
            messages = [_with_detail(message, self.options.image_detail) for message in messages]
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            self.options.max_tokens_field: request.max_tokens,
            "temperature": request.temperature if self.options.temperature is None else self.options.temperature,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if self.options.send_reply_language and request.reply_language:
            body["reply_language"] = request.reply_language
            body["valid_utf8"] = True
        if self.options.send_choices and request.choices:
            body["guided_choice"] = list(request.choices)
        return body

    def _http(self) -> Any:
        import httpx

        if self._client is None:
            headers = {"Accept": "application/json", **self.options.headers}
            if self._key:
                headers["Authorization"] = f"Bearer {self._key}"
            self._client = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(self.options.timeout_s),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            )
        return self._client

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        import httpx

        where = public_url(self.url)
        try:
            response = await self._http().post(f"{self.url}/chat/completions", json=self.body(request))
        except httpx.TimeoutException as error:
            raise TeacherRetryable(f"timeout after {self.options.timeout_s:g} s ({type(error).__name__})") from None
        except httpx.ConnectError as error:
            raise TeacherRetryable(
                f"cannot connect to {where} ({self._scrub(str(error)) or type(error).__name__}); "
                "start the server or fix --teacher-url"
            ) from None
        except (httpx.TransportError, httpx.DecodingError) as error:
            # the connection dropped mid-reply (a reset, a closed socket, a truncated chunked body)
            raise TeacherRetryable(
                f"connection to {where} broke ({self._scrub(str(error)) or type(error).__name__})"
            ) from None
        return self._reply(response, where)

    def _reply(self, response: Any, where: str) -> TeacherReply:
        status = response.status_code
        if status >= 400:
            detail = self._error_detail(response)
            if status in RETRYABLE_STATUS or status >= 500:
                raise TeacherRetryable(f"HTTP {status}{detail}", retry_after=retry_after_seconds(response.headers))
            fix = {
                401: "check the key (XLANG_TEACHER_API_KEY or OPENAI_API_KEY)",
                403: "check that the key may use this model",
                404: f"check --teacher-url and that the server offers model {self.model!r}",
            }.get(status, "check --teacher-model and the teacher options")
            raise XlangError(f"teacher {where} refused the request: HTTP {status}{detail}; {fix}")
        try:
            payload = json.loads(response.content)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise TeacherRetryable(f"malformed JSON reply ({len(response.content)} bytes)") from None
        if not isinstance(payload, dict):
            raise TeacherRetryable("malformed reply (not a JSON object)")
        usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else None
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise TeacherRetryable("reply without choices", usage=_usage(usage))
        choice = choices[0]
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        text = message.get("content")
        if isinstance(text, list):  # content as parts
            text = "".join(part.get("text", "") for part in text if isinstance(part, dict))
        if not isinstance(text, str) or not text.strip():
            raise TeacherRetryable("reply with empty content", usage=_usage(usage))
        extra: dict[str, Any] = {}
        if usage is None:
            extra["usage_reported"] = False
        return TeacherReply(
            text=text,
            prompt_tokens=_count(usage, "prompt_tokens"),
            completion_tokens=_count(usage, "completion_tokens"),
            model=str(payload.get("model") or self.model),
            finish_reason=choice.get("finish_reason"),
            extra=extra,
        )

    def _error_detail(self, response: Any) -> str:
        """`: message` from an OpenAI error body (or the start of a plain one), key scrubbed, one line."""
        try:
            payload = json.loads(response.content)
            error = payload.get("error") if isinstance(payload, dict) else None
            message = error.get("message") if isinstance(error, dict) else error
            text = str(message) if message else ""
        except (json.JSONDecodeError, UnicodeDecodeError):
            text = response.content[:ERROR_TEXT_LIMIT].decode("utf-8", "replace")
        text = " ".join(self._scrub(text).split())[:ERROR_TEXT_LIMIT]
        return f": {text}" if text else ""

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def _usage(usage: dict[str, Any] | None) -> tuple[int, int] | None:
    """(prompt, completion) tokens of the server's `usage`, when it sent one: a well-formed but unusable
    reply still costs them."""
    return None if usage is None else (_count(usage, "prompt_tokens"), _count(usage, "completion_tokens"))


def _count(usage: dict[str, Any] | None, field: str) -> int:
    value = (usage or {}).get(field)
    return int(value) if isinstance(value, int | float) and value >= 0 else 0


def _with_detail(message: dict[str, Any], detail: str) -> dict[str, Any]:
    content = message.get("content")
    if not isinstance(content, list):
        return message
    parts = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "image_url" and isinstance(part.get("image_url"), dict):
            part = {**part, "image_url": {**part["image_url"], "detail": detail}}
        parts.append(part)
    return {**message, "content": parts}
