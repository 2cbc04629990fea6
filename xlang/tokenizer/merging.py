"""Continued BPE training: new merges on top of a base tokenizer, chosen by the tokens they save.

The engine starts from the base tokenizer's own segmentation of every target-language word of the
corpus (so the base's merges are taken as they are) and repeats one step: add the acceptable merge that
removes the most tokens from the corpus. That count is exactly the compression the merge buys, given the
merges before it, so ranking by it is ranking by gain. Intermediate tokens (e.g. the first two bytes of a
Hangul syllable) are steps like any other and count toward the budget.

It knows nothing about families or scripts: the caller says which merges are acceptable (safe and
among the candidates) and which symbols are missing from the base vocabulary (SentencePiece-style
characters that fall back to bytes), with what they cost.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from xlang.errors import XlangError

Acceptable = Callable[[str, str, bool], bool]
"""`(left, right, has_new_operand) -> bool`: may the merge `left + right` be added?"""


@dataclass(frozen=True)
class MergePlan:
    """What to add to the base: vocabulary entries in id order and merges in rank order."""

    new_tokens: tuple[str, ...]
    merges: tuple[tuple[str, str], ...]
    tokens_before: int
    """Tokens the base spends on the corpus's target words (a simulation, exact for strict BPE)."""
    tokens_after: int


_SHIFT = 22
_LOW = (1 << _SHIFT) - 1
"""A pair of symbol ids is one int, `left << _SHIFT | right`: cheaper to hash than a tuple."""


