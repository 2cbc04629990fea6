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

    Call ``register(name, source, options=OptionsClass)``; ``options`` (a subclass of
    :class:`xlang.contract.Options`) is optional and validates what a user sets under
    ``stages.expand.source_options.<name>``. ``source`` is called with the inputs it names among
    ``language=`` (a LanguageSpec), ``texts=`` (the language's training paragraphs), ``limit=`` (merged,
    multi-character candidates wanted; single characters always count), ``vocabularies=`` (the
    language's word lists as local files, name -> path) and ``options=``. It returns an iterable of
    candidate strings; the expansion engine ranks them by the compression they buy. A source may return
    :class:`xlang.tokenizer.candidates.Candidates` (a list of strings with ``prior_texts``): those texts
    join the training text in what the expander counts gains on (a general-text prior).
    """


@hookspec
def register_tokenizer_expanders(register: Any) -> None:
    """Offer ways of adding tokens to a tokenizer.

    Call ``register(name, expander, options=OptionsClass)``. ``expander`` is called with the inputs it
    names among ``tokenizer=`` (the base ``tokenizers.Tokenizer``), ``tokens=`` (candidates),
    ``language=``, ``texts=``, ``budget=``, ``required_tokens=``, ``min_frequency=`` and ``options=``,
    and returns the expanded ``tokenizers.Tokenizer`` (a transformers fast tokenizer is accepted too)
    with at most ``budget`` new entries. New ids come right after the base's and new merges after the
    base's; the ids of any text without a target-script character must stay exactly the same.
    """


@hookspec
def register_embedding_initializers(register: Any) -> None:
    """Offer ways of initializing the embedding rows of new tokens.

    Call ``register(name, initializer, options=OptionsClass)``. ``initializer`` is called with the inputs
    it names among ``model=``, ``base_tokenizer=``, ``tokenizer=``, ``new_token_ids=``, ``seed=``,
    ``texts=`` (target-language training documents), ``keep_texts=`` (the companion languages' training
    documents, whose predictions must not change), ``prior_texts=`` (general text written from the
    language's word-frequency lists, as large as the training text; empty when it declares none) and
    ``options=`` (its validated options, set under ``stages.init.options``). It fills the new rows of the
    input (and, if untied, output) embeddings in place and returns a JSON-able dict of facts. Old rows
    must not change.
    """


@hookspec
def register_vision_towers(register: Any) -> None:
    """Offer vision towers for assembling a LLaVA.

    Call ``register(name, loader, options=OptionsClass)``. ``loader`` is called with the inputs it
    names among ``cache_dir=`` (xlang's cache folder), ``image_size=`` (requested input size or None)
    and ``options=``, and returns ``(vision_model, image_processor)``: a transformers vision model
    whose ``config`` is a vision config LLaVA accepts (e.g. ``CLIPVisionConfig``, ``Dinov2Config``)
    and an image processor for it. The align stage names the tower in ``stages.align.assemble.vision_tower``.
    """


@hookspec(firstresult=True)
def load_corpus(source: Any, split: str, cache_dir: Any) -> Any:
    """Load a corpus source, if this plugin handles its URI scheme.

    ``source`` is a :class:`xlang.spec.CorpusSource`; ``split`` is ``"train"`` or ``"validation"``;
    ``cache_dir`` is where downloads and built splits live. Return a ``datasets`` Dataset or
    IterableDataset of records with a ``text`` field (one field per language code for parallel sources)
    and, where paragraphs belong to a larger document, a ``doc`` field naming it; or None when the URI
    is not yours. Raise :class:`xlang.errors.XlangError` for a URI you own but cannot serve.
    """


@hookspec(firstresult=True)
def fetch_file(uri: str, cache_dir: Any) -> Any:
    """Fetch one file named by ``uri`` into ``cache_dir``, if this plugin handles its scheme.

    Used for the language's word lists (``VocabularySource.uri``) and fonts (``LanguageSpec.font``).
    Return the local ``pathlib.Path``, or None when the URI is not yours; raise
    :class:`xlang.errors.XlangError` for a URI you own but cannot fetch.
    """


@hookspec(firstresult=True)
def load_vit_data(uri: str, cache_dir: Any) -> Any:
    """Load visual-instruction data (LLaVA conversation records), if this plugin handles the URI.

    Return a list or ``datasets`` Dataset of records ``{"id", "image", "conversations", "lang",
    "task"}`` (optionally ``"split"``: ``"train"`` or ``"heldout"``), or None when the URI is not yours.
    """


@hookspec(firstresult=True)
def chat_template(language: Any, base_template: Any) -> Any:
    """Return a Jinja chat template for the LLaVA built for ``language`` (a LanguageSpec), or None.

    ``base_template`` is the chat template of the language model the LLaVA is built from (None when it
    has none). Returning None keeps xlang's template, which uses each language's ``chat.system_prompt``.
    """


@hookspec
def register_evaluators(register: Any) -> None:
    """Offer evaluators that the evaluate stage and `xlang eval run` run by name.

    Call ``register(name, evaluator, options=OptionsClass)``. An evaluator is called once per model and
    language with the inputs it names, and returns a dict of metric name to number. Two kinds:

    - a **text** evaluator names ``texts=`` (validation documents of the language) and reads ``model=`` (a
      loaded causal LM) and ``tokenizer=`` (``stages.evaluate.evaluators``: ``bpc``, ``tokens-per-char``);
    - a **benchmark** evaluator names ``items=``: the items of every evaluation set of the suite that names
      it (:class:`xlang.spec.EvaluationSet`; items from :mod:`xlang.eval.benchmarks`). It asks the model
      through ``answerer=`` (:class:`xlang.eval.answers.Answerer`: cached, timed, resumable) and grades
      through ``judge=`` (:class:`xlang.eval.judge.Judge`, or None when no judge is set). Built in:
      ``open-ended``, ``multiple-choice``, ``short-answer``.

    Both get ``language=`` (its LanguageSpec) and ``options=``.
    """


@hookspec
def register_teachers(register: Any) -> None:
    """Offer teachers: vision-language models that write visual-instruction data (`xlang data generate`).

    Call ``register(name, factory, options=OptionsClass)``. ``factory`` is called with the inputs it
    names among ``url=`` (the ``teacher_url`` setting), ``model=`` (``teacher_model``: a model name or
    folder), ``api_key=`` (a ``pydantic.SecretStr`` or None; never log it), ``cache_dir=`` and
    ``options=`` (validated from the ``teacher_options`` setting), and returns a teacher: an object with
    ``async complete(request) -> TeacherReply`` for a :class:`xlang.teachers.TeacherRequest` (OpenAI chat
    messages, images as data URLs), ``async aclose()`` and ``describe() -> dict`` (what the data records
    as its teacher; no secrets). ``complete`` raises :class:`xlang.teachers.TeacherRetryable` for what a
    retry may cure (rate limits, server errors, timeouts, malformed replies) and
    :class:`xlang.errors.XlangError` for what it cannot (a wrong key, an unknown model).
    """


@hookspec
def register_recipes(register: Any) -> None:
    """Offer recipes.

    Call ``register(recipe)`` with a :class:`xlang.contract.Recipe` (a name, a description, an ordered
    list of stages and the command-line flags it adds to ``xlang extend``).
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the ``xlang`` command line.

    ``cli`` is the root ``click`` group; decorate new commands with ``@cli.command()``.
    """
