"""Tokenizer stage: teach the base tokenizer the language's script without touching anything else.

`expand_tokenizer` adds `budget` real vocabulary entries with BPE merges, ranked by the tokens they save
on the language's training text, such that every text without a target-script character keeps exactly
its old ids. `tokenizer_stats` measures tokens per character and per word before and after.

Candidate sources and expanders are strategies (`xlang.contract.Strategy`, looked up by name by the
caller): the built-in sources `corpus-bpe`, `vocabulary` and `user` live in `candidates` with their
options classes, the `merges` expander in `expand`; `xlang.builtin.tokenizer_strategies` registers them.

Import stays light: `tokenizers`, `transformers` and `sentencepiece` load inside the functions.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xlang.assets.loading import trust_remote_code
from xlang.atomic import move_into_place, name_destination, owned_prefix, remove_dead_staging
from xlang.contract import Options, Strategy
from xlang.errors import XlangError
from xlang.spec import LanguageSpec
from xlang.tokenizer.candidates import (
    CorpusBpeOptions,
    UserOptions,
    VocabularyOptions,
    corpus_bpe_candidates,
    user_candidates,
    vocabulary_candidates,
)
from xlang.tokenizer.expand import MergesOptions, merges_as_pairs, merges_expander, next_free_id
from xlang.tokenizer.families import (
    BYTE_LEVEL,
    METASPACE,
    SENTENCEPIECE,
    TargetScripts,
    detect_family,
    from_byte_symbols,
)
from xlang.tokenizer.shortfall import SHORTFALL_SHARE, census, low_share_note, shortfall_note
from xlang.tokenizer.stats import LanguageStats, stats_table, tokenizer_stats

__all__ = [
    "BYTE_LEVEL",
    "CORPUS_BPE",
    "MERGES",
    "SENTENCEPIECE",
    "CorpusBpeOptions",
    "ExpansionResult",
    "LanguageStats",
    "MANIFEST",
    "MergesOptions",
    "UserOptions",
    "VocabularyOptions",
    "corpus_bpe_candidates",
    "expand_tokenizer",
    "merges_expander",
    "stats_table",
    "tokenizer_stats",
    "user_candidates",
    "vocabulary_candidates",
]

CandidateSource = Strategy | Callable[..., Iterable[str]]
"""`source(language=, texts=, limit=[, vocabularies=][, options=]) -> candidate strings` (the
`register_token_candidate_sources` shape): a Strategy, which passes its function only what it names, or a
plain callable that accepts every keyword it is given."""
Expander = Strategy | Callable[..., Any]
"""`expander(tokenizer=, tokens=, language=, texts=, budget=, required_tokens=, min_frequency=[, options=])`
-> the expanded fast tokenizer (a `tokenizers.Tokenizer` or a transformers fast tokenizer). It receives the
base as a `tokenizers.Tokenizer` and must append its entries after the base's ids and its merges after the
base's merges."""


CORPUS_BPE = Strategy(
    "token_candidate_sources", "corpus-bpe", corpus_bpe_candidates, CorpusBpeOptions, "xlang.tokenizer"
)
"""The candidate source `expand_tokenizer` uses when the caller names none."""
MERGES = Strategy("tokenizer_expanders", "merges", merges_expander, MergesOptions, "xlang.tokenizer")
"""The expander `expand_tokenizer` uses when the caller names none."""

MANIFEST = "xlang-tokenizer.json"
"""Written next to the tokenizer: base, family, language, budget and the new id range."""
_TOKENIZER_FILES = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "added_tokens.json",
)
"""Copied from the base unchanged: special tokens and the chat template stay as they were. GPT-2's slow
`vocab.json`/`merges.txt` are not copied (they would describe the old vocabulary)."""
_RESERVED_BYTE_LEVEL = "\u00ff\u00ffxlang_reserved_{}"
"""Byte 0xFF never occurs in UTF-8, so no text can ever produce these entries."""
_RESERVED_SENTENCEPIECE = "<xlang_reserved_{}>"
"""No merge builds these and SentencePiece marks them unused, so no text can ever produce them."""
_SELF_CHECK_SEGMENTS = 2000


