"""The evaluation suite as users meet it: `xlang eval run` on a tiny random LLaVA (SmolLM2's real tokenizer)
judged by a tiny chat model behind a real `xlang serve` (held to guided choices, or left free and giving no
verdict); `xlang eval compare` against deliberately biased loopback judges; reply-language scoring on real
Korean, Chinese and English text; circular multiple choice by likelihood; `guided_choice` in `xlang serve`;
bad benchmark files and arguments, each one line and exit status 2."""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving import Launch, ScriptedChatServer, ServedModel, build_tiny_llava, stop

from xlang.eval.judge import PREFERENCE_CHOICES, SCORE_CHOICES

GUIDED = json.dumps({"send_choices": True})
SMOKE_METRICS = (
    "smoke-open/relative_score",
    "smoke-open/chrf",
    "smoke-choice/circular_accuracy",
    "smoke-short/exact_match",
    "reply_language_rate",
    "replacement_char_share",
    "chars_per_s",
)

Invoke = Callable[..., tuple[int, str, str]]


def spec(code: str) -> Any:
    from xlang import plugins

    return plugins.get_language(code, plugins.make_plugin_manager())


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The models here are tiny: on a shared machine, torch's threads waiting on each other cost ten times
    the work itself."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("eval")


@pytest.fixture(scope="module")
def judge_server(tiny_root: Path, smollm2_dir: Path, test_cache_dir: Path) -> Iterator[ServedModel]:
    """`xlang serve` of the tiny chat LM (the LLaVA's language half), started while the LLaVA is assembled."""
    from tiny_models import save_tiny_chat_lm

    env = {**os.environ, "XLANG_CACHE_DIR": str(test_cache_dir), "OMP_NUM_THREADS": "1"}
    for name in ("XLANG_CONFIG", "XLANG_DISABLE_PLUGIN_AUTOLOAD"):
        env.pop(name, None)
    save_tiny_chat_lm(tiny_root / "lm", smollm2_dir)
    launch = Launch(tiny_root / "lm", env=env, args=["--name", "tiny-judge"], cwd=tiny_root)
    try:
        build_tiny_llava(tiny_root, smollm2_dir, test_cache_dir)
        server = launch.ready()
    except BaseException:
        stop(launch.process)
        raise
    yield server
    assert stop(launch.process) == [0]  # SIGTERM is a clean shutdown


@pytest.fixture(scope="module")
def llava_dir(judge_server: ServedModel, tiny_root: Path) -> Path:
    return tiny_root / "llava"


@pytest.fixture(scope="module")
def lm_dir(judge_server: ServedModel, tiny_root: Path) -> Path:
    return tiny_root / "lm"


