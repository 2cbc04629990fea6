"""The parts of the data pipeline on their own, on real files and the installed language plugins: the
plan (images, tasks, questions), the output store (lock, resume reading, malformed lines), the checks
(language, length, near-duplicates), the budget's admission rule and the rate limits."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xlang.datagen.config import GenerateConfig, generate_config
from xlang.datagen.cost import Budget, BudgetExhausted, Price, RequestShape, price_for
from xlang.datagen.limits import TokenBucket, backoff_delay
from xlang.datagen.plan import (
    NATIVE,
    TRANSLATED,
    export_dataset_images,
    plan_images,
    plan_jobs,
    record_image_path,
    resolve_tasks,
)
from xlang.datagen.prompts import draw_questions
from xlang.datagen.store import AppendOnlyFile, OutputLock, read_existing
from xlang.datagen.validate import NearDuplicates, answer_problem
from xlang.errors import XlangError
from xlang.vlm.images import export_png

PHOTOS = ("astronaut", "coffee", "chelsea")


@pytest.fixture(scope="module")
def languages() -> dict:
    from xlang import plugins

    pm = plugins.make_plugin_manager()
    return {code: plugins.get_language(code, pm) for code in ("en", "ko", "zh")}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for index, name in enumerate(PHOTOS):
        export_png(f"skimage:{name}", folder / ("nested" if index == 2 else "") / f"{name}.png")
    return folder


def config(tmp_path: Path, **knobs: object) -> GenerateConfig:
    values = {"langs": "en,ko,zh", "images": str(tmp_path / "photos"), "out": str(tmp_path / "out" / "data.jsonl")}
    values.update(knobs)
    return generate_config(values)


# --- config ---------------------------------------------------------------------------------------------


def test_config_knobs_are_checked_by_name_and_value(tmp_path: Path) -> None:
    assert config(tmp_path, tasks="caption, conversation").tasks == ("caption", "conversation")
    with pytest.raises(XlangError, match="unknown data setting.*'concurency'.*concurrency"):
        config(tmp_path, concurency=3)
    with pytest.raises(XlangError, match="min_chars .* is above max_chars"):
        config(tmp_path, min_chars=50, max_chars=10)
    with pytest.raises(XlangError, match=r"needs images, out: pass --images DIR, --out FILE.jsonl"):
        generate_config({"langs": "en"})
    with pytest.raises(XlangError, match="price of 'm' must be"):
        config(tmp_path, prices={"m": [1.0]})
    assert config(tmp_path, prices='{"m": [1, 4]}').prices == {"m": (1.0, 4.0)}  # as XLANG_DATA__PRICES gives it


def test_prices_come_from_the_setting_over_the_table_and_are_required_for_a_budget() -> None:
    assert price_for("gpt-4o-mini", {}, required=True) == Price("gpt-4o-mini", 0.15, 0.60)
    assert price_for("gpt-4o-mini", {"gpt-4o-mini": (1.0, 2.0)}, required=True).usd_per_m_output == 2.0
    assert price_for("my-model", {}, required=False) is None
    with pytest.raises(XlangError, match="set data.prices"):
        price_for("my-model", {}, required=True)


# --- images and tasks -----------------------------------------------------------------------------------


def test_a_folder_is_searched_recursively_sorted_and_deduplicated(tmp_path: Path, photos: Path) -> None:
    (tmp_path / "photos").symlink_to(photos)
    copy = photos / "zz-copy-of-coffee.png"
    copy.write_bytes((photos / "coffee.png").read_bytes())
    try:
        images = plan_images(config(tmp_path))
    finally:
        copy.unlink()
    assert [image.label.removeprefix(str(tmp_path / "photos") + "/") for image in images] == [
        "astronaut.png",
        "coffee.png",
        "nested/chelsea.png",
    ]
    assert all(len(image.sha256) == 64 and image.mime == "image/png" for image in images)
    assert record_image_path(images[2], tmp_path / "out" / "data.jsonl") == "../photos/nested/chelsea.png"
    assert len(plan_images(config(tmp_path, max_images=2))) == 2


def test_a_corrupt_image_stops_the_plan_naming_the_file(tmp_path: Path, photos: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "good.png").write_bytes((photos / "coffee.png").read_bytes())
    broken = folder / "broken.jpg"
    broken.write_bytes((photos / "coffee.png").read_bytes()[:300])
    with pytest.raises(XlangError, match=f"image {broken} cannot be decoded"):
        plan_images(config(tmp_path))


def test_datasets_give_images_from_bytes_or_paths_written_once_as_png(tmp_path: Path, photos: Path) -> None:
    import datasets

    raw = [(photos / f"{name}.png").read_bytes() for name in PHOTOS[:2]]
    datasets.Dataset.from_dict({"picture": raw, "n": [1, 2]}).save_to_disk(str(tmp_path / "saved"))
    from PIL import Image

    jpeg = io.BytesIO()
    Image.open(photos / "coffee.png").convert("RGB").save(jpeg, format="JPEG")
    datasets.Dataset.from_dict({"image": [jpeg.getvalue()]}).to_parquet(str(tmp_path / "rows.parquet"))
    (tmp_path / "rows.jsonl").write_text(json.dumps({"image": str(photos / "astronaut.png")}) + "\n")

    saved = plan_images(config(tmp_path, images=str(tmp_path / "saved"), image_column="picture"))
    assert [image.path.parent.name for image in saved] == ["data.images", "data.images"]
    assert not saved[0].path.exists()  # planning writes nothing
    assert export_dataset_images(saved) == 2 and export_dataset_images(saved) == 0
    assert Image.open(saved[0].path).format == "PNG" and saved[0].path.stem == saved[0].sha256

    from_parquet = plan_images(config(tmp_path, images=str(tmp_path / "rows.parquet")))
    from_jsonl = plan_images(config(tmp_path, images=str(tmp_path / "rows.jsonl")))
    assert len(from_parquet) == 1 and len(from_jsonl) == 1 and from_jsonl[0].sha256 == saved[0].sha256
    with pytest.raises(XlangError, match="has no column 'img' .*picture"):
        plan_images(config(tmp_path, images=str(tmp_path / "saved"), image_column="img"))


def test_tasks_all_is_the_union_and_unknown_or_missing_tasks_name_both(tmp_path: Path, languages: dict) -> None:
    tasks = resolve_tasks(config(tmp_path), languages)
    assert set(tasks) == {"caption", "object-centric", "location-centric", "atmosphere-centric", "conversation"}
    with pytest.raises(XlangError, match="unknown task 'riddles'; the languages declare: caption"):
        resolve_tasks(config(tmp_path, tasks="riddles"), languages)
    fewer = languages["zh"].prompts.model_copy(update={"tasks": {"caption": languages["zh"].prompts.tasks["caption"]}})
    shrunk = {**languages, "zh": languages["zh"].model_copy(update={"prompts": fewer})}
    with pytest.raises(XlangError, match="language 'zh' .* has no task 'conversation'"):
        resolve_tasks(config(tmp_path, tasks="caption,conversation"), shrunk)
    silent = {**languages, "ko": languages["ko"].model_copy(update={"prompts": None})}
    with pytest.raises(XlangError, match="language 'ko' .* has no teacher prompts"):
        resolve_tasks(config(tmp_path), silent)


def test_jobs_put_the_source_before_its_translations(tmp_path: Path, photos: Path, languages: dict) -> None:
    (tmp_path / "photos").symlink_to(photos)
    plan = config(tmp_path, translate_from="en", tasks="caption", langs="ko,zh")
    jobs = plan_jobs(plan_images(plan), plan, resolve_tasks(plan, languages))
    assert [(job.lang, job.origin) for job in jobs[:3]] == [("en", NATIVE), ("ko", TRANSLATED), ("zh", TRANSLATED)]
    assert jobs[1].source_key == jobs[0].key and jobs[1].key.endswith("translated-from-en")
    assert len({job.key for job in jobs}) == len(jobs) == 9


def test_questions_are_drawn_the_same_way_every_time_and_distinct_in_a_conversation(languages: dict) -> None:
    task = languages["ko"].prompts.tasks["conversation"]
    first = draw_questions(task.questions, task.turns, "ab" * 32, "ko", "conversation")
    assert first == draw_questions(task.questions, task.turns, "ab" * 32, "ko", "conversation")
    assert len(first) == task.turns == len(set(first))
    draws = {tuple(draw_questions(task.questions, 1, f"{n:064x}", "ko", "conversation")) for n in range(40)}
    assert len(draws) > 1


# --- checks ---------------------------------------------------------------------------------------------


def test_answers_are_checked_for_language_length_cutoff_and_broken_text(tmp_path: Path, languages: dict) -> None:
    knobs = config(tmp_path, min_chars=5, max_chars=60)
    ko, en = languages["ko"], languages["en"]
    assert answer_problem("주황색 우주복을 입은 우주비행사입니다.", ko, knobs, finish_reason="stop") is None
    assert answer_problem("An astronaut in an orange suit.", ko, knobs, finish_reason="stop").reason == "wrong-language"
    assert answer_problem("우주비행사", en, knobs, finish_reason="stop").reason == "wrong-language"
    assert answer_problem("  ", ko, knobs, finish_reason="stop").reason == "empty"
    assert answer_problem("우주\ufffd비행사입니다", ko, knobs, finish_reason="stop").reason == "replacement-char"
    assert answer_problem("<image>\n우주비행사입니다", ko, knobs, finish_reason="stop").reason == "image-placeholder"
    assert answer_problem("우주", ko, knobs, finish_reason="stop").reason == "too-short"
    assert answer_problem("우주" * 40, ko, knobs, finish_reason="stop").reason == "too-long"
    assert answer_problem("우주비행사입니다", ko, knobs, finish_reason="length").reason == "cut-off"
    assert answer_problem("우주비행사입니다", ko, config(tmp_path, allow_cutoff=True), finish_reason="length") is None
    assert answer_problem("우주", ko, knobs, finish_reason="length", is_answer=False) is None


def test_near_duplicates_are_found_within_a_language_and_not_across() -> None:
    index = NearDuplicates(0.85)
    first = "The astronaut in an orange suit smiles in front of a flag and a model of the space shuttle."
    index.add("en", index.signature(first), "key-1")
    similar = index.match("en", index.signature(first.replace("smiles", "smiles broadly")))
    assert similar is not None and similar[1] == "key-1" and similar[0] >= 0.85
    assert index.match("en", index.signature("A grey cat sleeps on a red sofa beside a sunny window.")) is None
    assert index.match("de", index.signature(first)) is None
    exact_only = NearDuplicates(1.0)
    exact_only.add("en", exact_only.signature(first), "key-1")
    assert exact_only.match("en", exact_only.signature(first + " Indeed, it does.")) is None
    assert exact_only.match("en", exact_only.signature(first.upper())) is not None  # case and spacing ignored


# --- the output store -----------------------------------------------------------------------------------


def record_line(key: str, **extra: object) -> dict:
    return {"id": key, "key": key, "conversations": [{"from": "gpt", "value": "x"}], **extra}


def test_existing_records_are_read_with_their_cost_and_bad_lines_named(tmp_path: Path) -> None:
    out = tmp_path / "data.jsonl"
    writer = AppendOnlyFile(out, fsync_every=1)
    writer.append(record_line("a", cost_usd=0.5))
    writer.append(record_line("b", usage={"prompt_tokens": 1_000_000, "completion_tokens": 0}))
    writer.close()
    (tmp_path / "data.rejects.jsonl").write_text(json.dumps({"key": "c", "cost_usd": 0.25}) + "\n{broken\n")
    existing = read_existing(out, lambda line: line.get("cost_usd") or (2.0 if line.get("usage") else 0.0))
    assert existing.keys == {"a", "b"} and existing.spent_usd == 2.75

    for content, problem in (
        (b'{"key": "a", "conversations": []}\n{"key": \n', "data.jsonl:2 is not valid JSON"),
        (b'{"key": "a", "conversations": []}\n[1, 2]\n', "data.jsonl:2 is not a LLaVA record"),
        (b'{"id": "a", "conversations": []}\n', "data.jsonl:1 has no 'key'"),
        (b'{"key": "a", "conversations": []}', "data.jsonl:1 is cut off"),
    ):
        out.write_bytes(content)
        with pytest.raises(XlangError, match=problem):
            read_existing(out, lambda line: 0.0)
        assert out.read_bytes() == content


def test_a_second_run_on_the_same_output_is_refused_and_a_killed_ones_lock_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "data.jsonl"
    with OutputLock(out) as held:
        assert held.path.read_text().strip() == str(os.getpid())
        with pytest.raises(XlangError, match=f"being written by another xlang data generate \\(pid {os.getpid()}\\)"):
            OutputLock(out).acquire()
    assert not held.path.exists()

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from xlang.datagen.store import OutputLock; "
            f"OutputLock(Path({str(out)!r})).acquire(); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(XlangError, match=f"pid {holder.pid}"):
            OutputLock(out).acquire()
    finally:
        holder.kill()
        holder.wait()
    with OutputLock(out) as taken:  # the dead holder's lock file is still there; its lock is not
        assert taken.path.read_text().strip() == str(os.getpid())


# --- budget and limits ----------------------------------------------------------------------------------


def test_the_budget_lets_a_first_request_go_alone_then_reserves_the_worst_case() -> None:
    price = Price("m", 1_000_000.0, 1_000_000.0)  # a dollar per token keeps the arithmetic readable
    shape = RequestShape(has_image=True, text_bytes=100, messages=2)

    async def waits(budget: Budget) -> bool:
        try:
            await asyncio.wait_for(budget.reserve(shape), timeout=0.2)
        except TimeoutError:
            return True
        return False

    async def scenario() -> list[object]:
        budget = Budget(200.0, price, max_tokens=10)
        first = await budget.reserve(shape)  # no prompt seen yet: only its answer is known, and it goes alone
        events: list[object] = [first, await waits(budget)]
        budget.settle(first, shape, (20, 5), replied=True)  # 25 spent; the largest prompt is 20 tokens
        second = await budget.reserve(shape)  # 20 (the image and template at most) + 100 bytes of text + 10
        longer = RequestShape(has_image=True, text_bytes=103, messages=4)
        events += [second, budget.estimate(longer), await waits(budget)]  # 25 + 130 + 130 > 200
        budget.settle(second, shape, (90, 10), replied=True)  # 125 spent: 130 more can never fit
        try:
            await budget.reserve(shape)
        except BudgetExhausted:
            events.append(f"exhausted at {budget.spent_usd}")
        return events

    assert asyncio.run(scenario()) == [10.0, True, 130.0, 20 + 103 + 2 * 16 + 10, True, "exhausted at 125.0"]


def test_the_request_bucket_spaces_requests_and_the_backoff_honours_retry_after() -> None:
    import random

    async def timed() -> float:
        bucket = TokenBucket(per_minute=600, capacity=1)  # 10 a second, no burst
        start = time.monotonic()
        for _ in range(4):
            await bucket.take()
        return time.monotonic() - start

    assert 0.25 <= asyncio.run(timed()) < 1.5
    rng = random.Random(0)
    delays = [backoff_delay(attempt, 1.0, 8.0, None, rng) for attempt in (1, 2, 3, 4, 5, 6) for _ in range(50)]
    assert max(delays) <= 8.0 and min(delays) >= 0
    assert backoff_delay(1, 1.0, 8.0, 30.0, rng) == 30.0
