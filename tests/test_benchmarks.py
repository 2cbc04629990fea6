"""Benchmark files in their published formats, and the scores computed on replies to them."""

from __future__ import annotations

import base64
import io
import json
import statistics
from pathlib import Path

import pytest
import xlang_en
import xlang_ko
import xlang_zh
from PIL import Image

from xlang import plugins
from xlang.errors import XlangError
from xlang.eval.benchmarks import (
    ChoiceItem,
    OpenEndedItem,
    ShortAnswerItem,
    detect_format,
    item_image,
    load_benchmark,
)
from xlang.eval.scoring import (
    bootstrap_interval,
    chrf,
    circular_score,
    circular_variants,
    exact_match,
    extract_choice,
    first_rotation_accuracy,
    normalize_answer,
    pairwise_outcome,
    parse_judge_scores,
    parse_preference,
    rotation_of,
    win_rates,
)

HEADER = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "l2-category", "split"]
SMOKE = {
    code: Path(module.__file__).parent / "eval" / "smoke"
    for code, module in (("en", xlang_en), ("ko", xlang_ko), ("zh", xlang_zh))
}


def _png_base64(color: tuple[int, int, int] = (200, 30, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _tsv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    path.write_text("\n".join("\t".join(cells) for cells in [header, *rows]) + "\n", encoding="utf-8")
    return path


def _row(index: str, image: str, answer: str = "B", **cells: str) -> list[str]:
    values = {
        "index": index,
        "question": "What color is the square?",
        "hint": "",
        "A": "blue",
        "B": "red",
        "C": "green",
        "D": "",
        "answer": answer,
        "category": "attribute_recognition",
        "image": image,
        "l2-category": "finegrained_perception",
        "split": "dev",
        **cells,
    }
    return [values[name] for name in HEADER]


def _jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _error(path: Path | str, format: str | None = None) -> str:
    with pytest.raises(XlangError) as caught:
        load_benchmark(path, format)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- loading -------------------------------------------------------------------------------------------------


def test_mmbench_tsv_with_base64_image_and_index_reference(tmp_path: Path) -> None:
    path = _tsv(tmp_path / "mmbench.tsv", [_row("1", _png_base64()), _row("2", "1", answer="a", D="nan")])
    items = load_benchmark(path, "mmbench-tsv")
    assert detect_format(path) == "mmbench-tsv"
    assert [type(item) for item in items] == [ChoiceItem, ChoiceItem]
    first, second = items
    assert first.options == (("A", "blue"), ("B", "red"), ("C", "green"))  # the empty D column is no option
    assert (first.id, first.answer, first.row, first.source) == ("1", "B", 2, str(path))
    assert second.answer == "A" and second.image == first.image and isinstance(first.image, bytes)
    image = item_image(second)
    assert image.size == (8, 6) and image.getpixel((0, 0)) == (200, 30, 30)


def test_tsv_rows_count_lines_of_quoted_multiline_cells(tmp_path: Path) -> None:
    path = tmp_path / "mmbench.tsv"
    lines = ["\t".join(HEADER), "\t".join(_row("1", "skimage:coffee")).replace("What color", '"What\ncolor', 1)]
    lines[1] = lines[1].replace("square?", 'square?"', 1)
    lines.append("\t".join(_row("2", "skimage:coffee", answer="E")))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    message = _error(path)
    assert message.startswith(f"{path} row 4: answer 'E' is not among the options A, B, C")


def test_tsv_image_may_be_a_package_reference_or_a_relative_path(tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    Image.new("RGB", (4, 4), (0, 90, 0)).save(tmp_path / "pics" / "square.png")
    path = _tsv(tmp_path / "mmbench.tsv", [_row("1", "pics/square.png"), _row("2", "sklearn:flower.jpg")])
    local, packaged = load_benchmark(path)
    assert local.image == "pics/square.png" and item_image(local).getpixel((1, 1)) == (0, 90, 0)
    assert packaged.image == "sklearn:flower.jpg"  # resolved by xlang.vlm.images when the image is needed


def test_llava_bench_published_folder_layout(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    Image.new("RGB", (5, 5), (10, 20, 30)).save(tmp_path / "images" / "001.jpg")
    _jsonl(
        tmp_path / "questions.jsonl",
        [
            {"question_id": 0, "image": "001.jpg", "text": "What is shown?", "category": "conv"},
            {"question_id": 1, "image": "001.jpg", "text": "Describe it.", "category": "detail"},
        ],
    )
    _jsonl(
        tmp_path / "answers_gpt4.jsonl",
        [
            {"question_id": 1, "text": "A dark blue square.", "model_id": "gpt-4-0314"},
            {"question_id": 0, "text": "A square.", "model_id": "gpt-4-0314"},
        ],
    )
    _jsonl(tmp_path / "context.jsonl", [{"id": "001", "image": "001.jpg", "caption": "A plain square."}])
    items = load_benchmark(tmp_path)
    assert detect_format(tmp_path) == "llava-bench"
    assert [(i.id, i.reference, i.category, i.context) for i in items] == [
        ("0", "A square.", "conv", "A plain square."),
        ("1", "A dark blue square.", "detail", "A plain square."),
    ]
    assert items[0].image == "images/001.jpg" and items[0].source == str(tmp_path / "questions.jsonl")
    assert item_image(items[1]).size == (5, 5)


def test_short_answer_jsonl_accepts_answer_lists_single_answers_and_vqa_annotations(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "vqa.jsonl",
        [
            {"question_id": 7, "image": "skimage:coffee", "question": "What drink?", "answers": ["espresso", "coffee"]},
            {"question_id": 8, "image": None, "question": "What is 2+2?", "answer": "4"},
            {
                "question_id": 9,
                "image": "skimage:coffee",
                "question": "Color?",
                "answers": [{"answer": "red", "answer_confidence": "yes"}, {"answer": "red"}, {"answer": "dark red"}],
            },
        ],
    )
    items = load_benchmark(path)
    assert detect_format(path) == "short-answer"
    assert [(type(i), i.id, i.answers) for i in items] == [
        (ShortAnswerItem, "7", ("espresso", "coffee")),
        (ShortAnswerItem, "8", ("4",)),
        (ShortAnswerItem, "9", ("red", "dark red")),
    ]
    assert item_image(items[1]) is None


@pytest.mark.parametrize("code", ["en", "ko", "zh"])
def test_shipped_smoke_suites_load_in_every_language(code: str) -> None:
    folder = SMOKE[code]
    open_ended = load_benchmark(f"file://{folder / 'open_ended.jsonl'}")
    choices = load_benchmark(folder / "multiple_choice.tsv", "mmbench-tsv")
    short = load_benchmark(folder / "short_answer.jsonl", "short-answer")
    assert all(isinstance(i, OpenEndedItem) for i in open_ended) and len(open_ended) == 6
    assert sorted(i.category for i in open_ended) == [
        "complex",
        "complex",
        "conversation",
        "conversation",
        "detail",
        "detail",
    ]
    assert all(isinstance(i, ChoiceItem) and len(i.options) == 4 for i in choices) and len(choices) == 6
    assert all(isinstance(i, ShortAnswerItem) and 2 <= len(i.answers) <= 3 for i in short) and len(short) == 6
    for item in choices:  # replying with the right option's text picks it, in every rotation
        for variant in circular_variants(item):
            assert extract_choice(dict(variant.options)[variant.answer], variant.options) == variant.answer
    assert all(len({normalize_answer(a) for a in item.answers}) == len(item.answers) for item in short)
    for items in (open_ended, choices, short):
        photos = [i.image for i in items]
        assert {photos.count(ref) for ref in ("skimage:coffee", "skimage:chelsea", "sklearn:flower.jpg")} == {2}
    if code != "en":  # written in the language itself, not left in English
        spec = plugins.get_language(code, plugins.make_plugin_manager())
        texts = [i.question for i in open_ended + choices + short] + [i.reference for i in open_ended]
        assert all(spec.is_reply_in_language(text) for text in texts)
    assert [i.id for i in choices] == [i.id for i in load_benchmark(SMOKE["en"] / "multiple_choice.tsv")]
    assert [i.answer for i in choices] == [i.answer for i in load_benchmark(SMOKE["en"] / "multiple_choice.tsv")]


BAD_INPUTS = [
    (
        "missing answer column",
        "mmbench.tsv",
        None,
        lambda p: _tsv(
            p,
            [[c for n, c in zip(HEADER, _row("1", "skimage:coffee"), strict=True) if n != "answer"]],
            [n for n in HEADER if n != "answer"],
        ),
        "row 1: column 'answer' is missing",
    ),
    (
        "empty answer cell",
        "mmbench.tsv",
        None,
        lambda p: _tsv(p, [_row("1", "skimage:coffee"), _row("2", "skimage:coffee", answer="")]),
        "row 3: column 'answer' is missing a value",
    ),
    (
        "answer not an option",
        "mmbench.tsv",
        None,
        lambda p: _tsv(p, [_row("1", "skimage:coffee", answer="D")]),
        "row 2: answer 'D' is not among the options",
    ),
    (
        "bad base64",
        "mmbench.tsv",
        None,
        lambda p: _tsv(p, [_row("1", "skimage:coffee"), _row("2", "iVBORw0KGgo*not-base64")]),
        "row 3: column 'image' is neither base64",
    ),
    (
        "base64 of no image",
        "mmbench.tsv",
        None,
        lambda p: _tsv(p, [_row("1", base64.b64encode(b"plain text, no picture" * 4).decode())]),
        "row 2: column 'image' decodes from base64 but is not an image",
    ),
    (
        "missing image file",
        "mmbench.tsv",
        None,
        lambda p: _tsv(p, [_row("1", "pics/nowhere.png")]),
        "row 2: image file",
    ),
    (
        "duplicate index",
        "mmbench.tsv",
        None,
        lambda p: _tsv(p, [_row("1", "skimage:coffee"), _row("2", "skimage:coffee"), _row("1", "skimage:coffee")]),
        "row 4: id 1 repeats row 2",
    ),
    (
        "ragged row",
        "mmbench.tsv",
        None,
        lambda p: _tsv(p, [_row("1", "skimage:coffee")[:-2]]),
        "row 2: 10 cells where the header has 12",
    ),
    ("empty tsv", "mmbench.tsv", "mmbench-tsv", lambda p: p.write_text("", encoding="utf-8"), "the file is empty"),
    ("header only", "mmbench.tsv", None, lambda p: _tsv(p, []), "holds no items"),
    (
        "bad json",
        "open.jsonl",
        "llava-bench",
        lambda p: p.write_text(
            '{"question_id": 1, "image": null, "text": "Hi?", "answer": "Hello."}\n{"question_id": 2,\n',
            encoding="utf-8",
        ),
        "row 2: not valid JSON",
    ),
    (
        "missing reference",
        "open.jsonl",
        "llava-bench",
        lambda p: _jsonl(p, [{"question_id": 1, "image": None, "text": "Hi?"}]),
        "row 1: column 'answer' is missing",
    ),
    (
        "missing image column",
        "short.jsonl",
        "short-answer",
        lambda p: _jsonl(p, [{"question_id": 1, "question": "Hi?", "answers": ["x"]}]),
        "row 1: column 'image' is missing",
    ),
    (
        "image path missing",
        "short.jsonl",
        None,
        lambda p: _jsonl(p, [{}, {"question_id": 1, "image": "x.png", "question": "Hi?", "answers": ["x"]}][1:]),
        "row 1: image file",
    ),
    (
        "empty answers",
        "short.jsonl",
        "short-answer",
        lambda p: _jsonl(p, [{"question_id": 1, "image": None, "question": "Hi?", "answers": []}]),
        "row 1: column 'answers' is empty",
    ),
    (
        "duplicate question id",
        "short.jsonl",
        "short-answer",
        lambda p: _jsonl(
            p, [{"question_id": i % 2, "image": None, "question": "Hi?", "answers": ["x"]} for i in range(3)]
        ),
        "row 3: id 0 repeats row 1",
    ),
    ("empty jsonl", "short.jsonl", "short-answer", lambda p: p.write_text("\n", encoding="utf-8"), "holds no items"),
]


@pytest.mark.parametrize(("name", "file", "format", "write", "expected"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_benchmark_files_name_the_file_and_row(tmp_path, name, file, format, write, expected) -> None:  # noqa: ANN001
    path = tmp_path / file
    write(path)
    message = _error(path, format)
    assert str(path) in message and expected in message, message


def test_llava_bench_folder_question_without_reference(tmp_path: Path) -> None:
    _jsonl(
        tmp_path / "questions.jsonl",
        [
            {"question_id": 0, "image": None, "text": "Hi?", "category": "conv"},
            {"question_id": 1, "image": None, "text": "Hm?", "category": "conv"},
        ],
    )
    _jsonl(tmp_path / "answers_gpt4.jsonl", [{"question_id": 0, "text": "Hello."}])
    message = _error(tmp_path)
    assert message == f"{tmp_path / 'questions.jsonl'} row 2: question_id 1 has no reference answer in the answers file"


# --- multiple choice -----------------------------------------------------------------------------------------


def _choice(options: tuple[str, ...] = ("blue", "red", "green", "yellow"), answer: str = "B") -> ChoiceItem:
    letters = "ABCDEFGH"
    return ChoiceItem(
        id="q1",
        image=None,
        question="What color?",
        hint="",
        options=tuple(zip(letters, options, strict=False)),
        answer=answer,
        category="",
        source="t",
        row=2,
    )


def test_circular_variants_rotate_texts_and_the_answer_follows() -> None:
    variants = circular_variants(_choice())
    assert [v.id for v in variants] == ["q1@r0", "q1@r1", "q1@r2", "q1@r3"]
    assert variants[0].options == _choice().options
    assert variants[1].options == (("A", "red"), ("B", "green"), ("C", "yellow"), ("D", "blue"))
    for variant in variants:
        assert dict(variant.options)[variant.answer] == "red"
        assert {text for _, text in variant.options} == {"blue", "red", "green", "yellow"}
    assert [v.answer for v in variants] == ["B", "A", "D", "C"]
    assert rotation_of("q1@r3") == ("q1", 3) and rotation_of("plain-id") == ("plain-id", 0)


def test_circular_score_fails_an_item_with_one_wrong_rotation() -> None:
    """A model that always answers `B` is right on the original order only: plain accuracy 1, circular 0."""
    variants = circular_variants(_choice())
    results = {"q1": [extract_choice("B", v.options) == v.answer for v in variants]}
    assert results == {"q1": [True, False, False, False]}
    assert first_rotation_accuracy(results) == 1.0 and circular_score(results) == 0.0
    both = {**results, "q2": [True, True, True, True], "q3": []}
    assert circular_score(both) == pytest.approx(1 / 3) and first_rotation_accuracy(both) == pytest.approx(2 / 3)
    with pytest.raises(XlangError):
        circular_score({})


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("B", "B"),
        ("b", "B"),
        ("B.", "B"),
        ("(B)", "B"),
        ("(B) red", "B"),
        ("B. red", "B"),
        ("B because the square is red", "B"),
        ("Answer: B", "B"),
        ("The answer is (C) green.", "C"),
        ("The correct option is D because it is yellow.", "D"),
        ("A cat sits there, so the answer is B.", "B"),
        ("A. blue", "A"),
        ("정답은 B입니다.", "B"),
        ("답: (C) 초록색", "C"),
        ("答案是B", "B"),
        ("答案：Ｃ。", "C"),
        ("我选（D）黄色", "D"),
        ("red", "B"),
        ("It is green.", "C"),
        ("A or B", None),
        ("Between A and C, I pick C.", None),
        ("The square is red. A is wrong; B is right.", None),
        ("I cannot tell.", None),
        ("", None),
        ("E", None),
        ("정답은 B 또는 C입니다.", None),
    ],
)
def test_extract_choice_on_real_replies(reply: str, expected: str | None) -> None:
    assert extract_choice(reply, _choice().options) == expected


def test_extract_choice_matches_option_text_in_other_scripts() -> None:
    options = (("A", "고양이"), ("B", "개"), ("C", "토끼"))
    assert extract_choice("고양이", options) == "A"
    assert extract_choice("사진 속 동물은 토끼입니다", options) == "C"
    assert extract_choice("猫", (("A", "狗"), ("B", "猫"))) == "B"
    assert extract_choice("Vitamin C", (("A", "Vitamin A"), ("B", "Vitamin C"), ("C", "Iron"))) == "B"


# --- short answers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("The Cat.", "cat"),
        ("  an   Espresso!! ", "espresso"),
        ("Two", "2"),
        ("ten cats", "10 cats"),
        ("3.5", "3.5"),
        ("1,000", "1000"),
        ("cat's toy", "cats toy"),
        ("ＲＥＤ", "red"),
        ("yes, it is", "yes it is"),
        ("红 色。", "红色"),
        ("빨간색입니다.", "빨간색입니다"),
        ("한 마리", "한 마리"),
        ("「猫」", "猫"),
    ],
)
def test_normalize_answer(text: str, normal: str) -> None:
    assert normalize_answer(text) == normal


@pytest.mark.parametrize(
    ("reply", "answers", "expected"),
    [
        ("Espresso.", ["espresso", "coffee"], True),
        ("An espresso", ["espresso"], True),
        ("One", ["1"], True),
        ("2 cats", ["two cats"], True),
        ("Red\nThe saucer is red.", ["red"], True),
        ("It is red.", ["red"], False),
        ("dark red", ["red"], False),
        ("猫。", ["猫", "猫咪"], True),
        ("红色的", ["红色"], False),
        ("고양이", ["고양이", "줄무늬 고양이"], True),
        ("", ["red"], False),
    ],
)
def test_exact_match(reply: str, answers: list[str], expected: bool) -> None:
    assert exact_match(reply, answers) is expected


# --- open answers --------------------------------------------------------------------------------------------


def test_chrf_sanity() -> None:
    reference = "컵에는 에스프레소가 들어 있습니다."
    assert chrf(reference, reference) == pytest.approx(100.0)
    assert chrf("컵에는에스프레소가 들어있습니다.", reference) == pytest.approx(100.0)  # spaces do not count
    assert chrf("xyz qrs", reference) == 0.0 and chrf("", reference) == 0.0
    partial = chrf("컵에는 커피가 있습니다.", reference)
    worse = chrf("사진에 고양이가 있습니다.", reference)
    assert 0 < worse < partial < 100
    assert chrf("ab", "abcdefgh") < chrf("abcdefgh", "ab")  # recall weighs more than precision (beta 2)
    assert chrf("", "") == 100.0


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("8 6", (8.0, 6.0)),
        ("8, 6\nAssistant 1 was more detailed.", (8.0, 6.0)),
        ("Assistant 1: 8\nAssistant 2: 6\nBoth are fine.", (8.0, 6.0)),
        ("8/10 6/10", (8.0, 6.0)),
        ("7.5 9", (7.5, 9.0)),
        ("어시스턴트 1: 9\n어시스턴트 2: 4", (9.0, 4.0)),
        ("９ ３", (9.0, 3.0)),
        ("8", None),
        ("8 6 7", None),
        ("12 6", None),
        ("The first answer is better.", None),
        ("", None),
        ("Assistant 1: 8\nAssistant 2 did well.", None),
    ],
)
def test_parse_judge_scores(reply: str, expected: tuple[float, float] | None) -> None:
    assert parse_judge_scores(reply) == expected


