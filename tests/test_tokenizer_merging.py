"""The continued-BPE engine on toy words: gain order, budget, safety callback, required tokens."""

from __future__ import annotations

import pytest

from xlang.errors import XlangError
from xlang.tokenizer.merging import learn_merges


def _anything(left: str, right: str, has_new_operand: bool) -> bool:
    return True


def test_merges_follow_the_tokens_they_save() -> None:
    words = {("a", "b", "c"): 10, ("a", "b"): 5, ("x", "y"): 3}
    plan = learn_merges(words, vocab={"a", "b", "c", "x", "y"}, budget=2, acceptable=_anything)
    assert plan.merges == (("a", "b"), ("ab", "c"))
    assert plan.new_tokens == ("ab", "abc")
    assert plan.tokens_before == 30 + 10 + 6 and plan.tokens_after == 10 + 5 + 6


def test_budget_min_frequency_and_refusals() -> None:
    words = {("a", "b"): 10, ("c", "d"): 1, ("e", "f"): 4}
    refuse_ab = lambda left, right, new: left + right != "ab"  # noqa: E731
    plan = learn_merges(words, vocab=set("abcdef"), budget=5, acceptable=refuse_ab, min_frequency=2)
    assert plan.new_tokens == ("ef",)


def test_existing_tokens_are_never_recreated() -> None:
    plan = learn_merges({("a", "b"): 10}, vocab={"a", "b", "ab"}, budget=3, acceptable=_anything)
    assert plan.new_tokens == ()


def test_same_token_from_two_pairs_costs_one_entry() -> None:
    words = {("ab", "c"): 10, ("a", "bc"): 5}
    plan = learn_merges(words, vocab={"a", "b", "c", "ab", "bc"}, budget=2, acceptable=_anything)
    assert plan.new_tokens == ("abc",)
    assert plan.merges == (("ab", "c"), ("a", "bc"))


def test_missing_symbols_join_before_their_merges() -> None:
    # SentencePiece-style: '한' is spelled in 3 byte tokens until it joins the vocabulary.
    words = {("▁", "한", "국"): 5}
    plan = learn_merges(
        words,
        vocab={"▁", "국"},
        budget=3,
        acceptable=_anything,
        missing_cost={"한": 3},
    )
    assert plan.new_tokens[0] == "한"
    assert plan.tokens_before == 25 and plan.tokens_after == 5
    plan = learn_merges(
        words, vocab={"▁", "국"}, budget=3, acceptable=_anything, missing_cost={"한": 3}, addable=lambda symbol: False
    )
    assert plan.new_tokens == ()


def test_required_tokens_are_built_first_and_checked() -> None:
    words = {("a", "b"): 10, ("c", "d"): 1}
    plan = learn_merges(words, vocab=set("abcd"), budget=2, acceptable=_anything, required=[("cd", ["c", "d"])])
    assert plan.new_tokens == ("cd", "ab")
    with pytest.raises(XlangError, match="budget"):
        learn_merges({}, vocab=set("abcd"), budget=1, acceptable=_anything, required=[("abc", ["a", "b", "c"])])
    with pytest.raises(XlangError, match="cannot be built from safe merges"):
        learn_merges({}, vocab=set("ab"), budget=3, acceptable=lambda *_: False, required=[("ab", ["a", "b"])])


def test_results_are_deterministic() -> None:
    words = {
        (c1, c2, c3): (i * 7) % 5 + 2 for i, (c1, c2, c3) in enumerate(zip("abcab", "bcabc", "cabca", strict=True))
    }
    first = learn_merges(words, vocab=set("abc"), budget=4, acceptable=_anything)
    assert first == learn_merges(dict(words), vocab=set("abc"), budget=4, acceptable=_anything)


def _naive_apply(word: list[str], pair: tuple[str, str]) -> list[str]:
    out: list[str] = []
    position = 0
    while position < len(word):
        if position + 1 < len(word) and (word[position], word[position + 1]) == pair:
            out.append(word[position] + word[position + 1])
            position += 2
        else:
            out.append(word[position])
            position += 1
    return out


def test_incremental_counts_match_a_naive_recount() -> None:
    """Each learned merge is the most frequent acceptable pair of the corpus as merged so far."""
    import random

    rng = random.Random(7)
    alphabet = "abcde"
    words: dict[tuple[str, ...], int] = {}
    for _ in range(300):
        word = tuple(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        words[word] = words.get(word, 0) + rng.randint(1, 5)
    plan = learn_merges(words, vocab=set(alphabet), budget=25, acceptable=_anything, min_frequency=1)
    current = {tuple(w): c for w, c in words.items()}
    for pair in plan.merges:
        counts: dict[tuple[str, str], int] = {}
        for word, count in current.items():
            for left, right in zip(word, word[1:], strict=False):
                if left + right not in set(alphabet):
                    counts[(left, right)] = counts.get((left, right), 0) + count
        assert counts[pair] == max(counts.values())
        merged: dict[tuple[str, ...], int] = {}
        for word, count in current.items():
            key = tuple(_naive_apply(list(word), pair))
            merged[key] = merged.get(key, 0) + count
        current = merged
    assert plan.tokens_after == sum(len(w) * c for w, c in current.items())


def test_counts_stay_exact_when_a_token_is_reached_twice() -> None:
    # 'abc' forms from ('ab', 'c') first, then from ('a', 'bc') in a word that already holds an 'abc'.
    words = {("ab", "c"): 10, ("a", "bc", "x", "ab", "c"): 3, ("a", "bc"): 5}
    plan = learn_merges(words, vocab={"a", "b", "c", "x", "ab", "bc"}, budget=3, acceptable=_anything, min_frequency=1)
    assert plan.merges[:2] == (("ab", "c"), ("a", "bc"))
    naive = [(list(w), c) for w, c in words.items()]
    for pair in plan.merges:
        naive = [(_naive_apply(w, pair), c) for w, c in naive]
    assert plan.tokens_after == sum(len(w) * c for w, c in naive) == 18
