"""Scores for benchmark replies: pure functions on text, no model, so every rule here is testable alone.

- multiple choice: `circular_variants`, `extract_choice`, `circular_score`, `first_rotation_accuracy`
  (MMBench's CircularEval: an item counts only when every rotation of its options is answered right);
- short answers: `normalize_answer`, `exact_match` (VQA conventions);
- open answers: `chrf` (character n-gram F-score, which works for scripts written without spaces), and
  `parse_judge_scores` for a LLaVA-Bench judge's reply;
- pairwise preference: `parse_preference`, `pairwise_outcome` (both orders asked, position bias cancels),
  `bootstrap_interval`, `win_rates`.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from xlang.errors import XlangError
from xlang.eval.benchmarks import ChoiceItem

Preference = Literal["A", "B", "tie"]
Outcome = Literal["win", "tie", "loss"]

# --- multiple choice -----------------------------------------------------------------------------------------

ROTATION_MARK = "@r"


def circular_variants(item: ChoiceItem) -> list[ChoiceItem]:
    """One item per rotation of the option texts over the same letters (MMBench CircularEval).

    Rotation r shows at letter i the text that letter (i + r) mod n had; the answer letter follows its text.
    Ids are `ID@r0` (the original order) .. `ID@r{n-1}`.
    """
    letters = [letter for letter, _ in item.options]
    texts = [text for _, text in item.options]
    answer_index = letters.index(item.answer)
    count = len(letters)
    variants = []
    for rotation in range(count):
        options = tuple((letters[i], texts[(i + rotation) % count]) for i in range(count))
        answer = letters[(answer_index - rotation) % count]
        variants.append(replace(item, id=f"{item.id}{ROTATION_MARK}{rotation}", options=options, answer=answer))
    return variants


def rotation_of(variant_id: str) -> tuple[str, int]:
    """(original id, rotation) of a `circular_variants` id; rotation 0 for an id without a rotation mark."""
    base, mark, number = variant_id.rpartition(ROTATION_MARK)
    if mark and number.isdigit():
        return base, int(number)
    return variant_id, 0


_LEADING_CHOICE = re.compile(r"^[\s*_`'\"]*[(\[]?([A-H])(?:[)\].:,;]|$)")
_NAMED_CHOICE = re.compile(
    r"\b(?:answer|option|choice)(?:\s+is)?\s*[:=]?\s*[(\[]?([A-H])(?![A-Za-z0-9])", re.IGNORECASE
)
_STANDALONE_LETTER = re.compile(r"(?<![A-Za-z0-9])([A-H])(?![A-Za-z0-9])")


def extract_choice(reply: str, options: Sequence[tuple[str, str]]) -> str | None:
    """The option letter a reply picks, or None when it names none or several.

    In order: a reply that is a letter, or equals one option's text; a reply that opens with a marked letter
    (`B.`, `(B) ...`, `B: ...`); `Answer: B` / `answer is B`; else the one option letter standing alone in the
    reply (not inside a Latin word or number, so `B` in a sentence of another script counts; two different ones
    give None); else the one option whose text the reply contains. Letters are matched upper case, and a capital
    `A` opening a sentence before a lower-case word reads as an article, not a choice. The reply is
    NFKC-normalized first, so full-width letters count.
    """
    letters = [letter for letter, _ in options]
    text = unicodedata.normalize("NFKC", reply).strip()
    if not text:
        return None
    bare = text.strip(" \t\n.:;,!?()[]*`'\"")
    if len(bare) == 1 and bare.upper() in letters:
        return bare.upper()
    wanted = normalize_answer(text)
    by_text = {letter: normalize_answer(option) for letter, option in options}
    equal = [letter for letter, option in by_text.items() if option and option == wanted]
    if len(equal) == 1:
        return equal[0]
    leading = _LEADING_CHOICE.match(text)
    if leading and leading.group(1) in letters and not _reads_as_article(text, leading.start(1)):
        return leading.group(1)
    named = {match.group(1).upper() for match in _NAMED_CHOICE.finditer(text)} & set(letters)
    if len(named) == 1:
        return named.pop()
    if len(named) > 1:
        return None
    standalone = {
        match.group(1)
        for match in _STANDALONE_LETTER.finditer(text)
        if match.group(1) in letters and not _reads_as_article(text, match.start(1))
    }
    if standalone:
        return standalone.pop() if len(standalone) == 1 else None
    contained = [letter for letter, option in by_text.items() if option and option in wanted]
    return contained[0] if len(contained) == 1 else None


# `A cat...` opens with an article; `A or B`, `A is wrong` name a choice
_ARTICLE = re.compile(r"A\s+(?!(?:or|and|nor|is|was|seems|looks|would|could|can|might)\b)[a-z]")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|\n)[\s*_`'\"]*$")


def _reads_as_article(text: str, position: int) -> bool:
    """A capital `A` opening a sentence and followed by a lower-case word (`A cat sits...`) is an article."""
    return _ARTICLE.match(text, position) is not None and _SENTENCE_START.search(text[:position]) is not None


def circular_score(results: Mapping[str, Sequence[bool]]) -> float:
    """Share of items answered right in every rotation; `results` maps an item id to its rotations' outcomes
    (an item with no outcomes counts as wrong)."""
    _require_results(results)
    return sum(bool(outcomes) and all(outcomes) for outcomes in results.values()) / len(results)


def first_rotation_accuracy(results: Mapping[str, Sequence[bool]]) -> float:
    """Share of items right in the original option order: plain accuracy, reported next to the circular score."""
    _require_results(results)
    return sum(bool(outcomes) and bool(outcomes[0]) for outcomes in results.values()) / len(results)


def _require_results(results: Mapping[str, Sequence[bool]]) -> None:
    if not results:
        raise XlangError("no multiple-choice results to score; the benchmark produced no answers")


# --- short answers -------------------------------------------------------------------------------------------

_ARTICLES = frozenset({"a", "an", "the"})
_NUMBER_WORDS = {
    word: str(number)
    for number, word in enumerate(
        ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
    )
}
# Scripts written without spaces between words (Han, kana): spaces between two of their characters are dropped.
_UNSPACED = re.compile(
    r"(?<=[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff])\s+"
    r"(?=[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff])"
)


def normalize_answer(text: str) -> str:
    """The form exact match compares: NFKC, casefold, punctuation out, articles out, number words as digits.

    Punctuation (Unicode category P*) becomes a space, except an apostrophe, which is dropped (`cat's` -> `cats`),
    and a `.` between two digits, which stays (`2.5`); a `,` between digits is dropped (`1,000` -> `1000`).
    Then the words `a`, `an`, `the` are dropped, `zero`..`ten` become `0`..`10`, spaces collapse to one, and
    spaces between two characters of scripts written without spaces (Han, kana) go.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    characters = []
    for index, character in enumerate(text):
        if unicodedata.category(character).startswith("P"):
            between_digits = 0 < index < len(text) - 1 and text[index - 1].isdigit() and text[index + 1].isdigit()
            if character == "." and between_digits:
                characters.append(character)
            elif character in "'\u2019" or (character == "," and between_digits):
                continue
            else:
                characters.append(" ")
        else:
            characters.append(character)
    words = [_NUMBER_WORDS.get(word, word) for word in "".join(characters).split() if word not in _ARTICLES]
    return _UNSPACED.sub("", " ".join(words))


