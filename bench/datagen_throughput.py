"""Data-generation throughput: `xlang data generate`'s pipeline against the server's own capacity.

One `xlang serve` (a subprocess on 127.0.0.1, started with the same command users run) serves a small
real model: by default the tiny random LLaVA the tests build (2-layer Llama with SmolLM2's tokenizer, a
2-layer DINOv2 tower) from the converted SmolLM2 in the test cache; `--model DIR` serves another folder
(e.g. the demo's `runs/demo-ko/vit/model`). In the same run it measures:

- server: a minimal raw `httpx` async client at concurrency 32 sending the very requests the pipeline
  sends (the language's system prompt and task guidance, a question, the image as a data URL,
  `reply_language`, the same `max_tokens`), completions per second;
- xlang: the pipeline (`xlang.datagen.generate`, in process, with the `openai` teacher over HTTP, as the
  command runs it minus the CLI's start-up) at concurrency 1, 8 and 32, records per second, each run
  writing a fresh file;
- faults: one run against a second server started with `--faults 0.1` (every kind), checking that the
  file ends with exactly one record per key (nothing lost, nothing duplicated).

Only single-turn tasks are asked, so that a record is one request and the two rates compare directly.
Each figure is the median of `--repeats` runs. The last line is `samples_per_s xlang=N server=N ratio=R`
(ratio = xlang at concurrency 32 / server).

    .venv/bin/python bench/datagen_throughput.py            # a few minutes on 2 cores
    .venv/bin/python bench/datagen_throughput.py --quick    # well under a minute
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
XLANG = [sys.executable, "-m", "xlang.cli"]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
LANGS = ("en", "ko", "zh")
SINGLE_TURN_TASKS = ("caption", "object-centric", "location-centric", "atmosphere-centric")


def start_server(model: Path, env: dict[str, str], *extra: str) -> tuple[subprocess.Popen[str], str, str]:
    """`xlang serve --model DIR --port 0`, waited for until it prints its ready line: (process, url, name)."""
    process = subprocess.Popen(
        [*XLANG, "serve", "--model", str(model), "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()  # type: ignore[union-attr]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        if line.startswith("serving ") and " at http" in line:
            _, name, _, url = line.split()[:4]
            return process, url, name
    process.kill()
    raise SystemExit(f"xlang serve did not come up (exit status {process.poll()})")


def stop_server(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def tiny_llava(root: Path, cache_dir: Path) -> Path:
    """The tests' tiny LLaVA, built from the converted SmolLM2 in `cache_dir`."""
    sys.path.insert(0, str(REPO / "tests"))
    from serving import build_tiny_llava

    from xlang.assets.models import ensure_smollm2

    return build_tiny_llava(root, ensure_smollm2(cache_dir), cache_dir)


def export_photos(folder: Path, count: int) -> Path:
    from xlang.vlm.images import export_png

    for name in PHOTOS[:count]:
        export_png(f"skimage:{name}", folder / f"{name}.png")
    return folder


def languages() -> dict[str, Any]:
    from xlang import plugins

    pm = plugins.make_plugin_manager()
    return {code: plugins.get_language(code, pm) for code in LANGS}


def pipeline_requests(photos: Path, specs: dict[str, Any], tasks: tuple[str, ...], max_tokens: int) -> list[dict]:
    """The chat-completions bodies the pipeline sends for every record (model name filled in later)."""
    from xlang.datagen.config import generate_config
    from xlang.datagen.plan import image_payload, plan_images
    from xlang.datagen.prompts import draw_questions, native_messages, system_prompt

    config = generate_config({"langs": ",".join(LANGS), "images": str(photos), "out": str(photos / "unused.jsonl")})
    bodies = []
    for image in plan_images(config):
        data, mime = image_payload(image.path, image.mime)
        for task in tasks:
            for code in LANGS:
                prompts = specs[code].prompts
                (question,) = draw_questions(prompts.tasks[task].questions, 1, image.sha256, code, task)
                messages = native_messages(system_prompt(prompts, task), [], question, data, mime)
                bodies.append(
                    {
                        "messages": messages,
                        "max_tokens": max_tokens,
                        "temperature": 0.7,
                        "seed": len(bodies),
                        "reply_language": code,
                        "valid_utf8": True,
                    }
                )
    return bodies


async def raw_capacity(url: str, model: str, bodies: list[dict], concurrency: int) -> float:
    """Completions per second of a bare httpx client sending `bodies` at `concurrency`."""
    import httpx

    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=None)) as client:

        async def one(body: dict) -> None:
            async with gate:
                response = await client.post(f"{url}/chat/completions", json={**body, "model": model})
                response.raise_for_status()
                assert response.json()["choices"][0]["message"]["content"] is not None

        started = time.monotonic()
        await asyncio.gather(*(one(body) for body in bodies))
        return len(bodies) / (time.monotonic() - started)


