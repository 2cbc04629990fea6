"""A tiny LLaVA folder and a real `xlang serve` process on 127.0.0.1, for tests that need an OpenAI-compatible
endpoint (`from serving import build_tiny_llava, served`)."""

from __future__ import annotations

import functools
import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

XLANG = [sys.executable, "-m", "xlang.cli"]
READY = re.compile(r"^serving (?P<name>\S+) at (?P<url>http://\S+/v1)$")
SYSTEM_PROMPTS = {"en": "Be helpful.", "ko": "친절하게 답하세요.", "zh": "请友好地回答。"}


def build_tiny_llava(root: Path, smollm2_dir: Path, cache_dir: Path) -> Path:
    """A tiny random LLaVA at `root/llava`: its language side, a 2-layer Llama with SmolLM2's real tokenizer
    and chat template, is the causal-LM folder `root/lm` (servable on its own; reused when there), its tower
    a 2-layer DINOv2 at 56 px (16 image tokens) in `root/tower`, through the built-in `hf` tower. The LLaVA
    is reused when already built."""
    from tiny_models import save_tiny_chat_lm, save_tiny_dinov2

    target = root / "llava"
    if (target / "config.json").is_file():
        return target
    from xlang import plugins
    from xlang.vlm.assemble import build_llava
    from xlang.vlm.config import AssembleConfig

    root.mkdir(parents=True, exist_ok=True)
    if not (root / "lm" / "config.json").is_file():
        save_tiny_chat_lm(root / "lm", smollm2_dir)
    save_tiny_dinov2(root / "tower")
    config = AssembleConfig(vision_tower="hf", vision_tower_options={"path": str(root / "tower")})
    strategy = plugins.get_strategy("vision_towers", config.vision_tower, plugins.make_plugin_manager())
    return build_llava(
        str(root / "lm"),
        cache_dir,
        target,
        vision_tower=functools.partial(strategy, options=strategy.configure(config.vision_tower_options)),
        system_prompts=SYSTEM_PROMPTS,
        target_lang="ko",
        config=config,
    )


@dataclass
class ServedModel:
    """A running `xlang serve`: where to reach it, and what it has written to stderr so far."""

    name: str
    base_url: str
    process: subprocess.Popen[str]
    stderr_lines: list[str] = field(default_factory=list)

    def stats(self) -> dict[str, Any]:
        """The server's own counts (`GET /v1/xlang/stats`): requests, faults by kind, completions, tokens."""
        import httpx

        response = httpx.get(f"{self.base_url}/xlang/stats", timeout=10)
        response.raise_for_status()
        return response.json()

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)


def _pump(stream: Any, sink: queue.Queue[str | None] | list[str]) -> None:
    for line in stream:
        if isinstance(sink, list):
            sink.append(line)
        else:
            sink.put(line)
    if not isinstance(sink, list):
        sink.put(None)


class Launch:
    """A started `xlang serve --model DIR --port 0 ARGS` that may not be ready yet: start several, then wait
    for each (`ready`), so that their slow imports overlap."""

    def __init__(
        self, model_dir: Path, *, env: dict[str, str], args: Sequence[str] = (), cwd: Path | None = None
    ) -> None:
        self.process = subprocess.Popen(
            [*XLANG, "serve", "--model", str(model_dir), "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
            cwd=cwd,
        )
        self._stdout: queue.Queue[str | None] = queue.Queue()
        self.stderr_lines: list[str] = []
        threading.Thread(target=_pump, args=(self.process.stdout, self._stdout), daemon=True).start()
        threading.Thread(target=_pump, args=(self.process.stderr, self.stderr_lines), daemon=True).start()

    def ready(self, deadline_s: float = 180.0) -> ServedModel:
        """Wait for the ready line; a server that exits or stays silent past `deadline_s` fails with its stderr."""
        give_up = time.monotonic() + deadline_s
        while True:
            remaining = give_up - time.monotonic()
            line = None
            if remaining > 0:
                try:
                    line = self._stdout.get(timeout=remaining)
                except queue.Empty:
                    line = None
            if line is None:
                self.process.poll()
                raise RuntimeError(
                    f"xlang serve did not come up (exit status {self.process.returncode}); stderr:\n"
                    + "".join(self.stderr_lines)
                )
            found = READY.match(line.strip())
            if found:
                return ServedModel(found["name"], found["url"], self.process, self.stderr_lines)

    def stop(self) -> int:
        return stop(self.process)[0]


@contextmanager
def served(
    model_dir: Path,
    *,
    env: dict[str, str],
    args: Sequence[str] = (),
    cwd: Path | None = None,
    deadline_s: float = 180.0,
) -> Iterator[ServedModel]:
    """Run `xlang serve --model DIR --port 0 ARGS` until its ready line, yield it, then stop it (SIGTERM,
    then SIGKILL if it lingers; `.process.returncode` is then its exit status). A server that exits or stays
    silent past `deadline_s` fails with its stderr."""
    launch = Launch(model_dir, env=env, args=args, cwd=cwd)
    try:
        yield launch.ready(deadline_s)
    finally:
        launch.stop()


def stop(*processes: subprocess.Popen[str], grace_s: float = 15.0) -> list[int]:
    """SIGTERM to all (so that their shutdowns overlap), wait up to `grace_s`, then SIGKILL; exit statuses."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return [process.returncode for process in processes]


__all__ = ["READY", "SYSTEM_PROMPTS", "Launch", "ServedModel", "build_tiny_llava", "served", "stop"]


class ScriptedChatServer:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 (port 0) whose replies a test scripts: `reply(body)`
    answers each request body, and every body is kept in `requests`. For judges and teachers that cannot run
    here (a GPT-4-class model); the tests that use it say why."""

    def __init__(self, reply: Callable[[dict[str, Any]], str]) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                message = {"role": "assistant", "content": reply(body)}
                payload = json.dumps(
                    {
                        "id": "scripted",
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
