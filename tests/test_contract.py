"""The plugin contract as code reads it: every LanguageSpec field has an effect, settings choose the run,
and a third-party recipe gets its own flags on `xlang extend` without a change to the core."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from xlang import hookimpl
from xlang.contract import Flag, Recipe, Stage, StageConfig, StageContext, StageOutput
from xlang.data.views import documents, paragraphs
from xlang.errors import XlangError
from xlang.resolve import Resolver
from xlang.settings import load_settings
from xlang.spec import ChatBits, CorpusSource, LanguageSpec, ScriptRange, Strategies

REPO = Path(__file__).resolve().parent.parent
CHAT = ChatBits(system_prompt="s")


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> str:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path.as_uri()


class _Languages:
    def __init__(self, *specs: LanguageSpec) -> None:
        self.specs = specs

    @hookimpl
    def register_languages(self, register: Any) -> None:
        for spec in self.specs:
            register(spec)


@pytest.fixture
def folder_language(tmp_path: Path) -> LanguageSpec:
    """A language written in full-width Latin (normalized by NFKC) with an offline and a hub-kind source."""
    offline = _write_jsonl(
        tmp_path / "offline.jsonl", [{"text": "ＡＢＣ ｄｅｆ", "doc": "a"}, {"text": "ｇｈｉ", "doc": "a"}]
    )
    hub = _write_jsonl(tmp_path / "hub.jsonl", [{"text": "ｈｕｂ ｔｅｘｔ", "doc": "h"}])
    return LanguageSpec(
        code="qaz",
        name="Widish",
        scripts=(ScriptRange(name="Fullwidth Forms", start=0xFF01, end=0xFF5E),),
        normalizer="NFKC",
        corpora=(
            CorpusSource(name="qaz-offline", uri=offline + "?validation_chars=1&max_share=0.5"),
            CorpusSource(name="qaz-hub", uri=hub + "?validation_chars=1&max_share=0.5", kind="hub"),
        ),
        chat=CHAT,
        companions=("en",),
        defaults=Strategies(embedding_initializer="mean"),
    )


def test_the_normalizer_applies_to_every_view_of_the_corpus(folder_language, fresh_plugins, tmp_path):
    fresh_plugins.register(_Languages(folder_language), name="widish")
    resolver = Resolver(load_settings(cache_dir=tmp_path / "cache"), fresh_plugins)
    train = resolver.dataset(folder_language, "train")
    assert paragraphs(train, folder_language) + documents(train, folder_language) == ["ghi", "ghi"] or (
        paragraphs(train, folder_language) == ["ABC def", "ghi"]
        and documents(train, folder_language) == ["ABC def\nghi"]
    )
    assert all(text.isascii() for text in paragraphs(train, folder_language))


def test_corpus_kind_chooses_offline_or_hub_sources(folder_language, fresh_plugins, tmp_path):
    fresh_plugins.register(_Languages(folder_language), name="widish")
    offline = Resolver(load_settings(cache_dir=tmp_path / "cache"), fresh_plugins)
    hub = Resolver(load_settings(cache_dir=tmp_path / "cache", corpus_kind="hub"), fresh_plugins)
    assert [s.name for s in offline.sources(folder_language)] == ["qaz-offline"]
    assert [s.name for s in hub.sources(folder_language)] == ["qaz-hub"]
    only_hub = folder_language.model_copy(update={"corpora": folder_language.corpora[1:]})
    with pytest.raises(XlangError, match="declares no offline corpus.*corpus_kind to hub"):
        offline.sources(only_hub)


def test_companions_come_from_the_spec_unless_the_setting_says_otherwise(folder_language, fresh_plugins, tmp_path):
    fresh_plugins.register(_Languages(folder_language), name="widish")
    cache = tmp_path / "cache"
    assert [s.code for s in Resolver(load_settings(cache_dir=cache), fresh_plugins).companions(folder_language)] == [
        "en"
    ]
    none = Resolver(load_settings(cache_dir=cache, companions=()), fresh_plugins)
    assert none.companions(folder_language) == ()
    other = Resolver(load_settings(cache_dir=cache, companions=("ko", "qaz")), fresh_plugins)
    assert [s.code for s in other.companions(folder_language)] == ["ko"]  # never itself
    missing = Resolver(load_settings(cache_dir=cache, companions=("xx",)), fresh_plugins)
    with pytest.raises(XlangError, match="companion language\\(s\\) xx of 'qaz' are not installed"):
        missing.companions(folder_language)


def test_the_language_defaults_choose_the_strategy_and_the_manifest_records_it(
    folder_language, fresh_plugins, tmp_path
):
    from xlang.runner import stage_configs

    fresh_plugins.register(_Languages(folder_language), name="widish")
    resolver = Resolver(load_settings(cache_dir=tmp_path / "cache"), fresh_plugins)
    recipe = resolver.recipe("x-llava")
    configs = stage_configs(recipe, resolver.settings, folder_language, resolver, until="init")
    assert configs["init"].initializer == "mean" and configs["init"].options == {}
    assert configs["expand"].candidate_sources == ("corpus-bpe",) and configs["expand"].expander == "merges"
    chosen = Resolver(
        load_settings(cache_dir=tmp_path / "cache", stages={"init": {"initializer": "random"}}), fresh_plugins
    )
    assert stage_configs(recipe, chosen.settings, folder_language, chosen, until="init")["init"].initializer == "random"


@pytest.mark.parametrize(
    ("defaults", "stage", "flag"),
    [
        (Strategies(embedding_initializer="subword-elsewhere"), "init", "--initializer"),
        (Strategies(tokenizer_expander="merges-elsewhere"), "expand", "--expander"),
        (Strategies(candidate_sources=("corpus-bpe", "words-elsewhere")), "expand", "--source"),
    ],
)
def test_a_language_default_no_plugin_registers_names_the_language_and_the_flag(
    defaults, stage, flag, folder_language, fresh_plugins, tmp_path
):
    """A language may default to a plugin's strategy (Korean to `xlang-subword-fit`'s `subword-copy`); without
    that plugin the run stops before any work, saying whose default it is and how to choose another. A strategy
    the user names is looked up as before."""
    from xlang.runner import stage_configs

    language = folder_language.model_copy(update={"defaults": defaults})
    fresh_plugins.register(_Languages(language), name="widish")
    resolver = Resolver(load_settings(cache_dir=tmp_path / "cache"), fresh_plugins)
    recipe = resolver.recipe("x-llava")
    with pytest.raises(XlangError) as raised:
        stage_configs(recipe, resolver.settings, language, resolver, until="init")
    message = str(raised.value)
    assert message.startswith("Widish's default ") and "elsewhere' is not installed" in message, message
    assert f"choose one with {flag}" in message and "'qaz' language package depends on it" in message, message
    assert ("subword-freq" if stage == "init" else "merges" if flag == "--expander" else "vocabulary") in message
    chosen = {
        "init": {"init": {"initializer": "random"}},
        "expand": {"expand": {"expander": "merges", "candidate_sources": ("corpus-bpe",)}},
    }[stage]
    named = Resolver(load_settings(cache_dir=tmp_path / "cache", stages=chosen), fresh_plugins)
    configs = stage_configs(recipe, named.settings, language, named, until="init")
    assert configs["expand"].expander == "merges" and configs["init"].initializer in ("random", "subword-freq")


def test_run_settings_come_from_toml_and_environment(tmp_path, monkeypatch):
    (tmp_path / "xlang.toml").write_text(
        'language = "ko"\nbase_model = "/models/mine"\ncompanions = ["en", "zh"]\ncorpus_kind = "hub"\n'
    )
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert (settings.language, settings.base_model, settings.companions, settings.corpus_kind) == (
        "ko",
        "/models/mine",
        ("en", "zh"),
        "hub",
    )
    monkeypatch.setenv("XLANG_LANGUAGE", "zh")
    monkeypatch.setenv("XLANG_COMPANIONS", "[]")
    assert (load_settings().language, load_settings().companions) == ("zh", ())
    assert load_settings(language="ja").language == "ja"  # a flag wins


# --- a third-party recipe -----------------------------------------------------------------------------------


class ScaleConfig(StageConfig):
    factor: int = Field(default=1, gt=0)


def _scale(context: StageContext) -> StageOutput:
    (context.out_dir / "factor.txt").write_text(str(context.config.factor))
    languages = ",".join(spec.code for spec in context.languages)
    return StageOutput(metrics={"factor": context.config.factor, "languages": languages}, report="## scale\nok")


TOY = Recipe(
    name="toy",
    description="one stage that records its knob",
    stages=(Stage("scale", "write the factor", ScaleConfig, _scale),),
    flags=(Flag("factor", "scale.factor", "scale: the factor.", int),),
)


class ToyRecipePlugin:
    @hookimpl
    def register_recipes(self, register: Any) -> None:
        register(TOY)

    @hookimpl
    def register_commands(self, cli: Any) -> None:
        import click

        @cli.command("toy-hello")
        @click.option("--name", default="world")
        def hello(name: str) -> None:
            """Say hello (a command from a plugin)."""
            click.echo(f"hello {name}")


TOY_PLUGIN = ToyRecipePlugin()


def test_a_third_party_recipe_gets_its_flags_and_runs_through_extend(tmp_path, test_cache_dir):
    site = tmp_path / "site"
    info = site / "xlang_toy-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: xlang-toy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[xlang]\ntoy = tests.test_contract:TOY_PLUGIN\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("XLANG_")}
    env.update(XLANG_CACHE_DIR=str(test_cache_dir), PYTHONPATH=os.pathsep.join([str(site), str(REPO)]), COLUMNS="200")

    def xlang(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", "from xlang.cli import main; main()", *args]
        return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)

    assert xlang("toy-hello", "--name", "plugin").stdout == "hello plugin\n"
    helped = xlang("extend", "--help")
    assert "--factor" in helped.stdout and "[toy]" in helped.stdout
    base = str(tmp_path)  # a folder: the toy recipe never loads it
    (tmp_path / "config.json").write_text("{}")
    run = tmp_path / "run"
    done = xlang("extend", "--recipe", "toy", "--lang", "ko", "--base", base, "--factor", "7", "--out", str(run))
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["scale"]["metrics"] == {"factor": 7, "languages": "ko,en"}
    assert (run / "scale" / "factor.txt").read_text() == "7"
    wrong = xlang("extend", "--recipe", "toy", "--lang", "ko", "--base", base, "--budget", "5", "--out", str(run))
    assert wrong.returncode == 2 and "--budget is a flag of recipe(s) x-llava, x-llava-ab, not of 'toy'" in wrong.stderr


def test_a_recipe_composed_in_python_runs_without_registration(tmp_path, test_cache_dir, fresh_plugins):
    from xlang.runner import extend

    (tmp_path / "config.json").write_text("{}")
    manifest = extend(
        "ko",
        recipe=TOY,
        base_model=str(tmp_path),
        out=tmp_path / "run",
        cache_dir=test_cache_dir,
        companions=(),
        stages={"scale": {"factor": 3}},
    )
    assert manifest["recipe"] == "toy" and manifest["companions"] == []
    assert manifest["config"]["scale"] == {"factor": 3}
    assert manifest["stages"]["scale"]["metrics"] == {"factor": 3, "languages": "ko"}


class MemoryScheme:
    """A plugin serving `memo://` corpora and files from memory: the `load_corpus` and `fetch_file` hooks."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @hookimpl
    def load_corpus(self, source: Any, split: str, cache_dir: Any) -> Any:
        if not source.uri.startswith("memo://"):
            return None
        import datasets

        texts = {"train": ["가나다 라마", "바사 아자"], "validation": ["차카 타파"]}[split]
        return datasets.Dataset.from_dict({"text": texts, "doc": [f"{split}-{i}" for i in range(len(texts))]})

    @hookimpl
    def fetch_file(self, uri: str, cache_dir: Any) -> Any:
        if not uri.startswith("memo://"):
            return None
        path = self.folder / uri.removeprefix("memo://")
        path.write_text("가나다\n라마 12 x\n", encoding="utf-8")
        return path


