"""`xlang data generate` and `xlang data stats` as users run them: subprocesses against a real `xlang serve`
of a tiny random LLaVA on 127.0.0.1 (clean, and with injected faults), on photos exported to a folder.

The served model answers in the asked language's scripts because the `openai` teacher sends the
`reply_language` extension (teacher option `send_reply_language`), so its random answers pass the
language check; the settings come from an `xlang.toml` (prices, teacher options, small answers)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serving import ServedModel, build_tiny_llava, served

from xlang.vlm.images import export_png

XLANG = [sys.executable, "-m", "xlang.cli"]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
LANGS = ("en", "ko", "zh")
ALL_TASKS = ("caption", "object-centric", "location-centric", "atmosphere-centric", "conversation")
KEY = "sk-datagen-test-0ddba11c0ffee-never-print"
PRICE = (1000.0, 2000.0)
"""USD per 1M prompt / completion tokens of the served model: large, so a few requests cost cents."""
FAULT_KINDS = "429+500+timeout+truncated+wrong-language+empty"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("datagen")


@pytest.fixture(scope="module")
def photos(workspace: Path) -> Path:
    folder = workspace / "photos"
    for name in PHOTOS:
        export_png(f"skimage:{name}", folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def tiny_llava(workspace: Path, smollm2_dir: Path, test_cache_dir: Path) -> Path:
    return build_tiny_llava(workspace / "model", smollm2_dir, test_cache_dir)


@pytest.fixture(scope="module")
def env(workspace: Path, test_cache_dir: Path) -> dict[str, str]:
    """The environment of every command: the shared cache, a key to keep secret, and an xlang.toml."""
    config = workspace / "xlang.toml"
    config.write_text(
        'teacher = "openai"\n'
        'teacher_model = "llava"\n'
        "[teacher_options]\n"
        "send_reply_language = true\n"
        "timeout_s = 60.0\n"
        "[data]\n"
        "max_tokens = 12\n"
        "min_chars = 1\n"
        "allow_cutoff = true\n"
        "backoff_s = 0.05\n"
        "backoff_max_s = 0.5\n"
        "[data.prices]\n"
        f"llava = [{PRICE[0]}, {PRICE[1]}]\n",
        encoding="utf-8",
    )
    variables = dict(os.environ)
    for name in list(variables):
        if name.startswith("XLANG_") or name == "OPENAI_API_KEY":
            variables.pop(name)
    variables.update(
        {
            "XLANG_CACHE_DIR": str(test_cache_dir),
            "XLANG_CONFIG": str(config),
            "XLANG_TEACHER_API_KEY": KEY,
            "HF_HUB_OFFLINE": "1",
            "COLUMNS": "200",
        }
    )
    return variables


@pytest.fixture(scope="module")
def clean_server(tiny_llava: Path, env: dict[str, str]) -> Iterator[ServedModel]:
    with served(tiny_llava, env=env) as server:
        yield server


@pytest.fixture(scope="module")
def faulty_server(tiny_llava: Path, env: dict[str, str]) -> Iterator[ServedModel]:
    args = ("--faults", f"0.3:{FAULT_KINDS}", "--fault-seed", "11", "--fault-hang", "1", "--retry-after", "0.1")
    with served(tiny_llava, env=env, args=args) as server:
        yield server


def xlang(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*XLANG, *args], env=env, capture_output=True, text=True, timeout=timeout)


def generate_args(url: str, photos: Path, out: Path, *extra: str, langs: str = "en,ko,zh") -> list[str]:
    return [
        "data",
        "generate",
        "--langs",
        langs,
        "--images",
        str(photos),
        "--out",
        str(out),
        "--teacher-url",
        url,
        *extra,
    ]


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def expected_keys(images: int, langs: tuple[str, ...], tasks: tuple[str, ...]) -> int:
    return images * len(langs) * len(tasks)


def assert_one_record_per_key(path: Path, images: int, tasks: tuple[str, ...], langs: tuple[str, ...] = LANGS) -> None:
    found = records(path)
    counts = Counter(record["key"] for record in found)
    assert max(counts.values()) == 1, [key for key, n in counts.items() if n > 1]
    assert len(found) == expected_keys(images, langs, tasks)
    assert {(r["image_sha256"], r["lang"], r["task"]) for r in found} == {
        (sha, lang, task) for sha in {r["image_sha256"] for r in found} for lang in langs for task in tasks
    }


def server_usage(before: dict[str, Any], after: dict[str, Any]) -> tuple[int, int, int]:
    return tuple(after[name] - before[name] for name in ("completions", "prompt_tokens", "completion_tokens"))


def assert_secret_kept(*texts: str) -> None:
    for text in texts:
        assert KEY not in text


@pytest.fixture(scope="module")
def clean_run(clean_server: ServedModel, photos: Path, workspace: Path, env: dict[str, str]) -> dict[str, Any]:
    """One run over every task, the server's counts before and after."""
    out = workspace / "clean" / "mvif.jsonl"
    before = clean_server.stats()
    result = xlang(env, *generate_args(clean_server.base_url, photos, out, "--tasks", "all", "--concurrency", "8"))
    return {"out": out, "result": result, "usage": server_usage(before, clean_server.stats())}


