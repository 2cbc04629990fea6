"""The `local` teacher: a model folder (a LLaVA or a causal LM that xlang wrote) run in this process by the
engine behind `xlang serve`, so data can be generated with no server and no key.

When a request carries its language's spec (`TeacherRequest.language`, which the data pipeline sets),
the reply is held to that language's scripts while decoding, as `xlang serve` does for `reply_language`;
the pipeline still checks each reply's language itself.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Literal

from xlang.contract import Options
from xlang.errors import XlangError
from xlang.teachers.base import TeacherReply, TeacherRequest


class LocalTeacherOptions(Options):
    """How the local model runs."""

    device: str = "cpu"
    """A torch device: `cpu`, `cuda`, `cuda:1`, `mps`."""
    dtype: Literal["float32", "bfloat16", "float16"] | None = None
    """The weights' dtype; None keeps the folder's own (float32 on a CPU is the safe choice)."""
    valid_utf8: bool = True
    """Never emit bytes that do not decode as UTF-8 (a byte-level tokenizer can otherwise cut a character)."""


class LocalTeacher:
    """One loaded model; requests run one at a time in a worker thread, so the event loop stays free."""

    def __init__(self, folder: Path, options: LocalTeacherOptions) -> None:
        from xlang.serve.engine import ChatModel

        self.folder = folder
        self.options = options
        self.model = ChatModel.load(folder, device=options.device, dtype=options.dtype)
        self._lock = threading.Lock()

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        generation = await asyncio.to_thread(self._generate, request)
        return TeacherReply(
            text=generation.text,
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
            model=self.folder.name,
            finish_reason=generation.finish_reason,
        )

    def _generate(self, request: TeacherRequest) -> Any:
        with self._lock:
            if request.choices:
                return self.model.choose(request.messages, request.choices)
            return self.model.generate(
                request.messages,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                seed=request.seed,
                valid_utf8=self.options.valid_utf8,
                reply_language=request.language,
            )

    async def aclose(self) -> None:
        """Nothing to release but memory, which goes with the object."""

    def describe(self) -> dict[str, Any]:
        return {"name": "local", "model": self.folder.name}


def local_teacher(*, model: str | None, options: LocalTeacherOptions) -> LocalTeacher:
    """The model folder named by the `teacher_model` setting, loaded once."""
    if not model:
        raise XlangError("the local teacher needs a model folder: set teacher_model (XLANG_TEACHER_MODEL) to one")
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise XlangError(f"teacher_model {model!r} is not a folder; set it to a model folder that xlang wrote")
    return LocalTeacher(folder, options)