def exact_match(reply: str, answers: Iterable[str]) -> bool:
    """Whether the normalized reply, or its first line alone (a short answer followed by an explanation),
    equals one of the normalized accepted answers."""
    accepted = {normalize_answer(answer) for answer in answers} - {""}
    stripped = reply.strip()
    candidates = {normalize_answer(stripped), normalize_answer(stripped.split("\n", 1)[0])}
    return bool(candidates & accepted)


# --- open answers --------------------------------------------------------------------------------------------


def chrf(hypothesis: str, reference: str, n: int = 6, beta: float = 2.0) -> float:
    """Character n-gram F-score (chrF) in 0..100, whitespace removed; recall weighs `beta` times precision.

    Precision and recall are averaged over the orders 1..n that either text is long enough for (an order only
    one text reaches counts zero on the other side), then combined. Two empty texts score 100, one empty 0.
    """
    if n < 1 or beta <= 0:
        raise ValueError("chrf needs n >= 1 and beta > 0")
    hyp = "".join(hypothesis.split())
    ref = "".join(reference.split())
    if not hyp or not ref:
        return 100.0 if hyp == ref else 0.0
    precisions, recalls = [], []
    for order in range(1, n + 1):
        hyp_grams = Counter(hyp[i : i + order] for i in range(len(hyp) - order + 1))
        ref_grams = Counter(ref[i : i + order] for i in range(len(ref) - order + 1))
        if not hyp_grams and not ref_grams:
            break
        matches = sum((hyp_grams & ref_grams).values())
        precisions.append(matches / sum(hyp_grams.values()) if hyp_grams else 0.0)
        recalls.append(matches / sum(ref_grams.values()) if ref_grams else 0.0)
    precision = sum(precisions) / len(precisions)
    recall = sum(recalls) / len(recalls)
    if precision == 0 or recall == 0:
        return 0.0
    weight = beta * beta
    return 100.0 * (1 + weight) * precision * recall / (weight * precision + recall)


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _scores_in_line(line: str) -> list[float]:
    """Numbers of a line that are scores: not a label (`Assistant 1:`) nor a denominator (`/10`)."""
    scores = []
    for match in _NUMBER.finditer(line):
        before = line[: match.start()].rstrip()
        after = line[match.end() :].lstrip()
        if before.endswith("/") or after.startswith(":"):
            continue
        scores.append(float(match.group()))
    return scores


