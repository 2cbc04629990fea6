"""Assemble a LLaVA-1.5-style model: vision tower + two-layer GELU projector + (extended) LLM.

The result is a stock `LlavaForConditionalGeneration` with a `LlavaProcessor`, so the saved folder
needs nothing from xlang. The tokenizer gains one special `<image>` token (its id becomes the config's
`image_token_index`; the processor expands it to one token per image feature). The chat template is
the base tokenizer's own, behind a short prelude that (1) turns processor-style content lists
(`[{"type": "image"}, {"type": "text", ...}]`) into text with `<image>` placeholders, and (2) adds the
system prompt of the conversation's language from the language plugins' chat bits when the messages
bring none. The language is the template variable `lang` (`apply_chat_template(..., lang=CODE)`),
defaulting to the target language. A `chat_template` hook may hand over a whole template instead.

The vision tower comes from a loader the caller looked up by name (a `vision_towers` strategy with its
options bound), so this module never touches the plugin manager.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xlang.assets.loading import load_pretrained
from xlang.errors import XlangError
from xlang.vlm.config import AssembleConfig
from xlang.vlm.data import IMAGE_PLACEHOLDER
from xlang.vlm.towers import FEATURE_STRATEGIES, TowerLoader, VisionTower

_FALLBACK_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
"""ChatML, for a base tokenizer without a template of its own."""


def build_chat_template(
    base_template: str | None,
    system_prompts: Mapping[str, str],
    default_lang: str,
    image_placeholder: str = IMAGE_PLACEHOLDER,
) -> str:
    """A Jinja chat template: content-list normalization and per-language system prompts, then `base_template`.

    `system_prompts` maps language codes to `LanguageSpec.chat.system_prompt`; an empty mapping adds no
    system prompt (the base template's own default then applies).
    """
    if system_prompts and default_lang not in system_prompts:
        raise XlangError(
            f"no system prompt for the target language {default_lang!r}; known: {', '.join(system_prompts)}"
        )
    prompts = json.dumps(dict(system_prompts), ensure_ascii=False)
    placeholder = json.dumps(image_placeholder + "\n")
    prelude = (
        "{#- xlang: content lists -> text with image placeholders; the language's system prompt -#}\n"
        f"{{%- set xlang_system = {prompts} -%}}\n"
        "{%- set xlang_lang = lang if (lang is defined and lang in xlang_system) else "
        f"{json.dumps(default_lang)} -%}}\n"
        "{%- set xlang = namespace(items=[]) -%}\n"
        "{%- if xlang_system and (not messages or messages[0]['role'] != 'system') -%}"
        "{%- set xlang.items = [{'role': 'system', 'content': xlang_system[xlang_lang]}] -%}"
        "{%- endif -%}\n"
        "{%- for message in messages -%}"
        "{%- if message['content'] is string -%}"
        "{%- set xlang.items = xlang.items + [{'role': message['role'], 'content': message['content']}] -%}"
        "{%- else -%}"
        "{%- set part = namespace(text='') -%}"
        "{%- for item in message['content'] -%}"
        f"{{%- if item['type'] == 'image' -%}}{{%- set part.text = part.text + {placeholder} -%}}"
        "{%- elif item['type'] == 'text' -%}{%- set part.text = part.text + item['text'] -%}{%- endif -%}"
        "{%- endfor -%}"
        "{%- set xlang.items = xlang.items + [{'role': message['role'], 'content': part.text}] -%}"
        "{%- endif -%}"
        "{%- endfor -%}\n"
        "{%- set messages = xlang.items -%}\n"
    )
    return prelude + (base_template or _FALLBACK_TEMPLATE)


def add_image_token(tokenizer: Any, image_token: str = IMAGE_PLACEHOLDER) -> int:
    """Add `image_token` as one special token (if missing) and give the tokenizer a pad token; returns its id."""
    from tokenizers import AddedToken

    ids = tokenizer.encode(image_token, add_special_tokens=False)
    if len(ids) != 1 or tokenizer.convert_ids_to_tokens(ids[0]) != image_token:
        tokenizer.add_tokens([AddedToken(image_token, special=True, normalized=False)], special_tokens=True)
        ids = tokenizer.encode(image_token, add_special_tokens=False)
    if len(ids) != 1:
        raise XlangError(f"the tokenizer cannot hold {image_token!r} as one token (got ids {ids})")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.image_token = image_token
    return ids[0]


def _tokenizer_source(path: str) -> str:
    """Where a model's tokenizer lives: the folder itself, or a peft adapter's base when the adapter has none."""
    folder = Path(path)
    if (folder / "adapter_config.json").is_file() and not (folder / "tokenizer_config.json").is_file():
        base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise XlangError(
                f"adapter folder {folder} has no tokenizer and names no base model; save a tokenizer with it"
            )
        return str(base)
    return path


def base_chat_template(language_model_path: str) -> str | None:
    """The chat template of the language model a LLaVA is built from (its tokenizer's), or None without one."""
    from transformers import AutoTokenizer

    return load_pretrained(AutoTokenizer, _tokenizer_source(language_model_path), weights=False).chat_template or None


def load_language_model(path: str, *, merge_adapter: bool = True, dtype: Any = None) -> tuple[Any, Any]:
    """(causal LM, tokenizer) from a model folder, a hub id, or a peft adapter folder (merged into its base)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = dtype or torch.float32
    folder = Path(path)
    if (folder / "adapter_config.json").is_file():
        if not merge_adapter:
            raise XlangError(
                f"{folder} is a LoRA adapter; a plain LLaVA folder can only carry merged weights: set merge_adapter "
                "(the default), or merge it yourself with peft's merge_and_unload()"
            )
        from peft import AutoPeftModelForCausalLM

        model = load_pretrained(AutoPeftModelForCausalLM, folder, dtype=dtype).merge_and_unload()
    else:
        model = load_pretrained(AutoModelForCausalLM, path, dtype=dtype)
    tokenizer = load_pretrained(AutoTokenizer, _tokenizer_source(path), weights=False)
    return model, tokenizer


def _strategy(tower: VisionTower, requested: str) -> str:
    if requested == "auto":
        return "default" if tower.extra_tokens else "full"
    if requested == "default" and not tower.extra_tokens:
        raise XlangError(
            f"vision tower {tower.source or tower.model.config.model_type} has no class token; the 'default' feature "
            "strategy would drop a patch. Use vision_feature_select_strategy='full' (or 'auto')"
        )
    if requested not in FEATURE_STRATEGIES:
        raise XlangError(f"unknown vision feature strategy {requested!r}; choose auto, default or full")
    return requested


def assemble_llava(
    tower: VisionTower,
    language_model: Any,
    tokenizer: Any,
    *,
    chat_template: str,
    vision_feature_layer: int = -2,
    vision_feature_select_strategy: str = "auto",
    seed: int = 0,
) -> tuple[Any, Any]:
    """A `LlavaForConditionalGeneration` (tower and LLM weights as given, a fresh projector) and its processor.

    The LLM's embeddings grow by the `<image>` row. The processor's image-token count is checked
    against what the tower really returns for one image, so a mismatch stops here, not mid-training.
    """
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    strategy = _strategy(tower, vision_feature_select_strategy)
    image_token_id = add_image_token(tokenizer)
    old_rows = language_model.get_input_embeddings().weight.shape[0]
    if old_rows < len(tokenizer):
        # the <image> row is never read (image features replace it) nor predicted (suppressed): the mean row
        # keeps it harmless
        language_model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            for layer in {language_model.get_input_embeddings(), language_model.get_output_embeddings()}:
                if layer is not None and layer.weight.shape[0] > old_rows:
                    layer.weight[old_rows:] = layer.weight[:old_rows].mean(dim=0)
    num_tokens = tower.num_image_tokens(strategy)
    config = LlavaConfig(
        vision_config=tower.model.config,
        text_config=language_model.config,
        image_token_index=image_token_id,
        image_seq_length=num_tokens,
        projector_hidden_act="gelu",
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy=strategy,
        multimodal_projector_bias=True,
    )
    dtype = language_model.get_input_embeddings().weight.dtype
    with torch.device("meta"):
        llava = LlavaForConditionalGeneration(config)
    llava.model.vision_tower = tower.model
    llava.model.language_model = language_model.get_decoder()
    llava.lm_head = language_model.get_output_embeddings()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    llava.model.multi_modal_projector = LlavaMultiModalProjector(config).to(dtype)
    torch.random.set_rng_state(generator_state)
    if config.tie_word_embeddings:
        llava.lm_head.weight = llava.model.language_model.get_input_embeddings().weight
    left_on_meta = [name for name, param in llava.named_parameters() if param.is_meta]
    if left_on_meta:
        raise XlangError(f"LLaVA assembly left parameters unset: {', '.join(left_on_meta[:5])}")
    if getattr(language_model, "generation_config", None) is not None:
        llava.generation_config = language_model.generation_config
    # the <image> row is a placeholder, never an answer: generation must not emit it
    suppressed = list(getattr(llava.generation_config, "suppress_tokens", None) or [])
    llava.generation_config.suppress_tokens = sorted({*suppressed, image_token_id})
    llava.config.text_config.vocab_size = llava.lm_head.weight.shape[0]

    processor = LlavaProcessor(
        image_processor=tower.image_processor,
        tokenizer=tokenizer,
        patch_size=tower.patch_size,
        vision_feature_select_strategy=strategy,
        chat_template=chat_template,
        image_token=tokenizer.image_token,
        num_additional_image_tokens=tower.extra_tokens,
    )
    _check_image_tokens(llava, processor, num_tokens)
    return llava, processor


def _check_image_tokens(llava: Any, processor: Any, expected: int) -> None:
    """Run one blank image through processor and model: token count and feature count must agree."""
    import torch
    from PIL import Image

    from xlang.vlm.modeling import vision_features

    side = processor.image_processor.crop_size or processor.image_processor.size
    width = int(side.get("width") or side.get("shortest_edge"))
    image = Image.new("RGB", (width, width), (128, 128, 128))
    batch = processor(images=[image], text=[IMAGE_PLACEHOLDER], return_tensors="pt")
    placeholders = int((batch["input_ids"] == llava.config.image_token_index).sum())
    with torch.no_grad():
        pixel_values = batch["pixel_values"].to(next(llava.model.vision_tower.parameters()).dtype)
        features = vision_features(llava, pixel_values)
    if not placeholders == expected == features.shape[1]:
        raise XlangError(
            f"image token count mismatch: the processor writes {placeholders} <image> tokens, the tower returns "
            f"{features.shape[1]} features, expected {expected}; check the tower's image size, patch size and "
            "feature strategy"
        )


def build_llava(
    language_model_path: str,
    cache_dir: Path,
    target: Path,
    *,
    vision_tower: TowerLoader,
    system_prompts: Mapping[str, str],
    target_lang: str,
    config: AssembleConfig | None = None,
    chat_template: str | None = None,
) -> Path:
    """Assemble tower + projector + LLM and save the LLaVA folder at `target` (atomically).

    `vision_tower`: the loader of the tower `config.vision_tower` names, options bound
    (`functools.partial(strategy, options=...)`), called as `vision_tower(cache_dir=, image_size=)`;
    `system_prompts`: language code -> chat system prompt (the run languages' chat bits);
    `chat_template`: a finished template (e.g. from a `chat_template` hook) instead of the default one.
    """
    from xlang.vlm.export import save_llava
    from xlang.vlm.towers import tower_from_loader

    config = config or AssembleConfig()
    tower = tower_from_loader(vision_tower, cache_dir, image_size=config.image_size, source=config.vision_tower)
    language_model, tokenizer = load_language_model(language_model_path, merge_adapter=config.merge_adapter)
    template = chat_template or build_chat_template(tokenizer.chat_template, system_prompts, target_lang)
    llava, processor = assemble_llava(
        tower,
        language_model,
        tokenizer,
        chat_template=template,
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        seed=config.seed,
    )
    return save_llava(
        llava,
        processor,
        target,
        provenance={
            "stage": "assemble",
            "language_model": str(language_model_path),
            "target_lang": target_lang,
            "chat_template": "default" if chat_template is None else "chat_template hook",
            **config.model_dump(mode="json"),
        },
    )
