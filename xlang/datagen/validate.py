"""What an answer must pass before its record is kept: text present, no broken UTF-8, no image
placeholder (a LLaVA record has exactly one, in its first question), written in the record's language
(the language plugin's own script share), a length in bounds, not cut off, and not a near-duplicate of an
earlier answer in the same language and origin.

Near-duplicates are found with MinHash over character 3-grams (lower-cased, spaces collapsed) and
locality-sensitive banding, so checking an answer against a file of a hundred thousand stays cheap; the
similarity is the MinHash estimate of the 3-gram Jaccard index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xlang.datagen.config import GenerateConfig
from xlang.datagen.prompts import IMAGE_PLACEHOLDER

REPLACEMENT_CHARACTER = "\ufffd"
PERMUTATIONS = 128
_FOLD = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it mixes a 63-bit 3-gram id into the high bits
_THIRTY_TWO = np.uint64(32)


@dataclass(frozen=True)
class Rejection:
    """Why an answer was not kept: a short code (for counting) and the detail (for reading)."""

    reason: str
    detail: str


def answer_problem(
    text: str, spec: Any, config: GenerateConfig, *, finish_reason: str | None, is_answer: bool = True
) -> Rejection | None:
    """The first check `text` fails, or None. Questions (translated human turns) skip the length and
    cut-off checks, which are about answers."""
    if not text.strip():
        return Rejection("empty", "the reply has no text")
    if REPLACEMENT_CHARACTER in text:
        return Rejection("replacement-char", "the reply contains U+FFFD (broken UTF-8)")
    if IMAGE_PLACEHOLDER in text:
        return Rejection(
            "image-placeholder", f"the reply contains {IMAGE_PLACEHOLDER}, which marks where the image goes"
        )
    if not spec.is_reply_in_language(text):
        share = spec.reply_share(text)
        return Rejection(
            "wrong-language",
            f"{share:.0%} of its letters are in the scripts of {spec.code!r} (needs {spec.min_reply_share:.0%})",
        )
    if not is_answer:
        return None
    length = len(text.strip())
    if length < config.min_chars:
        return Rejection("too-short", f"{length} characters (min_chars {config.min_chars})")
    if length > config.max_chars:
        return Rejection("too-long", f"{length} characters (max_chars {config.max_chars})")
    if finish_reason == "length" and not config.allow_cutoff:
        return Rejection("cut-off", f"cut off at max_tokens ({config.max_tokens}); raise it or set data.allow_cutoff")
    return None


def _gram_ids(text: str) -> np.ndarray:
    """Distinct character 3-grams of the normalized text as 64-bit ids (each code point fits 21 bits)."""
    normalized = " ".join(text.lower().split())
    points = np.frombuffer(normalized.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(points) < 3:
        points = np.concatenate([points, np.zeros(3 - len(points), dtype=np.uint64)])
    ids = (points[:-2] << np.uint64(42)) | (points[1:-1] << np.uint64(21)) | points[2:]
    return np.unique(ids)


def _bands_for(threshold: float) -> int:
    """Rows per band: the most that still makes a pair just under the threshold a candidate (p >= 0.99)."""
    similar = max(0.05, threshold - 0.05)
    rows = 1
    for candidate in (2, 4, 8, 16, 32):
        bands = PERMUTATIONS // candidate
        if 1 - (1 - similar**candidate) ** bands >= 0.99:
            rows = candidate
    return rows


class NearDuplicates:
    """Answers seen so far, per language; `match` returns an earlier answer at or above the threshold."""

    def __init__(self, threshold: float, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.threshold = threshold
        self._a = rng.integers(1, 2**63, size=PERMUTATIONS, dtype=np.uint64) | np.uint64(1)
        self._b = rng.integers(0, 2**63, size=PERMUTATIONS, dtype=np.uint64)
        self.rows = _bands_for(threshold)
        self._signatures: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = {}
        self._labels: dict[str, list[str]] = {}
        self._buckets: dict[tuple[str, int, bytes], list[int]] = {}

    def signature(self, text: str) -> np.ndarray:
        ids = _gram_ids(text)
        folded = (ids * _FOLD) >> _THIRTY_TWO  # 32-bit keys
        hashed = (self._a[:, None] * folded[None, :] + self._b[:, None]) >> _THIRTY_TWO
        return hashed.min(axis=1).astype(np.uint32)

    def _band_keys(self, signature: np.ndarray) -> list[tuple[int, bytes]]:
        return [
            (band, signature[band * self.rows : (band + 1) * self.rows].tobytes())
            for band in range(PERMUTATIONS // self.rows)
        ]

    def match(self, lang: str, signature: np.ndarray) -> tuple[float, str] | None:
        """(estimated similarity, label) of the most similar earlier answer at or above the threshold."""
        candidates: set[int] = set()
        for band, key in self._band_keys(signature):
            candidates.update(self._buckets.get((lang, band, key), ()))
        if not candidates:
            return None
        order = np.fromiter(candidates, dtype=np.int64, count=len(candidates))
        stacked = self._signatures[lang][order]
        similarity = (stacked == signature[None, :]).mean(axis=1)
        best = int(similarity.argmax())
        if similarity[best] >= self.threshold:
            return float(similarity[best]), self._labels[lang][order[best]]
        return None

    def add(self, lang: str, signature: np.ndarray, label: str) -> None:
        index = self._counts.get(lang, 0)
        signatures = self._signatures.get(lang)
        if signatures is None or index == len(signatures):  # grow by doubling
            grown = np.zeros((max(64, 2 * index), PERMUTATIONS), dtype=np.uint32)
            if signatures is not None:
                grown[:index] = signatures
            self._signatures[lang] = signatures = grown
        signatures[index] = signature
        self._counts[lang] = index + 1
        self._labels.setdefault(lang, []).append(label)
        for band, key in self._band_keys(signature):
            self._buckets.setdefault((lang, band, key), []).append(index)

    def __len__(self) -> int:
        return sum(self._counts.values())


def near_duplicate_problem(index: NearDuplicates, lang: str, signature: np.ndarray) -> Rejection | None:
    found = index.match(lang, signature)
    if found is None:
        return None
    similarity, label = found
    return Rejection(
        "near-duplicate", f"{similarity:.2f} similar to an answer of {label} (near_duplicate {index.threshold:g})"
    )
