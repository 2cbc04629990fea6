"""Strategies a plugin offers: an initializer, a candidate source and an expander registered by plugin
objects in a fresh plugin manager, found by name and run by the stages with their validated options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field
from tiny_models import tiny_llama

from xlang import plugins
from xlang.contract import Options
from xlang.errors import XlangError
from xlang.hookspecs import hookimpl
from xlang.resolve import Resolver
from xlang.settings import XlangSettings

KOREAN = [
    "대화 상자는 지역화 데이터를 포함할 수 있습니다.",
    "취소를 클릭하면 대화 상자를 불러오지 않습니다.",
    "스택 호출을 사용하면 프로그램 실행 도중 프로시저 및 함수 시퀀스를 모니터링할 수 있습니다.",
] * 8


class FillOptions(Options):
    value: float = Field(default=1.0, gt=0)
    """What every new input row is filled with."""


def fill_rows(*, model: Any, new_token_ids: list[int], seed: int, options: FillOptions) -> dict[str, Any]:
    import torch

    with torch.no_grad():
        model.get_input_embeddings().weight[new_token_ids] = options.value
    return {"filled": len(new_token_ids), "seed": seed}


class FixedWordsOptions(Options):
    words: tuple[str, ...]
    """The candidates this source offers."""


def fixed_words(*, limit: int, options: FixedWordsOptions) -> list[str]:
    return list(options.words)[:limit]


class CappedOptions(Options):
    most: int = Field(gt=0)
    """At most this many new entries, whatever the stage's budget."""


EXPANDER_CALLS: list[dict[str, Any]] = []


def capped_merges(
    *, tokenizer: Any, tokens: list[str], language: Any, texts: list[str], budget: int, options: CappedOptions
) -> Any:
    from xlang.tokenizer import merges_expander

    EXPANDER_CALLS.append({"budget": budget, "tokens": list(tokens), "most": options.most})
    return merges_expander(
        tokenizer=tokenizer,
        tokens=tokens,
        language=language,
        texts=texts,
        budget=min(budget, options.most),
        required_tokens=[],
        min_frequency=2,
    )


class StrategiesPlugin:
    @hookimpl
    def register_embedding_initializers(self, register: Any) -> None:
        register("fill", fill_rows, options=FillOptions)

    @hookimpl
    def register_token_candidate_sources(self, register: Any) -> None:
        register("fixed-words", fixed_words, options=FixedWordsOptions)

    @hookimpl
    def register_tokenizer_expanders(self, register: Any) -> None:
        register("capped-merges", capped_merges, options=CappedOptions)


@pytest.fixture
def resolver(tmp_path: Path) -> Resolver:
    manager = plugins.make_plugin_manager()
    plugins.register_plugin(StrategiesPlugin(), name="test-strategies", pm=manager)
    return Resolver(XlangSettings(cache_dir=tmp_path / "cache"), manager)


