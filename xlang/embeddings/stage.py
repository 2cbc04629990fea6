"""The init stage: resize the base model to the expanded tokenizer, fill the new rows, save a plain folder.

Guarantees, checked here rather than trusted to the initializer (a third-party one may be buggy):
the old rows are bit-identical afterwards, a tied model is still tied, and no new row is NaN or
infinite. Rows that belong to no token (the tokenizer stage's reserved entries, and padding up to a
multiple of ``pad_to_multiple_of``) are zero: their logit is exactly 0, far below the log-normalizer
of a trained model (about 27 nats for SmolLM2), and no text can produce them as input.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlang.atomic import write_folder_atomically
from xlang.contract import NoOptions, Options, Strategy
from xlang.embeddings.checkpoint import load_causal_lm, load_tokenizer
from xlang.embeddings.pieces import check_extends
from xlang.errors import XlangError

INIT_MANIFEST = "xlang-init.json"
TOKENIZER_MANIFEST = "xlang-tokenizer.json"
"""Written by the tokenizer stage next to the expanded tokenizer; names the reserved (padding) ids."""


@dataclass(frozen=True)
class InitResult:
    """What :func:`initialize_embeddings` wrote (also saved as ``xlang-init.json`` in the folder)."""

    out_dir: Path
    base_vocab_size: int
    """Tokens of the base tokenizer (ids below this are old and untouched)."""
    vocab_size: int
    """Tokens of the expanded tokenizer."""
    new_rows: int
    """Rows the initializer filled: one per new token."""
    tied: bool
    seconds: float
    """The whole stage: load, resize, initialize, check, save."""
    initializer: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    """The initializer's options as it ran (every default filled in)."""
    init_seconds: float = 0.0
    """The initializer call alone."""
    embedding_rows: int = 0
    """Rows of the saved embedding matrix (vocabulary plus padding)."""
    zero_rows: int = 0
    """Reserved and padding rows (no token can produce them), set to zero."""
    facts: dict[str, Any] = field(default_factory=dict)
    """What the initializer reported (JSON-able)."""

    def to_json(self) -> dict[str, Any]:
        data = {key: getattr(self, key) for key in self.__dataclass_fields__}
        data["out_dir"] = str(self.out_dir)
        return data


def _reserved_ids(tokenizer_dir: str | Path) -> list[int]:
    manifest = Path(tokenizer_dir) / TOKENIZER_MANIFEST
    if not manifest.is_file():
        return []
    span = json.loads(manifest.read_text(encoding="utf-8")).get("reserved_id_range") or []
    return list(range(span[0], span[1])) if len(span) == 2 else []


def _is_tied(model: Any) -> bool:
    output = model.get_output_embeddings()
    return output is not None and output.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def _matrices(model: Any) -> list[Any]:
    weights = [model.get_input_embeddings().weight]
    if not _is_tied(model) and model.get_output_embeddings() is not None:
        weights.append(model.get_output_embeddings().weight)
    return weights


STAGE_INPUTS = ("model", "base_tokenizer", "tokenizer", "new_token_ids", "options")
"""What the stage itself hands every initializer; ``inputs`` may not set these."""

Initializer = Strategy | Callable[..., Any]
"""A registered :class:`xlang.contract.Strategy` (it passes the function only the inputs it names), or a
plain function, which receives every input and ``options=`` and must accept them."""


def configure_initializer(initializer: Initializer, options: Options | Mapping[str, Any] | None) -> Any:
    """The options ``initializer`` will receive: validated by a Strategy (an unknown or bad option is an
    XlangError naming the initializer and the option), passed as given (or ``NoOptions()``) to a plain
    function."""
    if isinstance(initializer, Strategy):
        return initializer.configure(options)
    return NoOptions() if options is None else options


def options_record(options: Any) -> dict[str, Any]:
    """Options as JSON-able data for the record."""
    if isinstance(options, Options):
        return options.model_dump(mode="json")
    return dict(options or {})