@pytest.fixture(scope="module")
def other_lm_dir(lm_dir: Path, tiny_root: Path) -> Path:
    """The tiny chat LM with other random weights (same tokenizer and template): a second model whose
    answers differ from the first's, for pairwise preference."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    target = tiny_root / "other-lm"
    shutil.copytree(lm_dir, target)
    model = AutoModelForCausalLM.from_pretrained(target)
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.2)
    model.save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def lm_chat(lm_dir: Path) -> Any:
    from xlang.serve.engine import ChatModel

    return ChatModel.load(lm_dir)


@pytest.fixture(scope="module")
def llava_chat(llava_dir: Path) -> Any:
    from xlang.serve.engine import ChatModel

    return ChatModel.load(llava_dir)


# ------------------------------------------------------------------------------------------- xlang eval run


@pytest.mark.slow
def test_eval_run_stops_at_a_judge_without_verdict_then_resumes_to_every_metric(
    xlang_cli: Invoke, llava_dir: Path, judge_server: ServedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A free-running tiny judge writes no scores: the run stops on the first judged row with one line, keeps
    its answers and writes no results. Held to guided choices, the same command resumes and finishes; run once
    more, it asks neither the model (no new answers) nor the judge (no new requests to the server)."""
    out = tmp_path / ("a-folder-name-long-enough-that-the-report-path-is-wider-than-any-terminal-" * 2) / "out"
    run = [
        "eval", "run", "--model", str(llava_dir), "--lang", "ko", "--suite", "smoke", "--no-text",
        "--out", str(out), "--max-tokens", "8",
        "--judge", "openai", "--teacher-url", judge_server.base_url, "--teacher-model", judge_server.name,
    ]  # fmt: skip

    status, _, stderr = xlang_cli(*run)
    assert status == 2, stderr
    error_lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and error_lines[0].startswith("error: "), stderr
    found = re.search(r"open_ended\.jsonl row (\d+): the judge gave no verdict", error_lines[0])
    assert found, stderr
    assert "rerun the same command to resume" in error_lines[0]
    assert not (out / "results.json").exists()
    kept = lines(out / "answers.jsonl")
    assert len(kept) == int(found[1])  # every question up to the unjudged one was answered, and kept

    from xlang.cli import console

    monkeypatch.setattr(console, "_width", 80)  # a terminal's width (rich's own default in a pipe)
    status, stdout, stderr = xlang_cli(*run, env={"XLANG_TEACHER_OPTIONS": GUIDED})
    assert status == 0, stderr
    assert str(out / "report.md") in stdout  # on one line, never wrapped: people copy it
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    for name in SMOKE_METRICS:
        assert name in results["metrics"], (name, results["metrics"])
    metrics = results["metrics"]
    assert 0 <= metrics["smoke-open/relative_score"] and 0 <= metrics["smoke-open/chrf"] <= 100
    for name in ("smoke-choice/circular_accuracy", "smoke-short/exact_match", "reply_language_rate"):
        assert 0 <= metrics[name] <= 1, name
    assert metrics["smoke-choice/unparsed_share"] == 0  # likelihood mode always names an option
    assert metrics["chars_per_s"] > 0
    assert results["judge"]["model"] == judge_server.name and results["saw_images"] is True
    assert (out / "report.md").is_file() and (out / "scores.png").stat().st_size > 0
    answers = lines(out / "answers.jsonl")
    keys = [answer["key"] for answer in answers]
    assert len(keys) == len(set(keys)), "a question answered before the stop was asked again"
    assert keys[: len(kept)] == [answer["key"] for answer in kept]
    verdicts = lines(out / "verdicts.jsonl")
    assert len(verdicts) == sum(key.startswith("smoke-open/") for key in keys)
    assert {verdict["reply"] for verdict in verdicts} <= set(SCORE_CHOICES)  # held to the guided choices
    korean = spec("ko")
    bearing = [answer["text"] for answer in answers if answer["language_bearing"]]
    in_korean = [korean.is_reply_in_language(text) for text in bearing]
    assert metrics["reply_language_rate"] == round(sum(in_korean) / len(bearing), 4)
    if not any(korean.is_reply_in_language(a["text"]) for a in answers if a["key"].startswith("smoke-open/")):
        # the random model's open answers are not Korean: zero, whatever the judge thought of them
        assert metrics["smoke-open/relative_score"] == 0 and metrics["smoke-open/chrf"] == 0

    requests_before = judge_server.stats()["requests"]
    status, _, stderr = xlang_cli(*run, env={"XLANG_TEACHER_OPTIONS": GUIDED})
    assert status == 0, stderr
    assert judge_server.stats()["requests"] == requests_before  # every verdict came from verdicts.jsonl
    assert len(lines(out / "answers.jsonl")) == len(answers)  # every answer came from answers.jsonl
    again = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert again["metrics"] == results["metrics"]


# ---------------------------------------------------------------------------- pairwise preference, eval report