@dataclass(frozen=True)
class ExpansionResult:
    """What `expand_tokenizer` wrote (also saved as `xlang-tokenizer.json` in the folder)."""

    out_dir: Path
    family: str
    language: str
    base: str
    budget: int
    base_vocab_size: int
    vocab_size: int
    new_token_ids: tuple[int, ...]
    new_tokens: tuple[str, ...]
    """The text of each new token in id order; a token that ends inside a character shows U+FFFD there."""
    reserved_token_ids: tuple[int, ...]
    merges_added: int
    sentencepiece_model: bool
    """True when a consistent `tokenizer.model` was written next to `tokenizer.json`."""
    notes: tuple[str, ...] = ()
    """What the user should know: a base file not expanded, fewer new tokens than the budget and why (with
    the measured limits), a corpus mostly in other scripts."""
    candidates: dict[str, int] = field(default_factory=dict)
    train_tokens_per_char: tuple[float, float] = (0.0, 0.0)
    """Base and expanded tokens per character on the target-script training texts."""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        for key, name in (("new_token_ids", "new_id_range"), ("reserved_token_ids", "reserved_id_range")):
            ids = data.pop(key)
            data[name] = [ids[0], ids[-1] + 1] if ids else []
        return data


def expand_tokenizer(
    base: str | Path,
    language: LanguageSpec,
    train_texts: Sequence[str],
    budget: int,
    out_dir: str | Path,
    candidate_sources: Mapping[str, CandidateSource] | None = None,
    expander: Expander | None = None,
    required_tokens: Sequence[str] = (),
    pad_to_multiple_of: int = 64,
    candidate_limit: int | None = None,
    min_frequency: int = 2,
    overwrite: bool = False,
    *,
    vocabularies: Mapping[str, Path] | None = None,
    source_options: Mapping[str, Options | Mapping[str, Any]] | None = None,
    expander_options: Options | Mapping[str, Any] | None = None,
) -> ExpansionResult:
    """Expand the tokenizer in `base` (a Hugging Face folder, or a SentencePiece `.model` file) for
    `language` and write the result to `out_dir`, which `AutoTokenizer.from_pretrained` loads.

    `budget` counts new vocabulary entries, the intermediate ones a merge path needs included.
    `candidate_sources` (name -> source, default `corpus-bpe`) propose tokens; each is called as
    `source(language=, texts=, limit=)` with the target-script training texts and `candidate_limit`
    (default 4 x budget), plus `vocabularies=` (the language's word lists, name -> local file) when given
    and `options=` when `source_options` has an entry for its name. The expander (default `merges`, called
    with `options=expander_options` when given) keeps the candidates that save the most tokens on
    `train_texts`, plus the general-text `prior_texts` a source may return with its candidates
    (`candidates.Candidates`, as `vocabulary` does). `required_tokens` are added whatever their gain. The
    vocabulary is padded to a multiple of `pad_to_multiple_of` (0: no padding) with reserved entries no text
    can produce. Options are checked before any work; nothing is written unless everything succeeds; bad
    input raises `XlangError`.
    """
    started = time.perf_counter()
    sources = dict(candidate_sources) if candidate_sources is not None else {"corpus-bpe": CORPUS_BPE}
    expander = expander if expander is not None else MERGES
    chosen_options = _source_options(sources, with_language_defaults(language, sources, source_options))
    if expander_options is not None and isinstance(expander, Strategy):
        expander_options = expander.configure(expander_options)
    if not isinstance(budget, int) or isinstance(budget, bool) or budget <= 0:
        raise XlangError(f"the budget must be a positive number of new tokens (got {budget!r}); e.g. --budget 8000")
    if not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 0:
        raise XlangError(f"pad_to_multiple_of must be 0 (no padding) or a positive number, got {pad_to_multiple_of!r}")
    scripts = TargetScripts.of(language)
    texts = [text for text in train_texts if text and text.strip()]
    if not texts:
        raise XlangError(f"the {language.name} training corpus is empty; check the corpus source and its train split")
    target_texts = [text for text in texts if scripts.has_target(text)]
    if not target_texts:
        ranges = ", ".join(f"{s.name} U+{s.start:04X}-U+{s.end:04X}" for s in language.scripts)
        raise XlangError(
            f"the training corpus ({len(texts)} texts) has no {language.name} character ({ranges}); "
            f"point the corpus at {language.name} text or pick the right --lang"
        )
    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise XlangError(f"{out} already exists and is not empty; choose another --out or allow overwriting it")

    out.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_staging(out.parent)
    scratch = Path(tempfile.mkdtemp(dir=out.parent, prefix=owned_prefix(out.name, "-tmp")))
    try:
        notes: list[str] = []
        base_dir, proto = _resolve_base(Path(base).expanduser(), scratch / "base", notes)
        base_json = _read_tokenizer_json(base_dir)
        family = detect_family(base_json, where=f"the tokenizer in {base_dir}")
        base_backend = _backend(base_dir)

        limit = candidate_limit if candidate_limit is not None else 4 * budget
        inputs: dict[str, Any] = {"language": language, "texts": target_texts, "limit": limit}
        if vocabularies is not None:
            inputs["vocabularies"] = dict(vocabularies)
        candidates: list[str] = []
        per_source: dict[str, int] = {}
        prior_texts: list[str] = []
        for name, source in sources.items():
            given = {"options": chosen_options[name]} if name in chosen_options else {}
            offered = source(**given, **inputs)
            # a source may weigh the choice toward general text (`candidates.Candidates.prior_texts`)
            prior_texts.extend(getattr(offered, "prior_texts", ()))
            proposed = [token for token in offered if token]
            per_source[name] = len(proposed)
            candidates.extend(proposed)
        if not candidates and not required_tokens:
            raise XlangError(
                f"the candidate sources ({', '.join(sources) or 'none'}) proposed no {language.name} token; "
                "check the corpus and the sources' options"
            )

        expanded_tokenizer = expander(
            **({"options": expander_options} if expander_options is not None else {}),
            tokenizer=base_backend,
            tokens=list(dict.fromkeys(candidates)),
            language=language,
            texts=target_texts + prior_texts,
            budget=budget,
            required_tokens=list(required_tokens),
            min_frequency=min_frequency,
        )
        expanded_json = json.loads(getattr(expanded_tokenizer, "backend_tokenizer", expanded_tokenizer).to_str())
        base_size = next_free_id(base_json)
        new_ids, new_pieces = _new_entries(base_json, expanded_json, base_size, budget)
        size = base_size + len(new_ids)
        padding = (-size) % pad_to_multiple_of if pad_to_multiple_of else 0
        reserved = [
            (_RESERVED_BYTE_LEVEL if family == BYTE_LEVEL else _RESERVED_SENTENCEPIECE).format(index)
            for index in range(padding)
        ]
        final_json, written_proto = _finish(family, base_json, expanded_json, new_pieces, reserved, proto, notes)
        pieces_backend = base_backend
        if final_json.get("pre_tokenizer") != base_json.get("pre_tokenizer"):
            notes.append(_pre_tokenizer_note(language, target_texts, scripts))
            pieces_backend = _with_pre_tokenizer(base_json, final_json.get("pre_tokenizer"))
        if len(new_ids) < SHORTFALL_SHARE * budget:
            found = census(pieces_backend, family, target_texts, scripts, min_frequency)
            proposed = len(dict.fromkeys(candidates))
            notes.append(shortfall_note(len(new_ids), budget, found, proposed, min_frequency, language.name))
        low_share = low_share_note(len(target_texts), len(texts), language.name)
        if low_share is not None:
            notes.append(low_share)

        staging = scratch / "out"
        staging.mkdir()
        for name in _TOKENIZER_FILES:
            if (base_dir / name).is_file():
                shutil.copyfile(base_dir / name, staging / name)
        (staging / "tokenizer.json").write_text(json.dumps(final_json, ensure_ascii=False), encoding="utf-8")
        if written_proto is not None:
            (staging / "tokenizer.model").write_bytes(written_proto.SerializeToString())
        if not (staging / "tokenizer_config.json").is_file():
            (staging / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))

        final = _load(staging)
        if len(final) != size + padding:
            raise XlangError(f"internal: the written tokenizer has {len(final)} entries, expected {size + padding}")
        _self_check(base_backend, final.backend_tokenizer, texts, scripts)
        before, after = _tokens_per_char(base_backend, final.backend_tokenizer, target_texts)
        result = ExpansionResult(
            out_dir=out,
            family=family,
            language=language.code,
            base=str(Path(base).expanduser().resolve()),
            budget=budget,
            base_vocab_size=base_size,
            vocab_size=size + padding,
            new_token_ids=tuple(new_ids),
            new_tokens=tuple(_display(piece, family) for piece in new_pieces),
            reserved_token_ids=tuple(range(size, size + padding)),
            merges_added=len(final_json["model"]["merges"]) - len(base_json["model"].get("merges") or []),
            sentencepiece_model=written_proto is not None,
            notes=tuple(notes),
            candidates=per_source,
            train_tokens_per_char=(before, after),
            seconds=round(time.perf_counter() - started, 2),
        )
        (staging / MANIFEST).write_text(json.dumps(result.to_json(), ensure_ascii=False, indent=2), encoding="utf-8")
        move_into_place(staging, out)
        return result
    except OSError as error:  # a full disk names --out, not the scratch file being written
        name_destination(error, out)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def with_language_defaults(
    language: LanguageSpec,
    sources: Mapping[str, CandidateSource],
    options: Mapping[str, Options | Mapping[str, Any]] | None,
) -> dict[str, Options | Mapping[str, Any]]:
    """`options` on top of the language's own (`Strategies.source_options`), for the sources in use: a run's
    field overrides the plugin's, a field neither sets keeps the source's default. Options already validated
    (an `Options` object) are complete and taken as they are. A registered source validates the merge here, so
    that a bad option the language plugin gave is said to come from it."""
    merged: dict[str, Options | Mapping[str, Any]] = dict(options or {})
    for name, source in sources.items():
        default = language.defaults.source_options.get(name)
        given = merged.get(name)
        if not default or isinstance(given, Options):
            continue
        merged[name] = {**default, **(given or {})}
        if isinstance(source, Strategy):
            try:
                merged[name] = source.configure(merged[name])
            except XlangError as error:
                raise XlangError(
                    f"{error} (language {language.code!r} starts these options from its Strategies.source_options "
                    f"{default}: fix the language plugin, or override the option in stages.expand.source_options)"
                ) from None
    return merged


