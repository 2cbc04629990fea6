"""docs/plugin-reference.md is generated from the code (docs/plugin_reference.py): the page must equal what
the generator writes, every spec field must be documented by its docstring, every example must build, and
the URI option tables must be the options the loaders accept."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

from xlang.spec import (
    ChatBits,
    CorpusSource,
    LanguageSpec,
    ScriptRange,
    Strategies,
    TaskPrompts,
    TeacherPrompts,
    VocabularySource,
)

REPO = Path(__file__).resolve().parent.parent


def _generator():
    spec = importlib.util.spec_from_file_location("plugin_reference", REPO / "docs" / "plugin_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["plugin_reference"] = module
    spec.loader.exec_module(module)
    return module


reference = _generator()


class WeightedSource(CorpusSource):
    weight: float = 1.0


class DocumentedWeightedSource(CorpusSource):
    weight: float = 1.0
    """How often the source's records are drawn, relative to the others."""


def test_the_page_is_what_the_generator_writes() -> None:
    page = (REPO / "docs" / "plugin-reference.md").read_text(encoding="utf-8")
    assert page == reference.render(), "docs/plugin-reference.md is out of date: run python docs/plugin_reference.py"


def test_a_field_added_without_a_docstring_fails_and_is_named() -> None:
    with pytest.raises(reference.UndocumentedField, match=r"WeightedSource\.weight"):
        reference.documentation(WeightedSource)
    documented = reference.documentation(DocumentedWeightedSource)
    assert documented["weight"] == "How often the source's records are drawn, relative to the others."
    assert documented["parallel"].startswith("For aligned text")  # inherited fields keep their docstrings
    with pytest.raises(reference.UndocumentedField, match=r"WeightedSource\.weight"):
        reference.model_section(WeightedSource)


def test_every_spec_model_and_field_is_on_the_page() -> None:
    import pydantic

    from xlang import spec

    page = reference.render()
    # every public model of the spec module, so a model added there without a page section fails here
    models = [
        value
        for name, value in vars(spec).items()
        if isinstance(value, type)
        and issubclass(value, pydantic.BaseModel)
        and value.__module__ == spec.__name__
        and not name.startswith("_")
    ]
    assert {LanguageSpec, ScriptRange, CorpusSource, VocabularySource, ChatBits, Strategies} <= set(models)
    assert {TeacherPrompts, TaskPrompts} <= set(models)
    assert set(reference.MODELS) == set(models)
    for model in models:
        section = page[page.index(f"### {model.__name__}\n") :]
        for name in model.model_fields:
            assert f"| `{name}` |" in section.split("\n### ")[0], f"{model.__name__}.{name}"


def test_pending_documentation_only_stands_in_for_missing_docstrings() -> None:
    """Each entry belongs in xlang/spec.py as a docstring; once it is there, the entry must go."""
    by_name = {model.__name__: model for model in reference.MODELS}
    for (model_name, field), _text in reference.PENDING_DOCSTRINGS.items():
        model = by_name[model_name]
        assert field in model.model_fields, f"{model_name}.{field} is not a field"
        assert field not in reference.field_docstrings(model), f"{model_name}.{field} has a docstring now"


def test_every_example_builds() -> None:
    names = {model.__name__: model for model in reference.MODELS}
    for name, source in reference.EXAMPLES.items():
        built = eval(textwrap.dedent(source).strip(), {}, names)  # the page's own code, nothing else
        assert isinstance(built, names[name]), name


def test_uri_option_tables_are_the_options_the_loaders_accept() -> None:
    from xlang_debian.build import _OPTIONS, parse_debian_uri
    from xlang_debian.options import CORPUS_OPTIONS

    from xlang.data import sources
    from xlang.data.splits import SplitRule

    assert {option.name for option in reference.FILE_CORPUS_OPTIONS} == set(sources._FILE_OPTIONS)
    assert {option.name for option in reference.HUB_CORPUS_OPTIONS} == set(sources._HUB_OPTIONS)
    assert {option.name for option in CORPUS_OPTIONS} == set(_OPTIONS)
    file_defaults = {option.name: option.default for option in reference.FILE_CORPUS_OPTIONS}
    assert file_defaults["validation_chars"] == str(SplitRule.validation_chars)
    assert file_defaults["max_share"] == str(SplitRule.max_share) and file_defaults["seed"] == SplitRule.seed
    hub_defaults = {option.name: option.default for option in reference.HUB_CORPUS_OPTIONS}
    assert hub_defaults["validation_records"] == str(sources.HUB_VALIDATION_RECORDS)

    # every documented example of every option, in one URI, parses; the declared defaults are what it gets
    examples = "&".join(option.example for option in CORPUS_OPTIONS)
    parsed = parse_debian_uri(f"debian://manpages?{examples}")
    declared = {option.name: option.example.split("=", 1)[1] for option in CORPUS_OPTIONS}
    assert parsed.manpath == declared["manpath"] and parsed.min_chars == int(declared["min_chars"])
    assert parsed.rule.validation_chars == int(declared["validation_chars"])
    minimal = parse_debian_uri(f"debian://libreoffice-help?deb=pool/a_1_all.deb&sha256={'a' * 64}")
    defaults = {option.name: option.default for option in CORPUS_OPTIONS}
    assert minimal.min_chars == int(defaults["min_chars"]) and minimal.rule.seed == defaults["seed"]
    assert minimal.rule.validation_chars == int(defaults["validation_chars"])
    assert minimal.rule.max_share == float(defaults["max_share"])
