"""Deliberate failures for testing clients of `xlang serve` (`--faults RATE[:KINDS]`): rate limits, server
errors, hung and cut-off responses, replies in the wrong language or empty. Never for production use.

Whether request number N (counted from 1 over `POST /v1/chat/completions`) fails, and how, is a function of
(`--fault-seed`, N) alone, so a test that sends its requests in a known order meets the same faults each run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from xlang.errors import XlangError

FAULT_KINDS: tuple[str, ...] = ("429", "500", "timeout", "truncated", "wrong-language", "empty")
"""- `429`: a rate-limit error with a `Retry-After` header (`--retry-after` seconds);
- `500`: a server error;
- `timeout`: nothing is sent for `--fault-hang` seconds, then the connection is dropped;
- `truncated`: status 200 with the JSON body cut in half;
- `wrong-language`: a well-formed reply whose text is in another script than `reply_language`'s;
- `empty`: a well-formed reply with empty content."""

LATIN_SENTENCE = "The picture shows a small wooden table next to an open window."
HAN_SENTENCE = "\u56fe\u4e2d\u6709\u4e00\u5f20\u5c0f\u6728\u684c\uff0c\u65c1\u8fb9\u662f\u4e00\u6247\u7a97\u3002"
"""A sentence in Han characters (as escapes: the core's source holds no letters outside the Latin script)."""


@dataclass(frozen=True)
class FaultPlan:
    """How often requests fail (`rate`, 0 to 1), in which ways (`kinds`), and the knobs of the slow ones."""

    rate: float
    kinds: tuple[str, ...] = FAULT_KINDS
    seed: int = 0
    hang_s: float = 30.0
    retry_after_s: float = 1.0

    def decide(self, request_number: int) -> str | None:
        """The fault for request `request_number`, or None: a hash of (seed, number), no shared state."""
        if self.rate <= 0 or not self.kinds:
            return None
        digest = hashlib.sha256(f"{self.seed}:{request_number}".encode()).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64
        if draw >= self.rate:
            return None
        return self.kinds[int.from_bytes(digest[8:16], "big") % len(self.kinds)]

    @property
    def retry_after_header(self) -> str:
        """`Retry-After` in seconds: an integer when it is one, else a decimal (clients parse a float)."""
        value = self.retry_after_s
        return str(int(value)) if value == int(value) else f"{value:g}"


def parse_faults(text: str, *, seed: int = 0, hang_s: float = 30.0, retry_after_s: float = 1.0) -> FaultPlan:
    """`RATE[:KINDS]` (e.g. `0.3:429+timeout`) as a plan; XlangError naming the flag when it is malformed."""
    rate_text, _, kinds_text = text.partition(":")
    try:
        rate = float(rate_text)
    except ValueError:
        raise XlangError(
            f"--faults {text!r}: the rate must be a number from 0 to 1 (e.g. --faults 0.2:429+500)"
        ) from None
    if not 0 <= rate <= 1:
        raise XlangError(f"--faults {text!r}: the rate {rate} is not between 0 and 1")
    kinds = tuple(kind for kind in kinds_text.split("+") if kind) if kinds_text else FAULT_KINDS
    unknown = [kind for kind in kinds if kind not in FAULT_KINDS]
    if unknown:
        raise XlangError(f"--faults {text!r}: unknown kind(s) {', '.join(unknown)}; known: {'+'.join(FAULT_KINDS)}")
    if hang_s < 0 or retry_after_s < 0:
        raise XlangError("--fault-hang and --retry-after must not be negative")
    return FaultPlan(rate, tuple(dict.fromkeys(kinds)), seed, hang_s, retry_after_s)


def wrong_language_text(letters_in_reply_scripts: bool) -> str:
    """A sentence outside the asked language: Latin letters, or Han characters when Latin letters would
    count as the asked language (`letters_in_reply_scripts` says whether `A` is among its scripts)."""
    return HAN_SENTENCE if letters_in_reply_scripts else LATIN_SENTENCE
