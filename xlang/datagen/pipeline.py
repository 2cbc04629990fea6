"""One generation run: jobs sent to the teacher concurrently, answers checked, whole records appended.

Concurrency is a semaphore over requests (`concurrency`); the spawned jobs are a bounded window over
the plan, so a plan of a million jobs costs no more memory than a small one. Each request may wait for
the budget (its worst case reserved), a requests-per-minute bucket and a tokens-per-minute bucket (paid
from the reply's usage). A teacher failure is retried after exponential backoff with full jitter (at
least the server's Retry-After); a rejected answer is asked again at once with a new seed. A request that
the teacher fails `max_attempts` times stops the run (the endpoint is down or misconfigured); one whose
answers are rejected every time leaves its record for a later run. A record is written only when all
its turns are accepted, so a stop at any point leaves only whole records.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlang.datagen.config import GenerateConfig
from xlang.datagen.cost import Budget, BudgetExhausted, Price, RequestShape
from xlang.datagen.limits import TokenBucket, backoff_delay
from xlang.datagen.plan import NATIVE, Job, image_payload, record_image_path
from xlang.datagen.progress import Counters, Reporter
from xlang.datagen.prompts import (
    IMAGE_PLACEHOLDER,
    conversation,
    draw_questions,
    native_messages,
    strip_placeholder,
    system_prompt,
    text_bytes,
    translate_messages,
)
from xlang.datagen.store import AppendOnlyFile, ExistingOutput, rejects_path
from xlang.datagen.validate import NearDuplicates, Rejection, answer_problem, near_duplicate_problem
from xlang.errors import XlangError
from xlang.teachers.base import TeacherRequest, TeacherRetryable
from xlang.vlm.data import check_record

TICK_S = 0.5


@dataclass
class GenerateResult:
    """What a run did; `spent_usd` is this run's, `total_spent_usd` the output file's across runs."""

    out: Path
    total: int
    written: int
    skipped: int
    rejected: int
    retried: int
    gave_up: list[str]
    spent_usd: float
    total_spent_usd: float
    priced: bool
    prompt_tokens: int
    completion_tokens: int
    budget_reached: bool
    budget_usd: float | None
    records_in_file: int
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


class TeacherGaveUp(XlangError):
    """The teacher failed one request `max_attempts` times: the run stops."""


class _Rejected(Exception):
    """A job whose answers were rejected `max_attempts` times (or whose source record is missing)."""


def request_seed(seed: int, key: str, turn: int, attempt: int) -> int:
    """The seed of one attempt of one request: the same in every run, different for every attempt."""
    digest = hashlib.sha256(f"{seed}\x1f{key}\x1f{turn}\x1f{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def record_cost(record: Mapping[str, Any], price: Price | None) -> float:
    """What a record or reject line cost: its `cost_usd`, else its `usage` at today's price."""
    cost = record.get("cost_usd")
    if isinstance(cost, int | float):
        return float(cost)
    usage = record.get("usage")
    if price is not None and isinstance(usage, dict):
        return price.cost(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
    return 0.0


class GenerationRun:
    """The state of one run over a plan (see the module docstring)."""

    def __init__(
        self,
        *,
        config: GenerateConfig,
        languages: Mapping[str, Any],
        teacher: Any,
        jobs: Sequence[Job],
        existing: ExistingOutput,
        price: Price | None,
        reporter: Reporter,
    ) -> None:
        self.config = config
        self.languages = languages
        self.teacher = teacher
        self.teacher_description = dict(teacher.describe())
        self.price = price
        self.reporter = reporter
        self.existing = existing
        self.pending = [job for job in jobs if job.key not in existing.keys]
        self.counters = Counters(total=len(jobs), skipped=len(jobs) - len(self.pending), priced=price is not None)
        self.out = Path(config.out)
        self.records = AppendOnlyFile(self.out, config.fsync_every)
        self.rejects = AppendOnlyFile(rejects_path(self.out), config.fsync_every)
        self.near = NearDuplicates(config.near_duplicate)
        self.rng = random.Random(config.seed)
        self.gave_up: list[str] = []
        self.notes: list[str] = []
        self.stopping = False
        self.budget_reached = False
        self.fatal: BaseException | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sources: dict[str, asyncio.Future[dict[str, Any] | None]] = {}
        self._source_records: dict[str, dict[str, Any]] = {}
        for record in existing.records:
            if config.translate_from and record.get("origin") == NATIVE and record.get("lang") == config.translate_from:
                self._source_records[record["key"]] = record
            for turn in record["conversations"]:
                if isinstance(turn, dict) and turn.get("from") == "gpt" and isinstance(turn.get("value"), str):
                    lane = self._lane(str(record.get("lang")), str(record.get("origin")))
                    self.near.add(lane, self.near.signature(turn["value"]), record["key"])

    @staticmethod
    def _lane(lang: str, origin: str) -> str:
        """Answers are compared within one language and origin: a translation may resemble a native answer."""
        return f"{lang}/{origin}"

    # --- the run ------------------------------------------------------------------------------------

    async def run(self) -> GenerateResult:
        config = self.config
        self.requests = asyncio.Semaphore(config.concurrency)
        self.budget = Budget(config.budget_usd, self.price, config.max_tokens, spent_usd=self.existing.spent_usd)
        self.per_minute = TokenBucket(config.requests_per_minute) if config.requests_per_minute else None
        self.tokens = TokenBucket(config.tokens_per_minute) if config.tokens_per_minute else None
        loop = asyncio.get_running_loop()
        needed = {job.source_key for job in self.pending if job.source_key is not None}
        for job in self.pending:
            if job.key in needed:
                self._sources[job.key] = loop.create_future()
        self.reporter.start(self.counters)
        ticker = asyncio.create_task(self._tick())
        try:
            await self._schedule()
        finally:
            ticker.cancel()
            self.records.close()
            self.rejects.close()
            try:
                await self.teacher.aclose()
            finally:
                self.reporter.finish(self.counters)
        if self.fatal is not None:
            raise self.fatal
        return GenerateResult(
            out=self.out,
            total=self.counters.total,
            written=self.counters.written,
            skipped=self.counters.skipped,
            rejected=self.counters.rejected,
            retried=self.counters.retried,
            gave_up=self.gave_up,
            spent_usd=self.counters.spent_usd,
            total_spent_usd=self.budget.spent_usd,
            priced=self.price is not None,
            prompt_tokens=self.budget.prompt_tokens,
            completion_tokens=self.budget.completion_tokens,
            budget_reached=self.budget_reached,
            budget_usd=config.budget_usd,
            records_in_file=len(self.existing.keys) + self.counters.written,
            notes=self.notes,
        )

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.reporter.update(self.counters)

    async def _schedule(self) -> None:
        window = asyncio.Semaphore(self.config.concurrency * 4)
        for job in self.pending:
            if self.stopping:
                break
            await window.acquire()
            if self.stopping:
                window.release()
                break
            task = asyncio.create_task(self._job(job))
            self._tasks.add(task)

            def finished(done: asyncio.Task[Any]) -> None:
                self._tasks.discard(done)
                window.release()

            task.add_done_callback(finished)
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def _fail(self, error: BaseException) -> None:
        """Stop the run for `error`: nothing new starts, requests in flight are cancelled."""
        if self.fatal is None:
            self.fatal = error
        self.stopping = True
        self.budget.stop()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()

    async def _job(self, job: Job) -> None:
        record = None
        spent = _Spend()
        try:
            record = await (self._native(job, spent) if job.origin == NATIVE else self._translated(job, spent))
        except BudgetExhausted:
            if not self.budget_reached and self.fatal is None:
                self.budget_reached = True
            self.stopping = True
        except _Rejected as rejected:
            self.counters.gave_up += 1
            self.gave_up.append(job.key)
            if str(rejected):
                self.notes.append(str(rejected))
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a teacher's own error type, or ours: either stops the run
            self._fail(error)
        finally:
            if record is None and spent.charged:
                # turns answered (and paid for) before the record was abandoned: the file's cost stays whole
                unfinished = Rejection("unfinished", "the record was abandoned after some of its turns were answered")
                self._log_reject(job, None, None, unfinished, "", spent.usage, spent.usd)
            source = self._sources.get(job.key)
            if source is not None and not source.done():
                source.set_result(record)

    # --- one record ---------------------------------------------------------------------------------

    async def _native(self, job: Job, spent: _Spend) -> dict[str, Any]:
        spec = self.languages[job.lang]
        task = spec.prompts.tasks[job.task]
        questions = draw_questions(task.questions, task.turns, job.image.sha256, job.lang, job.task)
        system = system_prompt(spec.prompts, job.task)
        image, mime = image_payload(job.image.path, job.image.mime)
        pairs: list[tuple[str, str]] = []
        for turn, question in enumerate(questions):
            messages = native_messages(system, pairs, question, image, mime)
            answer = await self._ask(job, turn, messages, is_answer=True, has_image=True, spend=spent)
            pairs.append((question, answer))
        return self._write(job, conversation(pairs), spent)

    async def _translated(self, job: Job, spent: _Spend) -> dict[str, Any]:
        assert job.source_key is not None
        source = self._source_records.get(job.source_key)
        if source is None and job.source_key in self._sources:
            source = await self._sources[job.source_key]
        if source is None and self.budget_reached:
            raise BudgetExhausted
        if source is None:
            raise _Rejected(f"{job.key}: its source record {job.source_key} was not written in this run")
        target = self.languages[job.lang]
        turns: list[dict[str, str]] = []
        for index, turn in enumerate(source["conversations"]):
            speaker = turn.get("from")
            if speaker not in ("human", "gpt"):
                turns.append(dict(turn))
                continue
            text = strip_placeholder(turn["value"]) if speaker == "human" else turn["value"]
            messages = translate_messages(target.prompts, text)
            translated = await self._ask(job, index, messages, is_answer=speaker == "gpt", has_image=False, spend=spent)
            if speaker == "human" and IMAGE_PLACEHOLDER in turn["value"]:
                translated = f"{IMAGE_PLACEHOLDER}\n{translated}"
            turns.append({"from": speaker, "value": translated})
        return self._write(job, turns, spent)

    def _write(self, job: Job, turns: list[dict[str, str]], spent: _Spend) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": job.key,
            "image": record_image_path(job.image, self.out),
            "conversations": turns,
            "lang": job.lang,
            "task": job.task,
            "origin": job.origin,
        }
        if job.source_lang is not None:
            record["translated_from"] = job.source_lang
        record.update(
            {
                "teacher": self.teacher_description,
                "image_sha256": job.image.sha256,
                "key": job.key,
                "split": "train",
                "usage": {"prompt_tokens": spent.prompt_tokens, "completion_tokens": spent.completion_tokens},
                "cost_usd": round(spent.usd, 10) if self.price is not None else None,
            }
        )
        problem = check_record(record)
        if problem is not None:  # the turns are built here, so this is a bug, not a bad answer
            raise XlangError(f"record {job.key} is malformed ({problem}); please report this")
        self.records.append(record)
        self.counters.written += 1
        return record

    def _log_reject(
        self,
        job: Job,
        turn: int | None,
        attempt: int | None,
        problem: Rejection,
        text: str,
        usage: tuple[int, int] | None,
        cost: float,
    ) -> None:
        """A line in the rejects file: what was asked, why the answer was not kept, and what it cost."""
        self.rejects.append(
            {
                "key": job.key,
                "lang": job.lang,
                "task": job.task,
                "origin": job.origin,
                "turn": turn,
                "attempt": attempt,
                "reason": problem.reason,
                "detail": problem.detail,
                "text": text,
                "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]} if usage else None,
                "cost_usd": round(cost, 10) if self.price is not None else None,
            }
        )

    # --- one request --------------------------------------------------------------------------------

    async def _ask(
        self, job: Job, turn: int, messages: list[dict[str, Any]], *, is_answer: bool, has_image: bool, spend: _Spend
    ) -> str:
        """The accepted text of one request, after as many attempts as it takes (up to `max_attempts`)."""
        config = self.config
        spec = self.languages[job.lang]
        shape = RequestShape(has_image=has_image, text_bytes=text_bytes(messages), messages=len(messages))
        last: Rejection | None = None
        failures: Counter[str] = Counter()
        for attempt in range(1, config.max_attempts + 1):
            request = TeacherRequest(
                messages=messages,
                max_tokens=config.max_tokens,
                temperature=config.temperature,
                seed=request_seed(config.seed, job.key, turn, attempt),
                reply_language=job.lang,
                language=spec,
            )
            failure: TeacherRetryable | None = None
            async with self.requests:
                reserved = await self.budget.reserve(shape)
                reply = None
                usage: tuple[int, int] | None = None
                try:
                    if self.per_minute is not None:
                        await self.per_minute.take()
                    if self.tokens is not None:
                        await self.tokens.wait_positive()
                    self.counters.in_flight += 1
                    try:
                        reply = await self.teacher.complete(request)
                    finally:
                        self.counters.in_flight -= 1
                    if reply.extra.get("usage_reported") is not False:
                        usage = (reply.prompt_tokens, reply.completion_tokens)
                except TeacherRetryable as error:
                    failure = error
                    if error.usage is not None:  # an unusable reply that still cost its tokens
                        usage = error.usage
                finally:
                    cost = self.budget.settle(reserved, shape, usage, replied=reply is not None)
                    self.counters.spent_usd += cost
            if self.tokens is not None and usage is not None:
                self.tokens.spend(sum(usage))
            if failure is not None or reply is None:
                self.counters.retried += 1
                reason = failure.reason if failure is not None else "no reply"
                failures[reason] += 1
                if usage is not None:
                    self._log_reject(job, turn, attempt, Rejection("unusable-reply", reason), "", usage, cost)
                if attempt == config.max_attempts:
                    seen = "; ".join(f"{text} (x{count})" for text, count in failures.most_common())
                    raise TeacherGaveUp(
                        f"the teacher failed {config.max_attempts} attempts in a row ({job.key}, turn {turn + 1}): "
                        f"{seen}. Records written so far are kept; rerun to continue"
                    )
                retry_after = failure.retry_after if failure is not None else None
                await asyncio.sleep(
                    backoff_delay(attempt, config.backoff_s, config.backoff_max_s, retry_after, self.rng)
                )
                continue
            text = reply.text.strip()
            problem = answer_problem(text, spec, config, finish_reason=reply.finish_reason, is_answer=is_answer)
            signature = None
            lane = self._lane(job.lang, job.origin)
            if problem is None and is_answer:
                signature = self.near.signature(text)
                problem = near_duplicate_problem(self.near, lane, signature)
            if problem is not None:
                last = problem
                self.counters.rejected += 1
                self._log_reject(job, turn, attempt, problem, reply.text, usage, cost)
                continue
            if signature is not None:
                self.near.add(lane, signature, job.key)
            spend.add(usage, cost)
            return text
        assert last is not None
        raise _Rejected(
            f"{job.key}: turn {turn + 1} rejected {config.max_attempts} times (last: {last.reason}, {last.detail})"
        )


@dataclass
class _Spend:
    """Tokens and money of the accepted requests of one record."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0

    @property
    def charged(self) -> bool:
        return bool(self.prompt_tokens or self.completion_tokens or self.usd)

    @property
    def usage(self) -> tuple[int, int]:
        return self.prompt_tokens, self.completion_tokens

    def add(self, usage: tuple[int, int] | None, cost: float) -> None:
        if usage is not None:
            self.prompt_tokens += usage[0]
            self.completion_tokens += usage[1]
        self.usd += cost
