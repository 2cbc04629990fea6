"""`xlang serve` as clients meet it: a real server process on 127.0.0.1 answering the official `openai`
client, for a tiny random LLaVA (SmolLM2's real byte-level tokenizer) and its causal-LM half; constrained
decoding with the real ko/zh/en specs; injected faults seen by a raw HTTP client; bad input to the command;
and the in-process `local` teacher on the same engine."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving import Launch, ServedModel, build_tiny_llava, stop

from xlang.errors import XlangError

QUESTION = "What is in this picture?"
FAULT_SEED = 7
FAULT_ARGS = ["--faults", "0.6", "--fault-seed", str(FAULT_SEED), "--fault-hang", "0.3", "--retry-after", "0.05"]


def spec(code: str) -> Any:
    from xlang import plugins

    return plugins.get_language(code, plugins.make_plugin_manager())


def png_url(size: tuple[int, int] = (60, 40)) -> str:
    from PIL import Image

    from xlang.teachers import image_data_url

    image = Image.new("RGB", size)
    image.putdata([(x * 4 % 256, y * 6 % 256, 128) for y in range(size[1]) for x in range(size[0])])
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return image_data_url(buffer.getvalue())


def image_question(text: str = QUESTION, *, url: str | None = None) -> list[dict[str, Any]]:
    parts = [{"type": "image_url", "image_url": {"url": url or png_url()}}, {"type": "text", "text": text}]
    return [{"role": "user", "content": parts}]


def letters(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c).startswith("L")]


@pytest.fixture(scope="module")
def serve_env(test_cache_dir: Path) -> dict[str, str]:
    # one torch thread: the models are tiny, and two servers share the machine with the tests
    env = {**os.environ, "XLANG_CACHE_DIR": str(test_cache_dir), "OMP_NUM_THREADS": "1"}
    for name in ("XLANG_CONFIG", "XLANG_DISABLE_PLUGIN_AUTOLOAD"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def servers(
    tiny_root: Path, smollm2_dir: Path, test_cache_dir: Path, serve_env: dict[str, str]
) -> Iterator[dict[str, ServedModel]]:
    """The causal LM with faults injected, started while its LLaVA is being assembled, then the LLaVA: the
    slow imports of the two servers and of the assembly overlap."""
    from tiny_models import save_tiny_chat_lm

    save_tiny_chat_lm(tiny_root / "lm", smollm2_dir)  # the language side build_tiny_llava reuses
    launches = [Launch(tiny_root / "lm", env=serve_env, args=["--name", "tiny-lm", *FAULT_ARGS], cwd=tiny_root)]
    try:
        build_tiny_llava(tiny_root, smollm2_dir, test_cache_dir)
        launches.append(Launch(tiny_root / "llava", env=serve_env, cwd=tiny_root))
        yield {"lm": launches[0].ready(), "llava": launches[1].ready()}
    finally:
        statuses = stop(*(launch.process for launch in launches))
    assert statuses == [0, 0]  # SIGTERM is a clean shutdown


@pytest.fixture(scope="module")
def llava_dir(servers: dict[str, ServedModel], tiny_root: Path) -> Path:
    return tiny_root / "llava"


@pytest.fixture(scope="module")
def llava_server(servers: dict[str, ServedModel]) -> ServedModel:
    return servers["llava"]


@pytest.fixture(scope="module")
def client(llava_server: ServedModel) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=llava_server.base_url, api_key="unused", max_retries=0, timeout=60)


# ------------------------------------------------------------------------------------------- the API


def test_models_lists_the_served_folder(client: Any, llava_server: ServedModel) -> None:
    assert [model.id for model in client.models.list().data] == ["llava"] == [llava_server.name]
    assert client.models.retrieve("llava").id == "llava"
    from openai import NotFoundError

    with pytest.raises(NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])


def test_image_reply_counts_the_prompt_as_the_processor_tokenizes_it(
    client: Any, llava_server: ServedModel, llava_dir: Path
) -> None:
    from PIL import Image
    from transformers import AutoProcessor

    url = png_url()
    before = llava_server.stats()
    reply = client.chat.completions.create(model="llava", messages=image_question(url=url), max_tokens=6, temperature=0)
    processor = AutoProcessor.from_pretrained(llava_dir)
    prompt = processor.tokenizer.apply_chat_template(
        [{"role": "user", "content": f"<image>\n{QUESTION}"}],
        chat_template=processor.chat_template,
        tokenize=False,
        add_generation_prompt=True,
    )
    with Image.open(io.BytesIO(__import__("base64").b64decode(url.split(",", 1)[1]))) as image:
        expected = processor(images=image.convert("RGB"), text=prompt, add_special_tokens=False)["input_ids"]
    assert reply.object == "chat.completion" and reply.model == "llava"
    assert reply.usage.prompt_tokens == len(expected[0])  # 16 image tokens included
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 6
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 6
    after = llava_server.stats()
    assert after["completions"] - before["completions"] == 1
    assert after["prompt_tokens"] - before["prompt_tokens"] == reply.usage.prompt_tokens
    assert after["completion_tokens"] - before["completion_tokens"] == 6


def test_seeded_sampling_is_deterministic_and_streams_the_same_text(client: Any) -> None:
    request = {"model": "llava", "messages": image_question(), "max_tokens": 10, "temperature": 0.9}
    first = client.chat.completions.create(**request, seed=11)
    again = client.chat.completions.create(**request, seed=11)
    other = client.chat.completions.create(**request, seed=12)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert other.choices[0].message.content != first.choices[0].message.content
    chunks = list(
        client.chat.completions.create(**request, seed=11, stream=True, stream_options={"include_usage": True})
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == first.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # it really streamed
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == first.usage.model_dump()
    plain = list(client.chat.completions.create(**request, seed=11, stream=True))
    assert all(c.usage is None for c in plain) and all(c.choices for c in plain)


def test_async_client_and_stop_strings(llava_server: ServedModel, client: Any) -> None:
    from openai import AsyncOpenAI

    request = {"model": "llava", "messages": image_question(), "max_tokens": 12, "temperature": 1.0, "seed": 5}
    whole = client.chat.completions.create(**request).choices[0].message.content
    stop = whole[4:7]
    assert stop.strip() and whole.find(stop) >= 1

    async def ask() -> tuple[str, str, str]:
        async with AsyncOpenAI(base_url=llava_server.base_url, api_key="unused", max_retries=0) as aclient:
            plain = await aclient.chat.completions.create(**request)
            stream = await aclient.chat.completions.create(**request, stream=True)
            streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            stopped = await aclient.chat.completions.create(**request, stop=[stop])
            assert stopped.choices[0].finish_reason == "stop"
            return plain.choices[0].message.content, streamed, stopped.choices[0].message.content

    plain, streamed, stopped = asyncio.run(ask())
    assert plain == streamed == whole
    assert stopped == whole[: whole.find(stop)]


@pytest.mark.parametrize(("code", "script"), [("ko", "HANGUL"), ("zh", "CJK"), ("en", "LATIN")])
def test_reply_language_keeps_a_random_model_in_the_script(client: Any, code: str, script: str) -> None:
    language = spec(code)
    for seed in (1, 2):
        request = {"model": "llava", "messages": image_question(), "max_tokens": 10, "temperature": 1.0, "seed": seed}
        constrained = client.chat.completions.create(**request, extra_body={"reply_language": code})
        text = constrained.choices[0].message.content
        assert letters(text) and language.reply_share(text) == 1.0, text
        assert unicodedata.name(text[0]).startswith(script), text  # it opens with a letter of the script
        assert "\ufffd" not in text
        free = client.chat.completions.create(**request).choices[0].message.content
        if code != "en":  # the same draw unconstrained: the random model writes Latin-script tokens
            assert language.reply_share(free) < 0.5, free


def test_valid_utf8_removes_the_replacement_characters_a_random_model_writes(client: Any) -> None:
    def answers(**extra: Any) -> list[str]:
        return [
            client.chat.completions.create(
                model="llava", messages=image_question(), max_tokens=16, temperature=2.0, seed=seed, **extra
            )
            .choices[0]
            .message.content
            for seed in range(20)
        ]

    free = answers()
    kept = answers(extra_body={"valid_utf8": True})
    assert sum("\ufffd" in text for text in free) >= 1  # byte tokens that end inside a character
    assert not any("\ufffd" in text for text in kept)
    assert all(text.encode("utf-8").decode("utf-8", "strict") == text for text in kept)


def test_bad_requests_are_400s_in_openais_shape(llava_server: ServedModel) -> None:
    url = f"{llava_server.base_url}/chat/completions"
    cases = {
        "remote image": image_question(url="https://example.com/cat.png"),
        "two images": [{"role": "user", "content": [*image_question()[0]["content"], *image_question()[0]["content"]]}],
        "not an image": image_question(url="data:image/png;base64,aGVsbG8="),
    }
    for name, messages in cases.items():
        response = httpx.post(url, json={"model": "llava", "messages": messages}, timeout=30)
        assert response.status_code == 400, name
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"], name
    unknown = httpx.post(
        url, json={"model": "llava", "messages": image_question(), "reply_language": "qqq"}, timeout=30
    )
    assert unknown.status_code == 400 and "qqq" in unknown.json()["error"]["message"]
    assert httpx.post(url, content=b"{not json", timeout=30).status_code == 400
    tools = [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}]
    refused = httpx.post(url, json={"model": "llava", "messages": image_question(), "tools": tools}, timeout=30)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "tools"


# ------------------------------------------------------------------------------- causal LM and faults


def test_a_causal_lm_is_served_and_every_fault_kind_reaches_a_raw_client(servers: dict[str, ServedModel]) -> None:
    """Request N meets the fault the seeded schedule gives N (`FaultPlan.decide`), or a real reply; the
    server's counts match what the client received."""
    from openai import BadRequestError, OpenAI

    from xlang.serve.faults import FAULT_KINDS, parse_faults

    server = servers["lm"]
    plan = parse_faults("0.6", seed=FAULT_SEED)
    with pytest.raises(BadRequestError, match="text-only"):  # a client's mistake is never a fault
        OpenAI(base_url=server.base_url, api_key="unused", max_retries=0).chat.completions.create(
            model="tiny-lm", messages=image_question(), max_tokens=4
        )
    url = f"{server.base_url}/chat/completions"
    seen: list[str | None] = []
    usage = Counter[str]()
    with httpx.Client(timeout=10) as http:
        for number in range(2, 60):
            code = "en" if number % 2 else "ko"
            body = {
                "model": "tiny-lm",
                "messages": [{"role": "user", "content": "Hello"}],
                "max_tokens": 4,
                "seed": number,
                "reply_language": code,
            }
            try:
                response = http.post(url, json=body)
            except httpx.TransportError:  # held for --fault-hang, then dropped
                seen.append("timeout")
            else:
                seen.append(_classify(response, spec(code)))
                if seen[-1] in (None, "wrong-language", "empty"):
                    usage.update(response.json()["usage"])
            assert seen[-1] == plan.decide(number), number
            if set(seen) == {None, *FAULT_KINDS}:
                break
        for _ in range(5):  # faults never touch the model list
            assert http.get(f"{server.base_url}/models").status_code == 200
    assert set(seen) == {None, *FAULT_KINDS}
    stats = server.stats()
    assert stats["requests"] == 1 + len(seen)
    assert stats["faults"] == dict(Counter(kind for kind in seen if kind is not None))
    assert stats["completions"] == sum(kind in (None, "wrong-language", "empty") for kind in seen)
    assert stats["prompt_tokens"] == usage["prompt_tokens"] and stats["completion_tokens"] == usage["completion_tokens"]