def _source_options(
    sources: Mapping[str, CandidateSource], options: Mapping[str, Options | Mapping[str, Any]] | None
) -> dict[str, Any]:
    """Each source's options, validated by its Strategy before any work; options for a source that is not
    used are an error (they would be silently ignored)."""
    given = dict(options or {})
    unused = sorted(set(given) - set(sources))
    if unused:
        raise XlangError(
            f"options given for candidate source(s) {', '.join(map(repr, unused))}, which are not used (sources: "
            f"{', '.join(sources) or 'none'}); add the source or drop its options"
        )
    return {
        name: source.configure(given[name]) if isinstance(source, Strategy) else given[name]
        for name, source in sources.items()
        if name in given
    }


def _pre_tokenizer_note(language: LanguageSpec, texts: Sequence[str], scripts: TargetScripts) -> str:
    from xlang.tokenizer.marks import mark_share, script_marks

    share = mark_share(texts, scripts, script_marks(scripts))
    return (
        f"the pre-tokenizer now keeps {language.name} letters and their combining marks in one piece "
        f"({share:.0%} of the corpus's {language.name} characters are marks), so new tokens can be whole words; "
        "text without the script keeps its ids. Expander option join_marks='off' keeps the base's pre-tokenizer"
    )


def _with_pre_tokenizer(tokenizer_json: dict[str, Any], pre_tokenizer: dict[str, Any] | None) -> Any:
    """The base model behind another pre-tokenizer: what an expansion that changed the pre-tokenizer could
    reach is measured on the pieces it cuts."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(json.dumps({**tokenizer_json, "pre_tokenizer": pre_tokenizer}))


def _display(piece: str, family: str) -> str:
    if family == BYTE_LEVEL:
        return from_byte_symbols(piece).decode("utf-8", errors="replace")
    return piece.replace(METASPACE, " ")


def _resolve_base(base: Path, scratch: Path, notes: list[str]) -> tuple[Path, Any]:
    """The base as a Hugging Face folder, and its SentencePiece model when it has one (and it can be read)."""
    from xlang.tokenizer.sentencepiece import check_supported, load_proto, sentencepiece_folder

    if base.is_file():
        return sentencepiece_folder(base, scratch), load_proto(base)
    if base.is_dir():
        model = base / "tokenizer.model"
        if (base / "tokenizer.json").is_file():
            if not model.is_file():
                return base, None
            try:
                return base, load_proto(model)
            except XlangError as error:
                notes.append(f"tokenizer.model was not expanded: {error}")
                return base, None
        if model.is_file():
            check_supported(load_proto(model), str(model))
            return sentencepiece_folder(model, scratch), load_proto(model)
        raise XlangError(f"{base} has no tokenizer.json (nor a tokenizer.model); point --base at a tokenizer folder")
    raise XlangError(f"base tokenizer {base} does not exist; give a tokenizer folder or a SentencePiece .model file")


def _read_tokenizer_json(folder: Path) -> dict[str, Any]:
    path = folder / "tokenizer.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise XlangError(f"cannot read {path}: {error}; it must be a Hugging Face tokenizer.json") from error
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise XlangError(f"{path} has no model section; it must be a Hugging Face tokenizer.json")
    return data


def _backend(folder: Path) -> Any:
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as error:  # tokenizers raises bare Exceptions for a file it cannot parse
        raise XlangError(f"cannot read {folder / 'tokenizer.json'}: {error}") from error


def _load(folder: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code())
    except Exception as error:  # transformers raises many types for a bad folder; the user needs the path
        raise XlangError(f"transformers cannot load the tokenizer in {folder}: {error}") from error
    if not getattr(tokenizer, "is_fast", False):
        raise XlangError(
            f"the tokenizer in {folder} has no fast (tokenizer.json) version; xlang expands fast tokenizers"
        )
    return tokenizer


def _new_entries(
    base_json: dict[str, Any], expanded_json: dict[str, Any], base_size: int, budget: int
) -> tuple[list[int], list[str]]:
    """The expander's additions, checked: old entries untouched, new ones appended, within budget."""
    old, new = base_json["model"]["vocab"], expanded_json["model"]["vocab"]
    if any(new.get(token) != index for token, index in old.items()):
        raise XlangError("internal: the expander changed existing vocabulary entries")
    added = sorted((index, token) for token, index in new.items() if token not in old)
    if [index for index, _ in added] != list(range(base_size, base_size + len(added))):
        raise XlangError("internal: the expander did not append its entries right after the base vocabulary")
    if len(added) > budget:
        raise XlangError(f"internal: the expander added {len(added)} entries, more than the budget of {budget}")
    old_merges = merges_as_pairs(base_json["model"].get("merges") or [])
    if merges_as_pairs(expanded_json["model"].get("merges") or [])[: len(old_merges)] != old_merges:
        raise XlangError("internal: the expander changed the order of the base's merges")
    return [index for index, _ in added], [token for _, token in added]


