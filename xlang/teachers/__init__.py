"""Teachers: vision-language models that write visual-instruction data, reached through one small API.

A teacher is what a `register_teachers` factory returns: `async complete(TeacherRequest) -> TeacherReply`,
`async aclose()` and `describe()`. The built-in ones are `openai` (any OpenAI-compatible chat-completions
endpoint: a hosted model, vLLM, Ollama, LM Studio or `xlang serve`) and `local` (a model folder run in
process). The data pipeline (`xlang.datagen`) sees only this API, so a plugin's teacher is as good as ours.
"""

from xlang.teachers.base import Teacher, TeacherReply, TeacherRequest, TeacherRetryable, image_data_url

__all__ = ["Teacher", "TeacherReply", "TeacherRequest", "TeacherRetryable", "image_data_url"]
