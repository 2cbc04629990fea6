"""What a language plugin tells the core: scripts, corpora, vocabularies, prompts, chat bits, defaults.

Frozen pydantic models, so a spec registered once cannot be changed behind the registry's back, and
validation errors read as sentences that name the field.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TASK_TYPES: tuple[str, ...] = ("object-centric", "location-centric", "atmosphere-centric", "conversation")
"""The four mVIF task types of X-LLaVA; every language supplies a prompt template for each."""

NORMALIZERS: tuple[str, ...] = ("none", "NFC", "NFKC")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ScriptRange(_Frozen):
    """An inclusive Unicode code-point range that marks text as belonging to the target language."""

    name: str
    start: int = Field(ge=0, le=0x10FFFF)
    end: int = Field(ge=0, le=0x10FFFF)

    @model_validator(mode="after")
    def _ordered(self) -> ScriptRange:
        if self.end < self.start:
            raise ValueError(
                f"script range {self.name!r} ends (U+{self.end:04X}) before it starts (U+{self.start:04X})"
            )
        return self

    def contains(self, char: str) -> bool:
        return self.start <= ord(char) <= self.end


class CorpusSource(_Frozen):
    """One corpus a language offers, addressed by URI so that a `load_corpus` plugin can claim it.

    `offline` sources work on a machine without a model hub (the default); `hub` sources are the same
    language at scale (e.g. `hf://wikimedia/wikipedia?config=20231101.ko&field=text`).
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    uri: str
    weight: float = Field(default=1.0, gt=0)
    kind: Literal["offline", "hub"] = "offline"
    parallel: tuple[str, str] | None = None
    """For aligned text: the two language codes of each record's fields (e.g. ("en", "ko"))."""
    license: str = ""

    @field_validator("uri")
    @classmethod
    def _has_scheme(cls, uri: str) -> str:
        if not re.match(r"^[a-z][a-z0-9+.-]*://", uri):
            raise ValueError(f"corpus URI {uri!r} has no scheme; write e.g. 'debian://PACKAGE?...' or 'hf://NAME'")
        return uri


class VocabularySource(_Frozen):
    """A word list that can propose tokens (a morpheme lexicon, a segmenter dictionary, a frequency list)."""

    name: str
    uri: str
    license: str = ""


class ChatBits(_Frozen):
    """What a chat in this language needs beyond the base model's template."""

    system_prompt: str
    image_placeholder: str = "<image>"
    answer_in_language: str
    """Appended to instructions so the model answers in this language (e.g. "한국어로 답하세요.")."""


class EvaluationSet(_Frozen):
    name: str
    uri: str
    metric: str


class Strategies(_Frozen):
    """Default strategy names; config overrides them by name, never by registration order."""

    tokenizer_expander: str = "merges"
    candidate_sources: tuple[str, ...] = ("corpus-bpe",)
    embedding_initializer: str = "subword-freq"
    teacher: str = "openai-compatible"


class LanguageSpec(_Frozen):
    """Everything the core needs to know about one language; nothing in `xlang/` names a language."""

    code: str = Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]+)*$")
    name: str
    native_name: str = ""
    scripts: tuple[ScriptRange, ...] = ()
    """Empty for a language written in the base model's script (English): nothing is 'new' there."""
    normalizer: Literal["none", "NFC", "NFKC"] = "NFC"
    corpora: tuple[CorpusSource, ...] = ()
    vocabularies: tuple[VocabularySource, ...] = ()
    prompts: dict[str, str] = Field(default_factory=dict)
    chat: ChatBits
    evaluation_sets: tuple[EvaluationSet, ...] = ()
    defaults: Strategies = Strategies()

    @field_validator("prompts")
    @classmethod
    def _every_task_type(cls, prompts: dict[str, str]) -> dict[str, str]:
        missing = [task for task in TASK_TYPES if task not in prompts]
        unknown = [task for task in prompts if task not in TASK_TYPES]
        if missing:
            raise ValueError(
                f"prompts lack task type(s) {', '.join(missing)}; each of {', '.join(TASK_TYPES)} needs one"
            )
        if unknown:
            raise ValueError(f"prompts name unknown task type(s) {', '.join(unknown)}; known: {', '.join(TASK_TYPES)}")
        return prompts

    @model_validator(mode="after")
    def _unique_corpus_names(self) -> LanguageSpec:
        names = [source.name for source in self.corpora]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"corpus source name(s) used twice: {', '.join(duplicated)}")
        return self

    def normalize(self, text: str) -> str:
        return text if self.normalizer == "none" else unicodedata.normalize(self.normalizer, text)

    def is_target_char(self, char: str) -> bool:
        return any(script.contains(char) for script in self.scripts)

    def target_share(self, text: str) -> float:
        """Share of non-space characters that belong to the target scripts (0 for an empty string)."""
        visible = [c for c in text if not c.isspace()]
        if not visible:
            return 0.0
        return sum(self.is_target_char(c) for c in visible) / len(visible)

    def has_target_text(self, text: str) -> bool:
        return any(self.is_target_char(c) for c in text)

    def offline_corpora(self) -> tuple[CorpusSource, ...]:
        return tuple(source for source in self.corpora if source.kind == "offline" and source.parallel is None)

    def parallel_corpora(self) -> tuple[CorpusSource, ...]:
        return tuple(source for source in self.corpora if source.kind == "offline" and source.parallel is not None)