def initializer_label(initializer: Initializer, name: str | None) -> str:
    if name:
        return name
    if isinstance(initializer, Strategy):
        return initializer.name
    return getattr(initializer, "__name__", "initializer")


def expand_model(
    model: Any,
    base_tokenizer: Any,
    tokenizer: Any,
    initializer: Initializer,
    *,
    options: Options | Mapping[str, Any] | None = None,
    inputs: Mapping[str, Any] | None = None,
    initializer_name: str | None = None,
    reserved_token_ids: Sequence[int] = (),
    pad_to_multiple_of: int = 64,
) -> dict[str, Any]:
    """Resize ``model`` in memory for ``tokenizer`` and let ``initializer`` fill the new rows.

    The in-memory half of :func:`initialize_embeddings` (tests and benchmarks use it directly). The
    initializer is called as ``initializer(options=options, model=, base_tokenizer=, tokenizer=,
    new_token_ids=, **inputs)``; the init stage's ``inputs`` are ``seed``, ``texts`` (target documents)
    and ``keep_texts`` (companion documents). Returns the facts for the record: ids, row counts, the
    options as they ran, timing and what the initializer reported.
    """
    import torch

    name = initializer_label(initializer, initializer_name)
    chosen = configure_initializer(initializer, options)
    given = dict(inputs or {})
    clashing = sorted(set(given) & set(STAGE_INPUTS))
    if clashing:
        raise XlangError(
            f"inputs for initializer {name!r} may not set {', '.join(clashing)}: the stage passes those itself"
        )
    rows = model.get_input_embeddings().weight.shape[0]
    if rows < len(base_tokenizer):
        raise XlangError(
            f"the model has {rows} embedding rows but the base tokenizer has {len(base_tokenizer)} tokens: "
            "they do not belong together; give the model folder its own tokenizer"
        )
    new_ids = check_extends(base_tokenizer, tokenizer)
    reserved = set(reserved_token_ids)
    to_fill = [token_id for token_id in new_ids if token_id not in reserved]
    if pad_to_multiple_of and pad_to_multiple_of < 0:
        raise XlangError(f"pad_to_multiple_of must be 0 (no padding) or positive, got {pad_to_multiple_of}")
    size = len(tokenizer)
    if pad_to_multiple_of:
        size += (-size) % pad_to_multiple_of
    size = max(size, rows)
    tied = _is_tied(model)
    old_size = len(base_tokenizer)
    before = [weight[:old_size].detach().clone() for weight in _matrices(model)]

    if size != rows:
        model.resize_token_embeddings(size, mean_resizing=False)
    filled = set(to_fill)
    zero_ids = [token_id for token_id in range(rows, size) if token_id not in filled]
    with torch.no_grad():
        for weight in _matrices(model):
            if zero_ids:
                weight[torch.tensor(zero_ids, dtype=torch.long, device=weight.device)] = 0
    started = time.perf_counter()
    with torch.no_grad():
        facts = initializer(
            options=chosen,
            model=model,
            base_tokenizer=base_tokenizer,
            tokenizer=tokenizer,
            new_token_ids=to_fill,
            **given,
        )
    init_seconds = time.perf_counter() - started

    after = _matrices(model)
    if tied and not _is_tied(model):
        raise XlangError(f"initializer {name!r} untied the input and output embeddings")
    changed = len(after) != len(before) or any(
        not torch.equal(old, weight[:old_size]) for old, weight in zip(before, after, strict=True)
    )
    if changed:
        raise XlangError(f"initializer {name!r} changed rows of the base vocabulary; it may only fill new rows")
    if to_fill:
        index = torch.tensor(to_fill, dtype=torch.long, device=after[0].device)
        if not all(bool(torch.isfinite(weight[index]).all()) for weight in after):
            raise XlangError(f"initializer {name!r} left NaN or infinite values in new rows")
    model.config.vocab_size = size
    return {
        "new_token_ids": to_fill,
        "zero_rows": len(zero_ids),
        "embedding_rows": size,
        "tied": tied,
        "options": options_record(chosen),
        "init_seconds": init_seconds,
        "facts": facts if isinstance(facts, dict) else {},
    }