@pytest.mark.slow
def test_a_clean_run_writes_one_valid_record_per_image_language_and_task(
    clean_run: dict[str, Any], photos: Path, languages: dict[str, Any]
) -> None:
    result, out = clean_run["result"], clean_run["out"]
    assert result.returncode == 0, result.stderr
    assert_one_record_per_key(out, len(PHOTOS), ALL_TASKS)
    for record in records(out):
        turns = record["conversations"]
        assert [turn["from"] for turn in turns] == ["human", "gpt"] * (3 if record["task"] == "conversation" else 1)
        assert turns[0]["value"].startswith("<image>\n") and all(turn["value"].strip() for turn in turns)
        assert all(languages[record["lang"]].is_reply_in_language(t["value"]) for t in turns if t["from"] == "gpt")
        assert (out.parent / record["image"]).resolve() == (photos / Path(record["image"]).name).resolve()
        assert record["origin"] == "native" and record["split"] == "train" and record["id"] == record["key"]
        assert record["teacher"] == {"name": "openai", "url": record["teacher"]["url"], "model": "llava"}
    assert "records written" in result.stdout
    assert_secret_kept(result.stdout, result.stderr, out.read_text(encoding="utf-8"))


def test_the_cost_is_the_servers_usage_at_the_configured_price_and_stats_count_it(
    clean_run: dict[str, Any], env: dict[str, str]
) -> None:
    out = clean_run["out"]
    completions, prompt_tokens, completion_tokens = clean_run["usage"]
    stats = xlang(env, "data", "stats", str(out), "--json")
    assert stats.returncode == 0, stats.stderr
    figures = json.loads(stats.stdout)
    assert (figures["prompt_tokens"], figures["completion_tokens"]) == (prompt_tokens, completion_tokens)
    expected = (prompt_tokens * PRICE[0] + completion_tokens * PRICE[1]) / 1_000_000
    assert figures["cost_usd"] == pytest.approx(expected, rel=1e-9)
    assert completions >= len(records(out)) and figures["records"] == expected_keys(len(PHOTOS), LANGS, ALL_TASKS)
    assert figures["counts"] == {lang: {task: len(PHOTOS) for task in sorted(ALL_TASKS)} for lang in LANGS}
    assert Path(figures["png"]) == out.with_name("mvif.lengths.png") and Path(figures["png"]).stat().st_size > 1000


def test_with_faults_of_every_kind_no_record_is_lost_or_duplicated(
    faulty_server: ServedModel, photos: Path, workspace: Path, env: dict[str, str]
) -> None:
    out = workspace / "faults" / "mvif.jsonl"
    tasks = ("caption", "conversation")
    run = xlang(
        env,
        *generate_args(faulty_server.base_url, photos, out, "--tasks", ",".join(tasks), "--max-attempts", "12"),
        "--max-images",
        "3",
    )
    assert run.returncode == 0, run.stderr
    assert_one_record_per_key(out, 3, tasks)
    faults = faulty_server.stats()["faults"]
    assert sum(faults.values()) >= 8 and len(faults) >= 4, faults
    if faults.get("wrong-language"):
        reasons = Counter(line["reason"] for line in records(out.with_name("mvif.rejects.jsonl")))
        assert reasons["wrong-language"] >= 1
    assert_secret_kept(run.stdout, run.stderr)


