"""SentencePiece BPE models (`tokenizer.model`) and the fast tokenizers that encode exactly like them.

SentencePiece's BPE does not keep merge rules: at each step it joins the adjacent pair whose
concatenation is the highest-scoring piece. A fast BPE reproduces that with one merge per way of
splitting each piece into two pieces, ranked by the piece's score. xlang builds the fast tokenizer from
the model with that rule, and expands both by appending pieces whose scores sit below every ordinary
piece, so the old merges keep their order and the new ones only involve target-script pieces.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from xlang.atomic import write_folder_atomically
from xlang.errors import XlangError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_BPE = 2
_SCORE_FLOOR = -1e7
"""Scores below this (e.g. Mistral's -1e9 whitespace runs) are float32-coarse; new scores stay above it."""


def load_proto(path: str | Path) -> Any:
    """The `ModelProto` of a SentencePiece model file, or an XlangError naming the file."""
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as error:
        raise XlangError(
            f"reading the SentencePiece model {path} needs the sentencepiece and protobuf packages: "
            "pip install sentencepiece protobuf"
        ) from error
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(Path(path).read_bytes())
    except (OSError, ValueError) as error:  # protobuf's DecodeError is a ValueError
        raise XlangError(f"cannot read SentencePiece model {path}: {error}; point at a tokenizer.model file") from error
    if not proto.pieces:
        raise XlangError(f"{path} is not a SentencePiece model (no pieces); point at a tokenizer.model file")
    return proto


def check_supported(proto: Any, where: str) -> None:
    if proto.trainer_spec.model_type != _BPE:
        kind = {1: "Unigram", 2: "BPE", 3: "word", 4: "char"}.get(proto.trainer_spec.model_type, "unknown")
        raise XlangError(
            f"{where} is a SentencePiece {kind} model; xlang expands SentencePiece BPE models (Llama-2/Mistral "
            "style) and byte-level BPE tokenizers only"
        )
    if not proto.trainer_spec.byte_fallback:
        raise XlangError(
            f"{where} has no byte fallback, so unknown characters become <unk>; xlang expands byte-fallback "
            "SentencePiece BPE models only"
        )
    if any(piece.type == USER_DEFINED for piece in proto.pieces):
        raise XlangError(
            f"{where} has user-defined pieces, which SentencePiece matches before BPE; xlang cannot keep such a "
            "model's fast and slow encodings equal, so it does not expand it"
        )


def proto_merges(proto: Any) -> list[tuple[str, str]]:
    """Every split of every ordinary piece into two ordinary pieces, strongest piece first (ties by id,
    then by the split's strings): SentencePiece's BPE written as ranked merges."""
    normal = {piece.piece: (piece.score, index) for index, piece in enumerate(proto.pieces) if piece.type == NORMAL}
    ranked = []
    for token, (score, index) in normal.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in normal and right in normal:
                ranked.append((-score, index, left, right))
    ranked.sort()
    return [(left, right) for _, _, left, right in ranked]


def proto_to_tokenizer_json(proto: Any) -> dict[str, Any]:
    """A `tokenizer.json` that encodes like the SentencePiece model (Llama-2's layout: the dummy prefix
    and space escaping as normalizer steps, no pre-tokenizer, a BOS template)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, processors

    spec = proto.normalizer_spec
    vocab = {piece.piece: index for index, piece in enumerate(proto.pieces)}
    tokenizer = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=proto_merges(proto),
            unk_token=proto.trainer_spec.unk_piece or None,
            fuse_unk=True,
            byte_fallback=bool(proto.trainer_spec.byte_fallback),
            dropout=None,
        )
    )
    steps: list[Any] = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if spec.add_dummy_prefix:
        steps.append(normalizers.Prepend("\u2581"))
    if spec.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "\u2581"))
    tokenizer.normalizer = normalizers.Sequence(steps)
    parts: list[Any] = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if spec.add_dummy_prefix:
        parts.append(decoders.Strip(content=" ", left=1, right=0))
    tokenizer.decoder = decoders.Sequence(parts)
    specials = [piece.piece for piece in proto.pieces if piece.type in (CONTROL, UNKNOWN)]
    tokenizer.add_special_tokens([AddedToken(token, normalized=False, special=True) for token in specials])
    bos_id = proto.trainer_spec.bos_id
    if 0 <= bos_id < len(proto.pieces):
        bos = proto.pieces[bos_id].piece
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    return json.loads(tokenizer.to_str())


def json_matches_proto(tokenizer_json: dict[str, Any], proto: Any) -> bool:
    """Whether a fast tokenizer's vocabulary and merges are exactly the ones this model implies: only
    then can both be expanded in step."""
    model = tokenizer_json.get("model") or {}
    vocab = model.get("vocab") or {}
    if len(vocab) != len(proto.pieces) or any(vocab.get(p.piece) != i for i, p in enumerate(proto.pieces)):
        return False
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges") or []]
    return merges == proto_merges(proto)


def new_piece_scores(proto: Any, count: int) -> list[float]:
    """Scores for `count` appended pieces: below every ordinary piece (so old merges keep precedence),
    decreasing in the order the pieces were learned, and exact in float32."""
    ordinary = [p.score for p in proto.pieces if p.type == NORMAL and p.score > _SCORE_FLOOR]
    start = (min(ordinary) if ordinary else 0.0) - 1.0
    if start - count < _SCORE_FLOOR:
        raise XlangError(
            "the SentencePiece model's scores leave no room for new pieces; expand the fast tokenizer only"
        )
    return [start - index for index in range(count)]


def expand_proto(proto: Any, new_pieces: Sequence[str], reserved: Iterable[str] = ()) -> Any:
    """A copy of `proto` with `new_pieces` appended as ordinary pieces (in learning order) and `reserved`
    as unused ones (never produced, they only pad the vocabulary)."""
    from sentencepiece import sentencepiece_model_pb2

    expanded = sentencepiece_model_pb2.ModelProto()
    expanded.CopyFrom(proto)
    reserved = list(reserved)
    scores = new_piece_scores(proto, len(new_pieces) + len(reserved))
    for piece, score in zip([*new_pieces, *reserved], scores, strict=True):
        entry = expanded.pieces.add()
        entry.piece = piece
        entry.score = score
        entry.type = NORMAL if len(expanded.pieces) <= len(proto.pieces) + len(new_pieces) else UNUSED
    expanded.trainer_spec.vocab_size = len(expanded.pieces)
    return expanded


def sentencepiece_folder(model_file: str | Path, out_dir: str | Path) -> Path:
    """Write a Hugging Face tokenizer folder for a SentencePiece BPE model: `tokenizer.json` built with
    the rule above, the model itself as `tokenizer.model`, and a config that names its special tokens.
    Used for bases that ship only a `.model` (Mistral v1 in `mistral-common`)."""
    import shutil

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    proto = load_proto(model_file)
    check_supported(proto, str(model_file))
    out = Path(out_dir)

    def write(staging: Path) -> None:
        spec = proto.trainer_spec
        names = {
            index: proto.pieces[index].piece
            for index in (spec.bos_id, spec.eos_id, spec.unk_id)
            if 0 <= index < len(proto.pieces)
        }
        fast = PreTrainedTokenizerFast(
            tokenizer_object=Tokenizer.from_str(json.dumps(proto_to_tokenizer_json(proto))),
            bos_token=names.get(spec.bos_id),
            eos_token=names.get(spec.eos_id),
            unk_token=names.get(spec.unk_id),
        )
        fast.save_pretrained(staging)
        shutil.copyfile(model_file, staging / "tokenizer.model")

    write_folder_atomically(out, write)
    return out