def _classify(response: httpx.Response, language: Any) -> str | None:
    """Which fault a response is (None: a real reply), checking that it is what it looks like."""
    if response.status_code == 429:
        assert response.headers["retry-after"] == "0.05" and response.json()["error"]["code"] == "rate_limit_exceeded"
        return "429"
    if response.status_code == 500:
        assert response.json()["error"]["type"] == "server_error"
        return "500"
    assert response.status_code == 200
    try:
        body = response.json()
    except json.JSONDecodeError:
        return "truncated"
    text = body["choices"][0]["message"]["content"]
    if text == "":
        assert body["usage"]["completion_tokens"] == 0
        return "empty"
    if language.reply_share(text) == 1.0:  # the model's own reply, constrained to the language
        assert body["usage"]["completion_tokens"] == 4
        return None
    assert letters(text) and language.reply_share(text) == 0.0, text
    return "wrong-language"


# -------------------------------------------------------------------------------------- the command


def test_bad_input_is_one_error_line_and_exit_2(tmp_path: Path, serve_env: dict[str, str]) -> None:
    not_a_model = tmp_path / "notes"
    not_a_model.mkdir()
    (not_a_model / "readme.txt").write_text("not a model\n")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = str(taken.getsockname()[1])
    cases = {
        "does not exist": ["--model", str(tmp_path / "missing")],
        "not a model folder": ["--model", str(not_a_model)],
        "cannot listen": ["--model", str(not_a_model), "--port", port],
        "unknown kind": ["--model", str(not_a_model), "--faults", "0.5:503"],
    }
    try:
        runs = {  # all at once: each pays for its own start-up
            expected: subprocess.Popen(
                [sys.executable, "-m", "xlang.cli", "serve", *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**serve_env, "COLUMNS": "200"},
            )
            for expected, args in cases.items()
        }
        for expected, process in runs.items():
            stdout, stderr = process.communicate(timeout=120)
            errors = [line for line in stderr.splitlines() if line.strip()]
            assert process.returncode == 2, stderr
            assert len(errors) == 1 and errors[0].startswith("error:") and expected in errors[0], stderr
            assert stdout == ""
    finally:
        taken.close()


