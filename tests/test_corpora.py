"""Corpora in the core: the built-in `hf://` and `file://` sources behind the `load_corpus` hook, read
through `xlang.resolve.Resolver`, and corpus statistics. (`debian://` is a plugin's:
tests/test_debian_plugin.py.)
"""

from __future__ import annotations

import json

import pytest

from xlang import plugins
from xlang.builtin import corpus_sources
from xlang.data import split_stats, texts, views
from xlang.data.sources import hub_view
from xlang.errors import XlangError
from xlang.resolve import Resolver
from xlang.settings import XlangSettings
from xlang.spec import ChatBits, CorpusSource, LanguageSpec, ScriptRange

# --- the hook and file:// ---------------------------------------------------------------------------


def _source(uri: str, name: str = "local", parallel: tuple[str, str] | None = None) -> CorpusSource:
    return CorpusSource(name=name, uri=uri, parallel=parallel)


def _language(*corpora: CorpusSource) -> LanguageSpec:
    return LanguageSpec(
        code="ko",
        name="Korean",
        scripts=(ScriptRange(name="Hangul Syllables", start=0xAC00, end=0xD7A3),),
        corpora=corpora,
        chat=ChatBits(system_prompt="s"),
    )


@pytest.fixture
def resolver(tmp_path) -> Resolver:
    """The core alone: built-in sources, no installed plugin."""
    return Resolver(XlangSettings(cache_dir=tmp_path), plugins.make_plugin_manager(load_entry_points=False))


def test_hook_passes_on_other_schemes(tmp_path, resolver):
    assert resolver.pm.hook.load_corpus(source=_source("s3://bucket/x.txt"), split="train", cache_dir=tmp_path) is None
    assert corpus_sources.load_corpus(source="ftp://x/y", split="train", cache_dir=tmp_path) is None
    assert (
        corpus_sources.load_corpus(source=_source("debian://manpages?x=1"), split="train", cache_dir=tmp_path) is None
    )
    with pytest.raises(XlangError, match=r"no plugin loads corpus URI 's3://bucket/x.txt' \(scheme s3://\)"):
        resolver.load(_source("s3://bucket/x.txt"), "train")


def test_file_txt_paragraphs_split_disjointly(tmp_path, resolver):
    paragraphs = [f"문단 {i}: 한국어 문장이 여기에 있습니다. " * 3 for i in range(200)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    spec = _language(_source(corpus.as_uri()), CorpusSource(name="hub", uri="hf://x/y", kind="hub"))
    assert [source.name for source in spec.monolingual_corpora()] == ["local"]
    loaded = {split: views.paragraphs(resolver.dataset(spec, split), spec) for split in ("train", "validation")}
    train, validation = loaded["train"], loaded["validation"]
    assert validation and set(train).isdisjoint(validation)
    assert sorted(train + validation) == sorted(p.strip() for p in paragraphs)
    assert views.paragraphs(resolver.dataset(spec, "validation"), spec) == validation
    assert texts(resolver.load(spec.corpora[0], "validation")) == validation
    # every paragraph of a .txt file is its own document
    assert views.documents(resolver.dataset(spec, "validation"), spec) == validation


def test_file_jsonl_and_its_errors(tmp_path, monkeypatch, resolver):
    corpus = tmp_path / "data" / "c.jsonl"
    corpus.parent.mkdir()
    corpus.write_text("".join(json.dumps({"body": f"line {i} " * 20}) + "\n" for i in range(100)), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    dataset = resolver.load(_source("file://data/c.jsonl?field=body"), "train")
    assert dataset.num_rows > 90 and dataset.column_names == ["text", "doc"]
    with pytest.raises(XlangError, match=r"c.jsonl:1 has no string field 'text'"):
        resolver.load(_source("file://data/c.jsonl"), "train")
    with pytest.raises(XlangError, match=r"unknown option\(s\) colour"):
        resolver.load(_source("file://data/c.jsonl?colour=red"), "train")
    corpus.write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(XlangError, match=r"c.jsonl:2 is not valid JSON"):
        resolver.load(_source(corpus.as_uri()), "train")
    with pytest.raises(XlangError, match="does not exist"):
        resolver.load(_source("file:///nowhere/corpus.txt"), "train")
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(XlangError, match="holds no text"):
        resolver.load(_source((tmp_path / "empty.txt").as_uri()), "train")
    with pytest.raises(XlangError, match="unknown split 'test'"):
        corpus_sources.load_corpus(source=_source(corpus.as_uri()), split="test", cache_dir=tmp_path)


def test_file_jsonl_doc_keys_and_a_plus_in_options(tmp_path, resolver):
    """Records sharing a `doc` stay in one split; a `+` in a URI option is a plus, not a space."""
    corpus = tmp_path / "pages.jsonl"
    rows = [{"a+b": f"page {page} part {part} " * 10, "doc": f"page-{page}"} for page in range(40) for part in range(3)]
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    uri = f"{corpus.as_uri()}?field=a+b&validation_chars=1000&max_share=0.2&seed=x+y"
    train, validation = (resolver.load(_source(uri), split) for split in ("train", "validation"))
    assert set(train["doc"]).isdisjoint(validation["doc"]) and validation.num_rows % 3 == 0
    assert train.num_rows + validation.num_rows == len(rows)
    spec = _language(_source(uri))
    documents = views.documents(resolver.dataset(spec, "validation"), spec)
    assert len(documents) == validation.num_rows // 3 and all(doc.count("\n") == 2 for doc in documents)


# --- hf:// -----------------------------------------------------------------------------------------


def test_hub_without_the_hub_is_one_clear_error(monkeypatch, resolver):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    source = _source("hf://wikimedia/wikipedia?config=20231101.ko&field=text", "wikipedia-ko")
    with pytest.raises(XlangError, match=r"cannot stream hf://wikimedia/wikipedia.*unreachable.*offline corpora"):
        resolver.load(source, "train")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(XlangError, match="offline mode is on"):
        resolver.load(source, "validation")
    with pytest.raises(XlangError, match="names no dataset"):
        resolver.load(_source("hf://?config=x"), "train")


def test_hub_view_holds_out_the_first_records():
    import datasets

    stream = datasets.Dataset.from_dict({"id": list(range(50)), "body": [f"doc {i}" for i in range(50)]})
    stream = stream.to_iterable_dataset()
    validation = hub_view(stream, "validation", "body", 10)
    train = hub_view(stream, "train", "body", 10)
    assert [r["text"] for r in validation] == [f"doc {i}" for i in range(10)]
    assert [r["text"] for r in train] == [f"doc {i}" for i in range(10, 50)]
    assert texts(train, limit=3) == ["doc 10", "doc 11", "doc 12"]
    with pytest.raises(XlangError, match="pass limit="):
        texts(train)
    with pytest.raises(XlangError, match="no field 'text'"):
        hub_view(stream, "train", "text", 10)


# --- statistics ----------------------------------------------------------------------------------


def test_split_stats_count_target_characters():
    spec = _language()
    stats = split_stats(spec, ["한국어 ab", "가나"])
    assert (stats.records, stats.documents, stats.chars, stats.visible_chars, stats.target_chars) == (2, 2, 8, 7, 5)
    assert stats.target_share == pytest.approx(5 / 7)
