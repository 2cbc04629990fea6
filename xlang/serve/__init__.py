"""Serving: a model folder xlang wrote, answering OpenAI-compatible chat completions (`xlang serve`), and
the engine the `local` teacher runs in process.

    ChatModel.load(folder, device="cpu", dtype=None).generate(messages, max_tokens=, temperature=, seed=,
                   stop=, reply_language=spec, valid_utf8=, on_text=) -> Generation
    create_app(ChatServer(model, name=, language_lookup=, valid_utf8_default=, faults=)) -> Starlette app
    parse_faults("0.2:429+timeout", seed=, hang_s=, retry_after_s=) -> FaultPlan   (for testing clients)
    bind(host, port) -> socket;  run(app, socket, on_ready=) -> exit status

Languages come in as `LanguageSpec`s or a lookup function: this package never reaches the plugin manager.
Importing it is light: torch, transformers and Starlette load inside the modules that need them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS: dict[str, str] = {
    "ChatModel": "xlang.serve.engine",
    "Generation": "xlang.serve.engine",
    "RequestError": "xlang.serve.engine",
    "ChatServer": "xlang.serve.app",
    "create_app": "xlang.serve.app",
    "FaultPlan": "xlang.serve.faults",
    "FAULT_KINDS": "xlang.serve.faults",
    "parse_faults": "xlang.serve.faults",
    "bind": "xlang.serve.server",
    "run": "xlang.serve.server",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'xlang.serve' has no attribute {name!r}")
    return getattr(import_module(module), name)