def parse_judge_scores(reply: str) -> tuple[float, float] | None:
    """The two scores (reference's, answer's) a LLaVA-Bench judge puts first, or None.

    Read from the first line (`8 6`, `8, 6`, `8/10 6/10`), or one score from each of the first two lines
    (`Assistant 1: 8` / `Assistant 2: 6`); labels before a colon and `/10` denominators are skipped. None when
    there are not exactly two numbers up front, or one is outside 0..10.
    """
    lines = [line for line in unicodedata.normalize("NFKC", reply).strip().splitlines() if line.strip()]
    if not lines:
        return None
    scores = _scores_in_line(lines[0])
    if len(scores) != 2 and len(lines) > 1:
        labelled = [_labelled_score(line) for line in lines[:2]]
        scores = [score for score in labelled if score is not None]
    if len(scores) != 2 or not all(0 <= score <= 10 for score in scores):
        return None
    return scores[0], scores[1]


def _labelled_score(line: str) -> float | None:
    """The one score after a label's colon (`Assistant 1: 8`), or None."""
    label, colon, rest = line.partition(":")
    scores = _scores_in_line(rest) if colon and label.strip() else []
    return scores[0] if len(scores) == 1 else None


# --- pairwise preference -------------------------------------------------------------------------------------

_VERDICT = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.IGNORECASE)
_VERDICTS: dict[str, Preference] = {"a": "A", "b": "B", "c": "tie", "tie": "tie"}


def parse_preference(reply: str) -> Preference | None:
    """The verdict of a pairwise judge: `[[A]]`, `[[B]]`, `[[C]]` (a tie, MT-Bench's convention) or `[[tie]]`
    anywhere in the reply, or a reply that is just `A`, `B`, `C` or `tie`; None when absent or contradictory."""
    text = unicodedata.normalize("NFKC", reply)
    marked = {_VERDICTS[match.group(1).casefold()] for match in _VERDICT.finditer(text)}
    if marked:
        return marked.pop() if len(marked) == 1 else None
    return _VERDICTS.get(text.strip(" \t\n.:;,!?()[]*`'\"").casefold())


def pairwise_outcome(first_order: str, swapped: str) -> Outcome:
    """Model A's outcome from two verdicts: `first_order` with A's answer shown first, `swapped` with it shown
    second. Two wins, or a win and a tie, win; verdicts that disagree tie, so a judge that always prefers the
    first answer gives a tie."""
    points = {"A": 1, "B": -1, "tie": 0}
    if first_order not in points or swapped not in points:
        raise ValueError(f"verdicts must be 'A', 'B' or 'tie', got {first_order!r} and {swapped!r}")
    total = points[first_order] - points[swapped]
    return "win" if total > 0 else "loss" if total < 0 else "tie"


def bootstrap_interval(
    values: Sequence[float],
    statistic: Callable[[Any], float] | None = None,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` (the mean by default) over `values`, reproducible by seed."""
    import numpy as np

    if len(values) == 0:
        raise XlangError("a bootstrap interval needs at least one value")
    if not 0 < level < 1 or resamples < 1:
        raise ValueError("bootstrap_interval needs 0 < level < 1 and resamples >= 1")
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    samples = data[rng.integers(0, len(data), size=(resamples, len(data)))]
    if statistic is None:
        estimates = samples.mean(axis=1)
    else:
        estimates = np.array([statistic(sample) for sample in samples], dtype=float)
    tail = (1 - level) / 2
    low, high = np.quantile(estimates, [tail, 1 - tail])
    return float(low), float(high)


def win_rates(outcomes: Sequence[str], resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Win, tie and loss shares of model A with bootstrap intervals:
    `{"n", "win", "tie", "loss", "win_interval", "tie_interval", "loss_interval"}` (intervals as [low, high])."""
    unknown = set(outcomes) - {"win", "tie", "loss"}
    if unknown:
        raise ValueError(f"outcomes must be 'win', 'tie' or 'loss', got {sorted(unknown)}")
    if not outcomes:
        raise XlangError("no pairwise outcomes to summarize; the comparison judged no pair")
    rates: dict[str, Any] = {"n": len(outcomes)}
    for name in ("win", "tie", "loss"):
        indicator = [1.0 if outcome == name else 0.0 for outcome in outcomes]
        rates[name] = sum(indicator) / len(indicator)
        rates[f"{name}_interval"] = list(bootstrap_interval(indicator, resamples=resamples, seed=seed, level=level))
    return rates
