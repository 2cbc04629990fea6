"""The contract types recipes, stages and strategies share: data and call rules, no heavy imports.

This module is on the ground floor (next to `spec.py`, `hookspecs.py` and `settings.py`): the runner,
the recipes, the plugin manager and plugins all import it; it imports none of them.

- A **strategy** is a named callable of one kind (an initializer, an expander, ...), registered through
  a `register_*` hook with an optional options class. The stage offers *inputs* (a model, texts); the
  user sets *options* (validated by the strategy's `Options` subclass, which forbids unknown fields).
- A **recipe** is an ordered list of stages plus the command-line flags it declares; a stage is a
  pydantic config and a function of a `StageContext`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from xlang.errors import XlangError
from xlang.settings import merge_nested

StrategyKind = Literal[
    "token_candidate_sources",
    "tokenizer_expanders",
    "embedding_initializers",
    "vision_towers",
    "evaluators",
    "teachers",
]
STRATEGY_KINDS: tuple[str, ...] = get_args(StrategyKind)

STRATEGY_INPUTS: dict[str, tuple[str, ...]] = {
    "token_candidate_sources": ("language", "texts", "limit", "vocabularies"),
    "tokenizer_expanders": ("tokenizer", "tokens", "language", "texts", "budget", "required_tokens", "min_frequency"),
    "embedding_initializers": (
        "model",
        "base_tokenizer",
        "tokenizer",
        "new_token_ids",
        "seed",
        "texts",
        "keep_texts",
        "prior_texts",
    ),
    "vision_towers": ("cache_dir", "image_size"),
    "evaluators": ("model", "tokenizer", "texts", "language", "items", "answerer", "judge"),
    "teachers": ("url", "model", "api_key", "cache_dir"),
}
"""The inputs the core offers each kind of strategy (besides `options`). A strategy names those it uses;
the core never passes anything else (`Strategy.__call__` checks), and docs/hooks.md lists exactly these."""


def kind_label(kind: str) -> str:
    """`embedding_initializers` -> `embedding initializer` (for messages)."""
    return kind.removesuffix("s").replace("_", " ")


def check_kind(kind: str) -> None:
    if kind not in STRATEGY_KINDS:
        raise XlangError(f"unknown strategy kind {kind!r}; the kinds are {', '.join(STRATEGY_KINDS)}")


class Options(BaseModel):
    """Base class of a strategy's options: frozen, and an option it does not know is an error.

    The docstring under each field is its description (`xlang strategies NAME` prints it)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class NoOptions(Options):
    """The options of a strategy that takes none."""


def validation_problems(error: ValidationError) -> str:
    """A pydantic error as one line: `field: message; field: message`."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in error.errors())


@dataclass(frozen=True)
class Strategy:
    """One registered strategy: what it is, who offered it, and how its options are checked.

    Call it with the stage's inputs as keywords; it receives those its signature names (or all of them
    when it takes `**kwargs`) plus `options=` when it declares that parameter.
    """

    kind: str
    name: str
    function: Callable[..., Any]
    options: type[Options]
    plugin: str

    @property
    def label(self) -> str:
        return f"{kind_label(self.kind)} {self.name!r}"

    def configure(self, values: Mapping[str, Any] | Options | None = None) -> Options:
        """Validated options; an unknown or bad option names this strategy, the option and what it takes."""
        if isinstance(values, self.options):
            return values
        values = dict(values or {})
        known = list(self.options.model_fields)
        unknown = sorted(set(values) - set(known))
        if unknown:
            takes = f"its options: {', '.join(known)}" if known else "it takes no options"
            raise XlangError(
                f"{self.label} has no option {', '.join(repr(name) for name in unknown)} ({takes}); "
                f"remove the option or choose another {kind_label(self.kind)} that takes it"
            )
        try:
            return self.options(**values)
        except ValidationError as error:
            raise XlangError(f"invalid options for {self.label}: {validation_problems(error)}") from error

    def accepted(self) -> tuple[set[str], bool]:
        """The keyword names the function takes, and whether it takes any keyword (`**kwargs`)."""
        parameters = inspect.signature(self.function).parameters.values()
        names = {p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        return names, any(p.kind is p.VAR_KEYWORD for p in parameters)

    def __call__(self, options: Mapping[str, Any] | Options | None = None, **inputs: Any) -> Any:
        offered = STRATEGY_INPUTS.get(self.kind, ())
        undeclared = sorted(set(inputs) - set(offered))
        if undeclared:
            raise TypeError(f"{self.label} was called with {', '.join(undeclared)}, not inputs of the contract")
        chosen = self.configure(options)
        names, takes_any = self.accepted()
        given = inputs if takes_any else {key: value for key, value in inputs.items() if key in names}
        if "options" in names or takes_any:
            given["options"] = chosen
        return self.function(**given)


# --- recipes and stages -----------------------------------------------------------------------------------


class StageConfig(BaseModel):
    """Base of a stage's config: only the knobs the stage reads, frozen, unknown knobs rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Flag:
    """A command-line flag a recipe declares for `xlang extend`: `--NAME VALUE` sets `stage.knob[.sub]`.

    `path` is dotted: `"init.options.fit_steps"` sets `settings.stages["init"]["options"]["fit_steps"]`;
    `also` names further knobs the same value sets (one flag for a knob two stages share).
    `parse` turns the flag's text into the value (e.g. `int`, or a parser for `ko=0.5,en=0.5`).
    """

    name: str
    path: str
    help: str
    parse: Callable[[str], Any] = str
    multiple: bool = False
    """Repeatable (`--source a --source b`); the value is the tuple of parsed values."""
    also: tuple[str, ...] = ()
    keyed: bool = False
    """Repeatable `NAME=VALUE` entries collected into one mapping at `path` (`--init-option fit_steps=150`):
    a strategy's own options reach the command line without the recipe naming them. `parse` is not used;
    a value is read as JSON when it is JSON (`150`, `true`, `1e-3`), else kept as text, and the strategy's
    options class checks it."""

    def nested(self, value: Any) -> dict[str, Any]:
        """`{"init": {"options": {"fit_steps": value}}}` for the path above (every path in `also` too)."""
        merged: dict[str, Any] = {}
        for path in (self.path, *self.also):
            result: Any = value
            for part in reversed(path.split(".")):
                result = {part: result}
            merged = merge_nested(merged, result)
        return merged


