"""What a run costs: prices per model, each reply's `usage` priced, and a budget that is never exceeded.

A request's cost is known only from its reply, so before sending one the budget reserves its worst
case: the largest prompt seen so far for requests of its kind (with or without an image), which bounds
what is not text (the image, the chat template), plus a token for every UTF-8 byte of its text (no
byte-level or byte-fallback tokenizer needs more), plus `max_tokens` of answer. Until a kind's first
reply has come back, a request of that kind goes alone, so at most one request's prompt is ever unknown.
On endpoints that price an image by its size, an image larger than every one seen so far can cost more
than reserved: keep a margin there.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from xlang.errors import XlangError

# USD per 1M tokens (input, output), as of 2025-06, from the providers' public price pages; for a model
# missing here, or priced differently on your account, set `data.prices` (it is laid over this table).
BUILTIN_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-2024-08-06": (2.50, 10.00),
    "gpt-4o-2024-11-20": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o-mini-2024-07-18": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4-turbo": (10.00, 30.00),
    "gemini-2.0-flash": (0.10, 0.40),
}

MESSAGE_ALLOWANCE_TOKENS = 16
"""Tokens reserved for each chat message beyond the reference prompt's (role markers of the template)."""


@dataclass(frozen=True)
class Price:
    model: str
    usd_per_m_input: float
    usd_per_m_output: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.usd_per_m_input + completion_tokens * self.usd_per_m_output) / 1_000_000


def price_for(model: str | None, extra: dict[str, tuple[float, float]], *, required: bool) -> Price | None:
    """The price of `model` (the `prices` setting first, then the built-in table); None when unknown and
    not `required` (a run without a budget), an error naming the setting when it is."""
    table = {**BUILTIN_PRICES, **extra}
    if model and model in table:
        price_in, price_out = table[model]
        return Price(model, float(price_in), float(price_out))
    if required:
        raise XlangError(
            f"--budget-usd needs the price of teacher model {model!r}, which is not in the built-in table; set "
            f'data.prices, e.g. [data.prices] "{model}" = [USD per 1M input tokens, USD per 1M output tokens]'
        )
    return None


@dataclass
class RequestShape:
    """What the reservation of one request is estimated from."""

    has_image: bool
    text_bytes: int
    messages: int


@dataclass
class _Reference:
    prompt_tokens: int
    text_bytes: int
    messages: int


class BudgetExhausted(Exception):
    """No more requests fit in the budget."""


class Budget:
    """Spend so far (across runs of one output), reservations in flight, and the admission rule."""

    def __init__(self, limit_usd: float | None, price: Price | None, max_tokens: int, spent_usd: float = 0.0):
        self.limit_usd = limit_usd
        self.price = price
        self.max_tokens = max_tokens
        self.spent_usd = spent_usd
        self.reserved_usd = 0.0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.exhausted = False
        self._references: dict[bool, _Reference] = {}
        self._in_flight = 0
        self._changed = asyncio.Event()

    @property
    def limited(self) -> bool:
        return self.limit_usd is not None and self.price is not None

    def estimate(self, shape: RequestShape) -> float | None:
        """The worst-case cost of a request of this shape; None when no reply of its kind has come back."""
        assert self.price is not None
        reference = self._references.get(shape.has_image)
        if reference is None:
            return None
        # the reference's tokens bound what is not text (image, template) from above; the text itself costs at
        # most a token per UTF-8 byte (byte-level and byte-fallback tokenizers never need more)
        prompt = (
            reference.prompt_tokens
            + shape.text_bytes
            + MESSAGE_ALLOWANCE_TOKENS * max(0, shape.messages - reference.messages)
        )
        return self.price.cost(prompt, self.max_tokens)

    async def reserve(self, shape: RequestShape) -> float:
        """Wait until the request fits, and hold its worst case; BudgetExhausted when it never will."""
        if not self.limited:
            self._in_flight += 1
            return 0.0
        assert self.limit_usd is not None and self.price is not None
        while True:
            if self.exhausted:
                raise BudgetExhausted
            estimate = self.estimate(shape)
            if estimate is None:
                # the first request of its kind goes alone: its answer is bounded, its prompt is not yet
                answer_only = self.price.cost(0, self.max_tokens)
                if self.spent_usd + answer_only > self.limit_usd:
                    self.stop()
                    raise BudgetExhausted
                if self._in_flight == 0:
                    self._in_flight += 1
                    self.reserved_usd += answer_only
                    return answer_only
            elif self.spent_usd + self.reserved_usd + estimate <= self.limit_usd:
                self._in_flight += 1
                self.reserved_usd += estimate
                return estimate
            elif self._in_flight == 0:
                # nothing in flight will free money: this request can never fit
                self.stop()
                raise BudgetExhausted
            self._changed.clear()
            await self._changed.wait()

    def settle(self, reserved: float, shape: RequestShape, usage: tuple[int, int] | None, replied: bool) -> float:
        """Release a reservation and charge the reply's `usage` (prompt, completion tokens); a reply without
        usage is charged its reservation, a request that got no reply nothing. Returns the charge in USD."""
        self._in_flight -= 1
        self.reserved_usd = max(0.0, self.reserved_usd - reserved)
        cost = 0.0
        if usage is not None:
            prompt_tokens, completion_tokens = usage
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            if self.price is not None:
                cost = self.price.cost(prompt_tokens, completion_tokens)
            reference = self._references.get(shape.has_image)
            if reference is None or prompt_tokens > reference.prompt_tokens:
                self._references[shape.has_image] = _Reference(prompt_tokens, shape.text_bytes, shape.messages)
        elif replied:
            cost = reserved
        self.spent_usd += cost
        self._changed.set()
        return cost

    def stop(self) -> None:
        """No further reservations: waiting requests raise BudgetExhausted."""
        self.exhausted = True
        self._changed.set()