# -------------------------------------------------------------------------------- the local teacher


def test_local_teacher_answers_in_process(llava_dir: Path, tmp_path: Path) -> None:
    from xlang.resolve import Resolver
    from xlang.settings import XlangSettings
    from xlang.teachers import TeacherRequest

    teacher = Resolver(XlangSettings(teacher="local", teacher_model=str(llava_dir))).teacher()
    assert teacher.describe() == {"name": "local", "model": "llava"}
    request = TeacherRequest(messages=image_question(), max_tokens=6, temperature=1.0, seed=3)

    async def twice() -> list[Any]:
        try:
            return list(await asyncio.gather(teacher.complete(request), teacher.complete(request)))
        finally:
            await teacher.aclose()

    first, second = asyncio.run(twice())
    assert first.text == second.text and "\ufffd" not in first.text
    assert first.completion_tokens == 6 and first.prompt_tokens > 16 and first.model == "llava"
    # a request that carries its language's spec is held to that language's scripts while decoding
    korean = Resolver(XlangSettings()).language("ko")
    constrained = TeacherRequest(
        messages=image_question(), max_tokens=6, temperature=1.0, seed=3, reply_language="ko", language=korean
    )
    reply = asyncio.run(teacher.complete(constrained))
    assert korean.reply_share(reply.text) == 1.0, reply.text
    for model in (None, str(tmp_path / "missing")):
        with pytest.raises(XlangError, match="teacher_model"):
            Resolver(XlangSettings(teacher="local", teacher_model=model)).teacher()


