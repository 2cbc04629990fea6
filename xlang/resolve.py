"""Name-to-thing resolution for the runner, the recipes and the CLI (the floor above the plugin manager).

Stage code takes texts, tokenizers and strategy callables as arguments; a `Resolver` is where a
language code becomes its corpus texts, a strategy name becomes a callable and a URI becomes records or
a file. Stages receive one as `context.resolver` and never touch the plugin manager themselves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pluggy

from xlang import plugins
from xlang.contract import Strategy, kind_label
from xlang.errors import XlangError
from xlang.settings import XlangSettings
from xlang.spec import CorpusSource, LanguageSpec

SPLITS = ("train", "validation")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise XlangError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")


class Resolver:
    """Looks things up by name for one set of settings and one plugin manager (the process-wide one by
    default). Implements `xlang.contract.Resolver`."""

    def __init__(self, settings: XlangSettings, pm: pluggy.PluginManager | None = None) -> None:
        self.settings = settings
        self._pm = pm

    @property
    def pm(self) -> pluggy.PluginManager:
        return self._pm or plugins.get_plugin_manager()

    # --- languages ----------------------------------------------------------------------------------

    def languages(self) -> dict[str, LanguageSpec]:
        return {code: registered.value for code, registered in plugins.languages(self.pm).items()}

    def language(self, code: str | None = None) -> LanguageSpec:
        """The registered language `code` (default: the `language` setting)."""
        code = code or self.settings.language
        if not code:
            raise XlangError("no language given; pass --lang CODE (or set XLANG_LANGUAGE / language in xlang.toml)")
        return plugins.get_language(code, self.pm)

    def companions(self, language: LanguageSpec) -> tuple[LanguageSpec, ...]:
        """The languages trained and measured next to `language`: the `companions` setting, else the
        language's own list. One that is not installed is an error, never silently dropped."""
        codes = self.settings.companions if self.settings.companions is not None else language.companions
        known = self.languages()
        missing = [code for code in codes if code not in known]
        if missing:
            raise XlangError(
                f"companion language(s) {', '.join(missing)} of {language.code!r} are not installed "
                f"(installed: {', '.join(sorted(known))}); install their plugins or set --companions"
            )
        return tuple(known[code] for code in dict.fromkeys(codes) if code != language.code)

    # --- strategies ---------------------------------------------------------------------------------

    def strategy(self, kind: str, name: str) -> Strategy:
        return plugins.get_strategy(kind, name, self.pm)

    def language_default(self, kind: str, name: str, language: LanguageSpec, flag: str) -> Strategy:
        """The strategy `language` names as its default. A language may default to a plugin's strategy (Korean
        to `xlang-subword-fit`'s initializer); when no installed plugin registers it, the error says whose
        default it is and how to choose another, instead of a bare 'unknown'."""
        known = plugins.strategies(kind, self.pm)
        if name not in known:
            raise XlangError(
                f"{language.name}'s default {kind_label(kind)} {name!r} is not installed: install the plugin that "
                f"registers it (the {language.code!r} language package depends on it), or choose one with {flag} "
                f"(installed: {', '.join(sorted(known)) or 'none'})"
            )
        return known[name]

    def teacher(self, name: str | None = None) -> Any:
        """The teacher the settings name (`teacher`, `teacher_url`, `teacher_model`, the key, and
        `teacher_options` validated by the teacher's own options class), ready to `complete` requests."""
        strategy = self.strategy("teachers", name or self.settings.teacher)
        return strategy(
            options=self.settings.teacher_options,
            url=self.settings.teacher_url,
            model=self.settings.teacher_model,
            api_key=self.settings.teacher_key(),
            cache_dir=self.settings.cache_dir,
        )

    def recipe(self, name: str | None = None) -> Any:
        return plugins.get_recipe(name or self.settings.recipe, self.pm)

    # --- corpora ------------------------------------------------------------------------------------

    def load(self, source: CorpusSource, split: str) -> Any:
        """The dataset of one corpus source and split, from whichever plugin claims its URI scheme."""
        _check_split(split)
        dataset = self.pm.hook.load_corpus(source=source, split=split, cache_dir=self.settings.cache_dir)
        if dataset is None:
            scheme = source.uri.split("://", 1)[0]
            raise XlangError(
                f"no plugin loads corpus URI {source.uri!r} (scheme {scheme}://); install a plugin that handles "
                "it (see `xlang plugins`), or use hf:// or file://"
            )
        return dataset

    def sources(self, language: LanguageSpec) -> tuple[CorpusSource, ...]:
        """The language's monolingual sources of the `corpus_kind` setting."""
        kind = self.settings.corpus_kind
        found = language.monolingual_corpora(kind)
        if not found:
            raise XlangError(
                f"language {language.code!r} declares no {kind} corpus; add one to its LanguageSpec "
                f"or set corpus_kind to {'hub' if kind == 'offline' else 'offline'}"
            )
        return found

    def dataset(self, language: LanguageSpec, split: str) -> Any:
        """The language's monolingual sources of one split as one dataset, in a stable order; read it as
        paragraphs or documents with `xlang.data.views`."""
        parts = [self.load(source, split) for source in self.sources(language)]
        if len(parts) == 1:
            return parts[0]
        from datasets import concatenate_datasets

        return concatenate_datasets(parts)

    def parallel_records(self, language: LanguageSpec, split: str) -> list[dict[str, str]]:
        """Aligned records (`{code: text, ...}`) of the language's parallel sources of the run's kind."""
        records: list[dict[str, str]] = []
        for source in language.parallel_corpora(self.settings.corpus_kind):
            codes = source.parallel or ()
            for record in self.load(source, split):
                records.append({code: language.normalize(record[code]) for code in codes})
        return records

    def cached_corpus_meta(self, source: CorpusSource) -> dict[str, Any] | None:
        """The build record of a source if a plugin left one in the cache (no download)."""
        meta = Path(self.settings.cache_dir) / "corpora" / source.name / "meta.json"
        if not meta.is_file():
            return None
        try:
            return json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    # --- files, models, visual-instruction data -----------------------------------------------------

    def fetch_file(self, uri: str) -> Path:
        path = self.pm.hook.fetch_file(uri=uri, cache_dir=Path(self.settings.cache_dir))
        if path is None:
            scheme = uri.split("://", 1)[0] if "://" in uri else "(none)"
            raise XlangError(
                f"no plugin fetches {uri!r} (scheme {scheme}); use file:// or pypi://, or install a plugin "
                "that handles it (see `xlang plugins`)"
            )
        return Path(path)

    def vocabularies(self, language: LanguageSpec) -> dict[str, Path]:
        """The language's word lists as local files, by name."""
        return {source.name: self.fetch_file(source.uri) for source in language.vocabularies}

    def base_model(self, name: str | None = None) -> str:
        from xlang.assets.models import resolve_base_model

        return resolve_base_model(name or self.settings.base_model, self.settings.cache_dir)

    def vit_records(self, uri: str) -> list[dict[str, Any]]:
        records = self.pm.hook.load_vit_data(uri=uri, cache_dir=self.settings.cache_dir)
        if records is None:
            raise XlangError(
                f"no plugin loads visual-instruction data {uri!r}; use file://PATH.jsonl or a plugin's scheme"
            )
        return list(records)

    def chat_template(self, language: LanguageSpec, base_template: str | None) -> str | None:
        return self.pm.hook.chat_template(language=language, base_template=base_template)
