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


def save_tiny_chat_lm(folder: Any, smollm2_dir: Any) -> Any:
    """A 2-layer, 64-wide random Llama with SmolLM2's real tokenizer and chat template, saved to `folder`:
    the language side of a tiny LLaVA (ends turns with `<|im_end|>`, as SmolLM2 does)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        max_position_embeddings=4096,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_dinov2(folder: Any) -> Any:
    """A 2-layer, 32-wide random DINOv2 at 56 px (16 image tokens) with its image processor, saved to
    `folder`: the vision side of a tiny LLaVA, loaded through the built-in `hf` tower."""
    from transformers import Dinov2Config, Dinov2Model
    from xlang_dinov2.convert import image_processor

    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=14, image_size=56
    )
    Dinov2Model(config).save_pretrained(folder)
    image_processor(56).save_pretrained(folder)
    return folder