class BiasedJudge:
    """A fake judge on 127.0.0.1, deliberately biased, because no real GPT-4-class judge can run here. The
    requested model name picks its bias: `always-first` answers [[A]] whatever it is shown; `prefers-A`
    recognises model A's answers (read from the comparison's answers-A.jsonl) and prefers whichever position
    holds one."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.prompts: list[str] = []
        self.chat = ScriptedChatServer(lambda body: self.verdict(body["model"], body["messages"][-1]["content"]))
        self.url = self.chat.url

    def verdict(self, model: str, prompt: str) -> str:
        self.prompts.append(prompt)
        if model == "always-first":
            return "[[A]]"
        favourite = {answer["text"] for answer in lines(self.out_dir / "answers-A.jsonl")}
        first = prompt.split("[Answer A]\n", 1)[1].split("\n[End of Answer A]", 1)[0]
        return "[[A]]" if first in favourite else "[[B]]"

    def close(self) -> None:
        self.chat.close()


def test_compare_cancels_position_bias_and_report_is_rebuilt(
    xlang_cli: Invoke, lm_dir: Path, other_lm_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "compare"
    judge = BiasedJudge(out)
    try:
        compare = [
            "eval", "compare", "--models", str(lm_dir), str(other_lm_dir), "--lang", "ko", "--out", str(out),
            "--max-tokens", "12", "--resamples", "200", "--judge", "openai", "--teacher-url", judge.url,
        ]  # fmt: skip
        status, _, stderr = xlang_cli(*compare, "--teacher-model", "always-first")
        assert status == 0, stderr
        results = json.loads((out / "results.json").read_text(encoding="utf-8"))
        rates = results["languages"]["ko"]
        questions = len(lines(out / "answers-A.jsonl"))
        assert rates["pairs"] == questions == 6 and len(judge.prompts) == 2 * questions  # both orders asked
        assert (rates["tie"], rates["win"], rates["loss"]) == (1.0, 0.0, 0.0)

        pairs = {
            a["key"]: (a["text"], b["text"])
            for a, b in zip(lines(out / "answers-A.jsonl"), lines(out / "answers-B.jsonl"), strict=True)
        }
        assert all(first != second for first, second in pairs.values()), "the two models must answer differently"
        status, _, stderr = xlang_cli(*compare, "--teacher-model", "prefers-A")
        assert status == 0, stderr
        results = json.loads((out / "results.json").read_text(encoding="utf-8"))
        rates = results["languages"]["ko"]
        assert len(lines(out / "answers-A.jsonl")) == questions  # the answers were reused, not asked again
        assert (rates["win"], rates["tie"], rates["loss"]) == (1.0, 0.0, 0.0)
        low, high = rates["win_interval"]
        assert low <= rates["win"] <= high and high == 1.0
        assert all(pair["verdicts"] == ["A", "B"] for pair in results["pairs"])
    finally:
        judge.close()

    (out / "report.md").unlink()
    (out / "preference.png").unlink()
    status, _, stderr = xlang_cli("eval", "report", str(out))
    assert status == 0, stderr
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| ko | 6 | 100% | 0% | 0% |" in report
    assert (out / "preference.png").stat().st_size > 0


# -------------------------------------------------------------------------------- reply language, real text

KOREAN = "컵에는 에스프레소가 들어 있습니다."
CHINESE = "杯子里装着浓缩咖啡。"
ENGLISH = "The cup holds an espresso."
BROKEN_KOREAN = "아만이\ufffd 있는이\ufffd이 있습니다."


def answer(key: str, text: str, *, seconds: float = 0.5, bearing: bool = True) -> Any:
    from xlang.eval.answers import Answer

    return Answer(
        key=key,
        text=text,
        seconds=seconds,
        prompt_tokens=10,
        completion_tokens=len(text),
        saw_image=True,
        language_bearing=bearing,
    )


@pytest.mark.parametrize(
    ("code", "in_language"),
    [("ko", {KOREAN, BROKEN_KOREAN}), ("zh", {CHINESE}), ("en", {ENGLISH})],
)
def test_reply_metrics_on_real_korean_chinese_and_english(code: str, in_language: set[str]) -> None:
    from xlang.eval.answers import reply_metrics

    texts = [KOREAN, CHINESE, ENGLISH, BROKEN_KOREAN]
    answers = [answer(str(number), text) for number, text in enumerate(texts)]
    answers.append(answer("letter", "B", bearing=False))  # a picked option letter says nothing of the language
    metrics = reply_metrics(answers, spec(code))
    assert metrics["reply_language_rate"] == len(in_language) / len(texts)
    assert metrics["replacement_char_share"] == 1 / len(answers)
    assert metrics["chars_per_s"] == pytest.approx(sum(len(text) for text in texts) / (0.5 * len(texts)))


def test_wrong_language_answer_scores_zero_chrf_from_a_resumed_book(lm_chat: Any, tmp_path: Path) -> None:
    """The answers are already in the book (as a stopped run leaves them), so the real Answerer reads them
    instead of generating: the reference answers score 100 chrF, the English one 0, though it is close in
    meaning."""
    from xlang.eval.answers import Answerer
    from xlang.eval.benchmarks import load_benchmark
    from xlang.eval.vqa import OpenEndedOptions, open_ended_evaluator

    korean = spec("ko")
    entry = next(entry for entry in korean.suite("smoke") if entry.format == "llava-bench")
    items = load_benchmark(entry.uri.removeprefix("file://"), entry.format)
    book = tmp_path / "answers.jsonl"
    fingerprint = Answerer(lm_chat, korean, None).fingerprint
    written = {item.id: item.reference for item in items}
    written[items[0].id] = "The cup holds an espresso with a thin light brown crema on top."
    with book.open("w", encoding="utf-8") as handle:
        for key, text in written.items():
            record = asdict(answer(f"{entry.name}/{key}", text))
            handle.write(json.dumps({"fingerprint": fingerprint, **record}, ensure_ascii=False) + "\n")

    answerer = Answerer(lm_chat, korean, book)
    answerer.scope = entry.name
    try:
        metrics = open_ended_evaluator(
            items=items, answerer=answerer, judge=None, language=korean, options=OpenEndedOptions()
        )
    finally:
        answerer.close()
    assert [a.text for a in answerer.asked.values()] == [written[item.id] for item in items]  # none generated
    assert metrics["chrf"] == pytest.approx(100 * (len(items) - 1) / len(items), abs=0.01)
    assert len(lines(book)) == len(items)


# ------------------------------------------------------------------------ multiple choice by likelihood


def test_circular_multiple_choice_by_likelihood_on_the_tiny_llava(llava_chat: Any) -> None:
    from xlang.eval.answers import Answerer
    from xlang.eval.benchmarks import load_benchmark
    from xlang.eval.vqa import MultipleChoiceOptions, multiple_choice_evaluator

    korean = spec("ko")
    entry = next(entry for entry in korean.suite("smoke") if entry.format == "mmbench-tsv")
    items = load_benchmark(entry.uri.removeprefix("file://"), entry.format)
    answerer = Answerer(llava_chat, korean, None)
    metrics = multiple_choice_evaluator(
        items=items, answerer=answerer, language=korean, options=MultipleChoiceOptions()
    )
    assert set(metrics) == {"circular_accuracy", "accuracy", "unparsed_share"}
    assert 0 <= metrics["circular_accuracy"] <= metrics["accuracy"] <= 1
    assert metrics["unparsed_share"] == 0
    rotations = sum(len(item.options) for item in items)
    assert len(answerer.asked) == rotations
    assert all(
        a.text in ("A", "B", "C", "D") and a.saw_image and not a.language_bearing for a in answerer.asked.values()
    )


def brute_force_choice(chat: Any, messages: list[dict[str, Any]], choices: list[str]) -> str:
    """Each choice scored by a full forward pass over prompt + choice + end of turn: the sum of its tokens'
    log-probabilities."""
    import torch

    inputs = chat.encode(messages)
    prompt = inputs["input_ids"]
    scores = []
    for choice in choices:
        ids = chat.tokenizer(choice, add_special_tokens=False)["input_ids"] + [chat.eos_ids[0]]
        full = torch.cat([prompt, torch.tensor([ids])], dim=1)
        with torch.inference_mode():
            logits = chat.model(**{**inputs, "input_ids": full, "attention_mask": torch.ones_like(full)}).logits
        logprobs = torch.log_softmax(logits[0].float(), dim=-1)
        start = prompt.shape[1]
        scores.append(sum(float(logprobs[start - 1 + offset, token]) for offset, token in enumerate(ids)))
    return choices[max(range(len(choices)), key=scores.__getitem__)]


def test_choose_equals_brute_force_likelihood_ranking(lm_chat: Any, llava_chat: Any) -> None:
    from PIL import Image

    from xlang.teachers import image_data_url

    choice_sets = [
        ["A", "B", "C", "D"],
        list(PREFERENCE_CHOICES),
        list(SCORE_CHOICES[::11]),
        ["고양이", "개", "노란빛이 도는 초록색", "cat", "杯子"],
    ]
    questions = ["사진 속 동물은 무엇인가요?", "这是什么？ Which answer is better?"]
    image = Image.new("RGB", (60, 40), (200, 120, 40))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    picture = {"type": "image_url", "image_url": {"url": image_data_url(buffer.getvalue())}}
    for chat, with_image in ((lm_chat, False), (llava_chat, True)):
        for question in questions:
            content: Any = [picture, {"type": "text", "text": question}] if with_image else question
            messages = [{"role": "user", "content": content}]
            for choices in choice_sets:
                chosen = chat.choose(messages, choices).text
                assert chosen == brute_force_choice(chat, messages, choices), (question, choices)
                assert chat.choose(messages, choices[::-1]).text == chosen  # the order of the list does not matter


# ------------------------------------------------------------------------------------ serve: guided_choice


def test_serve_guided_choice_returns_a_listed_reply_and_refuses_bad_requests(
    judge_server: ServedModel, lm_chat: Any
) -> None:
    url = f"{judge_server.base_url}/chat/completions"
    messages = [{"role": "user", "content": "이 동물은 무엇인가요?"}]
    choices = ["고양이", "dog", "[[C]]", "7 3"]
    response = httpx.post(
        url, json={"model": judge_server.name, "messages": messages, "guided_choice": choices}, timeout=60
    )
    assert response.status_code == 200, response.text
    reply = response.json()["choices"][0]
    assert reply["message"]["content"] in choices
    assert reply["message"]["content"] == lm_chat.choose(messages, choices).text  # the same model in process

    streamed = {"model": judge_server.name, "messages": messages, "guided_choice": choices, "stream": True}
    bad_bodies = {
        "streamed": streamed,
        "empty list": {"model": judge_server.name, "messages": messages, "guided_choice": []},
        "empty string": {"model": judge_server.name, "messages": messages, "guided_choice": ["A", ""]},
        "not strings": {"model": judge_server.name, "messages": messages, "guided_choice": [1, 2]},
        "not a list": {"model": judge_server.name, "messages": messages, "guided_choice": "A"},
        "too many": {"model": judge_server.name, "messages": messages, "guided_choice": [str(n) for n in range(300)]},
    }
    for name, body in bad_bodies.items():
        refused = httpx.post(url, json=body, timeout=60)
        assert refused.status_code == 400, name
        error = refused.json()["error"]
        assert error["param"] == "guided_choice" and error["type"] == "invalid_request_error", name


# ------------------------------------------------------------------------------------------------ bad input


def one_error_line(status: int, stderr: str) -> str:
    assert status == 2, stderr
    error_lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and error_lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return error_lines[0]


@pytest.fixture
def unloadable_model(tmp_path: Path) -> Path:
    """A folder that passes the base-model check (it has config.json) but that no loader can read: an
    error that names the benchmark proves the benchmark was checked before any model was loaded."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    return folder