class _Engine:
    def __init__(
        self,
        words: Mapping[tuple[str, ...], int],
        vocab: Iterable[str],
        missing_cost: Mapping[str, int],
        acceptable: Acceptable,
        addable: Callable[[str], bool],
    ) -> None:
        self.old_vocab = frozenset(vocab)
        self.missing_cost = dict(missing_cost)
        self.acceptable = acceptable
        self.strings: list[str] = []
        self.ids: dict[str, int] = {}
        self.in_vocab: list[bool] = []
        self.is_new: list[bool] = []
        self.words: list[list[int]] = []
        self.counts: list[int] = []
        self.pair_count: dict[int, int] = {}
        self.pair_words: dict[int, set[int]] = {}
        self.symbol_count: dict[int, int] = {}
        self.verdicts: dict[int, bool] = {}
        self.waiting: dict[int, set[int]] = {}
        self.heap: list[tuple[int, int]] = []
        """(-count, pair) for merges; (-gain, -1 - symbol) for a missing character joining the vocabulary."""
        self.rank: dict[int, int] = {}
        self.new_tokens: list[str] = []
        self.merges: list[tuple[str, str]] = []
        pair_count, pair_words, symbol_count = self.pair_count, self.pair_words, self.symbol_count
        for symbols, count in words.items():
            if count <= 0 or not symbols:
                continue
            index = len(self.words)
            word = [self.symbol(s) for s in symbols]
            self.words.append(word)
            self.counts.append(count)
            for symbol in word:
                symbol_count[symbol] = symbol_count.get(symbol, 0) + count
            for left, right in zip(word, word[1:], strict=False):
                key = left << _SHIFT | right
                pair_count[key] = pair_count.get(key, 0) + count
                holders = pair_words.get(key)
                if holders is None:
                    pair_words[key] = {index}
                else:
                    holders.add(index)
        self.tokens_before = self.total_tokens()
        self.heap = [(-count, key) for key, count in pair_count.items()]
        for symbol, count in symbol_count.items():
            if not self.in_vocab[symbol] and addable(self.strings[symbol]):
                cost = self.missing_cost[self.strings[symbol]]
                if cost > 1:
                    self.heap.append((-count * (cost - 1), -1 - symbol))
        heapq.heapify(self.heap)

    def symbol(self, string: str) -> int:
        known = self.ids.get(string)
        if known is not None:
            return known
        index = len(self.strings)
        if index > _LOW:
            raise XlangError("internal: too many distinct symbols for the merge engine")
        self.strings.append(string)
        self.ids[string] = index
        present = string in self.old_vocab
        if not present and string not in self.missing_cost:
            raise XlangError(
                f"internal: symbol {string!r} is neither in the base vocabulary nor a known missing symbol"
            )
        self.in_vocab.append(present)
        self.is_new.append(False)
        return index

    def cost(self, symbol: int) -> int:
        return 1 if self.in_vocab[symbol] else self.missing_cost[self.strings[symbol]]

    def total_tokens(self) -> int:
        return sum(count * sum(self.cost(s) for s in word) for word, count in zip(self.words, self.counts, strict=True))

    def verdict(self, key: int) -> bool | None:
        """True: may merge now; False: never; None: waits for a missing operand to join the vocabulary."""
        left, right = key >> _SHIFT, key & _LOW
        if not (self.in_vocab[left] and self.in_vocab[right]):
            return None
        known = self.verdicts.get(key)
        if known is None:
            merged = self.strings[left] + self.strings[right]
            known = merged not in self.old_vocab and self.acceptable(
                self.strings[left], self.strings[right], self.is_new[left] or self.is_new[right]
            )
            self.verdicts[key] = known
        return known

    def add_symbol(self, symbol: int) -> None:
        """A missing character becomes a vocabulary entry (SentencePiece-style: no merge needed)."""
        self.in_vocab[symbol] = True
        self.is_new[symbol] = True
        self.new_tokens.append(self.strings[symbol])
        for key in self.waiting.pop(symbol, ()):
            count = self.pair_count.get(key, 0)
            if count > 0:
                heapq.heappush(self.heap, (-count, key))

    def merge(self, key: int) -> bool:
        """Add the merge and apply it to the corpus; True when it made a new vocabulary entry."""
        left, right = key >> _SHIFT, key & _LOW
        merged_string = self.strings[left] + self.strings[right]
        created = merged_string not in self.ids or not self.in_vocab[self.ids[merged_string]]
        if merged_string not in self.ids:
            self.strings.append(merged_string)
            self.ids[merged_string] = len(self.strings) - 1
            self.in_vocab.append(True)
            self.is_new.append(True)
        merged = self.ids[merged_string]
        if created:
            self.new_tokens.append(merged_string)
        self.rank[key] = len(self.merges)
        self.merges.append((self.strings[left], self.strings[right]))
        touched: set[int] = set()
        pair_count, pair_words, words, counts = self.pair_count, self.pair_words, self.words, self.counts
        # pair_words may list words that lost a pair since (cheaper than exact bookkeeping); such words
        # are skipped below because nothing in them changes. Only pairs next to a merge site change
        # count, so long words (clauses of scripts written without spaces) cost what their merge sites cost.
        for index in pair_words.pop(key, ()):
            word, count = words[index], counts[index]
            length = len(word)
            rebuilt: list[int] = []
            sites: list[int] = []
            previous = 0
            position = 0
            last_old = -1
            while True:
                try:
                    position = word.index(left, position)
                except ValueError:
                    break
                if position + 1 >= length or word[position + 1] != right:
                    position += 1
                    continue
                # the pairs (position-1, position), (position, position+1), (position+1, position+2) go
                for j in (position - 1, position, position + 1):
                    if last_old < j < length - 1:
                        old = word[j] << _SHIFT | word[j + 1]
                        pair_count[old] -= count
                        last_old = j
                rebuilt.extend(word[previous:position])
                sites.append(len(rebuilt))
                rebuilt.append(merged)
                previous = position = position + 2
            if not previous:
                continue
            rebuilt.extend(word[previous:])
            last_new = -1
            end = len(rebuilt) - 1
            for site in sites:
                for j in (site - 1, site):
                    if last_new < j < end:
                        fresh = rebuilt[j] << _SHIFT | rebuilt[j + 1]
                        pair_count[fresh] = pair_count.get(fresh, 0) + count
                        touched.add(fresh)
                        holders = pair_words.get(fresh)
                        if holders is None:
                            pair_words[fresh] = {index}
                        else:
                            holders.add(index)
                        last_new = j
            words[index] = rebuilt
        pair_count.pop(key, None)
        for fresh in sorted(touched):
            heapq.heappush(self.heap, (-pair_count[fresh], fresh))
        return created

    def apply_merges(self, symbols: list[int]) -> list[int]:
        """Encode a symbol sequence with the new merges learned so far (lowest rank first, as BPE does)."""
        while len(symbols) > 1:
            ranked = [
                (self.rank[key], position)
                for position, key in enumerate(a << _SHIFT | b for a, b in zip(symbols, symbols[1:], strict=False))
                if key in self.rank
            ]
            if not ranked:
                break
            _, position = min(ranked)
            merged = self.ids[self.strings[symbols[position]] + self.strings[symbols[position + 1]]]
            symbols = [*symbols[:position], merged, *symbols[position + 2 :]]
        return symbols

    def force(self, form: str, base_symbols: Sequence[str], budget_left: int) -> int:
        """Build one required token, choosing at each step the acceptable adjacent pair the corpus sees
        most often. Returns the number of vocabulary entries it took."""
        used = 0
        symbols = [self.symbol(s) for s in base_symbols]
        for symbol in symbols:
            if not self.in_vocab[symbol]:
                self.add_symbol(symbol)
                used += 1
        symbols = self.apply_merges(symbols)
        while len(symbols) > 1:
            keys = [a << _SHIFT | b for a, b in zip(symbols, symbols[1:], strict=False)]
            options = [
                (-self.pair_count.get(key, 0), position) for position, key in enumerate(keys) if self.verdict(key)
            ]
            if not options:
                shown = " + ".join(repr(self.strings[s]) for s in symbols)
                raise XlangError(
                    f"token {form!r} cannot be built from safe merges (stuck at {shown}): joining these pieces could "
                    "also join bytes of characters outside the language's scripts; leave it out of the required tokens"
                )
            _, position = min(options)
            used += self.merge(keys[position])
            symbols = self.apply_merges(symbols)
        if used > budget_left:
            raise XlangError(
                f"the required tokens need more new vocabulary entries than the budget allows (at {form!r}); "
                "raise the budget or list fewer required tokens"
            )
        return used

    def run(self, budget: int, min_frequency: int) -> None:
        added = 0
        heap, pair_count = self.heap, self.pair_count
        while added < budget and heap:
            negative_gain, key = heapq.heappop(heap)
            if key < 0:
                symbol = -1 - key
                if not self.in_vocab[symbol] and self.symbol_count[symbol] >= min_frequency:
                    self.add_symbol(symbol)
                    added += 1
                continue
            count = pair_count.get(key, 0)
            if count < min_frequency:
                continue
            if count != -negative_gain:
                heapq.heappush(heap, (-count, key))
                continue
            verdict = self.verdict(key)
            if verdict is None:
                left, right = key >> _SHIFT, key & _LOW
                waiting_on = left if not self.in_vocab[left] else right
                self.waiting.setdefault(waiting_on, set()).add(key)
                continue
            if verdict:
                added += self.merge(key)


