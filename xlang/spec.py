"""What a language plugin tells the core: scripts, corpora, vocabularies, chat bits, VIT data, defaults.

Frozen pydantic models, so a spec registered once cannot be changed behind the registry's back, and
validation errors read as sentences that name the field.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NORMALIZERS: tuple[str, ...] = ("none", "NFC", "NFKC")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ScriptRange(_Frozen):
    """An inclusive Unicode code-point range that marks text as belonging to the target language."""

    name: str
    """A label for the range, usually its Unicode block (`Hangul Syllables`); messages suggest its first word,
    lowercased, as the `require=` script word of a `debian://` corpus."""
    start: int = Field(ge=0, le=0x10FFFF)
    """The first code point of the range (inclusive), e.g. `0xAC00`."""
    end: int = Field(ge=0, le=0x10FFFF)
    """The last code point of the range (inclusive), not below `start`."""

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
    """Names the source in settings, messages and the cache (`<cache_dir>/corpora/<name>/`); unique within the
    language."""
    uri: str
    """Where the text is: a URI whose scheme a `load_corpus` plugin claims (`file://`, `hf://`, `debian://`; see [URI
    schemes](#uri-schemes))."""
    kind: Literal["offline", "hub"] = "offline"
    """Which sources a run reads is the `corpus_kind` setting: `offline` (default) or `hub`."""
    parallel: tuple[str, str] | None = None
    """For aligned text: the two language codes of each record's fields (e.g. ("en", "ko"))."""
    license: str = ""
    """Shown by `xlang corpus stats`, so a user sees the terms of the text a model learns from."""

    @field_validator("uri")
    @classmethod
    def _has_scheme(cls, uri: str) -> str:
        if not re.match(r"^[a-z][a-z0-9+.-]*://", uri):
            raise ValueError(f"corpus URI {uri!r} has no scheme; write e.g. 'file:///path/corpus.txt' or 'hf://NAME'")
        return uri


class VocabularySource(_Frozen):
    """A word list the `vocabulary` candidate source reads (a morpheme lexicon, a segmenter dictionary).

    `uri` names a UTF-8 text file, one entry per line, the word first (`word freq tag`, `word/FLAGS`
    and plain lists all work; a number in the second field is the word's frequency), or wordfreq's
    frequency list (a name ending in `.msgpack.gz`): `file://PATH`, `pypi://DIST==VERSION/PATH/IN/WHEEL`,
    or a scheme a plugin fetches through the `fetch_file` hook (e.g. `debian://file?...`).
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    """Names the list for `--word-list NAME` (the `vocabulary` candidate source's `lists` option)."""
    uri: str
    """The word list: `file://PATH`, `pypi://DIST==VERSION/PATH/IN/WHEEL` (`?sha256=HEX` pins the wheel) or a scheme
    a `fetch_file` plugin serves (`debian://file?...`)."""
    license: str = ""
    """The list's license, for the plugin's users (no stage reads it)."""
    spaced: bool = True
    """Whether running text writes a space before the list's words (True for words that start a
    space-separated word; False for a language written without spaces). The `vocabulary` source's
    general-text prior writes each word of a list with frequencies as the training text writes it most,
    and this way when the training text lacks it."""


class ChatBits(_Frozen):
    """What a chat in this language needs beyond the base model's template."""

    system_prompt: str
    """The system turn of the LLaVA chat template when a conversation is in this language."""


class TaskPrompts(_Frozen):
    """How a teacher is asked for one task type of visual-instruction data, in this language."""

    questions: tuple[str, ...] = Field(min_length=1)
    """Questions about an image, written natively in this language; each record draws its own
    (deterministically from the image and task), so a rerun asks the same question."""
    turns: int = Field(default=1, ge=1, le=8)
    """Question-answer turns per record: a conversation asks this many distinct questions in sequence,
    each answered with the earlier turns in view."""
    guidance: str = ""
    """Added to the teacher's system prompt for this task: what kind of answer is wanted."""

    @model_validator(mode="after")
    def _enough_questions(self) -> TaskPrompts:
        if self.turns > len(self.questions):
            raise ValueError(f"{self.turns} turns need at least {self.turns} distinct questions")
        return self


class TeacherPrompts(_Frozen):
    """What `xlang data generate` tells a teacher model when it writes data in this language."""

    system: str = Field(min_length=1)
    """The teacher's system prompt: answer natively in this language, from what the image shows."""
    tasks: dict[str, TaskPrompts] = Field(min_length=1)
    """Task type name (e.g. `object-centric`) -> its prompts; `--tasks all` asks for every task type the
    requested languages declare, and a language lacking a requested one is an error naming both."""
    translate: str = Field(min_length=1)
    """The instruction for `--translate-from`: rewrite the text that follows in this language; holds
    `{text}` where the source text goes."""

    @field_validator("translate")
    @classmethod
    def _has_slot(cls, value: str) -> str:
        if "{text}" not in value:
            raise ValueError("the translate prompt must contain {text}, where the source text goes")
        return value


EVALUATION_FORMATS: tuple[str, ...] = ("llava-bench", "mmbench-tsv", "short-answer")
"""Benchmark file formats xlang reads (`xlang.eval.benchmarks`)."""

FORMAT_EVALUATORS: dict[str, str] = {
    "llava-bench": "open-ended",
    "mmbench-tsv": "multiple-choice",
    "short-answer": "short-answer",
}
"""The evaluator that scores each format unless an evaluation set names another."""


class EvaluationSet(_Frozen):
    """A benchmark in this language, in a published format, that `xlang eval run --suite NAME` scores.

    A suite is every set of the run's language with that `suite` name; a new language brings its own sets
    (xlang ships the `smoke` suite: a few questions about the seed photos in each language)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    """Names the set in metrics (`NAME/relative_score`) and reports; unique within the language."""
    suite: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    """The suite the set belongs to (`smoke`, `full`, ...)."""
    format: Literal["llava-bench", "mmbench-tsv", "short-answer"]
    """`llava-bench`: LLaVA-Bench (in-the-wild) questions with reference answers (also K-LLaVA-W);
    `mmbench-tsv`: MMBench's TSV (also MMBench-CN, K-MMBench, CCBench); `short-answer`: JSONL of questions
    with accepted answers (VQAv2-style)."""
    uri: str
    """The file or folder: `file://PATH` (a folder for `llava-bench`'s published layout) or `hf://NAME?...`."""
    evaluator: str | None = None
    """The evaluator that scores it (`register_evaluators`); unset: the format's (`open-ended`,
    `multiple-choice`, `short-answer`)."""
    license: str = ""
    """The benchmark's license, shown in reports."""

    def scored_by(self) -> str:
        return self.evaluator or FORMAT_EVALUATORS[self.format]


SUITE_FILES: dict[str, tuple[str, str]] = {
    "open_ended.jsonl": ("open", "llava-bench"),
    "multiple_choice.tsv": ("choice", "mmbench-tsv"),
    "short_answer.jsonl": ("short", "short-answer"),
}
"""File names `evaluation_sets_in` recognizes: the set's name suffix and its format."""


def evaluation_sets_in(folder: str | Path, suite: str) -> tuple[EvaluationSet, ...]:
    """One set of `suite` per file of `SUITE_FILES` in `folder` (`SUITE-open`, `SUITE-choice`, `SUITE-short`):
    a plugin that ships its benchmark files in one folder declares them in one line."""
    folder = Path(folder).resolve()
    return tuple(
        EvaluationSet(name=f"{suite}-{suffix}", suite=suite, format=kind, uri=(folder / name).as_uri())
        for name, (suffix, kind) in SUITE_FILES.items()
        if (folder / name).is_file()
    )


class JudgePrompts(_Frozen):
    """How a judge model is asked to grade answers in this language (`xlang eval`); unset fields keep
    xlang's English prompts, which tell the judge the language the answer must be in."""

    system: str = ""
    """The judge's system prompt."""
    score: str = ""
    """Grades one answer against the reference, LLaVA-Bench style: holds `{question}`, `{reference}` and
    `{answer}` (and may hold `{context}`, `{language}`); the reply must start with two scores from 1 to 10,
    the reference's and the answer's."""
    compare: str = ""
    """Picks the better of two answers: holds `{question}`, `{first}` and `{second}` (and may hold
    `{language}`); the reply holds `[[A]]`, `[[B]]` or `[[C]]` for a tie."""

    @model_validator(mode="after")
    def _has_slots(self) -> JudgePrompts:
        for field, slots in (
            ("score", ("{question}", "{reference}", "{answer}")),
            ("compare", ("{question}", "{first}", "{second}")),
        ):
            text = getattr(self, field)
            missing = [slot for slot in slots if text and slot not in text]
            if missing:
                raise ValueError(f"the judge's {field} prompt must contain {', '.join(missing)}")
        return self


class Strategies(_Frozen):
    """Default strategy names; config overrides them by name, never by registration order."""

    tokenizer_expander: str = "merges"
    """The expander `xlang extend` uses unless `--expander` names another (`register_tokenizer_expanders`)."""
    candidate_sources: tuple[str, ...] = ("corpus-bpe",)
    """The candidate sources of tokens unless `--source` names others (`register_token_candidate_sources`)."""
    embedding_initializer: str = "subword-freq"
    """The initializer of new embedding rows unless `--initializer` names another
    (`register_embedding_initializers`). It may be a plugin's (Korean names `xlang-subword-fit`'s
    `subword-copy`): the language's package then depends on that plugin, and a run without it stops, naming it."""
    source_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Options per candidate source name that this language's expansions start from (a run's
    `stages.expand.source_options` override them field by field), for what depends on the language's text:
    a small corpus wants more of the general-text prior (`{"vocabulary": {"prior_weight": 0.6}}`). They
    apply only to the sources a run uses and are checked by each source's options class."""


class LanguageSpec(_Frozen):
    """Everything the core needs to know about one language; nothing in `xlang/` names a language."""

    code: str = Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]+)*$")
    """The language code (`ko`, `zh-Hant`): `--lang CODE`, run folders, metric names."""
    name: str
    """The English name, in messages and reports."""
    native_name: str = ""
    """The name in the language itself, shown by `xlang languages`."""
    scripts: tuple[ScriptRange, ...] = ()
    """Code-point ranges that mark text as the language's: expansion adds tokens only for them, statistics count
    them. Empty for a language written in the base model's script (English): nothing is 'new' there."""
    normalizer: Literal["none", "NFC", "NFKC"] = "NFC"
    """Unicode normalization applied to every text a run reads (corpora, validation text)."""
    corpora: tuple[CorpusSource, ...] = ()
    """The language's text: monolingual and parallel sources, offline and hub-scale (the `corpus_kind` setting picks
    the kind)."""
    heldout_corpora: tuple[CorpusSource, ...] = ()
    """Text of another kind than `corpora` (laws, news, reviews where the corpora are software manuals), never
    trained on: the out-of-domain figures of `xlang tokenizer stats`, `xlang eval bpc` and the evaluate stage,
    measured next to the validation split's in-domain ones. Each source's `validation` split is read (let it hold
    the whole text: `max_share=1` and a `validation_chars=` at least its size); no stage reads its `train` split."""
    vocabularies: tuple[VocabularySource, ...] = ()
    """Word lists that propose tokens to the `vocabulary` candidate source."""
    chat: ChatBits
    """What a chat in this language needs (the LLaVA chat template's system prompt)."""
    companions: tuple[str, ...] = ()
    """Languages trained and measured next to this one (e.g. the base model's language, to keep it);
    the `companions` setting overrides it for a run. Companions that are not installed are an error."""
    vit_data: tuple[str, ...] = ()
    """Visual-instruction data in this language (URIs that `load_vit_data` loads: `file://PATH.jsonl`
    in the LLaVA format with `lang`, `task` and an optional `split` of `train` or `heldout`). A run's
    VIT stages use the data of its languages; a target language without any stops with a message."""
    prompts: TeacherPrompts | None = None
    """How a teacher is asked for visual-instruction data in this language (`xlang data generate`);
    None: the language cannot be generated for, and asking says so."""
    reply_scripts: tuple[ScriptRange, ...] = ()
    """The scripts a reply in this language is written in, when they differ from `scripts` (a language
    written in the base model's script names its letters here, so that a reply in it can be told apart)."""
    min_reply_share: float = Field(default=0.6, gt=0, le=1)
    """A reply counts as written in this language when at least this share of its letters belong to
    `reply_scripts` (or `scripts`): generated data below it is rejected."""
    evaluation_sets: tuple[EvaluationSet, ...] = ()
    """Benchmarks in this language, grouped into suites (`xlang eval run --suite smoke`)."""
    judge: JudgePrompts = JudgePrompts()
    """How a judge grades answers in this language; the defaults are English prompts naming the language."""
    font: str | None = None
    """A font file that draws this language's scripts (a URI `fetch_file` resolves), used for the
    report's images when no installed font covers the scripts."""
    defaults: Strategies = Strategies()
    """The strategies a run uses for this language unless settings name others."""

    @model_validator(mode="after")
    def _unique_corpus_names(self) -> LanguageSpec:
        names = [source.name for source in (*self.corpora, *self.heldout_corpora)]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"corpus source name(s) used twice: {', '.join(duplicated)}")
        sets = [item.name for item in self.evaluation_sets]
        duplicated_sets = sorted({name for name in sets if sets.count(name) > 1})
        if duplicated_sets:
            raise ValueError(f"evaluation set name(s) used twice: {', '.join(duplicated_sets)}")
        if self.code in self.companions:
            raise ValueError(f"language {self.code!r} lists itself among its companions")
        return self

    def suite(self, name: str) -> tuple[EvaluationSet, ...]:
        """The evaluation sets of suite `name` (empty when the language has none)."""
        return tuple(item for item in self.evaluation_sets if item.suite == name)

    def sample_chars(self) -> str:
        """One letter of each script (the first assigned letter of its range); the first script is the main one,
        whose letter a font for this language must draw."""
        found = []
        for script in self.scripts:
            for point in range(script.start, min(script.end, script.start + 4096) + 1):
                if unicodedata.category(chr(point)).startswith("L"):
                    found.append(chr(point))
                    break
        return "".join(found)

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

    def reply_share(self, text: str) -> float:
        """Share of the letters of `text` (digits, spaces and punctuation are neutral) in the reply scripts;
        0 for text without letters, 1 for any letters when the language declares no scripts at all."""
        letters = [c for c in text if unicodedata.category(c).startswith("L")]
        if not letters:
            return 0.0
        ranges = self.reply_scripts or self.scripts
        if not ranges:
            return 1.0
        return sum(any(r.contains(c) for r in ranges) for c in letters) / len(letters)

    def is_reply_in_language(self, text: str) -> bool:
        return self.reply_share(text) >= self.min_reply_share

    def has_target_text(self, text: str) -> bool:
        return any(self.is_target_char(c) for c in text)

    def monolingual_corpora(self, kind: str = "offline") -> tuple[CorpusSource, ...]:
        return tuple(source for source in self.corpora if source.kind == kind and source.parallel is None)

    def parallel_corpora(self, kind: str = "offline") -> tuple[CorpusSource, ...]:
        return tuple(source for source in self.corpora if source.kind == kind and source.parallel is not None)
