"""Asking a model the questions of a benchmark: one place that generates, times and remembers answers.

Every answer is appended to a JSONL book as soon as it exists (one `write` per line, so a kill leaves whole
lines), keyed by the question and a fingerprint of the model folder and generation settings. A rerun of the
same evaluation reads the book and asks only what is missing, so a run stopped by a bad benchmark row or a
judge that gave no score resumes where it stopped; a changed model or setting asks again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from xlang.datagen.store import AppendOnlyFile, log_lines
from xlang.errors import XlangError
from xlang.spec import LanguageSpec

REPLACEMENT_CHARACTER = "\ufffd"


@dataclass(frozen=True)
class Answer:
    """One reply and what it cost to make: the seconds of generation (for characters per second) and tokens."""

    key: str
    text: str
    seconds: float
    prompt_tokens: int
    completion_tokens: int
    saw_image: bool
    language_bearing: bool
    """Whether the reply is free text that should be in the language (not a letter picked among options)."""
    reply_seconds: float = 0.0
    """Of `seconds`, those after the pass over the prompt (`Generation.reply_seconds`)."""


def model_fingerprint(folder: Path) -> str:
    """Changes when the folder's weights or config change (names, sizes and modification times)."""
    parts = []
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and (path.suffix in (".safetensors", ".json") or path.name.endswith(".jinja")):
            stat = path.stat()
            parts.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


class Answerer:
    """Asks one loaded model (`xlang.serve.engine.ChatModel`) questions in one language, greedily.

    A model that reads images gets the image; a text-only model (the base a LLaVA was built from) gets the
    question alone, and its answers are marked `saw_image=False` so reports show it answered blind.
    """

    def __init__(
        self,
        chat: Any,
        language: LanguageSpec,
        book: Path | None,
        *,
        max_tokens: int = 128,
        valid_utf8: bool = False,
    ) -> None:
        self.chat = chat
        self.language = language
        self.max_tokens = max_tokens
        self.valid_utf8 = valid_utf8
        self.reads_images = bool(chat.is_vision)
        settings = f"{max_tokens}:{valid_utf8}:{language.code}:{language.chat.system_prompt}"
        self.fingerprint = f"{model_fingerprint(chat.folder)}-{hashlib.sha256(settings.encode()).hexdigest()[:8]}"
        self.book = book
        self.asked: dict[str, Answer] = {}
        self.on_answer: Any | None = None
        """Called with each new answer (progress display)."""
        self.scope = ""
        """Prefixed to every key (the evaluation set's name), so that two sets may reuse question ids."""
        self._known: dict[str, Answer] = _read_book(book, self.fingerprint) if book is not None else {}
        self._file = AppendOnlyFile(book, fsync_every=8) if book is not None else None
        self._image_urls: OrderedDict[str, str] = OrderedDict()
        """The data URLs of the last images sent: PNG encoding each image for every question took an eighth of
        the evaluate stage on a tiny model (a multiple-choice item alone asks once per rotation)."""

    @property
    def folder(self) -> Path:
        return Path(self.chat.folder)

    def ask(
        self,
        key: str,
        question: str,
        image: Any | None = None,
        *,
        max_tokens: int | None = None,
        language_bearing: bool = True,
        choices: tuple[str, ...] | None = None,
    ) -> Answer:
        """The model's answer to `question` (about `image`, a PIL image, when the model reads images): greedy
        text, or with `choices` the likeliest of them (a multiple-choice letter, as lm-eval-harness scores)."""
        key = self._scoped(key)
        known = self._known.get(key)
        if known is not None:
            self.asked[key] = known
            return known
        messages = self._messages(question, image)
        if choices:
            produce = partial(self.chat.choose, messages, choices)
        else:
            produce = partial(
                self.chat.generate,
                messages,
                max_tokens=max_tokens or self.max_tokens,
                temperature=0.0,
                seed=0,
                valid_utf8=self.valid_utf8,
            )
        answer = self._timed(key, image, language_bearing, produce)
        if self._file is not None:
            self._file.append({"fingerprint": self.fingerprint, **asdict(answer)})
        self._known[key] = self.asked[key] = answer
        if self.on_answer is not None:
            self.on_answer(answer)
        return answer

    def write(self, key: str, question: str, reply: str, image: Any | None = None) -> Answer:
        """The model writing `reply` to `question` token by token as if it had chosen it
        (`ChatModel.write`): the cost of that text in this model, timed like `ask`. Never kept in the book:
        it says how fast, not what the model would answer."""
        messages = self._messages(question, image)
        return self._timed(self._scoped(key), image, True, partial(self.chat.write, messages, reply))

    def _scoped(self, key: str) -> str:
        """The key as the book stores it: under this answerer's scope, when it has one."""
        return f"{self.scope}/{key}" if self.scope else key

    def _timed(self, key: str, image: Any | None, language_bearing: bool, produce: Callable[[], Any]) -> Answer:
        """The answer `produce` (a call returning a `Generation`) gives, with the seconds it took."""
        began = time.perf_counter()
        generation = produce()
        return Answer(
            key=key,
            text=generation.text,
            seconds=time.perf_counter() - began,
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
            saw_image=image is not None and self.reads_images,
            language_bearing=language_bearing,
            reply_seconds=generation.reply_seconds,
        )

    def _messages(self, question: str, image: Any | None) -> list[dict[str, Any]]:
        content: Any = question
        if image is not None and self.reads_images:
            content = [
                {"type": "image_url", "image_url": {"url": self._image_url(image)}},
                {"type": "text", "text": question},
            ]
        return [
            {"role": "system", "content": self.language.chat.system_prompt},
            {"role": "user", "content": content},
        ]

    def _image_url(self, image: Any) -> str:
        """The image as a PNG data URL, encoded once while it is among the last `IMAGE_URLS_KEPT` sent, found
        by its pixels (a suite asks several questions about one photo, each loading it anew)."""
        import io

        from xlang.teachers.base import image_data_url

        key = f"{image.mode}:{image.size}:{hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest()}"
        url = self._image_urls.get(key)
        if url is not None:
            self._image_urls.move_to_end(key)
            return url
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        url = self._image_urls[key] = image_data_url(buffer.getvalue())
        if len(self._image_urls) > IMAGE_URLS_KEPT:
            self._image_urls.popitem(last=False)
        return url

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _read_book(book: Path, fingerprint: str) -> dict[str, Answer]:
    """Answers an earlier run wrote with the same fingerprint; a cut-off last line (a kill) is passed over."""
    found: dict[str, Answer] = {}
    if not book.exists():
        return found
    if not book.is_file():
        raise XlangError(f"{book} is not a file; remove it or choose another --out")
    fields = set(Answer.__dataclass_fields__)
    required = {field.name for field in dataclasses.fields(Answer) if field.default is dataclasses.MISSING}
    for line in log_lines(book):
        if line.get("fingerprint") == fingerprint and required <= set(line):
            found[line["key"]] = Answer(**{name: line[name] for name in fields if name in line})
    return found


