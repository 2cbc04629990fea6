"""The evaluation parts of the plugin contract, driven through a plugin the way a third party writes one:
judge prompts a language declares (`LanguageSpec.judge`) are what the judge is sent, in grading and in pairwise
preference, and a language without them gets xlang's English prompts; an evaluator registered through
`register_evaluators` and named by an `EvaluationSet` is the one `xlang eval run` calls, with its options, and
its metrics land under the set's name; a set naming an evaluator nobody registered stops before any model
loads; multiple choice in `generate` mode reads letters from free replies.

The models are tiny and random (SmolLM2's real tokenizer and chat template); the judge is a recording
server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field
from serving import ScriptedChatServer

from xlang import hookimpl, plugins
from xlang.contract import Options
from xlang.eval.judge import DEFAULT_COMPARE, DEFAULT_SCORE, DEFAULT_SYSTEM
from xlang.spec import ChatBits, EvaluationSet, JudgePrompts, LanguageSpec

REPO = Path(__file__).resolve().parent.parent
KO_SMOKE = REPO / "languages" / "ko" / "xlang_ko" / "eval" / "smoke"
JUDGE_REPLY = "7 8\n[[A]]"
"""What the recording judge always says: two scores on the first line (grading) and a verdict (preference)."""
JUDGED, PLAIN = "qjd", "qje"


def score_prompt(question: str, reference: str, answer: str, context: str, language: str) -> str:
    return (
        f"QJD-SCORE-MARK grade this.\nquestion: {question}\nreference: {reference}\nanswer: {answer}\n"
        f"context: {context}\nlanguage: {language}\nTwo scores first."
    )


def compare_prompt(question: str, first: str, second: str, language: str) -> str:
    return (
        f"QJD-COMPARE-MARK pick one.\nquestion: {question}\none: {first}\nother: {second}\n"
        f"in {language}: [[A]] or [[B]]"
    )


JUDGE_PROMPTS = JudgePrompts(
    system="QJD-SYSTEM-MARK: you grade Judgish answers.",
    score=score_prompt("{question}", "{reference}", "{answer}", "{context}", "{language}"),
    compare=compare_prompt("{question}", "{first}", "{second}", "{language}"),
)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def filled(template: str, **values: str) -> str:
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


# ------------------------------------------------------------------------------------------ the plugin


class TallyOptions(Options):
    weight: float = 1.0
    max_tokens: int = Field(default=4, gt=0)


def tally_evaluator(
    *, items: list[Any], answerer: Any, judge: Any | None, language: LanguageSpec, options: TallyOptions
) -> dict[str, float]:
    """Asks every item, and has the judge grade the first answer against the first accepted answer: each
    metric shows one input the suite handed over."""
    answers = [answerer.ask(item.id, item.question, None, max_tokens=options.max_tokens) for item in items]
    metrics = {"items": float(len(items)), "weight": options.weight, "judged": float(judge is not None)}
    if judge is not None:
        _, score = judge.grade(
            question=items[0].question, reference=items[0].answers[0], answer=answers[0].text, language=language
        )
        metrics["judge_score"] = score
    return metrics


class EvalPlugin:
    """A language plugin with its own judge prompts and evaluator, and one without either."""

    def __init__(self, data: Path) -> None:
        open_sets = (
            EvaluationSet(name="open", suite="smoke", format="llava-bench", uri=(data / "open.jsonl").as_uri()),
        )
        short = (data / "short.jsonl").as_uri()
        self.judged = LanguageSpec(
            code=JUDGED,
            name="Judgish",
            chat=ChatBits(system_prompt="You answer in Judgish."),
            judge=JUDGE_PROMPTS,
            evaluation_sets=(
                *open_sets,
                EvaluationSet(name="tallied", suite="plug", format="short-answer", uri=short, evaluator="tally"),
                EvaluationSet(
                    name="haunted", suite="ghost", format="short-answer", uri=short, evaluator="nobody-registers-this"
                ),
            ),
        )
        self.plain = LanguageSpec(
            code=PLAIN,
            name="Plainish",
            chat=ChatBits(system_prompt="You answer in Plainish."),
            evaluation_sets=open_sets,
        )

    @hookimpl
    def register_languages(self, register: Any) -> None:
        register(self.judged)
        register(self.plain)

    @hookimpl
    def register_evaluators(self, register: Any) -> None:
        register("tally", tally_evaluator, options=TallyOptions)


# ------------------------------------------------------------------------------------------ the judge


class RecordingJudge(ScriptedChatServer):
    """A fake judge on 127.0.0.1 (port 0), because no GPT-4-class judge can run here: it keeps every chat
    request it is sent and always replies `JUDGE_REPLY`."""

    def __init__(self) -> None:
        super().__init__(lambda _body: JUDGE_REPLY)

    def args(self) -> list[str]:
        return ["--judge", "openai", "--teacher-url", self.url, "--teacher-model", "recorder"]

    def conversations(self) -> list[tuple[str, str]]:
        """(system, user) of every request, in order; each request must be exactly those two messages."""
        found = []
        for body in self.requests:
            roles = [message["role"] for message in body["messages"]]
            assert roles == ["system", "user"], roles
            found.append((body["messages"][0]["content"], body["messages"][1]["content"]))
        return found


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models: on a shared machine, torch's threads waiting on each other cost more than the work."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass(frozen=True)
class Models:
    llava: Path
    lm: Path
    other_lm: Path


def randomized_lm(folder: Path, smollm2_dir: Path, seed: int) -> Path:
    """The tiny chat LM with wide random weights: it writes varied words (a narrow one writes only newlines),
    so that an answer put into a judge's prompt is visible there."""
    import torch
    from tiny_models import save_tiny_chat_lm
    from transformers import AutoModelForCausalLM

    save_tiny_chat_lm(folder, smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(folder)
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.2)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path, test_cache_dir: Path) -> Models:
    from serving import build_tiny_llava

    root = tmp_path_factory.mktemp("eval-plugins")
    randomized_lm(root / "lm", smollm2_dir, seed=1)
    llava = build_tiny_llava(root, smollm2_dir, test_cache_dir)  # around root/lm
    other = randomized_lm(root / "other-lm", smollm2_dir, seed=2)
    return Models(llava=llava, lm=root / "lm", other_lm=other)


