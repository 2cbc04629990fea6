"""The generation run with a teacher plugged in through `register_teachers` (a real plugin on a fresh
plugin manager, answering in the asked language from the request's seed): retries, rejects, give-ups,
near-duplicates and resumes, through `xlang data generate` in process and through `generate()`."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import SecretStr
from xlang_recipes.datagen_commands import data_group

from xlang import hookimpl, plugins
from xlang.contract import Options
from xlang.datagen import data_stats, generate, generate_config
from xlang.errors import XlangError
from xlang.teachers.base import TeacherReply, TeacherRequest, TeacherRetryable
from xlang.vlm.images import export_png

PHOTOS = ("astronaut", "coffee")


class WriterOptions(Options):
    wrong_language_first: bool = False
    """The first attempt of every request answers in another script (and is rejected)."""
    fail_first: bool = False
    """The first attempt of every request fails as a rate limit would."""
    always_fail: bool = False
    same_answer: bool = False
    """Every answer is the same sentence (near-duplicates from the second on)."""


class ScriptWriter:
    """A teacher that writes seeded random words in the scripts of the asked language."""

    def __init__(self, options: WriterOptions, languages: dict[str, Any], key: str | None) -> None:
        self.options = options
        self.languages = languages
        self.key = key
        self.seen: Counter[str] = Counter()
        self.seeds: list[int | None] = []
        self.usage = [0, 0]
        """Tokens of every reply sent back (what an endpoint would bill)."""

    def describe(self) -> dict[str, Any]:
        return {"name": "script-writer", "model": "writer-1"}

    async def aclose(self) -> None:
        pass

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        await asyncio.sleep(0)
        identity = json.dumps([request.reply_language, request.messages], sort_keys=True)
        self.seen[identity] += 1
        first = self.seen[identity] == 1
        self.seeds.append(request.seed)
        if self.options.always_fail or (self.options.fail_first and first):
            raise TeacherRetryable("HTTP 429: slow down", retry_after=0.01)
        spec = self.languages[request.reply_language]
        if self.options.same_answer:
            self.usage = [self.usage[0] + 50, self.usage[1] + 8]
            return TeacherReply("The very same answer every single time.", 50, 8, "writer-1", "stop")
        if self.options.wrong_language_first and first:
            spec = self.languages["ko" if request.reply_language != "ko" else "en"]
        rng = random.Random(request.seed)
        ranges = spec.reply_scripts or spec.scripts
        letters = [chr(point) for r in ranges[:1] for point in range(r.start, min(r.end, r.start + 3000) + 1)]
        text = " ".join("".join(rng.choice(letters) for _ in range(rng.randint(2, 6))) for _ in range(10))
        self.usage = [self.usage[0] + 50 + len(request.messages), self.usage[1] + 10]
        return TeacherReply(text, 50 + len(request.messages), 10, "writer-1", "stop")


@pytest.fixture(scope="module")
def languages() -> dict[str, Any]:
    pm = plugins.make_plugin_manager()
    return {code: plugins.get_language(code, pm) for code in ("en", "ko", "zh")}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        export_png(f"skimage:{name}", folder / f"{name}.png")
    return folder


def knobs(photos: Path, out: Path, **extra: Any) -> Any:
    values = {"langs": "en,ko,zh", "images": str(photos), "out": str(out), "min_chars": 2, "backoff_s": 0.01}
    return generate_config({**values, **extra})


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_plugin_teacher_is_chosen_by_name_with_its_options(
    fresh_plugins: Any, photos: Path, tmp_path: Path, languages: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[ScriptWriter] = []

    class WriterPlugin:
        @hookimpl
        def register_teachers(self, register: Any) -> None:
            def writer(*, options: WriterOptions, api_key: SecretStr | None) -> ScriptWriter:
                built.append(ScriptWriter(options, languages, api_key.get_secret_value() if api_key else None))
                return built[-1]

            register("script-writer", writer, options=WriterOptions)

    fresh_plugins.register(WriterPlugin(), name="writer-plugin")
    monkeypatch.setenv("XLANG_TEACHER_OPTIONS", json.dumps({"wrong_language_first": True}))
    monkeypatch.setenv("XLANG_TEACHER_API_KEY", "sk-plugin-secret-never-shown")
    out = tmp_path / "data.jsonl"
    args = ["generate", "--langs", "en,ko", "--images", str(photos), "--teacher", "script-writer"]
    args += ["--tasks", "caption,conversation", "--out", str(out), "--seed", "3"]
    monkeypatch.setenv("XLANG_DATA__MIN_CHARS", "2")
    result = CliRunner().invoke(data_group, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(built) == 1 and built[0].key == "sk-plugin-secret-never-shown"
    records = lines(out)
    assert len(records) == 2 * 2 * 2 and len({r["key"] for r in records}) == 8
    assert {r["teacher"]["name"] for r in records} == {"script-writer"}
    rejects = lines(tmp_path / "data.rejects.jsonl")
    # every request's first answer was in the wrong script: one reject per request (conversations ask 3)
    assert len(rejects) == 2 * 2 * (1 + 3) and {r["reason"] for r in rejects} == {"wrong-language"}
    assert {"key", "lang", "task", "attempt", "reason", "text"} <= set(rejects[0]) and rejects[0]["attempt"] == 1
    assert len(set(built[0].seeds)) == len(built[0].seeds)  # the retry after a reject is a new draw
    assert "sk-plugin-secret" not in out.read_text() + (tmp_path / "data.rejects.jsonl").read_text() + result.output

    written = out.read_bytes()
    unknown = CliRunner().invoke(data_group, [*args[:5], "--teacher", "nope", *args[7:]])
    assert unknown.exit_code == 2 and "unknown teacher 'nope'; known: " in unknown.output
    assert "script-writer" in unknown.output and out.read_bytes() == written


def test_answers_rejected_every_time_leave_their_record_for_a_rerun(
    photos: Path, tmp_path: Path, languages: dict[str, Any]
) -> None:
    out = tmp_path / "data.jsonl"
    price = {"writer-1": [1000.0, 3000.0]}
    config = knobs(photos, out, langs="en", tasks="conversation", max_attempts=2, prices=price)
    repeating = ScriptWriter(WriterOptions(same_answer=True), languages, None)
    first = generate(config, languages=languages, teacher=repeating)
    # the first answer is kept, every later one is a near-duplicate of it: the first conversation stops at
    # its second turn (its first turn, paid for, is logged as unfinished), the second at its first
    assert (first.written, len(first.gave_up), first.rejected) == (0, 2, 4) and not out.exists()
    reasons = Counter(line["reason"] for line in lines(tmp_path / "data.rejects.jsonl"))
    assert reasons == {"near-duplicate": 4, "unfinished": 1}
    varied = ScriptWriter(WriterOptions(), languages, None)
    second = generate(config, languages=languages, teacher=varied)
    assert (second.skipped, second.written, second.gave_up) == (0, 2, [])
    assert Counter(r["key"] for r in lines(out)).most_common(1)[0][1] == 1 and len(lines(out)) == 2
    # records and rejects together account for every token either teacher was paid for
    billed = [repeating.usage[0] + varied.usage[0], repeating.usage[1] + varied.usage[1]]
    stats = data_stats(out, draw=False)
    assert (stats.prompt_tokens, stats.completion_tokens) == tuple(billed)
    assert stats.cost_usd == pytest.approx((billed[0] * 1000 + billed[1] * 3000) / 1e6, rel=1e-9)

    chosen = tmp_path / "elsewhere.png"
    shown = CliRunner().invoke(data_group, ["stats", str(out), "--png", str(chosen)], catch_exceptions=False)
    assert shown.exit_code == 0 and chosen.stat().st_size > 1000
    for text in ("data.jsonl: 2 records", "conversation", "near-duplicate", "unfinished", "answer length", "cost $"):
        assert text in shown.output, text


def test_teacher_failures_are_retried_and_a_teacher_that_always_fails_stops_the_run(
    photos: Path, tmp_path: Path, languages: dict[str, Any]
) -> None:
    out = tmp_path / "data.jsonl"
    config = knobs(photos, out, tasks="caption")
    flaky = generate(config, languages=languages, teacher=ScriptWriter(WriterOptions(fail_first=True), languages, None))
    assert flaky.written == 6 and flaky.retried == 6 and flaky.rejected == 0
    before = out.read_bytes()
    down = knobs(photos, tmp_path / "other.jsonl", tasks="caption,object-centric", max_attempts=3)
    with pytest.raises(XlangError, match=r"the teacher failed 3 attempts in a row .*: HTTP 429: slow down \(x3\)"):
        generate(down, languages=languages, teacher=ScriptWriter(WriterOptions(always_fail=True), languages, None))
    assert not (tmp_path / "other.jsonl").exists() and out.read_bytes() == before


def test_translations_come_from_the_source_records_and_are_marked(
    photos: Path, tmp_path: Path, languages: dict[str, Any]
) -> None:
    out = tmp_path / "data.jsonl"
    native = generate(
        knobs(photos, out, langs="en", tasks="conversation"),
        languages=languages,
        teacher=ScriptWriter(WriterOptions(), languages, None),
    )
    assert native.written == 2
    teacher = ScriptWriter(WriterOptions(), languages, None)
    mixed = generate(
        knobs(photos, out, langs="en,ko,zh", tasks="conversation", translate_from="en"),
        languages=languages,
        teacher=teacher,
    )
    assert (mixed.skipped, mixed.written) == (2, 4)
    records = {(r["lang"], r["image_sha256"]): r for r in lines(out)}
    for (lang, sha), record in records.items():
        if lang == "en":
            assert record["origin"] == "native" and "translated_from" not in record
            continue
        source = records[("en", sha)]
        assert record["origin"] == "translated" and record["translated_from"] == "en"
        assert record["key"].endswith("-translated-from-en")
        assert [t["from"] for t in record["conversations"]] == [t["from"] for t in source["conversations"]]
        assert record["conversations"][0]["value"].startswith("<image>\n")
        assert all(languages[lang].is_reply_in_language(t["value"]) for t in record["conversations"])
    # each turn was sent alone, as text, inside the target language's translate prompt
    assert len(teacher.seeds) == 2 * 2 * 6
