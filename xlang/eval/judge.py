"""A judge: a teacher model (any `register_teachers` backend: a hosted endpoint, `xlang serve`, a local
folder) asked to grade answers, with its verdicts remembered like answers are.

Two questions are asked. `grade`: LLaVA-Bench's, as K-LLaVA-W uses it: the reference answer and the model's
answer are both scored from 1 to 10, and the model's score relative to the reference's is what counts.
`prefer`: which of two answers is better, or a tie (the caller asks in both orders to cancel position bias).
The prompts come from the language plugin (`LanguageSpec.judge`); unset ones are the English prompts below,
which name the language the answer must be in.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xlang.datagen.store import AppendOnlyFile, log_lines
from xlang.errors import XlangError
from xlang.spec import LanguageSpec
from xlang.teachers.base import TeacherRequest, TeacherRetryable

DEFAULT_SYSTEM = "You are a careful, impartial judge of answers to questions about images."

DEFAULT_SCORE = """Two AI assistants answered the user's question about an image that you cannot see.
Assistant 1 wrote the reference answer, from the image itself. Judge Assistant 2 against it.

[Context]
{context}

[Question]
{question}

[Assistant 1]
{reference}
[End of Assistant 1]

[Assistant 2]
{answer}
[End of Assistant 2]

Rate the helpfulness, relevance, accuracy and level of detail of each answer. Both must be written in
{language}; an answer in another language, or one that is not readable text, scores 1. Give each assistant an
overall score from 1 to 10, higher is better. Write the two scores alone on the first line, separated by a
space, then explain briefly, without letting the order or the length of the answers sway you."""

DEFAULT_COMPARE = """Two AI assistants answered the user's question about an image that you cannot see.

[Question]
{question}

[Answer A]
{first}
[End of Answer A]

[Answer B]
{second}
[End of Answer B]

Which answer is more helpful, relevant and accurate? Both should be written in {language}; an answer in
another language, or one that is not readable text, is worse. Do not let the order or the length of the
answers sway you. Reply with [[A]] if A is better, [[B]] if B is better, or [[C]] for a tie."""

SCORE_CHOICES: tuple[str, ...] = tuple(f"{first} {second}" for first in range(1, 11) for second in range(1, 11))
"""Every well-formed first line of a grade, for judges held to a fixed set of replies (`guided_choice`)."""
PREFERENCE_CHOICES: tuple[str, ...] = ("[[A]]", "[[B]]", "[[C]]")


class JudgeGaveNoVerdict(XlangError):
    """The judge's replies held no verdict in the expected form, every try."""


class Judge:
    """Blocking calls over an async teacher, each verdict cached in a JSONL book beside the answers."""

    def __init__(self, teacher: Any, *, book: Path | None = None, tries: int = 3, max_tokens: int = 256) -> None:
        self.teacher = teacher
        self.tries = tries
        self.max_tokens = max_tokens
        self.description = dict(teacher.describe())
        self._loop = asyncio.new_event_loop()
        self._known = _read_verdicts(book) if book is not None else {}
        self._file = AppendOnlyFile(book, fsync_every=4) if book is not None else None

    def describe(self) -> dict[str, Any]:
        return self.description

    def grade(
        self, *, question: str, reference: str, answer: str, language: LanguageSpec, context: str = ""
    ) -> tuple[float, float]:
        """(reference score, answer score), each 1 to 10."""
        from xlang.eval.scoring import parse_judge_scores

        template = language.judge.score or DEFAULT_SCORE
        prompt = _fill(template, question=question, reference=reference, answer=answer, language=language.name)
        prompt = prompt.replace("{context}", context or "(none)")
        return self._ask(prompt, language, SCORE_CHOICES, parse_judge_scores, "two scores from 1 to 10")

    def prefer(self, *, question: str, first: str, second: str, language: LanguageSpec) -> str:
        """`A` (the first answer is better), `B` or `tie`."""
        from xlang.eval.scoring import parse_preference

        template = language.judge.compare or DEFAULT_COMPARE
        prompt = _fill(template, question=question, first=first, second=second, language=language.name)
        return self._ask(prompt, language, PREFERENCE_CHOICES, parse_preference, "[[A]], [[B]] or [[C]]")

    def _ask(
        self,
        prompt: str,
        language: LanguageSpec,
        choices: tuple[str, ...],
        parse: Callable[[str], Any],
        expected: str,
    ) -> Any:
        system = language.judge.system or DEFAULT_SYSTEM
        # the endpoint's address is left out: a judge served again on another port is the same judge
        judge = {name: value for name, value in self.description.items() if name != "url"}
        key = hashlib.sha256(json.dumps([judge, system, prompt], sort_keys=True).encode()).hexdigest()[:24]
        if key in self._known:
            found = parse(self._known[key])
            if found is not None:
                return found
        last = ""
        for attempt in range(self.tries):
            request = TeacherRequest(
                messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
                max_tokens=self.max_tokens,
                temperature=0.0 if attempt == 0 else 0.7,
                seed=attempt,
                choices=choices,
            )
            try:
                reply = self._loop.run_until_complete(self.teacher.complete(request))
            except TeacherRetryable as error:
                last = f"({error.reason})"
                continue
            last = reply.text
            found = parse(reply.text)
            if found is not None:
                if self._file is not None:
                    self._file.append({"key": key, "reply": reply.text})
                self._known[key] = reply.text
                return found
        shown = " ".join(last.split())[:80]
        raise JudgeGaveNoVerdict(f"the judge gave no verdict ({expected}) in {self.tries} tries; last reply: {shown!r}")

    def close(self) -> None:
        try:
            self._loop.run_until_complete(self.teacher.aclose())
        finally:
            self._loop.close()
            if self._file is not None:
                self._file.close()


def _fill(template: str, **values: str) -> str:
    """`{name}` slots filled by plain replacement: answers and questions may hold braces of their own."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


def _read_verdicts(book: Path) -> dict[str, str]:
    return {
        line["key"]: line["reply"]
        for line in log_lines(book)
        if isinstance(line.get("key"), str) and isinstance(line.get("reply"), str)
    }