def test_corpus_and_file_schemes_come_from_plugins(fresh_plugins, tmp_path):
    from xlang.spec import VocabularySource

    fresh_plugins.register(MemoryScheme(tmp_path), name="memory")
    spec = LanguageSpec(
        code="qam",
        name="Memorish",
        scripts=(ScriptRange(name="Hangul Syllables", start=0xAC00, end=0xD7A3),),
        corpora=(CorpusSource(name="memo-text", uri="memo://text"),),
        vocabularies=(VocabularySource(name="memo-words", uri="memo://words.txt"),),
        chat=CHAT,
    )
    resolver = Resolver(load_settings(cache_dir=tmp_path / "cache"), fresh_plugins)
    assert paragraphs(resolver.dataset(spec, "train"), spec) == ["가나다 라마", "바사 아자"]
    assert documents(resolver.dataset(spec, "validation"), spec) == ["차카 타파"]
    assert resolver.vocabularies(spec) == {"memo-words": tmp_path / "words.txt"}
    unknown = spec.model_copy(update={"corpora": (CorpusSource(name="other", uri="nowhere://x"),)})
    with pytest.raises(XlangError, match="no plugin loads corpus URI 'nowhere://x'"):
        resolver.dataset(unknown, "train")
    with pytest.raises(XlangError, match="no plugin fetches 'nowhere://x'"):
        resolver.fetch_file("nowhere://x")