def _finish(
    family: str,
    base_json: dict[str, Any],
    expanded_json: dict[str, Any],
    new_pieces: list[str],
    reserved: list[str],
    proto: Any,
    notes: list[str],
) -> tuple[dict[str, Any], Any]:
    """Add the reserved entries; for a SentencePiece base whose fast tokenizer matches its model, expand
    the model too and rank the merges the way SentencePiece applies pieces."""
    from xlang.tokenizer.sentencepiece import expand_proto, json_matches_proto, proto_merges

    final = expanded_json
    vocab = final["model"]["vocab"]
    start = next_free_id(base_json) + len(new_pieces)
    for offset, token in enumerate(reserved):
        vocab[token] = start + offset
    written = None
    if family == SENTENCEPIECE:
        if proto is None:
            if not notes:
                notes.append("only the fast tokenizer (tokenizer.json) was written: the base has no tokenizer.model")
        elif not json_matches_proto(base_json, proto):
            notes.append(
                "only the fast tokenizer (tokenizer.json) was written: the base's tokenizer.json and tokenizer.model "
                "disagree, so no SentencePiece model could match the expanded one"
            )
        else:
            written = expand_proto(proto, new_pieces, reserved)
            final["model"]["merges"] = [list(pair) for pair in proto_merges(written)]
    return final, written


