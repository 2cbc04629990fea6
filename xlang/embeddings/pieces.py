"""What each new token was before expansion: its text, and the base tokenizer's pieces of that text.

Every initializer that borrows from the old vocabulary starts here. A new token can live in the
expanded tokenizer in two ways: as a vocabulary entry of the model (a BPE merge result, written in the
model's own alphabet, e.g. byte-level ``ĠëĮĢ`` or metaspace ``▁대``) or as an added token (plain text).
The base model's tokenize() spells a vocabulary entry in base pieces without decoding it (a byte-level
entry may be part of a UTF-8 sequence and have no text of its own); an added token is encoded as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xlang.errors import XlangError


@dataclass(frozen=True)
class NewToken:
    id: int
    text: str
    """Decoded text (may hold U+FFFD for a byte-level fragment); for reports and diagnostics."""
    pieces: tuple[int, ...]
    """Base token ids that spell the token; empty when the base tokenizer cannot spell it."""


def check_extends(base_tokenizer: Any, tokenizer: Any) -> list[int]:
    """The ids the expanded tokenizer adds, after checking that it keeps every base token's id.

    Raises XlangError when a base token moved or vanished, or when a new id sits below the base size
    (an id the old model already uses for something else).
    """
    base_vocab = base_tokenizer.get_vocab()
    vocab = tokenizer.get_vocab()
    moved = [(token, i, vocab.get(token)) for token, i in base_vocab.items() if vocab.get(token) != i]
    if moved:
        token, old, new = moved[0]
        where = "is missing" if new is None else f"has id {new}"
        raise XlangError(
            f"the tokenizer does not extend the base tokenizer: {len(moved)} base token(s) changed, e.g. "
            f"{token!r} had id {old} and {where}; expansion must keep every base id"
        )
    old_size = len(base_tokenizer)
    new_ids = sorted(i for token, i in vocab.items() if token not in base_vocab)
    if new_ids and new_ids[0] < old_size:
        raise XlangError(
            f"new token id {new_ids[0]} is below the base vocabulary size {old_size}; new ids must come after the "
            "base ones"
        )
    return new_ids


def spell_new_tokens(base_tokenizer: Any, tokenizer: Any, new_token_ids: Sequence[int]) -> list[NewToken]:
    """Each new token's text and its base pieces (see the module docstring for how)."""
    old_size = len(base_tokenizer)
    base_model = base_tokenizer.backend_tokenizer.model
    added = tokenizer.added_tokens_decoder
    spelled = []
    for token_id in new_token_ids:
        token = tokenizer.convert_ids_to_tokens(int(token_id))
        text = tokenizer.decode([int(token_id)], clean_up_tokenization_spaces=False)
        pieces: list[int] = []
        if int(token_id) not in added:
            pieces = [piece.id for piece in base_model.tokenize(token)]
        if not pieces or any(p >= old_size for p in pieces) or base_tokenizer.unk_token_id in pieces:
            source = added[int(token_id)].content if int(token_id) in added else text
            pieces = base_tokenizer.encode(source, add_special_tokens=False)
        if any(p >= old_size for p in pieces):
            pieces = []
        spelled.append(NewToken(id=int(token_id), text=text, pieces=tuple(pieces)))
    return spelled