IMAGE_URLS_KEPT = 8
"""Images whose encoded form an answerer keeps (a few: a benchmark's thousands of images must not pile up)."""

LOOP_MAX_PERIOD = 40
"""Longest repeated unit (characters) that `is_looping` looks for: a phrase, not a paragraph."""
LOOP_MIN_REPEATS = 3
LOOP_MIN_COVER = 0.5


def is_looping(text: str) -> bool:
    """Whether a reply is mostly one short unit said over and over (`이, 이, 이, ...`): at least
    `LOOP_MIN_REPEATS` back-to-back copies of a unit of up to `LOOP_MAX_PERIOD` characters covering at least
    half the reply. A model that loops writes many characters per second that say nothing, so speed figures
    are read next to how often it does."""
    text = text.strip()
    length = len(text)
    for period in range(1, min(LOOP_MAX_PERIOD, length // LOOP_MIN_REPEATS) + 1):
        run = 0
        for index in range(length - period):
            run = run + 1 if text[index] == text[index + period] else 0
            covered = run + period
            if covered >= LOOP_MIN_REPEATS * period and covered >= LOOP_MIN_COVER * length:
                return True
    return False


def reply_metrics(answers: list[Answer], language: LanguageSpec) -> dict[str, float]:
    """What every answer says regardless of whether it is right: in the language asked or not, broken
    characters, free text that loops (`is_looping`), and how fast text comes out (characters per second: the
    user-side payoff of a shorter tokenization)."""
    metrics: dict[str, float] = {}
    bearing = [answer for answer in answers if answer.language_bearing]
    if bearing:
        metrics["reply_language_rate"] = sum(language.is_reply_in_language(a.text) for a in bearing) / len(bearing)
    if answers:
        metrics["replacement_char_share"] = sum(REPLACEMENT_CHARACTER in a.text for a in answers) / len(answers)
    if bearing:
        metrics["looping_share"] = sum(is_looping(a.text) for a in bearing) / len(bearing)
    metrics.update(generation_rates(bearing))
    return metrics


def generation_rates(answers: Sequence[Answer]) -> dict[str, float]:
    """`chars_per_s`, `tokens_per_s` and `chars_per_token` of the answers together (none when they took no time)."""
    seconds = sum(answer.seconds for answer in answers)
    if not answers or seconds <= 0:
        return {}
    chars = sum(len(answer.text) for answer in answers)
    tokens = sum(answer.completion_tokens for answer in answers)
    return {"chars_per_s": chars / seconds, "tokens_per_s": tokens / seconds, "chars_per_token": chars / max(1, tokens)}
