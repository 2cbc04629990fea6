"""The `openai` teacher against a real HTTP server on 127.0.0.1 that answers each request as the test
scripts it: how every kind of reply and failure maps to a reply, a retryable failure or one clear error,
and that the key never shows up in any of them."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from xlang.errors import XlangError
from xlang.teachers.base import TeacherRequest, TeacherRetryable
from xlang.teachers.openai_compat import OpenAITeacherOptions, openai_teacher, retry_after_seconds

KEY = "sk-test-5f1c0ffee0ddba11-never-print-me"


@dataclass
class Scripted:
    """What the server does with the next request."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    reset: bool = False


def ok(text: str = "An orange suit.", *, usage: bool = True, finish: str = "stop") -> Scripted:
    payload: dict[str, Any] = {
        "id": "x",
        "object": "chat.completion",
        "model": "served-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
    }
    if usage:
        payload["usage"] = {"prompt_tokens": 21, "completion_tokens": 4, "total_tokens": 25}
    return Scripted(body=json.dumps(payload).encode())


class ScriptedEndpoint:
    def __init__(self) -> None:
        self.script: list[Scripted] = []
        self.received: list[dict[str, Any]] = []
        self.release = threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length))
                endpoint.received.append({"path": self.path, "headers": dict(self.headers), "body": body})
                step = endpoint.script.pop(0)
                if step.hang:
                    endpoint.release.wait(30)
                    return
                if step.reset:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.connection.close()
                    return
                self.send_response(step.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(step.body)))
                for name, value in step.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(step.body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def scripted_endpoint() -> Iterator[ScriptedEndpoint]:
    served = ScriptedEndpoint()
    yield served
    served.close()


@pytest.fixture
def endpoint(scripted_endpoint: ScriptedEndpoint) -> ScriptedEndpoint:
    """The module's server with an empty script and log."""
    scripted_endpoint.script.clear()
    scripted_endpoint.received.clear()
    return scripted_endpoint


def request(**overrides: Any) -> TeacherRequest:
    values: dict[str, Any] = {
        "messages": [
            {"role": "system", "content": "Answer."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                ],
            },
        ],
        "max_tokens": 12,
        "seed": 7,
        "reply_language": "ko",
    }
    values.update(overrides)
    return TeacherRequest(**values)


def ask(endpoint: ScriptedEndpoint, *steps: Scripted, **options: Any) -> Any:
    endpoint.script.extend(steps)
    teacher = openai_teacher(
        url=endpoint.url, model="served-model", api_key=KEY, options=OpenAITeacherOptions(**options)
    )

    async def once() -> Any:
        try:
            return await teacher.complete(request())
        finally:
            await teacher.aclose()

    return asyncio.run(once())