@pytest.fixture
def eval_plugin(fresh_plugins: Any, tmp_path: Path) -> EvalPlugin:
    """The plugin, registered on this test's plugin manager, with its benchmark files: the first three Korean
    smoke questions of each kind (one open-ended question given a context for the judge)."""
    data = tmp_path / "plugin-data"
    data.mkdir()
    rows = lines(KO_SMOKE / "open_ended.jsonl")[:3]
    rows[1]["context"] = "An espresso cup on a red saucer, a spoon beside it."
    (data / "open.jsonl").write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), "utf-8")
    short = (KO_SMOKE / "short_answer.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:3]
    (data / "short.jsonl").write_text("".join(short), "utf-8")
    plugin = EvalPlugin(data)
    plugins.register_plugin(plugin, "xlang-evalish", fresh_plugins)
    return plugin


@pytest.fixture
def fake_judge() -> Iterator[RecordingJudge]:
    judge = RecordingJudge()
    yield judge
    judge.close()


def one_error_line(status: int, stderr: str) -> str:
    assert status == 2, stderr
    error_lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and error_lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return error_lines[0]


# ------------------------------------------------------------------------------------------ judge prompts


def test_the_judge_is_sent_the_language_plugins_prompts_or_the_english_defaults(
    xlang_cli: Any, eval_plugin: EvalPlugin, models: Models, fake_judge: RecordingJudge, tmp_path: Path
) -> None:
    """Grading (`eval run`) and pairwise preference (`eval compare`), each for a language with its own judge
    prompts and one without: every request is the plugin's system prompt and its template with every slot
    filled from the question, the reference, the context and the model's answers, or xlang's English prompts."""
    items = lines(tmp_path / "plugin-data" / "open.jsonl")
    system_of = {JUDGED: JUDGE_PROMPTS.system, PLAIN: DEFAULT_SYSTEM}
    name_of = {JUDGED: "Judgish", PLAIN: "Plainish"}
    spec_of = {JUDGED: eval_plugin.judged, PLAIN: eval_plugin.plain}

    for code in (JUDGED, PLAIN):
        out = tmp_path / f"run-{code}"
        fake_judge.requests.clear()
        run = ["eval", "run", "--model", str(models.llava), "--lang", code, "--no-text", "--out", str(out)]
        status, _, stderr = xlang_cli(*run, "--max-tokens", "8", *fake_judge.args())
        assert status == 0, stderr
        answers = {answer["key"]: answer["text"] for answer in lines(out / "answers.jsonl")}
        expected = []
        for item in items:
            values = {
                "question": item["text"],
                "reference": item["answer"],
                "answer": answers[f"open/{item['question_id']}"],
                "context": item.get("context", "(none)"),
                "language": name_of[code],
            }
            prompt = score_prompt(**values) if code == JUDGED else filled(DEFAULT_SCORE, **values)
            expected.append((system_of[code], prompt))
        assert fake_judge.conversations() == expected
        assert any(answers.values()), "the model's answers must be visible in the prompts"
        marked = [("MARK" in system) or ("MARK" in user) for system, user in fake_judge.conversations()]
        assert all(marked) if code == JUDGED else not any(marked)
        # the verdict to those requests is what was scored: 8 against the reference's 7
        in_language = [spec_of[code].is_reply_in_language(answers[f"open/{i['question_id']}"]) for i in items]
        relative = sum(800 / 7 if ok else 0.0 for ok in in_language) / len(items)
        metrics = json.loads((out / "results.json").read_text(encoding="utf-8"))["metrics"]
        assert metrics["open/relative_score"] == pytest.approx(relative, abs=1e-4)

    fake_judge.requests.clear()
    out = tmp_path / "compare"
    compare = ["eval", "compare", "--models", str(models.lm), str(models.other_lm), "--out", str(out)]
    status, _, stderr = xlang_cli(*compare, "--lang", JUDGED, "--lang", PLAIN, "--max-tokens", "8", *fake_judge.args())
    assert status == 0, stderr
    # each model answers the first language's questions, then the second's, into one book per model
    first, second = ([answer["text"] for answer in lines(out / f"answers-{side}.jsonl")] for side in "AB")
    assert len(first) == len(second) == 2 * len(items)
    assert all(a != b for a, b in zip(first, second, strict=True)), "the two models must answer differently"
    expected = []
    for number, (code, item) in enumerate((code, item) for code in (JUDGED, PLAIN) for item in items):
        for shown in ((first[number], second[number]), (second[number], first[number])):  # both orders
            values = {"question": item["text"], "first": shown[0], "second": shown[1], "language": name_of[code]}
            prompt = compare_prompt(**values) if code == JUDGED else filled(DEFAULT_COMPARE, **values)
            expected.append((system_of[code], prompt))
    assert fake_judge.conversations() == expected
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["languages"][JUDGED]["tie"] == results["languages"][PLAIN]["tie"] == 1.0  # [[A]] both ways


# ------------------------------------------------------------------------------------------ plugin evaluators


def test_a_set_naming_a_plugin_evaluator_is_scored_by_it_with_its_options(
    xlang_cli: Any, eval_plugin: EvalPlugin, models: Models, fake_judge: RecordingJudge, tmp_path: Path
) -> None:
    """The `tally` evaluator gets the set's items, an answerer that keeps answers in the output folder, the
    judge of `--judge`, the language and its options from xlang.toml; its metrics land as `tallied/...`."""
    (tmp_path / "xlang.toml").write_text(
        "[stages.evaluate.evaluator_options.tally]\nweight = 2.5\nmax_tokens = 3\n", encoding="utf-8"
    )
    out = tmp_path / "out"
    run = ["eval", "run", "--model", str(models.lm), "--lang", JUDGED, "--suite", "plug", "--no-text"]
    status, _, stderr = xlang_cli(*run, "--out", str(out), *fake_judge.args())
    assert status == 0, stderr
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert [(entry["name"], entry["evaluator"], entry["items"]) for entry in results["sets"]] == [
        ("tallied", "tally", 3)
    ]
    metrics = results["metrics"]
    assert (metrics["tallied/items"], metrics["tallied/weight"], metrics["tallied/judged"]) == (3, 2.5, 1)
    assert metrics["tallied/judge_score"] == 8  # the recording judge's second score
    assert not any(name.startswith("tallied/exact_match") for name in metrics)  # not the format's evaluator

    ids = [row["question_id"] for row in lines(tmp_path / "plugin-data" / "short.jsonl")]
    answers = lines(out / "answers.jsonl")
    assert [answer["key"] for answer in answers] == [f"tallied/{item_id}" for item_id in ids]
    assert all(1 <= answer["completion_tokens"] <= 3 for answer in answers)  # the option's max_tokens
    ((system, user),) = fake_judge.conversations()
    assert system == JUDGE_PROMPTS.system and user.startswith("QJD-SCORE-MARK") and answers[0]["text"] in user
    assert "reply_language_rate" in metrics  # the suite's reply metrics cover the plugin's answers too


def test_a_set_naming_an_evaluator_nobody_registered_stops_before_the_model_loads(
    xlang_cli: Any, eval_plugin: EvalPlugin, tmp_path: Path
) -> None:
    """The model folder passes the base-model check but no loader can read it: an error naming the set and
    the evaluator proves the names were checked before any model loaded."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}", encoding="utf-8")
    out = tmp_path / "out"
    run = ["eval", "run", "--model", str(model), "--lang", JUDGED, "--suite", "ghost", "--no-text", "--out", str(out)]
    line = one_error_line(*xlang_cli(*run)[::2])
    assert "'haunted'" in line and "'nobody-registers-this'" in line, line
    assert not out.exists()


# ------------------------------------------------------------------------------------------ multiple choice


@pytest.fixture(scope="module")
def llava_chat(models: Models) -> Any:
    from xlang.serve.engine import ChatModel

    return ChatModel.load(models.llava)


def korean_choice_items() -> tuple[LanguageSpec, list[Any]]:
    """Korean and the first three items of its smoke multiple-choice set (each asked in four rotations)."""
    from xlang.eval.benchmarks import load_benchmark

    korean = plugins.get_language("ko", plugins.make_plugin_manager())
    return korean, load_benchmark(KO_SMOKE / "multiple_choice.tsv", "mmbench-tsv")[:3]


def test_multiple_choice_generate_mode_reads_free_replies_and_likelihood_names_an_option(llava_chat: Any) -> None:
    from xlang.eval.answers import Answerer
    from xlang.eval.scoring import circular_variants, extract_choice

    korean, items = korean_choice_items()
    evaluator = plugins.get_strategy("evaluators", "multiple-choice", plugins.make_plugin_manager())
    found = {}
    asked = {}
    for mode in ("generate", "likelihood"):
        answerer = Answerer(llava_chat, korean, None)
        found[mode] = evaluator(
            {"mode": mode, "max_tokens": 6}, items=items, answerer=answerer, judge=None, language=korean
        )
        asked[mode] = answerer.asked
    assert set(found["generate"]) == set(found["likelihood"]) == {"circular_accuracy", "accuracy", "unparsed_share"}
    for metrics in found.values():
        assert all(0 <= value <= 1 for value in metrics.values()), metrics
        assert metrics["circular_accuracy"] <= metrics["accuracy"]

    variants = {variant.id: variant for item in items for variant in circular_variants(item)}
    for answers in asked.values():
        assert set(answers) == set(variants)  # every rotation of every item, in both modes
        assert all(answer.saw_image and not answer.language_bearing for answer in answers.values())
    likelihood_letters = {answer.text for answer in asked["likelihood"].values()}
    assert likelihood_letters <= {"A", "B", "C", "D"} and found["likelihood"]["unparsed_share"] == 0
    generated = asked["generate"].values()
    assert all(1 <= answer.completion_tokens <= 6 for answer in generated)  # free replies, cut at max_tokens
    assert any(answer.text.strip() not in ("A", "B", "C", "D") for answer in generated), "not a free reply"
    unparsed = [extract_choice(answer.text, variants[key].options) is None for key, answer in asked["generate"].items()]
    assert found["generate"]["unparsed_share"] == pytest.approx(sum(unparsed) / len(unparsed))


def test_unparsed_share_counts_the_replies_that_name_no_option(llava_chat: Any, tmp_path: Path) -> None:
    """Replies a model might write, kept in the answers book as a stopped evaluation leaves them (the real
    Answerer reads them instead of generating): two of twelve name no option."""
    from xlang.eval.answers import Answer, Answerer

    korean, items = korean_choice_items()
    replies = {
        # answer B; the rotations put its text at B, A, D, C
        "coffee-drink": ["B", "A. 에스프레소", "정답은 D입니다", "A 아니면 B"],  # the last names two letters
        # answer C (at C, B, A, D): the first reply is wrong, the second names nothing
        "coffee-spoon": ["D", "숟가락", "A", "D"],
        # answer A (at A, D, C, B): the first reply is the option's text
        "chelsea-animal": ["고양이", "(D)", "The answer is C.", "B"],
    }
    assert [item.id for item in items] == list(replies)
    book = tmp_path / "answers.jsonl"
    fingerprint = Answerer(llava_chat, korean, None).fingerprint
    with book.open("w", encoding="utf-8") as handle:
        for item_id, texts in replies.items():
            for rotation, text in enumerate(texts):
                answer = Answer(f"choice/{item_id}@r{rotation}", text, 0.1, 10, 1, True, False)
                handle.write(json.dumps({"fingerprint": fingerprint, **asdict(answer)}, ensure_ascii=False) + "\n")
    evaluator = plugins.get_strategy("evaluators", "multiple-choice", plugins.make_plugin_manager())
    answerer = Answerer(llava_chat, korean, book)
    answerer.scope = "choice"
    try:
        metrics = evaluator({"mode": "generate"}, items=items, answerer=answerer, judge=None, language=korean)
    finally:
        answerer.close()
    assert len(lines(book)) == 12, "a reply was generated instead of read from the book"
    assert metrics == pytest.approx({"circular_accuracy": 1 / 3, "accuracy": 2 / 3, "unparsed_share": 2 / 12})
