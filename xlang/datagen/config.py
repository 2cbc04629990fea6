"""The knobs of `xlang data generate`: the `data` setting (`[data]` in xlang.toml, `XLANG_DATA__*`), with
the command's flags laid over it, validated once before any work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from xlang.contract import validation_problems
from xlang.errors import XlangError


def _codes(value: Any) -> Any:
    """`"a,b"` -> ("a", "b"); lists pass through."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class GenerateConfig(BaseModel):
    """What one `xlang data generate` run asks for, and the limits it keeps to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    langs: tuple[str, ...] = Field(min_length=1)
    """Language codes to write data in (`--langs a,b,c`)."""
    tasks: tuple[str, ...] = ("all",)
    """Task types (`caption`, `conversation`, ...), or `all`: every task the languages declare."""
    images: str
    """A folder of images (searched recursively), a `datasets` folder saved with `save_to_disk`, or a
    parquet / JSONL file with an image column."""
    image_column: str = "image"
    """The column of a dataset that holds the images (bytes, `{"bytes", "path"}` or file paths)."""
    max_images: int | None = Field(default=None, ge=1)
    """Use only the first N images (in sorted order): a small trial run of a large folder."""
    out: Path
    """The JSONL file records are appended to (rejects, images and the lock file sit beside it)."""
    translate_from: str | None = None
    """Write the other languages by translating this language's records instead of asking natively."""
    concurrency: int = Field(default=8, ge=1, le=1024)
    """Requests in flight at once."""
    max_attempts: int = Field(default=6, ge=1, le=100)
    """Attempts per request: a rejected answer or a teacher failure each uses one. A request whose
    answers are rejected every time is left for a later run; one the teacher fails every time stops the run."""
    requests_per_minute: float | None = Field(default=None, gt=0)
    """A ceiling on requests sent per minute (the endpoint's rate limit)."""
    tokens_per_minute: float | None = Field(default=None, gt=0)
    """A ceiling on tokens (prompt + completion, as the endpoint reports them) per minute."""
    budget_usd: float | None = Field(default=None, gt=0)
    """The most this output file may cost, across runs: records and rejected answers both count."""
    prices: dict[str, tuple[float, float]] = Field(default_factory=dict)
    """`{model: [USD per 1M input tokens, USD per 1M output tokens]}`, laid over the built-in table."""
    max_tokens: int = Field(default=512, ge=1)
    """The longest answer asked for, in tokens (also what a request's cost is reserved for)."""
    temperature: float = Field(default=0.7, ge=0, le=2)
    min_chars: int = Field(default=8, ge=1)
    """Answers shorter than this (in characters) are rejected."""
    max_chars: int = Field(default=8000, ge=1)
    """Answers longer than this are rejected."""
    near_duplicate: float = Field(default=0.85, gt=0, le=1)
    """Character 3-gram Jaccard similarity (MinHash estimate) at or above which an answer counts as a
    near-duplicate of an earlier answer in the same language, and is rejected; 1 rejects only copies."""
    allow_cutoff: bool = False
    """Keep answers the endpoint cut off at `max_tokens` (finish reason `length`); rejected by default."""
    seed: int = 0
    """Mixed into every request's seed: another value draws other answers for the same records."""
    backoff_s: float = Field(default=1.0, gt=0)
    """First retry waits up to this long (full jitter), doubling each attempt, at least the server's Retry-After."""
    backoff_max_s: float = Field(default=60.0, gt=0)
    fsync_every: int = Field(default=16, ge=1)
    """Records between fsyncs of the output (and one at the end)."""

    @field_validator("langs", "tasks", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _codes(value)

    @field_validator("prices", mode="before")
    @classmethod
    def _price_pairs(cls, value: Any) -> Any:
        if isinstance(value, str):  # from an environment variable: XLANG_DATA__PRICES='{"m": [1.0, 4.0]}'
            try:
                value = json.loads(value)
            except json.JSONDecodeError as error:
                raise ValueError(f'prices is not JSON ({error.msg}): write {{"model": [1.0, 4.0]}}') from None
        if isinstance(value, dict):
            for model, pair in value.items():
                if not isinstance(pair, list | tuple) or len(pair) != 2:
                    raise ValueError(f"price of {model!r} must be [USD per 1M input tokens, USD per 1M output tokens]")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GenerateConfig:
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) is above max_chars ({self.max_chars})")
        if len(set(self.langs)) != len(self.langs):
            raise ValueError("langs lists a language twice")
        if "all" in self.tasks and len(self.tasks) > 1:
            raise ValueError("tasks: 'all' cannot be combined with task names")
        for model, (price_in, price_out) in self.prices.items():
            if price_in < 0 or price_out < 0:
                raise ValueError(f"price of {model!r} is negative")
        return self

    @property
    def source_langs(self) -> tuple[str, ...]:
        """Languages whose records are written natively (all of them, or the translation's source)."""
        return (self.translate_from,) if self.translate_from else self.langs

    @property
    def target_langs(self) -> tuple[str, ...]:
        """Languages whose records are translations (none without `translate_from`)."""
        return tuple(code for code in self.langs if code != self.translate_from) if self.translate_from else ()


def generate_config(knobs: dict[str, Any]) -> GenerateConfig:
    """The config from the merged `data` setting and flags; a bad or unknown knob is one line."""
    known = list(GenerateConfig.model_fields)
    unknown = sorted(set(knobs) - set(known))
    if unknown:
        raise XlangError(
            f"unknown data setting(s) {', '.join(repr(name) for name in unknown)} (the knobs: {', '.join(known)}); "
            "fix [data] in xlang.toml or the XLANG_DATA__* variables"
        )
    missing = [name for name in ("langs", "images", "out") if knobs.get(name) in (None, "", ())]
    if missing:
        flags = {"langs": "--langs a,b", "images": "--images DIR", "out": "--out FILE.jsonl"}
        raise XlangError(
            f"xlang data generate needs {', '.join(missing)}: pass {', '.join(flags[name] for name in missing)} "
            "(or set them under [data])"
        )
    try:
        return GenerateConfig(**knobs)
    except ValidationError as error:
        raise XlangError(f"invalid data settings: {validation_problems(error)}") from error