# --- pairwise preference -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("[[A]]", "A"),
        ("Answer one is more accurate. [[B]]", "B"),
        ("[[C]]", "tie"),
        ("[[tie]]", "tie"),
        ("A", "A"),
        ("b.", "B"),
        ("Tie", "tie"),
        ("[[A]] ... no, [[B]]", None),
        ("Both are good.", None),
    ],
)
def test_parse_preference(reply: str, expected: str | None) -> None:
    assert parse_preference(reply) == expected


def test_pairwise_outcome_cancels_position_bias() -> None:
    always_first = "A"  # a judge that prefers whatever it reads first
    assert pairwise_outcome(always_first, always_first) == "tie"
    assert pairwise_outcome("A", "B") == "win" and pairwise_outcome("B", "A") == "loss"
    assert pairwise_outcome("A", "tie") == "win" and pairwise_outcome("tie", "A") == "loss"
    assert pairwise_outcome("tie", "tie") == "tie"
    with pytest.raises(ValueError):
        pairwise_outcome("A", "C")


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_data() -> None:
    small = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    large = small * 16
    low, high = bootstrap_interval(small)
    assert low <= statistics.fmean(small) <= high and low < high
    large_low, large_high = bootstrap_interval(large)
    assert large_low <= statistics.fmean(large) <= large_high
    assert large_high - large_low < (high - low) / 2
    assert bootstrap_interval(small) == (low, high)  # the seed makes it reproducible
    median_low, median_high = bootstrap_interval(large, statistic=statistics.median)
    assert median_low <= 1.0 <= median_high


def test_win_rates() -> None:
    rates = win_rates(["win"] * 6 + ["tie"] * 2 + ["loss"] * 2)
    assert (rates["n"], rates["win"], rates["tie"], rates["loss"]) == (10, 0.6, 0.2, 0.2)
    for name in ("win", "tie", "loss"):
        low, high = rates[f"{name}_interval"]
        assert 0 <= low <= rates[name] <= high <= 1
    with pytest.raises(XlangError):
        win_rates([])
