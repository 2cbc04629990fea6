"""The OpenAI-compatible HTTP API of `xlang serve` (Starlette): `GET /v1/models`, `POST /v1/chat/completions`
(plain and streamed), and `GET /v1/xlang/stats`, the server's own counts.

Three request fields go beyond OpenAI's: `reply_language` (a language code: letters only from that language's
scripts, see `constraints.py`), `valid_utf8` (never emit bytes that are not UTF-8) and `guided_choice` (as vLLM:
the reply is the likeliest of the listed strings). Errors have OpenAI's
shape, `{"error": {"message", "type", "param", "code"}}`, so clients report them as they would OpenAI's.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from xlang.errors import XlangError
from xlang.serve.engine import ChatModel, Generation, RequestError
from xlang.serve.faults import LATIN_SENTENCE, FaultPlan, wrong_language_text
from xlang.spec import LanguageSpec

DEFAULT_MAX_TOKENS = 256
MAX_CHOICES = 256
"""`guided_choice` lists at most this many strings (each is scored in one batch)."""
_ERROR_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", "internal_error"),
}


@dataclass
class ServerStats:
    """What the server did: chat requests received, faults injected by kind, and the replies clients got
    intact (generated, or the well-formed `wrong-language` and `empty` faults) with their token counts."""

    requests: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    completions: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def count_reply(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.completions += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "faults": dict(self.faults),
            "completions": self.completions,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


class ApiError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.code = code or _ERROR_TYPES.get(status, _ERROR_TYPES[500])[1]


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind, default_code = _ERROR_TYPES.get(status, _ERROR_TYPES[500])
    return {"error": {"message": message, "type": kind, "param": param, "code": code or default_code}}


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    body = error_body(error.status, error.message, param=error.param, code=error.code)
    return JSONResponse(body, status_code=error.status, headers=headers)


@dataclass(frozen=True)
class ChatRequest:
    """The fields of `POST /v1/chat/completions` that this server reads, checked."""

    messages: list[Any]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    reply_language: LanguageSpec | None
    valid_utf8: bool
    choices: tuple[str, ...] = ()


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ApiError(400, f"{name} must be a number from {low:g} to {high:g}", param=name)
    return float(value)


def _integer(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{name} must be an integer", param=name)
    return value


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false", param=name)
    return value


def parse_chat_request(
    body: Any,
    *,
    served_name: str,
    language_lookup: Callable[[str], LanguageSpec] | None,
    valid_utf8_default: bool,
) -> ChatRequest:
    """The request's fields, or ApiError 400 (malformed) / 404 (another model)."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model is required", param="model")
    if model != served_name:
        raise ApiError(
            404,
            f"the model {model!r} does not exist; this server serves {served_name!r}",
            param="model",
            code="model_not_found",
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list", param="messages")
    if body.get("n") not in (None, 1):
        raise ApiError(400, "n must be 1: this server writes one choice per request", param="n")
    for unsupported in ("tools", "functions", "logprobs"):
        if body.get(unsupported):
            raise ApiError(400, f"{unsupported} is not supported by xlang serve", param=unsupported)
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type", "text") != "text":
        raise ApiError(400, "only the text response_format is supported", param="response_format")
    max_tokens = _integer(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens")
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if max_tokens < 1:
        raise ApiError(400, "max_tokens must be at least 1", param="max_tokens")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is None:
        stop = []
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
        raise ApiError(400, "stop must be a string or a list of at most 4 strings", param="stop")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "stream_options must be an object", param="stream_options")
    code = body.get("reply_language")
    language = None
    if code is not None:
        if not isinstance(code, str) or not code:
            raise ApiError(400, "reply_language must be a language code", param="reply_language")
        if language_lookup is None:
            raise ApiError(400, "this server has no languages to look reply_language up in", param="reply_language")
        try:
            language = language_lookup(code)
        except XlangError as error:
            raise ApiError(400, f"reply_language: {error.message}", param="reply_language") from error
    choices = body.get("guided_choice")
    if choices is not None and (
        not isinstance(choices, list)
        or not 0 < len(choices) <= MAX_CHOICES
        or not all(isinstance(choice, str) and choice for choice in choices)
    ):
        raise ApiError(
            400, f"guided_choice must be a list of 1 to {MAX_CHOICES} non-empty strings", param="guided_choice"
        )
    if choices and _flag(body, "stream", False):
        raise ApiError(400, "guided_choice cannot be streamed; send stream: false", param="guided_choice")
    return ChatRequest(
        messages=messages,
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        seed=_integer(body, "seed"),
        stop=tuple(s for s in stop if s),
        stream=_flag(body, "stream", False),
        include_usage=_flag(options, "include_usage", False),
        reply_language=language,
        valid_utf8=_flag(body, "valid_utf8", valid_utf8_default),
        choices=tuple(choices or ()),
    )


class ChatServer:
    """The state behind the routes: the model, its name, the fault plan and the counts."""

    def __init__(
        self,
        model: ChatModel,
        *,
        name: str,
        language_lookup: Callable[[str], LanguageSpec] | None = None,
        valid_utf8_default: bool = False,
        faults: FaultPlan | None = None,
    ) -> None:
        self.model = model
        self.name = name
        self.language_lookup = language_lookup
        self.valid_utf8_default = valid_utf8_default
        self.faults = faults
        self.stats = ServerStats()
        self.created = int(time.time())
        self.stopping = threading.Event()
        self._stopping_here = asyncio.Event()

    def stop(self) -> None:
        """Shutting down: generations end at their next token, held (`timeout`) requests are let go. Called
        on the event loop's thread."""
        self.stopping.set()
        self._stopping_here.set()

    # ------------------------------------------------------------------------------------------ routes

    async def models_route(self, request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [self._model_card()]})

    async def model_route(self, request: Request) -> JSONResponse:
        if request.path_params["model"] != self.name:
            raise ApiError(404, f"the model {request.path_params['model']!r} does not exist", code="model_not_found")
        return JSONResponse(self._model_card())

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "xlang"}

    async def stats_route(self, request: Request) -> JSONResponse:
        return JSONResponse(self.stats.as_json())

    async def chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`POST /v1/chat/completions`, as a raw ASGI app: a `timeout` fault must be able to drop the
        connection, which a finished Response object cannot."""
        self.stats.requests += 1
        number = self.stats.requests
        request = Request(scope, receive)
        try:
            try:
                body = json.loads(await request.body())
            except ValueError as error:
                raise ApiError(400, f"the request body is not JSON: {error}") from error
            chat = parse_chat_request(
                body,
                served_name=self.name,
                language_lookup=self.language_lookup,
                valid_utf8_default=self.valid_utf8_default,
            )
            prepared = await asyncio.to_thread(self._prepare, chat)
            fault = self.faults.decide(number) if self.faults is not None else None
            if fault is not None:  # only well-formed requests meet faults: a client's own mistake stays a 400
                self.stats.faults[fault] += 1
                await self._fault(fault, chat, prepared, scope, receive, send)
                return
            response = await self._stream(chat, prepared) if chat.stream else await self._complete(chat, prepared)
        except ApiError as error:
            response = error_response(error)
        await response(scope, receive, send)

    # ------------------------------------------------------------------------------------------ replies

    def _prepare(self, chat: ChatRequest) -> Any:
        try:
            return self.model.prepare(
                chat.messages,
                max_tokens=chat.max_tokens,
                temperature=chat.temperature,
                top_p=chat.top_p,
                seed=chat.seed,
                stop=chat.stop,
                reply_language=chat.reply_language,
                valid_utf8=chat.valid_utf8,
            )
        except RequestError as error:
            raise ApiError(400, error.message) from error

    async def _complete(self, chat: ChatRequest, prepared: Any) -> Response:
        try:
            if chat.choices:
                generation = await asyncio.to_thread(self.model.choose, chat.messages, chat.choices)
            else:
                generation = await asyncio.to_thread(self.model.run, prepared, cancelled=self.stopping.is_set)
        except Exception as error:  # the model failed: the client gets a 500, the server keeps serving
            raise ApiError(500, f"generation failed: {type(error).__name__}: {error}") from error
        self.stats.count_reply(generation.prompt_tokens, generation.completion_tokens)
        return JSONResponse(self._completion(generation))

    def _completion(self, generation: Generation) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": generation.text},
                    "finish_reason": generation.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": _usage(generation),
            "system_fingerprint": None,
        }

    async def _stream(self, chat: ChatRequest, prepared: Any) -> Response:
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        gone = threading.Event()

        def on_text(text: str) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, ("text", text))

        def work() -> None:
            try:
                generation = self.model.run(
                    prepared, on_text=on_text, cancelled=lambda: gone.is_set() or self.stopping.is_set()
                )
            except Exception as error:  # reported to the client as an error event
                loop.call_soon_threadsafe(pieces.put_nowait, ("error", error))
            else:
                loop.call_soon_threadsafe(pieces.put_nowait, ("done", generation))

        async def events() -> AsyncIterator[str]:
            chunk = _ChunkWriter(self.name, chat.include_usage)
            loop.run_in_executor(None, work)
            try:
                yield chunk.delta({"role": "assistant", "content": ""})
                while True:
                    kind, value = await pieces.get()
                    if kind == "text":
                        yield chunk.delta({"content": value})
                    elif kind == "error":
                        body = error_body(500, f"generation failed: {type(value).__name__}: {value}")
                        yield f"data: {json.dumps(body)}\n\n"
                        return
                    else:
                        if not gone.is_set():
                            self.stats.count_reply(value.prompt_tokens, value.completion_tokens)
                        for event in chunk.finish(value):
                            yield event
                        return
            finally:
                gone.set()  # the worker stops at its next token if the client went away

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    # ------------------------------------------------------------------------------------------- faults

    async def _fault(
        self, kind: str, chat: ChatRequest, prepared: Any, scope: Scope, receive: Receive, send: Send
    ) -> None:
        assert self.faults is not None
        if kind == "429":
            headers = {
                "Retry-After": self.faults.retry_after_header,
                "retry-after-ms": str(round(self.faults.retry_after_s * 1000)),
            }
            error = ApiError(429, "rate limit reached (injected fault)", code="rate_limit_exceeded")
            await error_response(error, headers)(scope, receive, send)
        elif kind == "500":
            await error_response(ApiError(500, "internal server error (injected fault)"))(scope, receive, send)
        elif kind == "timeout":
            await self._hang_then_drop(receive, send)
        else:
            text = ""
            if kind == "wrong-language":
                text = wrong_language_text(
                    chat.reply_language is not None and chat.reply_language.reply_share("A") == 1
                )
            elif kind == "truncated":
                text = LATIN_SENTENCE
            completion_tokens = len(self.model.tokenizer.encode(text, add_special_tokens=False)) if text else 0
            generation = Generation(text, prepared.prompt_tokens, completion_tokens, "stop")
            if kind == "truncated":
                whole = json.dumps(self._completion(generation)).encode()
                cut = Response(whole[: len(whole) // 2], media_type="application/json")
                await cut(scope, receive, send)
                return
            self.stats.count_reply(generation.prompt_tokens, generation.completion_tokens)
            if chat.stream:
                writer = _ChunkWriter(self.name, chat.include_usage)
                events = [writer.delta({"role": "assistant", "content": ""})]
                if text:
                    events.append(writer.delta({"content": text}))
                events.extend(writer.finish(generation))
                response: Response = Response("".join(events), media_type="text/event-stream")
            else:
                response = JSONResponse(self._completion(generation))
            await response(scope, receive, send)

    async def _hang_then_drop(self, receive: Receive, send: Send) -> None:
        """Send nothing for `hang_s` seconds (or until the client leaves), then start a response and abandon
        it: the ASGI server then closes the connection with the body unsent."""
        assert self.faults is not None

        async def client_left() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        waiting = asyncio.ensure_future(client_left())
        stopping = asyncio.ensure_future(self._stopping_here.wait())
        await asyncio.wait([waiting, stopping], timeout=self.faults.hang_s, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not waiting.done():
            waiting.cancel()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]})


class _ChunkWriter:
    """`chat.completion.chunk` server-sent events of one streamed reply."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "system_fingerprint": None,
            **({"usage": None} if self.include_usage else {}),
            **extra,
        }
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    def delta(self, delta: dict[str, Any]) -> str:
        return self._event([{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}])

    def finish(self, generation: Generation) -> list[str]:
        events = [self._event([{"index": 0, "delta": {}, "finish_reason": generation.finish_reason, "logprobs": None}])]
        if self.include_usage:
            events.append(self._event([], usage=_usage(generation)))
        events.append("data: [DONE]\n\n")
        return events


def _usage(generation: Generation) -> dict[str, int]:
    return {
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "total_tokens": generation.prompt_tokens + generation.completion_tokens,
    }


class _ChatEndpoint:
    """`POST /v1/chat/completions` as a raw ASGI app (an object, so that Starlette does not wrap it)."""

    def __init__(self, server: ChatServer) -> None:
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await error_response(ApiError(405, "use POST"))(scope, receive, send)
            return
        await self.server.chat(scope, receive, send)


def create_app(server: ChatServer) -> Starlette:
    """The Starlette app of a `ChatServer`; unknown paths and methods answer in OpenAI's error shape too."""

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        return error_response(ApiError(error.status_code, str(error.detail)))

    async def api_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ApiError)
        return error_response(error)

    routes = [
        Route("/v1/models", server.models_route, methods=["GET"]),
        Route("/v1/models/{model:path}", server.model_route, methods=["GET"]),
        Route("/v1/chat/completions", _ChatEndpoint(server)),
        Route("/v1/xlang/stats", server.stats_route, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error, ApiError: api_error})
