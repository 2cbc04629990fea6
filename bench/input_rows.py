"""Training only the new tokens' input rows, everything else frozen: does that fix how the model reads them?

On a tied model a new row is both what the model reads and what it predicts, and most cheap fixes that
help one side cost the other (docs/embeddings.md). This bench removes that conflict to see what the input
side alone can gain out of domain: SmolLM2 with its output matrix copied (untied), `subword-freq` rows,
then the new *input* rows alone trained for --steps steps (Adam) on the training documents by one of:

- `states`: the base model's hidden states (AweDist-style distillation). The base model reads the same
  window with every new token spelled in its base pieces; at the end of each token (where both models have
  read the same text) the expanded model's states at --layers are pulled towards the base model's, by
  squared error relative to the base state's square. Only the first max(--layers) layers are run.
- `next-token`: the next-token loss of the expanded model itself, its output rows frozen.

Bits per character out of domain (the language's `heldout_corpora`), in domain (validation) and English are
printed after `subword-freq` and at half and all of the steps (the first --max-chars characters of each).

    .venv/bin/python bench/input_rows.py --language ko --objective states --steps 80 --learning-rate 1e-2 \
        --sequence 128 --layers 2 4 6 8 10
    .venv/bin/python bench/input_rows.py --language ko --objective next-token --steps 60 --learning-rate 1e-2
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from init_quality import (  # noqa: E402
    bpc,
    expanded_tokenizer,
    heldout_texts,
    initialize,
    language,
    prior_texts,
    training_documents,
    training_texts,
    untie,
    validation_documents,
)


def windows(tokenizer: Any, documents: list[str], separator: int, length: int, seed: int) -> Any:
    """Endless random windows of ``length`` tokens (the separator first), drawn in proportion to length."""
    encoded = [ids for ids in (tokenizer.encode(text, add_special_tokens=False) for text in documents) if len(ids) > 16]
    sizes = [len(ids) for ids in encoded]
    draw = random.Random(seed)
    while True:
        ids = draw.choices(encoded, weights=sizes)[0]
        start = draw.randrange(0, max(1, len(ids) - length + 1))
        yield [separator, *ids[start : start + length - 1]]


def spelled_window(window: list[int], pieces: dict[int, tuple[int, ...]]) -> tuple[list[int], list[int]]:
    """The window in base pieces, and where each of its tokens ends there."""
    spelled: list[int] = []
    ends: list[int] = []
    for token_id in window:
        spelled.extend(pieces.get(token_id, (token_id,)))
        ends.append(len(spelled) - 1)
    return spelled, ends


def padded(rows: list[list[int]], fill: int) -> tuple[Any, Any]:
    import torch

    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), fill, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = torch.tensor(row)
        mask[index, : len(row)] = 1
    return ids, mask


def state_loss(
    model: Any, teacher: Any, embeds: Any, mask: Any, batch: list, pieces: dict, layers: list, separator: int
) -> Any:
    """Relative squared error between the expanded and the base model's states where both read the same text.

    Both models run only their first ``max(layers)`` layers: the teacher is cut once by the caller, the
    expanded model here, for this pass only (it is scored whole)."""
    import torch

    all_layers = model.model.layers
    model.model.layers = all_layers[: max(layers)]
    spelled = [spelled_window(window, pieces) for window in batch]
    teacher_ids, teacher_mask = padded([row for row, _ends in spelled], separator)
    with torch.no_grad():
        target = teacher.model(input_ids=teacher_ids, attention_mask=teacher_mask, output_hidden_states=True)
    try:
        states = model.model(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True).hidden_states
    finally:
        model.model.layers = all_layers
    total, count = 0.0, 0
    for row, (window, (_spelled, ends)) in enumerate(zip(batch, spelled, strict=True)):
        skip = 4  # the first positions hold the attention-sink states, orders of magnitude larger
        mine, theirs = torch.arange(skip, len(window)), torch.tensor(ends[skip:])
        for layer in layers:
            reference = target.hidden_states[layer][row, theirs]
            error = ((states[layer][row, mine] - reference) ** 2).sum(-1) / (reference**2).sum(-1)
            total, count = total + error.sum(), count + len(mine)
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".cache" / "xlang-test")
    parser.add_argument("--language", default="ko")
    parser.add_argument("--tokenizer", type=Path, help="an expanded tokenizer folder (default: the bench's +8k)")
    parser.add_argument("--budget", type=int, default=8000)
    parser.add_argument("--objective", choices=("states", "next-token"), default="next-token")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--sequence", type=int, default=256, help="tokens per window, expanded tokenizer")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 4, 6, 8, 10], help="states: layers matched")
    parser.add_argument("--max-chars", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from xlang.assets.models import ensure_smollm2
    from xlang.embeddings.checkpoint import load_causal_lm, load_tokenizer
    from xlang.embeddings.pieces import check_extends, spell_new_tokens
    from xlang.errors import XlangError

    torch.manual_seed(args.seed)
    base_dir = ensure_smollm2(args.cache_dir)
    spec = language(args.language)
    train = training_documents(spec, args.cache_dir)
    paragraphs = training_texts(spec, args.cache_dir)
    tokenizer_dir = args.tokenizer or expanded_tokenizer(base_dir, spec, paragraphs, args.budget, args.cache_dir)
    base_tokenizer, tokenizer = load_tokenizer(base_dir), load_tokenizer(tokenizer_dir)
    try:
        new_ids = check_extends(base_tokenizer, tokenizer)
    except XlangError as error:
        parser.error(f"--tokenizer {tokenizer_dir}: {error}")
    if not new_ids:
        parser.error(f"--tokenizer {tokenizer_dir} adds no token to the base tokenizer: give an expanded one")
    texts = {
        "out of domain": heldout_texts(spec, args.cache_dir, args.max_chars),
        "in domain": validation_documents(spec, args.cache_dir),
        "English": validation_documents(language("en"), args.cache_dir),
    }
    teacher = load_causal_lm(base_dir, dtype="float32").eval().requires_grad_(False)
    depth = teacher.config.num_hidden_layers
    if args.objective == "states" and not all(1 <= layer <= depth for layer in args.layers):
        parser.error(f"--layers must lie between 1 and {depth} (the model's layers), got {args.layers}")
    reference = {name: bpc(teacher, base_tokenizer, documents, args.max_chars) for name, documents in texts.items()}
    if args.objective == "states":  # from here on only the teacher's states up to max(--layers) are read
        teacher.model.layers = teacher.model.layers[: max(args.layers)]

    def report(label: str) -> None:
        scored = {name: bpc(model, tokenizer, documents, args.max_chars) for name, documents in texts.items()}
        print(
            f"{label}: "
            + ", ".join(f"{name} {value:.4f} ({value / reference[name]:.3f}x base)" for name, value in scored.items()),
            flush=True,
        )

    model = load_causal_lm(base_dir, dtype="float32")
    untie(model)
    prior = prior_texts(spec, paragraphs, args.cache_dir)
    english_train = training_documents(language("en"), args.cache_dir)
    initialize(model, base_tokenizer, tokenizer, "subword-freq", train, english_train, 0, prior)
    model.eval().requires_grad_(False)
    report("subword-freq, untied")

    old = len(base_tokenizer)
    pieces = {token.id: token.pieces for token in spell_new_tokens(base_tokenizer, tokenizer, new_ids) if token.pieces}
    table = model.get_input_embeddings().weight
    rows = torch.nn.Parameter(table[old:].detach().clone())
    optimizer = torch.optim.Adam([rows], lr=args.learning_rate)
    separator = base_tokenizer.bos_token_id if base_tokenizer.bos_token_id is not None else base_tokenizer.eos_token_id
    stream = windows(tokenizer, train, separator, args.sequence, args.seed)
    started, losses = time.perf_counter(), []
    for step in range(1, args.steps + 1):
        batch = [next(stream) for _ in range(args.batch)]
        ids, mask = padded(batch, separator)
        new = ids >= old
        embeds = torch.where(new.unsqueeze(-1), rows[(ids - old).clamp(min=0)], table[ids.clamp(max=old - 1)].detach())
        if args.objective == "states":
            loss = state_loss(model, teacher, embeds, mask, batch, pieces, args.layers, separator)
        else:
            loss = model(inputs_embeds=embeds, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % 10 == 0 or step == args.steps:
            elapsed = time.perf_counter() - started
            print(f"step {step}: {args.objective} loss {sum(losses) / len(losses):.4f}, {elapsed:.0f} s", flush=True)
            losses.clear()
        if step in (args.steps // 2, args.steps):
            with torch.no_grad():
                table[old:] = rows.detach()
            report(f"after {step} {args.objective} steps")


if __name__ == "__main__":
    main()