class Resolver(Protocol):
    """What a stage may look up by name: languages, corpora, strategies, visual-instruction data.

    Implemented by `xlang.resolve.Resolver`; a stage reaches it as `context.resolver`, never through the
    global plugin manager.
    """

    def language(self, code: str) -> Any: ...

    def languages(self) -> dict[str, Any]: ...

    def companions(self, language: Any) -> tuple[Any, ...]: ...

    def strategy(self, kind: str, name: str) -> Strategy: ...

    def language_default(self, kind: str, name: str, language: Any, flag: str) -> Strategy: ...

    def dataset(self, language: Any, split: str) -> Any: ...

    def vocabularies(self, language: Any) -> dict[str, Path]: ...

    def parallel_records(self, language: Any, split: str) -> list[dict[str, str]]: ...

    def vit_records(self, uri: str) -> list[dict[str, Any]]: ...

    def teacher(self, name: str | None = None) -> Any: ...

    def fetch_file(self, uri: str) -> Path: ...

    def chat_template(self, language: Any, base_template: str | None) -> str | None: ...


@dataclass
class StageOutput:
    """What a stage hands back: numbers for the manifest, a report section, the model a user should load."""

    metrics: dict[str, Any] = field(default_factory=dict)
    report: str = ""
    model_dir: str | None = None
    """Relative to the stage folder; the last stage that sets it becomes the run's `final_model`."""


@dataclass
class StageContext:
    """Everything a stage may use. `out_dir` is the (temporary) folder the stage writes into."""

    run_dir: Path
    out_dir: Path
    language: Any
    """The target `LanguageSpec`."""
    companions: tuple[Any, ...]
    """`LanguageSpec`s trained and measured next to the target (the `companions` setting, else the
    language's own `companions`)."""
    settings: Any
    config: Any
    base_model: str
    manifest: dict[str, Any]
    work_dir: Path
    """A folder that survives a failed or killed attempt (checkpoints live here), removed once the stage is done."""
    resolver: Resolver

    @property
    def languages(self) -> tuple[Any, ...]:
        """The target language followed by its companions."""
        return (self.language, *self.companions)

    def stage_dir(self, name: str) -> Path:
        """The output folder of an earlier, finished stage."""
        record = self.manifest["stages"].get(name)
        if not record or record.get("status") != "done":
            raise XlangError(
                f"stage {name!r} has not finished in {self.run_dir}; run it first (xlang extend --until {name})"
            )
        return self.run_dir / record["output"]

    def model_of(self, name: str) -> Path | None:
        record = self.manifest["stages"].get(name) or {}
        if record.get("status") == "done" and record.get("model_dir"):
            return self.run_dir / record["output"] / record["model_dir"]
        return None

    def latest_model(self) -> str:
        """The newest model folder a finished stage produced, or the base model."""
        for name in reversed(list(self.manifest["stages"])):
            model = self.model_of(name)
            if model is not None:
                return str(model)
        return self.base_model


@dataclass(frozen=True)
class Stage:
    """A named step: its config class and its function.

    `resolve(config, language, resolver)` returns the config with every default that depends on the
    language or a strategy filled in (an initializer's name and its validated options), so that the
    manifest records what ran, never `None`, and a bad option fails before any work starts.
    """

    name: str
    description: str
    config: type[BaseModel]
    run: Callable[[StageContext], StageOutput]
    resolve: Callable[[Any, Any, Resolver], Any] | None = None


@dataclass(frozen=True)
class Recipe:
    """A named, ordered list of stages and the flags it adds to `xlang extend`."""

    name: str
    description: str
    stages: tuple[Stage, ...]
    flags: tuple[Flag, ...] = ()

    def stage_names(self) -> list[str]:
        return [stage.name for stage in self.stages]


def stage_flags(recipes: Sequence[Recipe]) -> dict[str, list[tuple[Recipe, Flag]]]:
    """Every flag the recipes declare, by flag name (one name may be declared by several recipes)."""
    found: dict[str, list[tuple[Recipe, Flag]]] = {}
    for recipe in recipes:
        for flag in recipe.flags:
            found.setdefault(flag.name, []).append((recipe, flag))
    return found
