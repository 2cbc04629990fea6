"""The built-in teachers: `openai` (any OpenAI-compatible chat-completions endpoint) and `local` (a model
folder run in process through transformers). Importing this module stays light: the clients and torch
load when a teacher is built."""

from __future__ import annotations

from typing import Any

from xlang.hookspecs import hookimpl
from xlang.teachers.local import LocalTeacherOptions, local_teacher
from xlang.teachers.openai_compat import OpenAITeacherOptions, openai_teacher


@hookimpl
def register_teachers(register: Any) -> None:
    register("openai", openai_teacher, options=OpenAITeacherOptions)
    register("local", local_teacher, options=LocalTeacherOptions)