def learn_merges(
    words: Mapping[tuple[str, ...], int],
    vocab: Iterable[str],
    budget: int,
    acceptable: Acceptable,
    missing_cost: Mapping[str, int] | None = None,
    addable: Callable[[str], bool] | None = None,
    required: Sequence[tuple[str, Sequence[str]]] = (),
    min_frequency: int = 2,
) -> MergePlan:
    """Learn up to `budget` new vocabulary entries for `words` (base segmentation -> corpus count).

    `required` holds `(form, base_symbols)` tokens that must exist whatever their gain; they are built
    first. Merges seen fewer than `min_frequency` times are not worth a vocabulary entry. `missing_cost`
    maps symbols absent from the base vocabulary to the tokens each costs there (a SentencePiece-style
    character spelled in byte tokens); `addable` says which of them may become vocabulary entries.
    """
    engine = _Engine(words, vocab, missing_cost or {}, acceptable, addable or (lambda _: True))
    used = 0
    for form, base_symbols in required:
        used += engine.force(form, base_symbols, budget - used)
    engine.run(budget - used, min_frequency)
    return MergePlan(
        new_tokens=tuple(engine.new_tokens),
        merges=tuple(engine.merges),
        tokens_before=engine.tokens_before,
        tokens_after=engine.total_tokens(),
    )