def test_a_reply_brings_text_usage_and_sends_the_standard_body(endpoint: ScriptedEndpoint) -> None:
    reply = ask(endpoint, ok("Ein Anzug."))
    assert (reply.text, reply.prompt_tokens, reply.completion_tokens, reply.finish_reason) == (
        "Ein Anzug.",
        21,
        4,
        "stop",
    )
    sent = endpoint.received[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["Authorization"] == f"Bearer {KEY}"
    assert sent["body"]["seed"] == 7 and sent["body"]["max_tokens"] == 12 and sent["body"]["model"] == "served-model"
    assert "reply_language" not in sent["body"] and "valid_utf8" not in sent["body"]


def test_the_extensions_and_option_fields_are_sent_only_when_asked_for(endpoint: ScriptedEndpoint) -> None:
    ask(
        endpoint,
        ok(),
        send_reply_language=True,
        temperature=1.0,
        max_tokens_field="max_completion_tokens",
        image_detail="low",
        headers={"OpenAI-Project": "proj_1"},
    )
    sent = endpoint.received[0]
    body = sent["body"]
    assert body["reply_language"] == "ko" and body["valid_utf8"] is True
    assert body["temperature"] == 1.0 and body["max_completion_tokens"] == 12 and "max_tokens" not in body
    assert body["messages"][1]["content"][1]["image_url"]["detail"] == "low"
    assert sent["headers"]["OpenAI-Project"] == "proj_1"


@pytest.mark.parametrize(
    ("step", "reason", "retry_after"),
    [
        (
            Scripted(status=429, body=b'{"error": {"message": "slow down"}}', headers={"Retry-After": "1.5"}),
            "HTTP 429",
            1.5,
        ),
        (Scripted(status=503, body=b"upstream gone"), "HTTP 503", None),
        (Scripted(status=500, body=b"{}", headers={"retry-after-ms": "250"}), "HTTP 500", 0.25),
        (Scripted(body=b'{"choices": [{"message": {"content": "cut'), "malformed JSON", None),
        (Scripted(body=b'{"choices": []}'), "without choices", None),
        (ok("   "), "empty content", None),
        (Scripted(reset=True), "broke", None),
    ],
    ids=["429", "503", "500-ms", "truncated", "no-choices", "empty", "reset"],
)
def test_failures_a_retry_may_cure_are_retryable(
    endpoint: ScriptedEndpoint, step: Scripted, reason: str, retry_after: float | None
) -> None:
    with pytest.raises(TeacherRetryable) as caught:
        ask(endpoint, step)
    assert reason in caught.value.reason
    assert caught.value.retry_after == retry_after
    # a well-formed reply without usable text still cost its tokens, and says how many
    assert getattr(caught.value, "usage", None) == ((21, 4) if reason == "empty content" else None)


def test_a_hung_request_times_out_as_retryable(endpoint: ScriptedEndpoint) -> None:
    with pytest.raises(TeacherRetryable, match="timeout after 0.3 s"):
        ask(endpoint, Scripted(hang=True), timeout_s=0.3)


@pytest.mark.parametrize(
    ("status", "fix"),
    [
        (401, "check the key"),
        (403, "may use this model"),
        (404, "offers model 'served-model'"),
        (400, "teacher options"),
    ],
)
def test_refusals_are_one_line_errors_without_the_key(endpoint: ScriptedEndpoint, status: int, fix: str) -> None:
    echoed = json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}.\nSee the docs."}}).encode()
    with pytest.raises(XlangError) as caught:
        ask(endpoint, Scripted(status=status, body=echoed))
    message = caught.value.message
    assert f"HTTP {status}" in message and fix in message and "\n" not in message
    assert KEY not in message and "***" in message


def test_a_closed_port_is_retryable_and_names_the_url() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    teacher = openai_teacher(url=url, model="m", api_key=KEY, options=OpenAITeacherOptions(timeout_s=5))
    with pytest.raises(TeacherRetryable) as caught:
        asyncio.run(teacher.complete(request()))
    assert url in caught.value.reason and "start the server or fix --teacher-url" in caught.value.reason
    assert KEY not in caught.value.reason


def test_a_reply_without_usage_says_so(endpoint: ScriptedEndpoint) -> None:
    reply = ask(endpoint, ok(usage=False))
    assert reply.extra == {"usage_reported": False} and reply.prompt_tokens == 0


def test_url_and_model_are_required_and_described_without_secrets() -> None:
    options = OpenAITeacherOptions()
    with pytest.raises(XlangError, match="teacher_url.*--teacher-url"):
        openai_teacher(url=None, model="m", api_key=None, options=options)
    with pytest.raises(XlangError, match="teacher_model.*--teacher-model"):
        openai_teacher(url="http://127.0.0.1:1/v1", model=None, api_key=None, options=options)
    teacher = openai_teacher(url="https://user:pw@api.example.com/v1?k=1", model="m", api_key=KEY, options=options)
    assert teacher.describe() == {"name": "openai", "url": "https://api.example.com/v1", "model": "m"}
    assert KEY not in repr(vars(teacher)).replace(f"'_key': '{KEY}'", "")


def test_retry_after_takes_seconds_milliseconds_and_http_dates() -> None:
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    now = 1_700_000_000.0
    assert retry_after_seconds({"retry-after": formatdate(now + 30, usegmt=True)}, now=now) == pytest.approx(30)
    assert retry_after_seconds({"retry-after": formatdate(now - 30, usegmt=True)}, now=now) == 0.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_a_teacher_refuses_an_option_it_does_not_take() -> None:
    """Teachers are strategies like any other: their options class validates `teacher_options` before a
    teacher is built, naming the teacher and the option."""
    from xlang.resolve import Resolver
    from xlang.settings import XlangSettings

    for name, option in (("openai", "device"), ("local", "timeout_s")):
        settings = XlangSettings(teacher=name, teacher_url="http://127.0.0.1:9/v1", teacher_model="m")
        settings = settings.model_copy(update={"teacher_options": {option: 1}})
        with pytest.raises(XlangError, match=rf"teacher '{name}' has no option '{option}'"):
            Resolver(settings).teacher()