def test_a_second_run_is_refused_and_a_run_killed_with_sigkill_resumes_without_loss_or_duplicates(
    clean_server: ServedModel, photos: Path, workspace: Path, env: dict[str, str]
) -> None:
    out = workspace / "killed" / "mvif.jsonl"
    tasks = ("caption", "conversation")
    total = expected_keys(len(PHOTOS), LANGS, tasks)
    args = generate_args(clean_server.base_url, photos, out, "--tasks", ",".join(tasks))
    process = subprocess.Popen(
        [*XLANG, *args, "--concurrency", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and len(out.read_bytes().splitlines()) >= 3:
            break
        time.sleep(0.02)
    second = xlang(env, *args)
    assert process.poll() is None, "the first run finished before the second one started"
    assert second.returncode == 2 and f"being written by another xlang data generate (pid {process.pid})" in (
        second.stderr
    )
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read()
    partial = records(out)  # whole lines only
    assert 3 <= len(partial) < total and out.read_bytes().endswith(b"\n")
    assert out.with_name("mvif.jsonl.lock").exists()  # the killed run's lock is left behind

    rerun = xlang(env, *args)
    assert rerun.returncode == 0, rerun.stderr
    assert_one_record_per_key(out, len(PHOTOS), tasks)
    assert records(out)[: len(partial)] == partial and not out.with_name("mvif.jsonl.lock").exists()


def test_a_budget_stops_the_run_cleanly_and_a_larger_one_finishes_it(
    clean_server: ServedModel, photos: Path, workspace: Path, env: dict[str, str]
) -> None:
    out = workspace / "budget" / "mvif.jsonl"
    tasks = ("caption", "conversation")
    budget = 1.0  # a request costs $0.1-0.4 here: enough for some of the 6 records, not all
    args = generate_args(clean_server.base_url, photos, out, "--tasks", ",".join(tasks), "--max-images", "1")
    stopped = xlang(env, *args, "--budget-usd", str(budget))
    assert stopped.returncode == 0, stopped.stderr
    line = next(text for text in stopped.stdout.splitlines() if text.startswith("budget reached"))
    count = len(records(out))
    assert 0 < count < expected_keys(1, LANGS, tasks)
    assert line.endswith(f"of ${budget:.4f} spent, {count} records; rerun with a larger --budget-usd to continue")
    spent = float(line.split("$")[1].split()[0])
    figures = json.loads(xlang(env, "data", "stats", str(out), "--json").stdout)
    assert figures["cost_usd"] <= budget and spent == pytest.approx(figures["cost_usd"], abs=1e-4)

    finished = xlang(env, *args, "--budget-usd", "100")
    assert finished.returncode == 0, finished.stderr
    assert_one_record_per_key(out, 1, tasks)


def test_translate_mode_writes_translated_records_marked_as_such(
    clean_server: ServedModel, photos: Path, workspace: Path, env: dict[str, str], languages: dict[str, Any]
) -> None:
    out = workspace / "translated" / "mvif.jsonl"
    args = generate_args(
        clean_server.base_url, photos, out, "--tasks", "caption,conversation", "--translate-from", "en"
    )
    run = xlang(env, *args, "--max-images", "2")
    assert run.returncode == 0, run.stderr
    assert_one_record_per_key(out, 2, ("caption", "conversation"))
    by_key = {(r["image_sha256"], r["task"], r["lang"]): r for r in records(out)}
    for (sha, task, lang), record in by_key.items():
        if lang == "en":
            assert record["origin"] == "native"
            continue
        source = by_key[(sha, task, "en")]
        assert record["origin"] == "translated" and record["translated_from"] == "en"
        assert len(record["conversations"]) == len(source["conversations"])
        assert record["conversations"][0]["value"].startswith("<image>\n")
        texts = [turn["value"].removeprefix("<image>\n") for turn in record["conversations"]]
        assert all(languages[lang].is_reply_in_language(text) for text in texts)


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/v1"


def test_bad_input_is_one_error_line_exit_2_and_leaves_the_output_as_it_was(
    clean_run: dict[str, Any], clean_server: ServedModel, photos: Path, workspace: Path, env: dict[str, str]
) -> None:
    out = workspace / "bad" / "mvif.jsonl"
    out.parent.mkdir(parents=True)
    existing = (clean_run["out"].read_text(encoding="utf-8").splitlines()[0] + "\n").encode()
    out.write_bytes(existing)
    url = clean_server.base_url
    broken_photos = workspace / "broken-photos"
    broken_photos.mkdir()
    (broken_photos / "fine.png").write_bytes((photos / "coffee.png").read_bytes())
    (broken_photos / "torn.png").write_bytes((photos / "coffee.png").read_bytes()[:500])
    dead = closed_port_url()

    cases = {
        "unreachable": (
            generate_args(dead, photos, out, "--tasks", "caption", "--max-attempts", "2"),
            [dead, "start the server or fix --teacher-url"],
        ),
        "unknown teacher": (
            generate_args(url, photos, out, "--teacher", "no-such-teacher"),
            ["unknown teacher 'no-such-teacher'; known: ", "openai"],
        ),
        "unknown task": (generate_args(url, photos, out, "--tasks", "riddles"), ["unknown task 'riddles'", "caption"]),
        "corrupt image": (
            generate_args(url, broken_photos, out),
            [str(broken_photos / "torn.png"), "cannot be decoded"],
        ),
    }
    for name, (args, expected) in cases.items():
        run = xlang(env, *args)
        errors = [text for text in run.stderr.splitlines() if text.strip()]
        assert run.returncode == 2, (name, run.stderr)
        assert len(errors) == 1 and errors[0].startswith("error: "), (name, run.stderr)
        assert all(part in errors[0] for part in expected), (name, errors[0])
        assert out.read_bytes() == existing, name
        assert_secret_kept(run.stdout, run.stderr)

    malformed = existing + b'{"key": "half a line", "conversations": [\n'
    out.write_bytes(malformed)
    run = xlang(env, *generate_args(url, photos, out, "--tasks", "caption"))
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert run.stderr.startswith(f"error: {out}:2 is not valid JSON") and "fix or remove that line" in run.stderr
    assert out.read_bytes() == malformed
    assert not out.with_name("mvif.rejects.jsonl").exists()


@pytest.fixture(scope="module")
def languages() -> dict[str, Any]:
    from xlang import plugins

    pm = plugins.make_plugin_manager()
    return {code: plugins.get_language(code, pm) for code in LANGS}