def test_bench_with_a_missing_column_stops_before_the_model_loads(
    xlang_cli: Invoke, unloadable_model: Path, tmp_path: Path
) -> None:
    bench = tmp_path / "my_short.jsonl"
    rows = [
        {"question_id": "q1", "image": None, "question": "색은?", "answers": ["빨간색"]},
        {"question_id": "q2", "image": None, "question": "몇 개?"},
    ]
    bench.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    out = tmp_path / "out"
    args = ["eval", "run", "--model", str(unloadable_model), "--lang", "ko", "--no-text", "--out", str(out)]
    line = one_error_line(*xlang_cli(*args, "--bench", str(bench))[::2])
    assert f"{bench} row 2: column 'answers' is missing" in line
    assert not (out / "results.json").exists() and not (out / "answers.jsonl").exists()


def test_bench_with_an_image_that_does_not_exist(xlang_cli: Invoke, unloadable_model: Path, tmp_path: Path) -> None:
    bench = tmp_path / "pictures.jsonl"
    row = {"question_id": "q1", "image": "photos/missing.png", "question": "무엇?", "answers": ["고양이"]}
    bench.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    args = ["eval", "run", "--model", str(unloadable_model), "--lang", "ko", "--no-text", "--out", str(tmp_path / "o")]
    line = one_error_line(*xlang_cli(*args, "--bench", str(bench))[::2])
    assert f"{bench} row 1" in line and "missing.png does not exist" in line


def test_unknown_suite_lists_the_languages_suites(xlang_cli: Invoke, unloadable_model: Path, tmp_path: Path) -> None:
    args = ["eval", "run", "--model", str(unloadable_model), "--lang", "ko", "--suite", "nope", "--out", str(tmp_path)]
    line = one_error_line(*xlang_cli(*args)[::2])
    assert "'nope'" in line and "its suites: full, smoke" in line


def test_compare_without_a_judge_and_report_of_an_empty_folder(xlang_cli: Invoke, tmp_path: Path) -> None:
    compare = ["eval", "compare", "--models", "a", "b", "--lang", "ko", "--out", str(tmp_path / "c")]
    assert "needs a judge" in one_error_line(*xlang_cli(*compare)[::2])
    assert not (tmp_path / "c").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    line = one_error_line(*xlang_cli("eval", "report", str(empty))[::2])
    assert str(empty) in line and "results.json" in line
    assert list(empty.iterdir()) == []
