"""Every hook xlang calls, in one place.

Collections use the register-callback pattern: the hook receives a `register` function and calls it
once per thing it offers; the core owns the registry and refuses a name registered twice, naming both
plugins. `firstresult` hooks answer "who handles this input?" and return None to pass. Strategies are
always chosen by name from config (with the language's defaults), never by registration order.

Hooks are called with keyword arguments; an implementation may accept fewer arguments than the spec
lists, so new arguments can be added without breaking plugins.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("xlang")
hookimpl = pluggy.HookimplMarker("xlang")


@hookspec
def register_languages(register: Any) -> None:
    """Offer languages.

    Called once when the registry is first needed. Call ``register(spec)`` with a
    :class:`xlang.spec.LanguageSpec` for each language the plugin supplies.
    """


@hookspec
def register_token_candidate_sources(register: Any) -> None:
    """Offer sources of candidate tokens for vocabulary expansion.

    Call ``register(name, source)``. ``source(language=, texts=, limit=, **options)`` returns an
    iterable of candidate strings (most promising first is welcome, not required: the expansion engine
    ranks them by the compression they buy). ``texts`` is the language's training text; ``limit``
    counts merged (multi-character) tokens, single characters are always included.
    """


@hookspec
def register_tokenizer_expanders(register: Any) -> None:
    """Offer ways of adding tokens to a tokenizer.

    Call ``register(name, expander)``. ``expander(tokenizer=, tokens=, language=, texts=, budget=,
    required_tokens=, min_frequency=)`` takes the base (a ``tokenizers.Tokenizer``), the candidate
    tokens and the target-language training texts, and returns the expanded ``tokenizers.Tokenizer`` (a
    transformers fast tokenizer is accepted too) with at most ``budget`` new entries. New ids come right
    after the base's and new merges after the base's; the ids of any text without a target-script
    character must stay exactly the same.
    """


@hookspec
def register_embedding_initializers(register: Any) -> None:
    """Offer ways of initializing the embedding rows of new tokens.

    Call ``register(name, initializer)``. ``initializer(model=, base_tokenizer=, tokenizer=,
    new_token_ids=, **options)`` fills the new rows of the model's input (and, if untied, output)
    embeddings in place. Old rows must not change.
    """


@hookspec(firstresult=True)
def load_corpus(source: Any, split: str, cache_dir: Any) -> Any:
    """Load a corpus source, if this plugin handles its URI scheme.

    ``source`` is a :class:`xlang.spec.CorpusSource`; ``split`` is ``"train"`` or ``"validation"``;
    ``cache_dir`` is where downloads and built splits live. Return a ``datasets`` Dataset or
    IterableDataset of records with a ``text`` field (one field per language code for parallel sources),
    or None when the URI is not yours. Raise :class:`xlang.errors.XlangError` for a URI you own but
    cannot serve.
    """


@hookspec(firstresult=True)
def load_vit_data(uri: str, cache_dir: Any) -> Any:
    """Load visual-instruction data (LLaVA conversation records), if this plugin handles the URI.

    Return a list or ``datasets`` Dataset of records ``{"id", "image", "conversations", "lang",
    "task"}``, or None when the URI is not yours.
    """


@hookspec(firstresult=True)
def chat_template(language: Any, base_template: Any) -> Any:
    """Return a Jinja chat template for ``language`` (a LanguageSpec), or None to keep the default.

    ``base_template`` is the base tokenizer's template (may be None). The default adds the language's
    ``chat.system_prompt`` to the base template.
    """


@hookspec
def register_teachers(register: Any) -> None:
    """Offer teacher backends for generating multilingual visual-instruction data.

    Call ``register(name, factory)``; ``factory(**options)`` returns an object with
    ``generate(image_path, prompt, language) -> str``.
    """


@hookspec
def register_evaluators(register: Any) -> None:
    """Offer evaluators.

    Call ``register(name, evaluator)``; ``evaluator(model_dir=, language=, texts=, **options)`` returns
    a dict of metric name to number.
    """


@hookspec
def register_recipes(register: Any) -> None:
    """Offer recipes.

    Call ``register(recipe)`` with a :class:`xlang.runner.Recipe` (a name, a description and an
    ordered list of stages).
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the ``xlang`` command line.

    ``cli`` is the root ``click`` group; decorate new commands with ``@cli.command()``.
    """
