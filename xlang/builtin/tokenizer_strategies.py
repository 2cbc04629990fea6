"""Built-in tokenizer strategies: candidate sources (`corpus-bpe`, `vocabulary`, `user`) and the
`merges` expander, adapted from the tokenizer stage into hook implementations."""

from __future__ import annotations

from typing import Any

from xlang.hookspecs import hookimpl


@hookimpl
def register_token_candidate_sources(register: Any) -> None:
    from xlang.tokenizer.candidates import (
        CorpusBpeOptions,
        UserOptions,
        VocabularyOptions,
        corpus_bpe_candidates,
        user_candidates,
        vocabulary_candidates,
    )

    register("corpus-bpe", corpus_bpe_candidates, options=CorpusBpeOptions)
    register("vocabulary", vocabulary_candidates, options=VocabularyOptions)
    register("user", user_candidates, options=UserOptions)


@hookimpl
def register_tokenizer_expanders(register: Any) -> None:
    from xlang.tokenizer import MergesOptions, merges_expander

    register("merges", merges_expander, options=MergesOptions)