def pipeline_run(
    url: str, model: str, photos: Path, out: Path, specs: dict[str, Any], tasks: tuple[str, ...], **knobs: Any
) -> Any:
    from xlang.datagen import generate, generate_config
    from xlang.teachers.openai_compat import OpenAITeacherOptions, openai_teacher

    config = generate_config(
        {
            "langs": ",".join(LANGS),
            "images": str(photos),
            "out": str(out),
            "tasks": ",".join(tasks),
            "min_chars": 1,
            "allow_cutoff": True,
            "near_duplicate": 1.0,
            "backoff_s": 0.05,
            "backoff_max_s": 1.0,
            **knobs,
        }
    )
    teacher = openai_teacher(
        url=url, model=model, api_key=None, options=OpenAITeacherOptions(send_reply_language=True, timeout_s=600)
    )
    return generate(config, languages=specs, teacher=teacher)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="Model folder to serve (default: the tiny LLaVA).")
    parser.add_argument("--images", type=int, default=4, help="Photos to ask about (at most 6).")
    parser.add_argument("--tasks", type=int, default=2, help="Single-turn tasks per photo and language (1-4).")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="Runs per figure (the median is reported).")
    parser.add_argument("--quick", action="store_true", help="2 photos, 1 task, 1 repeat: proves it runs.")
    args = parser.parse_args()
    if args.quick:
        args.images, args.tasks, args.repeats = 2, 1, 1
    tasks = SINGLE_TURN_TASKS[: max(1, min(4, args.tasks))]
    cache = Path(os.environ.get("XLANG_TEST_CACHE", REPO / ".cache" / "xlang-test"))
    env = {key: value for key, value in os.environ.items() if not key.startswith("XLANG_")}
    env.update({"XLANG_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"})
    os.environ.update({"XLANG_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"})

    with tempfile.TemporaryDirectory(prefix="xlang-datagen-bench-") as scratch:
        root = Path(scratch)
        model = args.model or tiny_llava(root / "model", cache)
        photos = export_photos(root / "photos", max(1, min(len(PHOTOS), args.images)))
        specs = languages()
        bodies = pipeline_requests(photos, specs, tasks, args.max_tokens)
        records = len(bodies)
        shape = f"{args.images} photos x {len(LANGS)} languages x {len(tasks)} tasks"
        print(f"model {model}; {records} records a run ({shape})")

        rows: dict[str, list[float]] = {}
        process, url, name = start_server(model, env)
        try:
            asyncio.run(raw_capacity(url, name, bodies[: min(8, records)], 4))  # warm-up: first calls compile caches
            for repeat in range(args.repeats):
                rows.setdefault("server (raw httpx, concurrency 32)", []).append(
                    asyncio.run(raw_capacity(url, name, bodies, 32))
                )
                for concurrency in (1, 8, 32):
                    out = root / "runs" / f"c{concurrency}-{repeat}.jsonl"
                    result = pipeline_run(
                        url, name, photos, out, specs, tasks, concurrency=concurrency, max_tokens=args.max_tokens
                    )
                    assert result.written == records, f"{result.written} of {records} records written"
                    rows.setdefault(f"xlang data generate (concurrency {concurrency})", []).append(
                        result.written / result.seconds
                    )
        finally:
            stop_server(process)

        faulty, url, name = start_server(model, env, "--faults", "0.1", "--fault-seed", "3", "--fault-hang", "1")
        try:
            out = root / "runs" / "faults.jsonl"
            result = pipeline_run(
                url, name, photos, out, specs, tasks, concurrency=8, max_attempts=10, max_tokens=args.max_tokens
            )
            import httpx

            injected = httpx.get(f"{url}/xlang/stats", timeout=30).json()["faults"]
        finally:
            stop_server(faulty)
        keys = Counter(json.loads(line)["key"] for line in out.read_text(encoding="utf-8").splitlines())
        lost, duplicated = records - len(keys), sum(count - 1 for count in keys.values())
        rows["xlang with 10% faults (concurrency 8)"] = [result.written / result.seconds]

    width = max(len(label) for label in rows)
    print(f"\n{'':{width}}  {'median/s':>9}  {'min/s':>7}  {'max/s':>7}  runs")
    for label, values in rows.items():
        print(
            f"{label:{width}}  {statistics.median(values):9.2f}  {min(values):7.2f}  {max(values):7.2f}  {len(values)}"
        )
    faults = ", ".join(f"{kind} {count}" for kind, count in sorted(injected.items())) or "none"
    print(
        f"\nfaults run: {sum(injected.values())} injected ({faults}), {result.retried} retried, "
        f"{result.rejected} rejected; {len(keys)} of {records} keys written, {lost} lost, {duplicated} duplicated"
    )
    if lost or duplicated:
        raise SystemExit("the faults run lost or duplicated records")
    xlang_rate = statistics.median(rows["xlang data generate (concurrency 32)"])
    server_rate = statistics.median(rows["server (raw httpx, concurrency 32)"])
    print(f"samples_per_s xlang={xlang_rate:.2f} server={server_rate:.2f} ratio={xlang_rate / server_rate:.2f}")


if __name__ == "__main__":
    main()