def test_a_plugin_initializer_runs_in_the_init_stage_with_its_options(
    resolver: Resolver, smollm2_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from xlang.embeddings import initialize_embeddings
    from xlang.tokenizer import expand_tokenizer

    ko = resolver.language("ko")
    tokenizer_dir = tmp_path / "tokenizer"
    expand_tokenizer(smollm2_dir, ko, KOREAN, 24, tokenizer_dir)
    base = tmp_path / "base"
    tiny_llama(49_152, tied=True).save_pretrained(base, safe_serialization=True)
    AutoTokenizer.from_pretrained(smollm2_dir).save_pretrained(base)

    fill = resolver.strategy("embedding_initializers", "fill")
    assert fill.plugin == "test-strategies"
    with pytest.raises(XlangError, match="'fill' has no option 'fit_steps' \\(its options: value\\)"):
        fill.configure({"fit_steps": 3})

    result = initialize_embeddings(
        base,
        tokenizer_dir,
        tmp_path / "out",
        fill,
        initializer_name="fill",
        options=fill.configure({"value": 0.25}),
        inputs={"seed": 5, "texts": KOREAN, "keep_texts": []},
    )
    assert result.facts == {"filled": 24, "seed": 5} and result.options == {"value": 0.25}
    assert json.loads((tmp_path / "out" / "xlang-init.json").read_text())["options"] == {"value": 0.25}
    weight = load_file(tmp_path / "out" / "model.safetensors")["model.embed_tokens.weight"]
    assert bool((weight[49_152 : 49_152 + 24] == 0.25).all())


def test_a_plugin_source_and_expander_run_in_the_tokenizer_stage(
    resolver: Resolver, smollm2_dir: Path, tmp_path: Path
) -> None:
    from xlang.tokenizer import expand_tokenizer

    ko = resolver.language("ko")
    EXPANDER_CALLS.clear()
    words = ("대화", "상자", "클릭", "프로그램")
    result = expand_tokenizer(
        smollm2_dir,
        ko,
        KOREAN,
        40,
        tmp_path / "tokenizer",
        candidate_sources={"fixed-words": resolver.strategy("token_candidate_sources", "fixed-words")},
        expander=resolver.strategy("tokenizer_expanders", "capped-merges"),
        source_options={"fixed-words": {"words": words}},
        expander_options={"most": 6},
    )
    assert result.candidates == {"fixed-words": 4}
    assert EXPANDER_CALLS == [{"budget": 40, "tokens": list(words), "most": 6}]
    assert 0 < len(result.new_token_ids) <= 6
    assert all(token.strip(" \ufffd") in "".join(words) for token in result.new_tokens), result.new_tokens


def test_the_tokenizer_stage_checks_options_before_any_work(resolver: Resolver, tmp_path: Path) -> None:
    from xlang.tokenizer import expand_tokenizer

    ko = resolver.language("ko")
    source = resolver.strategy("token_candidate_sources", "fixed-words")
    expander = resolver.strategy("tokenizer_expanders", "capped-merges")
    missing_base = tmp_path / "no-such-base"  # never read: the options fail first
    cases = [
        ({"fixed-words": {}}, {"most": 3}, "invalid options for token candidate source 'fixed-words': words"),
        ({"fixed-words": {"words": ["대화"]}}, {"most": 0}, "invalid options for tokenizer expander 'capped-merges'"),
        ({"fixed-words": {"words": ["대화"]}, "user": {"tokens": ["대화"]}}, {"most": 3}, "'user', which are not used"),
    ]
    for source_options, expander_options, message in cases:
        with pytest.raises(XlangError, match=message):
            expand_tokenizer(
                missing_base,
                ko,
                KOREAN,
                10,
                tmp_path / "out",
                candidate_sources={"fixed-words": source},
                expander=expander,
                source_options=source_options,
                expander_options=expander_options,
            )
    assert not (tmp_path / "out").exists()


def test_a_language_plugin_s_source_options_are_where_a_run_starts(
    resolver: Resolver, smollm2_dir: Path, tmp_path: Path
) -> None:
    """A language's `Strategies.source_options` reach its sources through both the recipe (what the manifest
    records) and `expand_tokenizer`; a run's own options override them field by field."""
    from xlang_recipes.x_llava import ExpandConfig, resolve_expand

    from xlang.spec import Strategies
    from xlang.tokenizer import expand_tokenizer

    words = ("대화", "상자")
    spec = resolver.language("ko").model_copy(
        update={
            "code": "ko-test",
            "defaults": Strategies(
                candidate_sources=("fixed-words",), source_options={"fixed-words": {"words": words}}
            ),
        }
    )

    class SmallCorpusLanguage:
        @hookimpl
        def register_languages(self, register: Any) -> None:
            register(spec)

    plugins.register_plugin(SmallCorpusLanguage(), name="small-corpus-language", pm=resolver.pm)
    language = resolver.language("ko-test")

    resolved = resolve_expand(ExpandConfig(), language, resolver)
    assert resolved.source_options == {"fixed-words": {"words": list(words)}}
    overridden = resolve_expand(ExpandConfig(source_options={"fixed-words": {"words": ["클릭"]}}), language, resolver)
    assert overridden.source_options == {"fixed-words": {"words": ["클릭"]}}
    # a run that does not use the source leaves its options aside
    assert resolve_expand(ExpandConfig(candidate_sources=("corpus-bpe",)), language, resolver).source_options == {
        "corpus-bpe": {"min_frequency": 2}
    }

    result = expand_tokenizer(
        smollm2_dir,
        language,
        KOREAN,
        40,
        tmp_path / "tokenizer",
        candidate_sources={"fixed-words": resolver.strategy("token_candidate_sources", "fixed-words")},
    )
    assert result.candidates == {"fixed-words": 2}
    assert all(token.strip(" \ufffd") in "".join(words) for token in result.new_tokens), result.new_tokens

    # an option the source does not take, given by the language plugin, is said to come from it
    mistaken = Strategies(candidate_sources=("fixed-words",), source_options={"fixed-words": {"word": "x"}})
    wrong = language.model_copy(update={"defaults": mistaken})
    with pytest.raises(XlangError, match=r"no option 'word'.*language 'ko-test'.*Strategies.source_options"):
        resolve_expand(ExpandConfig(), wrong, resolver)
    with pytest.raises(XlangError, match=r"no option 'word'.*language 'ko-test'"):
        expand_tokenizer(
            smollm2_dir,
            wrong,
            KOREAN,
            40,
            tmp_path / "wrong",
            candidate_sources={"fixed-words": resolver.strategy("token_candidate_sources", "fixed-words")},
        )
    assert not (tmp_path / "wrong").exists()