# ------------------------------------------------------------------------------------- constraints


@pytest.mark.parametrize("code", [None, "ko", "zh"])
def test_constrained_random_walks_stay_valid_at_every_step(smollm2_dir: Path, code: str | None) -> None:
    """Random logits through the processor over SmolLM2's real vocabulary, with EOS favoured: whatever is
    drawn, the reply is valid UTF-8 up to one unfinished character, EOS comes only between characters,
    and with a language the reply opens with a letter of its scripts and holds no other letters."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from xlang.serve.constraints import ByteConstraint, ConstraintProcessor, script_rule, token_bytes, utf8_rule

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    tokens = token_bytes(tokenizer, len(tokenizer))
    assert tokens is not None and tokens.kind == "byte-level"
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    language = spec(code) if code else None
    rule = script_rule(tuple((r.start, r.end) for r in language.scripts)) if language else utf8_rule()
    constraint = ByteConstraint(tokens, rule, [eos])
    rng = np.random.default_rng(0)
    stopped_mid_reply = 0
    for _ in range(6):
        processor = ConstraintProcessor(constraint, prompt_length=1)
        ids, state = [0], (b"", False)
        for _ in range(30):
            scores = torch.from_numpy(rng.normal(size=(1, len(tokenizer))).astype(np.float32))
            scores[0, eos] += 2.5
            token = int(torch.argmax(processor(torch.tensor([ids]), scores)))
            if token == eos:
                assert state[0] == b"" and (language is None or state[1])
                stopped_mid_reply += 1
                break
            ids.append(token)
            state = constraint.advance(state, token)
            reply = tokens.text(ids[1:])
            text = reply[: len(reply) - len(state[0])].decode("utf-8")  # strict: raises on invalid bytes
            assert len(state[0]) < 4
            if language is not None and text:
                assert language.reply_share(text) == 1.0 and unicodedata.category(text[0]).startswith("L"), text
    assert stopped_mid_reply >= 1  # EOS was taken where it was allowed
