"""Name-to-thing resolution for the runner, the recipes and the CLI (the floor above the plugin manager).

Stage code takes texts, tokenizers and strategy callables as arguments; this module is where a
language code becomes its corpus texts and a strategy name becomes a callable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xlang import plugins
from xlang.errors import XlangError
from xlang.settings import XlangSettings
from xlang.spec import CorpusSource, LanguageSpec

SPLITS = ("train", "validation")


def load_source(source: CorpusSource, split: str, settings: XlangSettings) -> Any:
    """The dataset of one corpus source and split, from whichever plugin claims its URI scheme."""
    settings.apply_environment()
    dataset = plugins.call_first("load_corpus", source=source, split=split, cache_dir=settings.cache_dir)
    if dataset is None:
        scheme = source.uri.split("://", 1)[0]
        raise XlangError(
            f"no plugin loads corpus URI {source.uri!r} (scheme {scheme}://); install a plugin that handles it "
            "or use debian://, hf:// or file://"
        )
    return dataset


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise XlangError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")


def _offline_sources(language: LanguageSpec) -> list[CorpusSource]:
    sources = list(language.offline_corpora())
    if not sources:
        raise XlangError(f"language {language.code!r} declares no offline corpus; add one to its LanguageSpec")
    return sources


def corpus_texts(
    language: LanguageSpec,
    split: str,
    settings: XlangSettings,
    max_chars: int | None = None,
) -> list[str]:
    """The language's offline monolingual documents of one split, in a stable order."""
    _check_split(split)
    sources = _offline_sources(language)
    texts: list[str] = []
    total = 0
    for source in sources:
        for record in load_source(source, split, settings):
            text = record["text"]
            texts.append(text)
            total += len(text)
            if max_chars is not None and total >= max_chars:
                return texts
    return texts


def corpus_dataset(language: LanguageSpec, split: str, settings: XlangSettings) -> Any:
    """The language's offline monolingual sources of one split as one `datasets.Dataset` (keeps the `doc`
    column, so stages that care about page boundaries can join paragraphs back into pages)."""
    from datasets import concatenate_datasets

    _check_split(split)
    sources = _offline_sources(language)
    parts = [load_source(source, split, settings) for source in sources]
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def corpus_documents(
    language: LanguageSpec, split: str, settings: XlangSettings, max_chars: int | None = None
) -> list[str]:
    """One split as whole documents (paragraphs of a page joined), first ``max_chars`` characters: text
    read in context, as a model meets it, rather than paragraph by paragraph."""
    from xlang.eval.bpc import join_documents, take_chars

    return take_chars(join_documents(corpus_dataset(language, split, settings)), max_chars)


def validation_documents(language: LanguageSpec, settings: XlangSettings, max_chars: int | None) -> list[str]:
    """The validation split as documents: BPC measured in context, the same text for every model and command."""
    return corpus_documents(language, "validation", settings, max_chars)


def companion_languages(language: LanguageSpec, codes: tuple[str, ...] = ("en",)) -> list[LanguageSpec]:
    """`language` followed by the installed languages of `codes` (e.g. English, to show it did not get worse)."""
    known = plugins.languages()
    return [language] + [known[code].value for code in codes if code in known and code != language.code]


def validation_texts(
    language: LanguageSpec, settings: XlangSettings, codes: tuple[str, ...] = ("en",)
) -> dict[str, list[str]]:
    """Validation texts of `language` and its companions, keyed by language code."""
    return {spec.code: corpus_texts(spec, "validation", settings) for spec in companion_languages(language, codes)}


def parallel_records(language: LanguageSpec, split: str, settings: XlangSettings) -> list[dict[str, str]]:
    records: list[dict[str, str]] = []
    for source in language.parallel_corpora():
        records.extend(dict(record) for record in load_source(source, split, settings))
    return records


def strategy(kind: str, name: str) -> Any:
    return plugins.get_strategy(kind, name)


def language(code: str) -> LanguageSpec:
    return plugins.get_language(code)


def base_model(name: str, settings: XlangSettings) -> str:
    from xlang.assets.models import resolve_base_model

    return resolve_base_model(name, settings.cache_dir)


def cached_corpus_meta(source: CorpusSource, settings: XlangSettings) -> dict[str, Any] | None:
    """The build record of an offline source if it is already in the cache (no download)."""
    import json

    meta = Path(settings.cache_dir) / "corpora" / source.name / "meta.json"
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
