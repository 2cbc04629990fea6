"""Tiny random models of real architectures, for tests where pretrained weights are not the point."""

from __future__ import annotations

from typing import Any


def tiny_llama(vocab_size: int, *, tied: bool, seed: int = 0) -> Any:
    """A 2-layer, 32-wide `LlamaForCausalLM` in eval mode. Untied, its output rows are drawn apart
    from the input rows, so a bug that copies one matrix into the other cannot pass unnoticed."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tied,
        bos_token_id=1,
        eos_token_id=0,
    )
    model = LlamaForCausalLM(config).eval()
    if not tied:
        with torch.no_grad():
            model.lm_head.weight.normal_(0, 0.05)
    return model