def initialize_embeddings(
    base_model: str | Path,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    initializer: Initializer,
    *,
    initializer_name: str | None = None,
    options: Options | Mapping[str, Any] | None = None,
    inputs: Mapping[str, Any] | None = None,
    base_tokenizer: str | Path | None = None,
    reserved_token_ids: Sequence[int] | None = None,
    pad_to_multiple_of: int = 64,
    dtype: str = "auto",
) -> InitResult:
    """Write ``out_dir``: the base model with a row for every token of ``tokenizer_dir`` that is new,
    filled by ``initializer``.

    ``base_model`` is a Hugging Face folder or hub id (safetensors only); its own tokenizer is the base
    unless ``base_tokenizer`` names another. The tokenizer must extend the base (every base token keeps
    its id). ``options`` are checked before anything loads (an unknown or bad option stops here) and
    recorded in ``xlang-init.json``; ``inputs`` go to the initializer as keywords (the init stage:
    ``seed``, ``texts`` target documents, ``keep_texts`` companion documents; see
    :func:`expand_model`). Reserved ids come from the tokenizer stage's ``xlang-tokenizer.json`` unless
    given. ``dtype="auto"`` keeps the checkpoint's dtype so old rows are saved bit for bit. The folder
    (safetensors, the expanded tokenizer, ``xlang-init.json``) loads with plain
    ``AutoModelForCausalLM.from_pretrained`` and appears in one step; bad input raises XlangError and
    writes nothing.
    """
    started = time.perf_counter()
    name = initializer_label(initializer, initializer_name)
    chosen = configure_initializer(initializer, options)
    model = load_causal_lm(base_model, dtype=dtype)
    base = load_tokenizer(base_tokenizer if base_tokenizer is not None else base_model)
    expanded = load_tokenizer(tokenizer_dir)
    reserved = list(reserved_token_ids) if reserved_token_ids is not None else _reserved_ids(tokenizer_dir)
    done = expand_model(
        model,
        base,
        expanded,
        initializer,
        options=chosen,
        inputs=inputs,
        initializer_name=name,
        reserved_token_ids=reserved,
        pad_to_multiple_of=pad_to_multiple_of,
    )
    new_ids = done["new_token_ids"]
    record = {
        "base_model": str(base_model),
        "tokenizer": str(tokenizer_dir),
        "initializer": name,
        "options": done["options"],
        "base_vocab_size": len(base),
        "vocab_size": len(expanded),
        "embedding_rows": done["embedding_rows"],
        "new_id_range": [new_ids[0], new_ids[-1] + 1] if new_ids else [],
        "zero_rows": done["zero_rows"],
        "tied": done["tied"],
        "init_seconds": round(done["init_seconds"], 3),
        "facts": done["facts"],
    }

    def write(staging: Path) -> None:
        model.save_pretrained(staging, safe_serialization=True)
        expanded.save_pretrained(staging)
        if (Path(tokenizer_dir) / TOKENIZER_MANIFEST).is_file():
            (staging / TOKENIZER_MANIFEST).write_bytes((Path(tokenizer_dir) / TOKENIZER_MANIFEST).read_bytes())
        (staging / INIT_MANIFEST).write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")

    out = write_folder_atomically(Path(out_dir), write)
    return InitResult(
        out_dir=out,
        base_vocab_size=len(base),
        vocab_size=len(expanded),
        new_rows=len(new_ids),
        tied=done["tied"],
        seconds=round(time.perf_counter() - started, 2),
        initializer=name,
        options=done["options"],
        init_seconds=round(done["init_seconds"], 3),
        embedding_rows=done["embedding_rows"],
        zero_rows=done["zero_rows"],
        facts=done["facts"],
    )