def _self_check(base: Any, expanded: Any, texts: Sequence[str], scripts: TargetScripts) -> None:
    """Defence in depth: the corpus's text outside the target script must encode exactly as before."""
    segments: list[str] = []
    for text in texts:
        segments.extend(part for part in scripts.pattern.split(text) if part.strip())
        if len(segments) >= _SELF_CHECK_SEGMENTS:
            break
    old = base.encode_batch(segments, add_special_tokens=False)
    new = expanded.encode_batch(segments, add_special_tokens=False)
    for segment, before, after in zip(segments, old, new, strict=True):
        if before.ids != after.ids:
            raise XlangError(
                f"internal: expansion changed the ids of {segment[:60]!r}; nothing was written, please report"
            )


def _tokens_per_char(
    base: Any, expanded: Any, texts: Sequence[str], sample_chars: int = 200_000
) -> tuple[float, float]:
    """On the first `sample_chars` characters of target text: a quick report, not the benchmark."""
    sample, chars = [], 0
    for text in texts:
        sample.append(text)
        chars += len(text)
        if chars >= sample_chars:
            break
    texts, chars = sample, chars or 1
    counts = []
    for tokenizer in (base, expanded):
        encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
        counts.append(round(sum(len(encoding.ids) for encoding in encodings) / chars, 4))
    return counts[0], counts[1]
